"""Scenario options of a run (docs/design.md "Calibration"): which conditions decide whether PTQ undoes unlearning.

- *start point*: unlearning starts from the fp32 target as trained, or from the target snapped to a quantizer's grid
  (every quantizable weight replaced by its dequantized value Q(W): a model distributed in 4-bit, dequantized,
  unlearned and re-quantized). Rounding pulls a sub-step update back to the start's codes only where the start already
  sits on the grid; weights anywhere inside their bins keep the update in expectation.
- *weight precision during unlearning*: fp32, or bf16 weights emulated in fp32 (each trained weight rounded to
  bfloat16 after every optimizer step), which can freeze updates smaller than half a bf16 ulp.
- *embeddings*: trained or frozen under full fine-tuning; tied embeddings are never quantized and can carry part of
  the unlearning past PTQ.

The fields live in :class:`qru.config.UnlearnConfig` (``start_grid``, ``weight_precision``, ``freeze_embeddings``);
the demo set of both outcomes is built by qru.recipes.demo_set.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from qru.config import UnlearnConfig
from qru.quant.bnb import fake_quantize
from qru.quant.spec import QuantSpec


def round_bf16_(params) -> None:
    """Round every tensor of ``params`` (float32 parameters, in place) to the nearest bfloat16 value, kept in
    float32 (round to nearest even, as ``Tensor.to(torch.bfloat16)``)."""
    with torch.no_grad():
        for p in params:
            p.copy_(p.to(torch.bfloat16).float())


def is_natural(config: UnlearnConfig) -> bool:
    """True if unlearning starts from the fp32 target as trained (no grid snap, fp32 weights)."""
    return not config.start_grid and config.weight_precision == "fp32"


def start_model(target: nn.Module, config: UnlearnConfig) -> nn.Module:
    """The model unlearning starts from, which is also its NPO/KLR reference and the run's target.

    ``target`` itself for a natural start; else a copy whose quantizable Linear weights are Q(W) under
    ``config.start_grid`` (qru.quant.fake_quantize) and, with ``weight_precision="bf16-rounded"``, whose every
    parameter is then rounded to bfloat16 (kept in float32). ``target`` is left unchanged.
    """
    if is_natural(config):
        return target
    model = fake_quantize(target, QuantSpec.from_key(config.start_grid)) if config.start_grid \
        else copy.deepcopy(target)
    if config.weight_precision == "bf16-rounded":
        round_bf16_(model.parameters())
    return model.eval()


def start_tag(config: UnlearnConfig) -> str:
    """A short file-name tag of the start point: ``""`` for the natural start, else e.g. ``grid-nf4-b64@4-bf16``."""
    parts = ([f"grid-{config.start_grid}"] if config.start_grid else []) + \
        (["bf16"] if config.weight_precision == "bf16-rounded" else [])
    return "-".join(parts)


def freeze_embeddings(model: nn.Module) -> None:
    """Stop gradients to the input embeddings and the output head (tied or not; neither is quantized) of a
    transformers model."""
    model.get_input_embeddings().weight.requires_grad_(False)
    head = model.get_output_embeddings()
    if head is not None:
        head.weight.requires_grad_(False)


__all__ = ["freeze_embeddings", "is_natural", "round_bf16_", "start_model", "start_tag"]
