"""The teaching view "Why 4-bit forgets to forget": one block of weights, one update, one quantizer, no model.

A target block W_t (a trained Linear layer's weights, N(0, 0.02) per element) is moved by an update dW to the
unlearned block W_u = W_t + dW, and both are quantized with the same quantizer (qru.quant.bnb.quantize_tensor). The
counts are those of qru.deltas for a whole model (docs/design.md "Terms" and "Calibration"):

- code flip: the quantized code of a weight differs between Q(W_t) and Q(W_u); a boundary crossing when W_u's code on
  the target's own grid (scales kept) already differs, else a flip caused by a changed block/group scale;
- share kept = <Q(W_u) - Q(W_t), dW> / ||dW||^2 (1 = the update survives on average, 0 = erased).

Two starting positions (docs/design.md "What the pages must let a user see"): weights anywhere inside their bins, as
training leaves them, where rounding is unbiased (a weight flips by a whole step with probability about |dW|/Δ, so
the update survives on average); or weights already on the quantizer's grid (the target replaced by its own
dequantized weights, as when a model distributed in 4-bit is unlearned and re-quantized), where every update below
half a step is rounded away (Zhang et al. 2024, arXiv 2410.16454). Three updates of the same Frobenius norm: diffuse
(every weight moves a little, like full fine-tuning), and rank 1, either concentrated on a few rows and columns or
spread over the whole block (a stand-in for a merged LoRA update, arXiv 2602.13151).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from qru.deltas import tensor_delta
from qru.quant.bnb import level_table, quantize_tensor
from qru.quant.spec import QUANT_TYPES_4BIT, RTN_BITS, RTN_GROUP_SIZES, QuantSpec

# The update sizes offered (RMS per weight, weight units): 1, 2, 5 x 10^k from 1e-6 to 1e-1.
UPDATE_SIZES = tuple(float(f"{m}e{k}") for k in range(-6, -1) for m in (1, 2, 5)) + (0.1,)
STARTS = {"bin": "anywhere inside their bins (as training leaves them)",
          "grid": "on the quantizer's grid (a quantized model, unlearned and re-quantized)"}
UPDATE_KINDS = {"diffuse": "diffuse: every weight moves (like full fine-tuning)",
                "lowrank": "rank 1, concentrated on 1/8 of the rows and 1/8 of the columns (like LoRA)",
                "lowrank-spread": "rank 1, spread over the whole block"}
CONCENTRATION = 8  # the concentrated rank-1 update touches 1/8 of the rows and 1/8 of the columns
QUANTIZERS = {"fp4": "FP4 (bitsandbytes, block 64; the papers' 4-bit)", "nf4": "NF4 (bitsandbytes, block 64)",
              "int8": "LLM.int8 (bitsandbytes, per-row absmax)", "rtn-asym": "RTN int-k asymmetric (min/max)",
              "rtn-sym": "RTN int-k symmetric (absmax)"}
WEIGHT_STD = 0.02  # N(0, 0.02): the scale of a trained Linear layer's weights (and of Llama's initialisation)
BLOCK_SHAPE = (64, 1024)  # 65,536 weights: enough flips for a steady share kept down to updates of ~1e-5


def bit_choices(quant_type: str) -> tuple[int, ...]:
    """The bit widths a quantizer of QUANTIZERS offers: 4 for fp4/nf4, 8 for int8, 8..2 for RTN.
    Raises ValueError for another quant type."""
    if quant_type in QUANT_TYPES_4BIT:
        return (4,)
    if quant_type == "int8":
        return (8,)
    if quant_type in ("rtn-asym", "rtn-sym"):
        return RTN_BITS
    raise ValueError(f"unknown quantizer {quant_type!r} (one of {', '.join(QUANTIZERS)})")


def quantizer_spec(quant_type: str, bits: int, group_size: int = 64) -> QuantSpec:
    """The QuantSpec of a choice in the teaching view: bitsandbytes fp4/nf4 (block 64) at 4 bits, int8 at 8 bits,
    or RTN int-k (``bits`` 2..8, ``group_size`` in RTN_GROUP_SIZES, 0 = per channel; ignored otherwise).
    Raises ValueError naming a bad quant type, bit width or group size."""
    if bits not in bit_choices(quant_type):
        raise ValueError(f"{quant_type} does not offer {bits!r} bits (choose from {bit_choices(quant_type)})")
    if quant_type.startswith("rtn"):
        if group_size not in RTN_GROUP_SIZES:
            raise ValueError(f"group size must be one of {RTN_GROUP_SIZES} (0 = per channel), got {group_size!r}")
        return QuantSpec(bits=bits, quant_type=quant_type, group_size=group_size)
    return QuantSpec(bits=bits, quant_type=quant_type, blocksize=64)


def _check_spec(spec: QuantSpec) -> None:
    if not isinstance(spec, QuantSpec) or spec.bits == 32:
        raise ValueError(f"a quantizer is needed (a QuantSpec below 32 bits), got {spec!r}")


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _seed(value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 63:
        raise ValueError(f"seed must be a non-negative integer, got {value!r}")


def make_block(seed: int = 0, rows: int = BLOCK_SHAPE[0], cols: int = BLOCK_SHAPE[1], start: str = "bin",
               spec: QuantSpec | None = None, std: float = WEIGHT_STD) -> torch.Tensor:
    """A target block W_t: float32 [rows, cols], i.i.d. N(0, std^2) (weight units) from ``seed``.

    ``start="bin"`` returns those weights, which sit anywhere inside their quantization bins; ``start="grid"``
    replaces them by their dequantized values under ``spec`` (docs/design.md "Calibration": the target replaced by its
    own dequantized weights), so that every weight sits on a level of ``spec``'s grid and quantizing the block again
    gives the same codes. Raises ValueError naming a bad seed, shape, std or start, or a missing ``spec`` for
    ``start="grid"``.
    """
    _seed(seed)
    _positive_int("rows", rows)
    _positive_int("cols", cols)
    if not isinstance(std, (int, float)) or isinstance(std, bool) or not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a positive number, got {std!r}")
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    generator = torch.Generator().manual_seed(seed)
    block = torch.randn(rows, cols, generator=generator) * std
    if start == "grid":
        if spec is None:
            raise ValueError("start 'grid' needs the quantizer (spec) whose grid the weights sit on, got None")
        _check_spec(spec)
        block = quantize_tensor(block, spec).dequant.clone()
    return block


def make_update(block: torch.Tensor, size: float, kind: str = "diffuse", seed: int = 1) -> torch.Tensor:
    """An update dW (float32, ``block``'s shape [rows, cols]) whose RMS per weight is ``size`` (weight units), so
    ||dW||_F = size * sqrt(rows * cols) whatever the kind:

    - ``"diffuse"``: i.i.d. Gaussian, every weight moves by about ``size`` (full fine-tuning, which the papers
      describe as moving weights by ~1e-5 per element at lr 1e-5; docs/design.md "Reference numbers", Mechanism);
    - ``"lowrank"``: rank 1, u v^T with Gaussian u on ceil(rows/8) random rows and Gaussian v on ceil(cols/8) random
      columns: the whole norm sits in about 1/64 of the weights, each moving ~8x ``size`` (a stand-in for a merged
      LoRA update B A carried by a few output features and input directions; arXiv 2602.13151);
    - ``"lowrank-spread"``: rank 1, u v^T with Gaussian u and v over all rows and columns: low rank, but as spread as
      the diffuse update.

    The same ``seed`` gives the same update for every block of that shape. Raises ValueError naming a bad size,
    kind, seed or a block that is not 2-D.
    """
    if not isinstance(block, torch.Tensor) or block.dim() != 2 or block.numel() == 0:
        raise ValueError(f"block must be a non-empty 2-D tensor [rows, cols], got "
                         f"{tuple(block.shape) if isinstance(block, torch.Tensor) else type(block).__name__}")
    if not isinstance(size, (int, float)) or isinstance(size, bool) or not (math.isfinite(size) and size > 0):
        raise ValueError(f"update size must be a positive number, got {size!r}")
    if kind not in UPDATE_KINDS:
        raise ValueError(f"update kind must be one of {', '.join(UPDATE_KINDS)}, got {kind!r}")
    _seed(seed)
    rows, cols = block.shape
    generator = torch.Generator().manual_seed(seed)
    if kind == "diffuse":
        dw = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    else:
        u = torch.randn(rows, generator=generator, dtype=torch.float64)
        v = torch.randn(cols, generator=generator, dtype=torch.float64)
        if kind == "lowrank":
            u = u * _support(rows, -(-rows // CONCENTRATION), generator)
            v = v * _support(cols, -(-cols // CONCENTRATION), generator)
        dw = torch.outer(u, v)
    dw = dw * (size * math.sqrt(rows * cols) / dw.norm())
    return dw.float()


def _support(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """A 0/1 float64 mask [n] with k ones at random places."""
    mask = torch.zeros(n, dtype=torch.float64)
    mask[torch.randperm(n, generator=generator)[:k]] = 1.0
    return mask


def block_stats(w_t: torch.Tensor, w_u: torch.Tensor, spec: QuantSpec) -> dict:
    """What quantization with ``spec`` does to the update dW = W_u - W_t of one block (float [rows, cols] each).

    Returns a dict of Python numbers:
    ``numel``; ``code_flips`` (weights whose code differs between Q(W_t) and Q(W_u)), split into
    ``flips_boundary`` (crossed a rounding boundary: ``qt.grid_codes(W_u) != qt.codes``) and ``flips_scale`` (the
    block/group scale changed); ``code_flip_rate``; ``below_half_step`` (share of weights with |dW| < Δ/2, Δ the
    target's step); ``share_kept`` = <Q(W_u) - Q(W_t), dW> / ||dW||^2 (1 = kept, 0 = erased; docs/design.md
    "Calibration"); ``cosine`` and ``noise_ratio`` = ||Q(W_u) - Q(W_t)|| / ||dW|| (qru.deltas);
    ``median_step`` (weight units); ``update_to_step`` = RMS(dW) / median Δ; ``moved_to_step`` = RMS of the
    non-zero entries of dW / median Δ (larger than ``update_to_step`` for a concentrated update);
    ``expected_flip_rate`` = mean(min(|dW| / Δ, 1)), the flip rate expected if the weights sat uniformly inside
    their bins; ``share_kept_se``, the standard deviation of ``share_kept`` expected from that randomness (each
    weight flips by its step with probability min(|dW|/Δ, 1)): few flips make the share kept of one block noisy.
    Shares are NaN where dW = 0.

    Raises ValueError if the shapes differ or ``spec`` is 32 bits (there is no grid).
    """
    _check_spec(spec)
    if w_t.shape != w_u.shape:
        raise ValueError(f"weight shapes differ: {tuple(w_t.shape)} vs {tuple(w_u.shape)}")
    row, _ = tensor_delta(w_t, w_u, spec)
    qt = quantize_tensor(w_t, spec)
    dw = (w_u.detach().float() - w_t.detach().float()).double()
    step = qt.step.double().clamp(min=1e-30)
    median = float(qt.step.median())
    moved = dw[dw != 0]
    rms = float(dw.pow(2).mean().sqrt())
    p = (dw.abs() / step).clamp(max=1.0)
    dw_sq = float(dw.pow(2).sum())
    se = math.sqrt(float((step.pow(2) * dw.pow(2) * p * (1 - p)).sum())) / dw_sq if dw_sq > 0 else float("nan")
    keys = ("numel", "code_flips", "flips_boundary", "flips_scale", "code_flip_rate", "below_half_step",
            "share_kept", "cosine", "noise_ratio")
    out = {k: (int(row[k]) if isinstance(row[k], (int, np.integer)) else float(row[k])) for k in keys}
    out.update({"median_step": median, "update_to_step": rms / median if median > 0 else float("inf"),
                "moved_to_step": (float(moved.pow(2).mean().sqrt()) / median if moved.numel() and median > 0
                                  else float("nan")),
                "expected_flip_rate": float(p.mean()), "share_kept_se": se})
    return out


def group_levels(w_t: torch.Tensor, spec: QuantSpec, row: int, col: int) -> torch.Tensor:
    """The quantization levels (float32 [L], ascending, weight units) of the block or group of ``w_t``
    [rows, cols] that holds weight (row, col), with the scale (and zero point) quantizing ``w_t`` gives it:
    bitsandbytes 4-bit: the type's levels times the block's absmax (blocks of ``spec.blocksize`` consecutive
    weights, row-major); LLM.int8: k Δ for k in -127..127 with the row's Δ; RTN: (q - z) s over the group's codes q.
    Raises ValueError for a 32-bit spec or a position outside the block."""
    _check_spec(spec)
    rows, cols = w_t.shape
    if not (0 <= row < rows and 0 <= col < cols):
        raise ValueError(f"position ({row}, {col}) is outside the block of shape {tuple(w_t.shape)}")
    w = w_t.detach().float()
    if spec.quant_type in QUANT_TYPES_4BIT:
        start = (row * cols + col) // spec.blocksize * spec.blocksize
        absmax = w.flatten()[start:start + spec.blocksize].abs().max()
        return level_table(spec.quant_type) * absmax
    qt = quantize_tensor(w, spec)
    step = qt.step[row, col]
    if spec.quant_type == "int8":
        return torch.arange(-127, 128, dtype=torch.float32) * step
    q_max = 2 ** (spec.bits - 1) - 1 if spec.quant_type == "rtn-sym" else 2 ** spec.bits - 1
    q_min = -q_max if spec.quant_type == "rtn-sym" else 0
    zero = torch.round(qt.codes[row, col] - qt.dequant[row, col] / step) if step > 0 else torch.tensor(0.0)
    return (torch.arange(q_min, q_max + 1, dtype=torch.float32) - zero) * step


def drawn_group(w_t: torch.Tensor, w_u: torch.Tensor, spec: QuantSpec, width: int | None = None) -> dict:
    """The weights to draw on the grid: the ``width`` consecutive weights of one row (aligned to ``width``) that
    the update moves most (largest ||dW|| over them; the first such window on ties), with their grid. ``width``
    defaults to one block or group of ``spec`` (bitsandbytes 4-bit: its block size; RTN: its group size) and to 64
    where the scale is the whole row's (per-channel RTN, LLM.int8).

    Returns {"row", "col" (first column), "w_t", "w_u", "q_t", "q_u" (float32 [n] each: target, unlearned and their
    dequantized values), "flipped", "crossed" (bool [n]: code flip; boundary crossing), "step" (float32 [n]),
    "levels" (float32 [L], :func:`group_levels` of the first weight)}. With ``width`` >= the quantizer's block or
    group size, the window is one block/group (for per-channel RTN and LLM.int8 the scale is the row's).
    Raises ValueError for mismatched shapes, a bad ``width`` or a 32-bit spec."""
    _check_spec(spec)
    if width is None:
        width = spec.blocksize if spec.quant_type in QUANT_TYPES_4BIT else (spec.is_rtn and spec.group_size) or 64
    _positive_int("width", width)
    if w_t.shape != w_u.shape or w_t.dim() != 2:
        raise ValueError(f"weight shapes differ or are not 2-D: {tuple(w_t.shape)} vs {tuple(w_u.shape)}")
    rows, cols = w_t.shape
    width = min(width, cols)
    dw = (w_u - w_t).double()
    windows = torch.nn.functional.pad(dw.pow(2), (0, -cols % width)).reshape(rows, -1, width).sum(-1)
    flat = int(torch.argmax(windows.flatten()))
    row, col = divmod(flat, windows.shape[1])
    col *= width
    qt, qu = quantize_tensor(w_t, spec), quantize_tensor(w_u, spec)
    window = slice(col, min(col + width, cols))
    return {"row": row, "col": col, "w_t": w_t[row, window].float(), "w_u": w_u[row, window].float(),
            "q_t": qt.dequant[row, window], "q_u": qu.dequant[row, window],
            "flipped": (qt.codes != qu.codes)[row, window], "crossed": (qt.grid_codes(w_u) != qt.codes)[row, window],
            "step": qt.step[row, window], "levels": group_levels(w_t, spec, row, col)}


def boundary_histogram(w_t: torch.Tensor, spec: QuantSpec, bins: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Where the target's weights sit inside their bins: counts (int64 [bins]) of each weight's distance to its
    nearest rounding boundary in steps (QuantizedTensor.boundary / step) on ``bins`` equal bins over [0, 0.5]
    (values above 0.5, which the outermost levels allow, go into the last bin), and the bin edges (float64
    [bins + 1]). About uniform for weights anywhere in their bins of a fine grid; for weights on the grid all at 0.5
    on uniform grids (RTN, LLM.int8: half a step from either boundary), and at half the smaller neighbouring gap on
    the unevenly spaced FP4 / NF4 levels (mostly 0.5, some lower). Raises ValueError for a 32-bit spec or bins < 1."""
    _check_spec(spec)
    _positive_int("bins", bins)
    qt = quantize_tensor(w_t, spec)
    rel = (qt.boundary / qt.step.clamp(min=1e-30)).double().flatten().numpy()
    edges = np.linspace(0.0, 0.5, bins + 1)
    counts, _ = np.histogram(np.clip(rel, 0.0, 0.5), bins=edges)
    return counts.astype(np.int64), edges


def reading(stats: dict, start: str) -> str:
    """One or two sentences (Markdown) saying what ``stats`` (:func:`block_stats`) show for a block that started
    ``start`` ("bin" or "grid"). Raises ValueError for another start."""
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    kept, flips = stats["share_kept"], stats["code_flip_rate"]
    if not math.isfinite(kept):
        return "The update is zero: there is nothing to keep."
    noisy = start == "bin" and stats["share_kept_se"] > 0.2
    if noisy:
        verdict = "too few codes flipped in one block to tell"
    else:
        verdict = ("quantization kept the update" if kept >= 0.8 else "quantization erased most of the update"
                   if kept <= 0.2 else "quantization kept part of the update")
    text = (f"**{verdict}** (share kept {kept:.2f}); {flips:.3%} of the codes flipped, against "
            f"{stats['expected_flip_rate']:.3%} expected if the weights sat uniformly inside their bins.")
    if noisy:
        text += (f" This block's share kept is noisy (± {stats['share_kept_se']:.2f}): a whole model's millions of "
                 "weights average it out, and on average rounding keeps an update of weights anywhere in their bins.")
    elif kept > 1.2:
        text += " Above 1: the flips overshoot the update (each moves a whole step), more than the noise explains."
    return text


__all__ = ["UPDATE_SIZES", "STARTS", "UPDATE_KINDS", "QUANTIZERS", "BLOCK_SHAPE", "WEIGHT_STD", "CONCENTRATION",
           "bit_choices", "quantizer_spec", "make_block", "make_update", "block_stats", "group_levels",
           "drawn_group", "boundary_histogram", "reading"]
