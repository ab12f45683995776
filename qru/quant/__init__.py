"""Every post-training quantizer qru applies or measures, one module each:

- ``spec``: the quantizer settings and constants, :class:`QuantSpec` (qru's own fake-quantizers), :class:`GGUFGrid`
  (llama.cpp's GGUF 4-bit formats), the :class:`Quantizer` interface both have, :func:`quantizer_from_key`, and the
  analysis grid / named quantizer sets;
- ``bnb``: bitsandbytes FP4 / NF4 and LLM.int8 through dequantized ("fake-quant") fp32 weights, step sizes and
  rounding boundaries; :func:`fake_quantize` of a whole model;
- ``rtn``: round-to-nearest int-k per group; ``gptq``: GPTQ calibrated on the retain set (llm-compressor);
- ``gguf``: the GGUF Q4_1 / Q4_0 round trip and where weights sit relative to those grids;
- ``grid_position``: the where-do-weights-sit-in-their-bins bookkeeping shared by every grid;
- ``noise``: noise controls, random perturbations the size of a quantizer's error;
- ``load``: bitsandbytes' real quantized loading through transformers (CUDA only).

Importing this package (or ``qru.quant.spec``) loads neither torch nor bitsandbytes: the model-level entry points of
``bnb`` below are loaded on first use, so qru.config stays quick to import.
"""
from __future__ import annotations

from qru.quant.spec import GGUFGrid, QuantSpec, Quantizer, quantizer_from_key

_FROM_BNB = ("fake_quantize", "quantizable_linears", "quantize_tensor")


def __getattr__(name: str):
    if name in _FROM_BNB:
        from qru.quant import bnb
        return getattr(bnb, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GGUFGrid", "QuantSpec", "Quantizer", "fake_quantize", "quantizable_linears", "quantize_tensor",
           "quantizer_from_key"]
