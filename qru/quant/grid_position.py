"""Where weights sit inside their quantization bins: the bookkeeping shared by every grid (qru.controls.grid_position
for qru's quantizers, qru.quant.gguf.gguf_grid_position for llama.cpp's GGUF formats).

A weight's position is rel = |W - Q(W)| / step (0 on a grid point, at most 0.5; about 0.25 on average for weights
spread evenly inside their bins). The weights that set their block's scale land on a grid point by construction
(:func:`scale_anchors`), so they are left out: evenly spread weights then give about 2 NEAR_GRID within NEAR_GRID of a
step, on every grid.
"""
from __future__ import annotations

from typing import Iterable

import torch

NEAR_GRID = 0.01  # a weight within this share of a step of a grid point counts as "on the grid"


def scale_anchors(weight: torch.Tensor, ids: torch.Tensor, symmetric: bool = True) -> torch.Tensor:
    """bool, shape of ``weight``: the weights that set their block's scale (blocks given by ``ids``, int64, same
    shape): the largest |w| of each block (absmax grids), or its smallest and largest w (min/max grids)."""
    flat, idx = weight.detach().float().flatten(), ids.flatten()
    n = int(idx.max()) + 1 if idx.numel() else 0

    def extreme(values: torch.Tensor, how: str) -> torch.Tensor:
        init = torch.full((n,), float("-inf") if how == "amax" else float("inf"))
        return values == init.scatter_reduce(0, idx, values, how)[idx]
    anchor = extreme(flat.abs(), "amax") if symmetric else extreme(flat, "amax") | extreme(flat, "amin")
    return anchor.reshape(weight.shape)


def position_summary(parts: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Summary of ``parts``, one (rel, keep) pair per weight tensor (rel: float positions in steps; keep: bool, the
    weights counted, i.e. not scale-setting): ``mean_offset_steps`` and ``share_on_grid`` (within NEAR_GRID of a
    step) over the kept weights, ``anchors`` (the share left out) and ``measured`` (all weights seen)."""
    total = near = anchors = 0
    offset = 0.0
    for rel, keep in parts:
        total += int(keep.sum())
        anchors += int((~keep).sum())
        near += int((rel[keep] <= NEAR_GRID).sum())
        offset += float(rel[keep].double().sum())
    measured = total + anchors
    return {"mean_offset_steps": offset / max(total, 1), "share_on_grid": near / max(total, 1),
            "anchors": anchors / max(measured, 1), "measured": measured}


__all__ = ["NEAR_GRID", "position_summary", "scale_anchors"]
