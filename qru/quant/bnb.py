"""Post-training quantization with bitsandbytes, evaluated through dequantized ("fake-quant") fp32 weights.

4-bit: bitsandbytes ``quantize_4bit`` / ``dequantize_4bit``, FP4 (the papers' default, ``load_in_4bit=True``) or NF4,
absmax scaling per block of ``blocksize`` consecutive weights (row-major), no double quantization.
8-bit: bitsandbytes LLM.int8 weights (``int8_vectorwise_quant``): per-output-row absmax scaling to int8, as
``load_in_8bit=True`` stores them. Linear8bitLt additionally quantizes activations row-wise and keeps outlier input
features (|x| > 6.0) in 16 bits; fake-quant applies the weight rounding only.
Every ``nn.Linear`` except ``lm_head`` is quantized, as ``load_in_4bit`` / ``load_in_8bit`` do; embeddings are not.

For every quantized weight qru also derives its quantization step size Δ: the gap between the two quantization levels
around it, in the weight's units (docs/design.md "Terms").
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import bitsandbytes as bnb
import bitsandbytes.functional as bnbf
import torch
from torch import nn

from qru.histograms import bucketize
from qru.quant.spec import QuantSpec


@dataclass
class QuantizedTensor:
    """One weight matrix after quantization; every field has the weight's shape [out, in].

    Attributes:
        codes: int64 index of each weight's quantization level (levels equal in value, such as FP4's +0 and -0, share
            one index), so a code flip is a change of level.
        dequant: float32 dequantized weight Q(W).
        step: float32 step size Δ around each weight (gap between the two neighbouring levels, weight units).
        boundary: float32 distance from each weight to the nearest rounding boundary (weight units): the smallest
            change of that weight alone, with the block's scale unchanged, that gives it another code. None where
            not derived (32 bits).
        grid_codes: ``grid_codes(v)`` gives the codes that another weight ``v`` of the same shape gets on this
            tensor's grid (its scales and zero points kept), so that a code change from crossing a rounding
            boundary can be told apart from one caused by a changed scale. None at 32 bits.
    """

    codes: torch.Tensor
    dequant: torch.Tensor
    step: torch.Tensor
    boundary: torch.Tensor | None = None
    grid_codes: Callable[[torch.Tensor], torch.Tensor] | None = None


def level_table(quant_type: str) -> torch.Tensor:
    """Sorted distinct normalised levels (in [-1, 1]) of a bitsandbytes 4-bit type, float32 [15] for fp4 (+0 and -0
    merged) or [16] for nf4. Raises ValueError for other types."""
    if quant_type not in ("fp4", "nf4"):
        raise ValueError(f"no 4-bit level table for quant type {quant_type!r} (fp4 or nf4)")
    return torch.unique(bnbf.get_4bit_type(quant_type, device="cpu").float())


def level_midpoints(levels: torch.Tensor) -> torch.Tensor:
    """The decision boundaries [L-1] of rounding to the nearest of sorted ``levels`` [L]: the midpoints between
    adjacent levels, as bitsandbytes' ``quantize_4bit`` buckets normalised weights."""
    return (levels[1:] + levels[:-1]) / 2


def quantize_4bit(weight: torch.Tensor, quant_type: str = "fp4", blocksize: int = 64,
                  detail: bool = True) -> QuantizedTensor:
    """Quantize a float weight [out, in] with bitsandbytes 4-bit absmax block quantization.

    Step size: with absmax a of the weight's block and normalised value x = w / a, Δ = a x (gap of the levels
    around x: above x if x lies above its level, else below); boundary distance a times that of x to the nearest
    midpoint between levels. Without ``detail`` only codes and dequant are filled (step zero, no boundaries), for
    a weight that is only compared with another's grid. Raises ValueError for an unknown quant type.

    Computed in torch as bitsandbytes' reference ``quantize_4bit`` computes it (backends/default: absmax blocks,
    w * (1 / absmax), rounding at its code's midpoints), with a faster exact bucketing (qru.histograms.bucketize),
    on any device; tests/test_quant.py compares codes, absmax and Q(W) with bitsandbytes' own. Q(W) is the code's
    level times its block's absmax, as bitsandbytes' reference ``dequantize_4bit`` and its CUDA kernel compute it;
    its CPU kernel (0.50) gives other values where a block is longer than a row and rows do not pair into blocks
    (e.g. blocksize 1024 over rows of 576).
    """
    w = weight.detach().float().contiguous()
    grid = _grid_4bit(quant_type, str(w.device))
    absmax, scaled = _absmax_scaled(w.reshape(-1), blocksize)
    bucket = bucketize(scaled, grid["bounds"])  # bitsandbytes' rounding (its sorted code's midpoints)
    codes = grid["level"].index_select(0, bucket).reshape(w.shape)
    absmax = absmax.repeat_interleave(blocksize)[: w.numel()].reshape(w.shape)
    dequant = grid["value"].index_select(0, bucket).reshape(w.shape) * absmax
    if not detail:
        return QuantizedTensor(codes=codes, dequant=dequant, step=torch.zeros_like(w))
    levels, mids = grid["levels"], grid["mids"]
    safe = absmax.clamp(min=1e-38)
    x = torch.where(absmax > 0, w / safe, torch.zeros_like(w))
    own = bucketize(x, mids).reshape(-1)  # nearest level of x (the code, computed on x itself)
    above = x.reshape(-1) > levels.index_select(0, own)
    upper = (own + above).clamp_(1, len(levels) - 1)  # the level just above x's gap
    step = (levels.index_select(0, upper) - levels.index_select(0, upper - 1)).reshape(w.shape) * absmax
    edge = own.clamp_(1, len(mids) - 1)  # the midpoints around x: mids[edge - 1], mids[edge]
    boundary = torch.minimum((x - mids.index_select(0, edge - 1).reshape(w.shape)).abs_(),
                             (mids.index_select(0, edge).reshape(w.shape) - x).abs_()) * absmax

    def grid_codes(v: torch.Tensor) -> torch.Tensor:
        return bucketize(torch.clamp(v.detach().float() / safe, -1, 1), mids)
    return QuantizedTensor(codes=codes, dequant=dequant, step=step, boundary=boundary, grid_codes=grid_codes)


@lru_cache(maxsize=8)
def _grid_4bit(quant_type: str, device: str) -> dict[str, torch.Tensor]:
    """bitsandbytes' 4-bit grid on ``device``: ``bounds`` [15] (the rounding boundaries of ``quantize_4bit``: the
    midpoints of its sorted 16-entry code, -0 and +0 apart), per bucket of those bounds the ``level`` index (int64
    [16], into the distinct levels) and ``value`` (float32 [16], the code's value), the distinct ``levels`` and
    their ``mids``. Raises ValueError for an unknown quant type."""
    levels = level_table(quant_type)
    code = bnbf.get_4bit_type(quant_type, device="cpu").float()
    order = torch.argsort(code)
    grid = {"bounds": (code[order[:-1]] + code[order[1:]]) / 2, "level": torch.searchsorted(levels, code[order]),
            "value": code[order], "levels": levels, "mids": level_midpoints(levels)}
    return {k: v.to(device) for k, v in grid.items()}


def _absmax_scaled(flat: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' 4-bit block scaling of a float32 vector [n], computed as its ``quantize_4bit`` computes it
    (backends/default): per block of ``blocksize`` the absmax (float32 [ceil(n / blocksize)]; a last, shorter
    block's clamped to >= 1e-38) and the weights scaled into [-1, 1] (float32 [n]: w * (1 / absmax) in whole
    blocks, w / absmax in the last one)."""
    n = flat.numel()
    full = n - n % blocksize
    blocks = flat[:full].reshape(-1, blocksize)
    absmax = blocks.abs().amax(dim=-1) if full else flat.new_zeros(0)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1), -1, 1).reshape(-1)
    if full < n:
        last = flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, last.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / last, -1, 1)])
    return absmax, scaled


def quantize_int8(weight: torch.Tensor, detail: bool = True) -> QuantizedTensor:
    """LLM.int8 weight quantization: per output row, q = round(127 w / absmax_row); Δ = absmax_row / 127.

    As bitsandbytes' ``Int8Params`` does, the weight is first cast to float16, so codes equal ``load_in_8bit``'s;
    the boundary distance (0.5 - |w/Δ - round(w/Δ)|) Δ is measured on that float16 value.
    """
    w = weight.detach().float().contiguous()
    cb, scb, _ = bnbf.int8_vectorwise_quant(w.half())
    scale = (scb.float() / 127.0).unsqueeze(1)
    dequant = cb.float() * scale
    if not detail:
        return QuantizedTensor(codes=cb.long(), dequant=dequant, step=torch.zeros_like(w))
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    boundary = uniform_boundary(w.half().float() / safe, -127, 127) * scale

    def grid_codes(v: torch.Tensor) -> torch.Tensor:
        return (v.detach().half().float() / safe).round().clamp(-127, 127).long()
    return QuantizedTensor(codes=cb.long(), dequant=dequant, step=scale.expand_as(w).clone(), boundary=boundary,
                           grid_codes=grid_codes)


def uniform_boundary(t: torch.Tensor, q_min: int, q_max: int) -> torch.Tensor:
    """For values ``t`` in grid units of a uniform grid with integer levels q_min..q_max (rounding to nearest,
    clamped), the distance to the nearest decision boundary (at half-integers inside the range), in grid units."""
    q = t.round().clamp(q_min, q_max)
    inner = 0.5 - (t - t.round()).abs()
    low_edge = (t - (q_min + 0.5)).abs()  # the lowest level has only the boundary above it
    high_edge = (t - (q_max - 0.5)).abs()
    return torch.where(q == q_min, low_edge, torch.where(q == q_max, high_edge, inner))


def quantize_tensor(weight: torch.Tensor, spec: QuantSpec, detail: bool = True) -> QuantizedTensor:
    """Quantize one weight [out, in] as ``spec`` says: bitsandbytes FP4/NF4 (:func:`quantize_4bit`), LLM.int8
    (:func:`quantize_int8`) or RTN int-k (:func:`qru.quant.rtn.quantize_rtn`). 32 bits returns the weight itself with
    step 0 and no boundaries. Without ``detail``, only codes and dequant are guaranteed (faster: for the side of a
    comparison whose grid is not used). Raises ValueError where the quantizer cannot take the weight."""
    if spec.is_rtn:
        from qru.quant.rtn import quantize_rtn  # qru.quant.rtn builds on this module's QuantizedTensor
        return quantize_rtn(weight, spec.bits, spec.group_size, symmetric=spec.quant_type == "rtn-sym")
    if spec.quant_type in ("fp4", "nf4"):
        return quantize_4bit(weight, spec.quant_type, spec.blocksize, detail)
    if spec.quant_type == "int8":
        return quantize_int8(weight, detail)
    w = weight.detach().float()
    return QuantizedTensor(codes=torch.zeros_like(w, dtype=torch.long), dequant=w.clone(), step=torch.zeros_like(w))


def quantizable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear of ``model`` except the output head (``lm_head``), by module name, in model order."""
    return {name: mod for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and not name.split(".")[-1] == "lm_head"}


def fake_quantize(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """A copy of ``model`` whose quantizable Linear weights are replaced by their dequantized values Q(W).

    The copy computes in float32; ``model`` is unchanged. 32 bits returns ``model`` itself.
    """
    if spec.bits == 32:
        return model
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for module in quantizable_linears(quantized).values():
            module.weight.copy_(quantize_tensor(module.weight, spec).dequant)
    return quantized.eval()


def to_bnb_linear4bit(model: nn.Module, quant_type: str = "fp4", blocksize: int = 64) -> nn.Module:
    """A copy of ``model`` with every quantizable Linear replaced by bitsandbytes' real ``Linear4bit`` (packed 4-bit
    storage, float32 compute), as ``load_in_4bit`` builds it. For checking fake-quant against bitsandbytes.

    On CPUs with AVX512-BF16, bitsandbytes >= 0.49 repacks the weight at the first forward pass and multiplies in
    bfloat16 whatever ``compute_dtype`` says; that shortcut is switched off here, so the layer computes in float32
    on every CPU as on a GPU."""
    out = copy.deepcopy(model)
    for name, lin in quantizable_linears(out).items():
        parent_name, _, attr = name.rpartition(".")
        layer = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                  compute_dtype=torch.float32, quant_type=quant_type, compress_statistics=False)
        layer.support_avx512bf16_for_cpu = False
        layer.weight = bnb.nn.Params4bit(lin.weight.data.clone(), requires_grad=False, quant_type=quant_type,
                                         blocksize=blocksize, compress_statistics=False)
        if lin.bias is not None:
            layer.bias = nn.Parameter(lin.bias.data.clone(), requires_grad=False)
        setattr(out.get_submodule(parent_name), attr, layer.to(lin.weight.device))
    return out.eval()
