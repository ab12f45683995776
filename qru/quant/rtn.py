"""Round-to-nearest integer quantization (RTN int-k) per group of weights: the textbook uniform grid.

For a weight matrix [out, in], each row is cut into groups of ``group_size`` consecutive weights (``group_size=0``:
the whole row, "per-channel"). Per group (Nagel et al. 2021, "A White Paper on Neural Network Quantization", sec. 2):

- symmetric (absmax): scale s = max|w| / q_max with q_max = 2^(k-1) - 1, codes q = clamp(round(w / s), -q_max,
  q_max), Q(w) = s q (the restricted range, as LLM.int8 uses for k = 8);
- asymmetric (min/max): with lo = min(min w, 0), hi = max(max w, 0): s = (hi - lo) / (2^k - 1), zero point
  z = round(-lo / s), q = clamp(round(w / s) + z, 0, 2^k - 1), Q(w) = s (q - z).

Rounding is torch.round (half to even). The step size is s for every weight of the group; the boundary distance is
that of the uniform grid (qru.quant.bnb.uniform_boundary) times s.
"""
from __future__ import annotations

import torch

import torch.nn.functional as F

from qru.quant.bnb import QuantizedTensor, uniform_boundary
from qru.quant.spec import RTN_BITS, RTN_GROUP_SIZES


def _groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """[out, in] -> [out * ceil(in / g), g] (g = in for per-channel). A row whose length is not a multiple of g ends
    in a shorter group, padded here with zeros: that changes neither a group's absmax nor its min/max range, which
    both include 0."""
    rows, cols = w.shape
    g = group_size or cols
    padded = F.pad(w, (0, -cols % g))
    return padded.reshape(-1, g)


def _ungroup(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The inverse of :func:`_groups`: [n_groups, g] -> [out, in], padding dropped."""
    rows, cols = shape
    return t.reshape(rows, -1)[:, :cols]


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int = 128, symmetric: bool = True) -> QuantizedTensor:
    """RTN int-k of a float weight [out, in] (see the module docstring); every field of the result is [out, in].

    ``codes`` are the integer levels (symmetric: -q_max..q_max; asymmetric: 0..2^k-1), ``dequant`` float32 Q(W),
    ``step`` the group's scale s, ``boundary`` the distance to the nearest rounding boundary (weight units).
    Raises ValueError for bits outside 2..8, a group size outside RTN_GROUP_SIZES or a weight that is not 2-D.
    """
    if bits not in RTN_BITS:
        raise ValueError(f"RTN bit width must be one of {RTN_BITS}, got {bits!r}")
    if group_size not in RTN_GROUP_SIZES:
        raise ValueError(f"RTN group size must be one of {RTN_GROUP_SIZES} (0 = per channel), got {group_size!r}")
    if weight.dim() != 2:
        raise ValueError(f"RTN quantizes 2-D weights [out, in], got shape {tuple(weight.shape)}")
    w = weight.detach().float()
    g = _groups(w, group_size)
    if symmetric:
        q_min, q_max = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
        scale = g.abs().amax(1, keepdim=True) / q_max
        zero = torch.zeros_like(scale)
    else:
        q_min, q_max = 0, 2 ** bits - 1
        lo, hi = g.amin(1, keepdim=True).clamp(max=0), g.amax(1, keepdim=True).clamp(min=0)
        scale = (hi - lo) / q_max
        zero = torch.where(scale > 0, (-lo / scale.clamp(min=1e-30)).round(), torch.zeros_like(scale))
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group: every weight is 0, code z
    t = g / safe + zero
    codes = t.round().clamp(q_min, q_max)
    dequant = (codes - zero) * scale
    boundary = uniform_boundary(t, q_min, q_max) * scale
    shape = w.shape

    def grid_codes(v: torch.Tensor) -> torch.Tensor:
        return _ungroup((_groups(v.detach().float(), group_size) / safe + zero).round().clamp(q_min, q_max).long(),
                        shape)
    return QuantizedTensor(codes=_ungroup(codes.long(), shape), dequant=_ungroup(dequant, shape).contiguous(),
                           step=_ungroup(scale.expand_as(g), shape).contiguous(),
                           boundary=_ungroup(boundary, shape).contiguous(), grid_codes=grid_codes)


__all__ = ["RTN_BITS", "RTN_GROUP_SIZES", "quantize_rtn"]
