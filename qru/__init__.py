"""qru: does post-training quantization undo LLM unlearning, and does LoRA keep it?"""
__version__ = "0.1.0"
