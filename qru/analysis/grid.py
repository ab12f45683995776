"""Where a model's weights sit relative to a quantizer's grid, read from controls.json's grid rows (qru.controls:
``share_on_grid``, the share of weights within 1% of a step of a grid point, and ``mean_offset_steps``).

Weights spread evenly inside their bins give about 2% on the grid and a mean offset of 0.25 steps; a target that was
fine-tuned from a quantized source (e.g. SmolLM2, distributed as Q4_1) can sit on that source's grid, and then
rounding pulls an unlearned copy back to the target's codes. The sentences are in qru.views.curves.grid_sentence.
"""
from __future__ import annotations

ON_GRID_SHARE = 0.5  # over half the weights within 1% of a step of a grid point: "on" the grid
NEAR_SHARE, NEAR_OFFSET = 0.25, 0.15  # a quarter of the weights on grid points, or a mean offset well under 0.25
READINGS = ("on", "near", "not on")


def grid_reading(row: dict) -> str:
    """"on", "near" or "not on" a grid, from a grid row's share_on_grid and mean_offset_steps (thresholds above)."""
    if row["share_on_grid"] > ON_GRID_SHARE:
        return "on"
    if row["share_on_grid"] > NEAR_SHARE or row["mean_offset_steps"] < NEAR_OFFSET:
        return "near"
    return "not on"


def grid_rows(rows: list[dict], model: str, bits: int = 4) -> list[dict]:
    """The grid rows of ``model`` ("target": rows without a model count as the target's; "source": a pretrained
    source's) at ``bits`` among a run's controls.json rows."""
    return [r for r in rows if r.get("control") == "grid" and r.get("bits") == bits
            and r.get("model", "target") == model]


__all__ = ["NEAR_OFFSET", "NEAR_SHARE", "ON_GRID_SHARE", "READINGS", "grid_reading", "grid_rows"]
