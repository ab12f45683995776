"""qru: does post-training quantization undo LLM unlearning, and does LoRA keep it?"""
import logging as _logging

__version__ = "0.1.0"

# transformers imports torchao when it is installed (qru's tests use it as an independent RTN reference); its import
# logs that its optional compiled kernels for other Python versions and GPUs are absent, and torch logs a deprecation
# about torchao's enums. On CPUs with AVX512-BF16, bitsandbytes warns at import that it cannot fetch an optional
# kernel from the Hugging Face hub (qru never fetches from the hub at run time and computes 4-bit in float32). None of
# these concerns qru, and on every command they read like failures: keep them quiet.
for _name in ("torchao", "torch.utils._pytree", "bitsandbytes.backends.cpu.ops"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
