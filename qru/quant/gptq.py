"""GPTQ (Frantar et al. 2023, arXiv 2210.17323): calibrated post-training quantization through llm-compressor.

Unlike round-to-nearest, GPTQ quantizes a Linear layer's columns one at a time and moves the not yet quantized weights
to compensate each rounding error, using the layer's input activations on calibration text (here: the retain set
D_r, as a user with the forget set removed would have). llm-compressor's ``oneshot`` with a ``GPTQModifier`` runs it
on CPU; its result is an int-k grid per group of ``group_size`` inputs (0 = per output channel) with a scale and a
zero point, and weights replaced by their dequantized values Q(W). qru reads those scales back, so GPTQ's per-weight
step sizes feed the same delta analysis as the other quantizers (qru.deltas).

Every quantizable Linear (all but ``lm_head``) is quantized; embeddings are not, as with the other quantizers.
"""
from __future__ import annotations

import contextlib
import copy
import io

import torch
from torch import nn

from qru.models import encode_documents
from qru.quant.bnb import QuantizedTensor, quantizable_linears, uniform_boundary
from qru.quant.spec import QuantSpec

MAX_CALIBRATION_SAMPLES = 128


def _recipe(spec: QuantSpec):
    from llmcompressor.modifiers.quantization import GPTQModifier

    weights = {"num_bits": spec.bits, "type": "int", "symmetric": spec.quant_type == "gptq-sym",
               "strategy": "group" if spec.group_size else "channel"}
    if spec.group_size:
        weights["group_size"] = spec.group_size
    return GPTQModifier(ignore=["lm_head"], config_groups={"group_0": {"targets": ["Linear"], "weights": weights}})


def check_groups(model: nn.Module, spec: QuantSpec) -> None:
    """Raise ValueError naming the first Linear layer whose input width ``spec.group_size`` does not divide."""
    if not spec.group_size:
        return
    for name, lin in quantizable_linears(model).items():
        if lin.in_features % spec.group_size:
            raise ValueError(f"GPTQ group size {spec.group_size} does not divide the {lin.in_features} inputs of "
                             f"{name}; use group size 0 (per channel) or one that divides every layer's inputs")


def _tensor(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    """A QuantizedTensor from GPTQ's dequantized weight [out, in] and its scales / zero points [out, groups]."""
    width = weight.shape[1] // scale.shape[1]
    s = scale.float().repeat_interleave(width, dim=1)
    z = zero.float().repeat_interleave(width, dim=1)
    q_min, q_max = -(2 ** (spec.bits - 1)), 2 ** (spec.bits - 1) - 1
    w = weight.detach().float()

    def grid_codes(v: torch.Tensor) -> torch.Tensor:
        return (v.float() / s + z).round().clamp(q_min, q_max).long()

    return QuantizedTensor(codes=grid_codes(w), dequant=w.clone(), step=s.clone(),
                           boundary=uniform_boundary(w / s + z, q_min, q_max) * s, grid_codes=grid_codes)


def gptq_quantize(model: nn.Module, tokenizer, texts: list[str], spec: QuantSpec,
                  max_len: int) -> tuple[nn.Module, dict[str, QuantizedTensor]]:
    """GPTQ-quantize a copy of ``model`` with calibration ``texts`` (the first MAX_CALIBRATION_SAMPLES, each cut to
    ``max_len`` tokens); ``model`` is unchanged.

    Returns (a plain copy of ``model`` whose quantizable Linear weights are GPTQ's Q(W), float32; {Linear name:
    QuantizedTensor with GPTQ's codes, dequantized weight, step = the group's scale, boundaries and grid}).
    Raises ValueError for a non-GPTQ spec, no calibration text or a group size that does not divide a layer.
    """
    if not spec.quant_type.startswith("gptq"):
        raise ValueError(f"not a GPTQ quantizer: {spec.key}")
    if not texts:
        raise ValueError("GPTQ needs calibration text (the retain set is empty)")
    check_groups(model, spec)
    from datasets import Dataset
    from llmcompressor import oneshot
    from loguru import logger

    ids = encode_documents(tokenizer, texts[:MAX_CALIBRATION_SAMPLES], max_len)
    data = Dataset.from_dict({"input_ids": [x for x in ids if x]})
    work = copy.deepcopy(model).float().eval()
    logger.disable("llmcompressor")
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        oneshot(model=work, processor=tokenizer, dataset=data, recipe=_recipe(spec), max_seq_length=max_len,
                num_calibration_samples=len(data))
    out = copy.deepcopy(model).eval()
    tensors = {}
    with torch.no_grad():
        for name, lin in quantizable_linears(work).items():
            tensors[name] = _tensor(lin.weight, lin.weight_scale, lin.weight_zero_point, spec)
            out.get_submodule(name).weight.copy_(tensors[name].dequant)
    return out, tensors


__all__ = ["MAX_CALIBRATION_SAMPLES", "check_groups", "gptq_quantize"]
