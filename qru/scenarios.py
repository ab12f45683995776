"""Scenario options of a run (design.md "Calibration"): which conditions decide whether PTQ undoes unlearning.

- *start point*: unlearning starts from the fp32 target as trained, or from the target snapped to a quantizer's grid
  (every quantizable weight replaced by its dequantized value Q(W): a model distributed in 4-bit, dequantized,
  unlearned and re-quantized). Rounding pulls a sub-step update back to the start's codes only where the start already
  sits on the grid; weights anywhere inside their bins keep the update in expectation.
- *weight precision during unlearning*: fp32, or bf16 weights emulated in fp32 (each trained weight rounded to
  bfloat16 after every optimizer step), which can freeze updates smaller than half a bf16 ulp.
- *embeddings*: trained or frozen under full fine-tuning; tied embeddings are never quantized and can carry part of
  the unlearning past PTQ.

The fields live in :class:`qru.config.UnlearnConfig` (``start_grid``, ``weight_precision``, ``freeze_embeddings``).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from qru.config import QuantSpec, RunConfig, UnlearnConfig
from qru.quant import fake_quantize


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


@dataclass(frozen=True)
class DemoRun:
    """One run of the demo set: its name, adapter, start grid (``""`` = natural) and 4-bit quantizer type."""

    name: str
    adapter: str
    start_grid: str
    quant_type_4bit: str


# The demo set (design.md "Calibration"): NPO+GDR, full fine-tuning at lr 5e-5 and LoRA at 5e-4, quantized with NF4
# (block 64). From the fp32 target as trained, 4-bit rounding kept the tiny model's unlearning; from the target
# snapped to the same NF4 grid most of full fine-tuning's forgetting came back while LoRA kept most of it; snapped to
# NF4 but quantized with FP4 (another grid), it did not come back. The runs measure which outcome happens here.
DEMO_GRID = "nf4-b64@4"
DEMO_LR = {"full": 5e-5, "lora": 5e-4}
DEMO_SET = (DemoRun("natural start, full fine-tuning", "full", "", "nf4"),
            DemoRun("natural start, LoRA", "lora", "", "nf4"),
            DemoRun("on-grid start, full fine-tuning", "full", DEMO_GRID, "nf4"),
            DemoRun("on-grid start, LoRA", "lora", DEMO_GRID, "nf4"),
            DemoRun("control: on the NF4 grid, quantized with FP4", "full", DEMO_GRID, "fp4"))


def demo_configs(base: RunConfig, lr: float | None = None) -> list[RunConfig]:
    """The RunConfigs of DEMO_SET on ``base`` (corpus, model, bit widths, evaluation, seed and the unlearning fields
    the set does not fix): NPO+GDR at DEMO_LR (or ``lr``) with the run's start grid, adapter and 4-bit type
    (bitsandbytes, block 64). Raises ConfigError if ``base`` cannot take them (e.g. an RTN quantizer)."""
    configs = []
    for demo in DEMO_SET:
        unlearn = dataclasses.replace(base.unlearn, method="npo", regularizer="gdr", adapter=demo.adapter,
                                      lr=lr or DEMO_LR[demo.adapter], start_grid=demo.start_grid,
                                      freeze_embeddings=False, sure_share=0.0)
        configs.append(dataclasses.replace(base, unlearn=unlearn, quant_type_4bit=demo.quant_type_4bit,
                                           blocksize=64))
    return configs


__all__ = ["DEMO_SET", "DemoRun", "demo_configs", "freeze_embeddings", "is_natural", "round_bf16_", "start_model",
           "start_tag"]
