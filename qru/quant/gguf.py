"""Where a model's weights sit relative to llama.cpp's 4-bit GGUF grids (Q4_1, Q4_0), measured, not assumed.

A model distributed as a 4-bit GGUF file and dequantized (the packaged SmolLM2-135M is Q4_1) has every weight exactly
on that format's grid; fine-tuning moves the weights off it by an amount that depends on the learning rate and the
number of steps. Whether the start of unlearning still lies on (or near) a 4-bit grid is one of the two conditions
under which 4-bit PTQ undid unlearning on this machine (docs/design.md "Calibration"), so qru measures it.

The grids, per block of 32 consecutive weights of a row (ggml's ``quantize_row_q4_1_ref`` / ``q4_0``; here through
the ``gguf`` package's reference implementation, ``gguf.quants.quantize`` / ``dequantize``):

- Q4_1: w ~ d q + m, q in 0..15, d = (max - min) / 15, m = min (d and m stored as float16);
- Q4_0: w ~ d (q - 8), q in 0..15, d = (the block's weight of largest magnitude) / -8 (float16).

The step of a block is |d| as the file stores it (the first two bytes of each quantized block). A weight's position is
|W - Q(W)| / step: 0 on the grid, about 0.25 on average for weights spread evenly inside their bins.

The same formats are quantizers of the bit-width curve (qru.quant.spec.GGUFGrid, :func:`gguf_fake_quantize`): like
the other fake-quantizers, they replace the quantizable Linear weights by Q(W) and leave the embeddings in float32.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from qru.quant.bnb import quantizable_linears
from qru.quant.grid_position import position_summary, scale_anchors
from qru.quant.spec import GGUF_GRIDS


def gguf_fake_quantize(model: torch.nn.Module, key: str) -> torch.nn.Module:
    """A copy of ``model`` (float32 compute) whose quantizable Linear weights with an input size divisible by 32
    are replaced by their GGUF ``key`` round trip Q(W) (:func:`gguf_roundtrip`); ``model`` is unchanged."""
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for module in quantizable_linears(quantized).values():
            if module.weight.shape[1] % 32 == 0:
                module.weight.copy_(gguf_roundtrip(module.weight, key)[0].to(module.weight.dtype))
    return quantized.eval()


def gguf_blocks(shape: tuple[int, int]) -> torch.Tensor:
    """int64 [out, in]: the GGUF block (32 consecutive weights of a row) of each weight."""
    return torch.arange(shape[0] * shape[1]).reshape(shape) // 32


def gguf_roundtrip(weight: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Q(W) and the per-weight step of one weight [out, in] (in a multiple of 32) under the GGUF grid ``key``
    (a key of GGUF_GRIDS), both float32 [out, in]. Raises KeyError for an unknown key, ValueError for a weight that
    is not 2-D or whose rows do not divide into blocks of 32."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    qtype = GGMLQuantizationType[GGUF_GRIDS[key][0]]
    block, type_size = GGML_QUANT_SIZES[qtype]
    if weight.dim() != 2 or weight.shape[1] % block:
        raise ValueError(f"{key}: needs a 2-D weight whose rows divide into blocks of {block}, "
                         f"got shape {tuple(weight.shape)}")
    w = weight.detach().float().cpu().numpy()
    packed = quantize(w, qtype)
    dequant = dequantize(packed, qtype).reshape(w.shape)
    d = packed.reshape(-1, type_size)[:, :2].copy().view(np.float16).astype(np.float32)
    step = np.repeat(np.abs(d[:, 0]), block).reshape(w.shape)
    return torch.from_numpy(np.ascontiguousarray(dequant)), torch.from_numpy(step)


def gguf_grid_position(model: torch.nn.Module, key: str) -> dict:
    """Where the quantizable Linear weights of ``model`` sit under the GGUF grid ``key`` (qru.quant.grid_position
    .position_summary), over the weights that do not set their block's scale (Q4_1: each block's min and max; Q4_0:
    its largest |w|; they sit on the grid by construction): ``mean_offset_steps`` (mean |W - Q(W)| / step; a block
    of equal weights has step 0 and counts as on the grid), ``share_on_grid`` (within NEAR_GRID of a step),
    ``anchors`` (the share left out) and ``measured`` (how many weights in all: Linear layers whose input size is
    not a multiple of 32 are left out). Raises KeyError for an unknown key."""
    def parts():
        for module in quantizable_linears(model).values():
            w = module.weight.detach().float().cpu()
            if w.shape[1] % 32:
                continue
            dequant, step = gguf_roundtrip(w, key)
            error = (w - dequant).abs()
            rel = torch.where(step > 0, error / step.clamp(min=1e-30), torch.zeros_like(error))
            yield rel, ~scale_anchors(w, gguf_blocks(tuple(w.shape)), symmetric=GGUF_GRIDS[key][0] == "Q4_0")
    return position_summary(parts())


__all__ = ["gguf_blocks", "gguf_fake_quantize", "gguf_grid_position", "gguf_roundtrip"]
