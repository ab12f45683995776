"""bitsandbytes' real quantized loading of a model, as the papers' code evaluates it: the (merged) model is saved
and loaded again with transformers' ``BitsAndBytesConfig`` (``load_in_4bit`` with ``bnb_4bit_quant_type`` fp4/nf4,
no double quantization; ``load_in_8bit``, LLM.int8 with threshold 6.0). CUDA only: on a CPU qru evaluates the same
quantizers by fake-quant (qru.quant.bnb), which tests/test_quant_load.py compares with this path where CUDA is present.
"""
from __future__ import annotations

import tempfile

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

from qru.quant.spec import QuantSpec


def bnb_config(spec: QuantSpec, compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """The BitsAndBytesConfig of a bitsandbytes QuantSpec (8 bits: LLM.int8; 4 bits: FP4/NF4, block 64).

    Raises ValueError for RTN, 32 bits or a 4-bit block size other than bitsandbytes' 64."""
    if spec.quant_type == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0)
    if spec.quant_type in ("fp4", "nf4") and spec.blocksize == 64:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.quant_type,
                                  bnb_4bit_use_double_quant=False, bnb_4bit_compute_dtype=compute_dtype)
    raise ValueError(f"bitsandbytes' quantized loading has no setting for {spec.label} (block {spec.blocksize})")


def quantized_copy(model: PreTrainedModel, spec: QuantSpec) -> PreTrainedModel:
    """``model`` saved to a temporary folder and loaded back quantized by bitsandbytes under ``spec``.

    Raises RuntimeError without CUDA, ValueError for a quantizer bitsandbytes' loading does not have."""
    if not torch.cuda.is_available():
        raise RuntimeError("bitsandbytes' quantized loading (quant_load) needs a CUDA GPU; use fake-quant on a CPU")
    config = bnb_config(spec, model.dtype)
    with tempfile.TemporaryDirectory(prefix="qru-quant-load-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        loaded = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=config, dtype=model.dtype,
                                                      device_map={"": model.device})
    return loaded.eval()
