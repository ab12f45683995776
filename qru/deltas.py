"""Weight deltas against the quantizer's step size, per quantized Linear layer and in total.

For each quantized weight W (target W_t, unlearned W_u, dW = W_u - W_t, Q = the quantizer, Δ = the step size of
W_t's quantization, docs/design.md "Terms"):

- histograms of |dW| and of |dW|/Δ, and of the dequantized delta |Q(W_u) - Q(W_t)|, on fixed log-spaced bins,
  stored pre-binned (never raw arrays; exact zeros counted apart);
- ``below_half_step``: share of weights with |dW| < Δ/2, the largest change that rounding can hide;
- ``code_flip_rate``: share of weights whose quantization level differs between Q(W_t) and Q(W_u), split into
  ``flips_boundary`` (W_u's code on the target's own grid, scales kept, already differs: the weight crossed a rounding
  boundary) and ``flips_scale`` (it does not: the code changed because the block's scale changed);
- the distance of each target weight to its nearest rounding boundary, in weight units and in steps (histograms
  ``bnd`` and ``bndrel``): how large an update must be to flip a given share of weights;
- ``share_kept`` = <Q(W_u) - Q(W_t), dW> / ||dW||^2: the share of the update that survives quantization
  (1 = kept on average, 0 = erased; docs/design.md "Calibration");
- ``cosine`` between Q(W_u) - Q(W_t) and dW;
- ``noise_ratio`` = ||Q(W_u) - Q(W_t)|| / ||dW||: the ratio the papers' explanation suggests. It is not survival:
  rounding adds noise, so it exceeds 1 even where the update is kept.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import math

import numpy as np
import pandas as pd
import torch

from qru.histograms import log_counts
from qru.quant.bnb import QuantizedTensor, quantizable_linears, quantize_tensor
from qru.quant.spec import QUANT_TYPES_4BIT, QuantSpec

# |dW| in weight units, 1e-10 .. 1 (values outside are clipped into the end bins; exact zeros counted apart).
ABS_EDGES = np.logspace(-10, 0, 101)
# |dW| / Δ, 1e-6 .. 100.
REL_EDGES = np.logspace(-6, 2, 81)
CHUNK_WEIGHTS = 1 << 18  # weights per row chunk of the scan on a CPU: its temporaries stay in the cache
GPU_CHUNK_WEIGHTS = 1 << 24  # on a GPU
MODULE_TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def log_histogram(values: torch.Tensor, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts (int64 [len(edges)-1]) of the non-zero ``values`` on ``edges`` (clipped into the end bins), and the
    number of exact zeros (qru.histograms.log_counts, exact)."""
    counts, zeros = log_counts(values.detach(), edges)
    return counts.cpu().numpy().astype(np.int64), zeros


def _layer_and_module(name: str) -> tuple[int, str]:
    parts = name.split(".")
    layer = next((int(p) for p in parts if p.isdigit()), -1)
    return layer, parts[-1]


def ratios(sums: dict) -> dict:
    """share_kept, cosine and noise_ratio from the sums ||dW||^2, ||dQ||^2 and <dQ, dW> (NaN where dW = 0)."""
    dw_sq, dq_sq, dot = sums["dw_sq"], sums["dq_sq"], sums["dot"]
    if dw_sq == 0:
        return {"share_kept": float("nan"), "cosine": float("nan"), "noise_ratio": float("nan")}
    cos = dot / np.sqrt(dw_sq * dq_sq) if dq_sq > 0 else 0.0
    return {"share_kept": dot / dw_sq, "cosine": float(cos), "noise_ratio": float(np.sqrt(dq_sq / dw_sq))}


def row_chunks(shape: tuple[int, ...], spec: QuantSpec | None = None, budget: int | None = None) -> list[slice]:
    """Row slices of a weight [out, in] of about ``budget`` (default CHUNK_WEIGHTS) weights each, so that no rounding block is cut:
    bitsandbytes 4-bit blocks run over consecutive weights in row-major order, so a chunk's weight count is a
    multiple of ``spec.blocksize`` (the last chunk keeps the remainder, as bitsandbytes' last block does); RTN
    groups and LLM.int8 rows lie inside one row."""
    rows, cols = shape[0], int(np.prod(shape[1:])) if len(shape) > 1 else 1
    step = max(1, (budget or CHUNK_WEIGHTS) // max(cols, 1))
    if spec is not None and spec.quant_type in QUANT_TYPES_4BIT:
        align = spec.blocksize // math.gcd(cols, spec.blocksize)
        step = max(align, step // align * align)
    return [slice(r, min(r + step, rows)) for r in range(0, rows, step)]


def _budget(t: torch.Tensor) -> int:
    """Weights per chunk: cache-sized on a CPU, large on a GPU (where each operation costs a kernel launch)."""
    return CHUNK_WEIGHTS if t.device.type == "cpu" else GPU_CHUNK_WEIGHTS


def _wide(t: torch.Tensor, rows: slice) -> torch.Tensor:
    """Rows of a weight as float32 (bf16 / fp16 widened here, chunk by chunk)."""
    part = t[rows]
    return part if part.dtype == torch.float32 else part.float()


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a.reshape(-1).double(), b.reshape(-1).double()))


def float_delta(w_target: torch.Tensor, w_unlearned: torch.Tensor) -> tuple[dict, np.ndarray]:
    """The quantizer-independent entries of one weight pair (float, same shape [out, in]; read in row chunks, so
    bf16 / fp16 weights are widened a chunk at a time): numel, zero_delta, mean_abs_delta, max_abs_delta, dw_sq
    (||dW||^2 in float64) and the counts of |dW| on ABS_EDGES (int64 [100]), dW = W_u - W_t.
    Raises ValueError if the shapes differ."""
    if w_target.shape != w_unlearned.shape:
        raise ValueError(f"weight shapes differ: {tuple(w_target.shape)} vs {tuple(w_unlearned.shape)}")
    counts, zeros, total, top, dw_sq = torch.zeros(len(ABS_EDGES) - 1, dtype=torch.long,
                                                   device=w_target.device), 0, 0.0, 0.0, 0.0
    for rows in row_chunks(tuple(w_target.shape), budget=_budget(w_target)):
        dw = _wide(w_unlearned, rows) - _wide(w_target, rows)
        size = dw.abs()
        c, z = log_counts(size, ABS_EDGES)
        counts += c
        zeros += z
        total += float(size.sum(dtype=torch.float64))
        top = max(top, float(size.max())) if size.numel() else top
        dw_sq += _dot(dw, dw)
    numel = w_target.numel()
    row = {"numel": numel, "zero_delta": zeros, "mean_abs_delta": total / numel if numel else 0.0,
           "max_abs_delta": top, "dw_sq": dw_sq}
    return row, counts.cpu().numpy()


def _given_parts(quantized: tuple[QuantizedTensor, QuantizedTensor], wt: torch.Tensor, wu: torch.Tensor):
    """One chunk: the whole tensor, quantized by the caller (GPTQ)."""
    qt, qu = quantized
    t, u = wt.float(), wu.float()
    yield slice(None), t, u, qt, qu.codes, qu.dequant, qt.grid_codes(u)


def _parts(wt: torch.Tensor, wu: torch.Tensor, spec: QuantSpec):
    """(rows, W_t and W_u in float32, Q(W_t) with detail, Q(W_u)'s codes, Q(W_u), W_u's codes on W_t's grid) per
    row chunk."""
    for rows in row_chunks(tuple(wt.shape), spec, _budget(wt)):
        t, u = _wide(wt, rows), _wide(wu, rows)
        qt, qu = quantize_tensor(t, spec), quantize_tensor(u, spec, detail=False)
        yield rows, t, u, qt, qu.codes, qu.dequant, qt.grid_codes(u)


def quantized_delta(w_target: torch.Tensor, w_unlearned: torch.Tensor, spec: QuantSpec,
                    quantized: tuple[QuantizedTensor, QuantizedTensor] | None = None) -> tuple[dict, dict]:
    """The quantizer-dependent statistics of one weight pair (float, same shape [out, in]) under ``spec`` (see the
    module docstring), computed in row chunks that keep rounding blocks whole (:func:`row_chunks`): a row
    (median_step, below_half_step, code_flips, code_flip_rate, flips_boundary, flips_scale, dq_sq, dot) and
    histograms {"rel", "dq", "bnd", "bndrel"} (int64 [n_bins]; all None at 32 bits). ``quantized`` = (Q(W_t),
    Q(W_u)) where the quantizer is not per tensor (GPTQ, qru.quant.gptq: each side calibrated in its own model).
    Memory: the two weights, one float32 copy of the step sizes (for the exact median) and a chunk's temporaries.
    Raises ValueError where the quantizer cannot take the weight."""
    if spec.bits == 32:
        return {"median_step": float("nan"), "below_half_step": float("nan"), "code_flips": 0,
                "code_flip_rate": float("nan"), "flips_boundary": 0, "flips_scale": 0}, \
            {"rel": None, "dq": None, "bnd": None, "bndrel": None}
    if quantized is None and spec.is_gptq:
        raise ValueError(f"{spec.key}: GPTQ quantizes whole models with calibration text; pass its result")
    dev, numel = w_target.device, w_target.numel()
    hists = {view: torch.zeros(len(edges) - 1, dtype=torch.long, device=dev)
             for view, edges in (("rel", REL_EDGES), ("dq", ABS_EDGES), ("bnd", ABS_EDGES), ("bndrel", REL_EDGES))}
    acc = {"code_flips": 0, "flips_boundary": 0, "flips_scale": 0, "below": 0, "dq_sq": 0.0, "dot": 0.0}
    steps = torch.empty(w_target.shape, dtype=torch.float32, device=dev)
    parts = _given_parts(quantized, w_target, w_unlearned) if quantized is not None else \
        _parts(w_target, w_unlearned, spec)
    for rows, t, u, qt, codes_u, dequant_u, grid_u in parts:
        dw = u - t
        flipped = qt.codes != codes_u
        crossed = grid_u != qt.codes  # the code W_u gets on the target's own grid (scales kept)
        acc["code_flips"] += int(torch.count_nonzero(flipped))
        acc["flips_boundary"] += int(torch.count_nonzero(flipped & crossed))
        acc["flips_scale"] += int(torch.count_nonzero(flipped & ~crossed))
        dq = dequant_u - qt.dequant
        acc["dq_sq"] += _dot(dq, dq)
        acc["dot"] += _dot(dw, dq)
        hists["dq"] += log_counts(dq.abs_(), ABS_EDGES)[0]
        steps[rows] = qt.step
        step = qt.step.clamp(min=1e-30)
        rel = dw.abs_().div_(step)
        acc["below"] += int(torch.count_nonzero(rel < 0.5))
        hists["rel"] += log_counts(rel, REL_EDGES)[0]
        hists["bnd"] += log_counts(qt.boundary, ABS_EDGES)[0]
        hists["bndrel"] += log_counts(qt.boundary.div_(step), REL_EDGES)[0]
    row = {"median_step": float(steps.median()), "below_half_step": acc.pop("below") / max(numel, 1),
           "code_flip_rate": acc["code_flips"] / max(numel, 1), **acc}
    return row, {k: v.cpu().numpy() for k, v in hists.items()}


def tensor_delta(w_target: torch.Tensor, w_unlearned: torch.Tensor, spec: QuantSpec) -> tuple[dict, dict]:
    """Statistics and histograms of one weight pair (both float, same shape [out, in]) under ``spec``.

    Returns ``(row, hists)``: row = counts, sums and ratios (see the module docstring); hists = {"abs": counts of
    |dW| on ABS_EDGES, "rel": counts of |dW|/Δ on REL_EDGES, "dq": counts of |Q(W_u) - Q(W_t)| on ABS_EDGES, "bnd":
    the target weights' distance to their nearest rounding boundary on ABS_EDGES, "bndrel": the same in steps on
    REL_EDGES; all but "abs" None at 32 bits}, all int64 [n_bins] over non-zero values.
    Raises ValueError if the shapes differ.
    """
    base, abs_counts = float_delta(w_target, w_unlearned)
    q_row, hists = quantized_delta(w_target, w_unlearned, spec)
    return combine(base, q_row, spec), {"abs": abs_counts, **hists}


def combine(base: dict, q_row: dict, spec: QuantSpec) -> dict:
    """One row from :func:`float_delta`'s and :func:`quantized_delta`'s entries, with the ratios (at 32 bits
    Q(W) = W, so dQ = dW)."""
    row = {**base, **({"dq_sq": base["dw_sq"], "dot": base["dw_sq"]} if spec.bits == 32 else {}), **q_row}
    row.update(ratios(row))
    return row


def weight_pairs(target: torch.nn.Module, unlearned: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, W_t, W_u) of every quantizable Linear of two models, in model order (names without ``.weight``).
    Raises ValueError if the two models' Linear layers differ."""
    lin_t, lin_u = quantizable_linears(target), quantizable_linears(unlearned)
    if list(lin_t) != list(lin_u):
        raise ValueError("target and unlearned models have different Linear layers")
    for name, mod in lin_t.items():
        yield name, mod.weight, lin_u[name].weight


def scan(pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor]], specs: list[QuantSpec],
         progress: Callable[[int, str], None] | None = None,
         calibrated: dict[str, dict[str, tuple[QuantizedTensor, QuantizedTensor]]] | None = None,
         device: str | torch.device | None = None) -> tuple[list[dict], dict]:
    """Delta statistics of every weight pair under every quantizer in ``specs``, one pair at a time, so that a
    streamed source needs memory for a few tensors only.

    ``pairs`` yields (tensor name, W_t, W_u) (float, same shape [out, in]). Returns ``(rows, hists)``: one row per
    (quantizer, tensor) plus a ``total`` row per quantizer, with ``quantizer`` (QuantSpec.key), ``bits``, ``quant``,
    ``tensor``, ``layer``, ``module`` and the entries of :func:`tensor_delta`; hists = {"abs": int64 [n_tensors + 1,
    100], "<view>_<quantizer key>": int64 [n_tensors + 1, n_bins] for the views rel, dq, bnd, bndrel of every
    quantizer below 32 bits}, rows in tensor order, the last one the total. ``progress(i, name)`` is called before
    each tensor. ``calibrated[spec key][tensor name]`` = (Q(W_t), Q(W_u)) of model-level quantizers (GPTQ).
    ``device``: where each pair is analysed (moved there as stored, widened to float32 a row chunk at a time;
    None: where its tensors are); on CUDA, LLM.int8 rounds with bitsandbytes' CUDA kernel, the 4-bit formats and RTN
    with qru's torch code (the same as on a CPU). Each tensor pair is read once for all quantizers.
    Raises ValueError if there is no pair, two names repeat, or a pair's shapes differ.
    """
    by_spec: dict[str, list[dict]] = {s.key: [] for s in specs}
    hist_rows: dict[str, list[np.ndarray]] = {"abs": []}
    names: set[str] = set()
    for i, (name, wt, wu) in enumerate(pairs):
        if name in names:
            raise ValueError(f"tensor {name!r} appears twice")
        names.add(name)
        if progress:
            progress(i, name)
        wt, wu = (wt.detach(), wu.detach()) if device is None else (wt.detach().to(device), wu.detach().to(device))
        base, abs_counts = float_delta(wt, wu)
        hist_rows["abs"].append(abs_counts)
        layer, module = _layer_and_module(name)
        for spec in specs:
            given = (calibrated or {}).get(spec.key, {}).get(name)
            q_row, hists = quantized_delta(wt, wu, spec, given)
            by_spec[spec.key].append({"quantizer": spec.key, "bits": spec.bits, "quant": spec.quant_type,
                                      "tensor": name, "layer": layer, "module": module,
                                      **combine(base, q_row, spec)})
            for view, counts in hists.items():
                if counts is not None:
                    hist_rows.setdefault(f"{view}_{spec.key}", []).append(counts)
    if not names:
        raise ValueError("no weight pairs to compare")
    rows = []
    for spec in specs:
        rows += by_spec[spec.key] + [{"quantizer": spec.key, "bits": spec.bits, "quant": spec.quant_type,
                                      **total_row(by_spec[spec.key])}]
    return rows, {k: np.vstack(h + [np.sum(h, axis=0)]) for k, h in hist_rows.items()}


def deltas_files(rows: list[dict], hists: dict) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """What the run store keeps of :func:`scan`'s result: the rows as a table (deltas.parquet) and the histograms
    with their bin edges and the tensor names of their rows (deltas_hist.npz)."""
    first = rows[0]["quantizer"]
    tensors = [r["tensor"] for r in rows if r["quantizer"] == first]
    return pd.DataFrame(rows), {"abs_edges": ABS_EDGES, "rel_edges": REL_EDGES,
                                "tensors": np.array(tensors, dtype=str), **hists}


def model_deltas(target: torch.nn.Module, unlearned: torch.nn.Module, spec: QuantSpec) -> tuple[list[dict], dict]:
    """:func:`tensor_delta` for every quantizable Linear, plus a ``total`` row over all of them.

    Returns ``(rows, hists)``: rows carry ``tensor``, ``layer`` and ``module``; hists maps each key of
    :func:`tensor_delta`'s histograms to int64 arrays [n_tensors + 1, n_bins] in row order (the last row is the
    total; all but "abs" are None at 32 bits).
    Raises ValueError if the two models' Linear layers differ.
    """
    rows, hists = scan(weight_pairs(target, unlearned), [spec])
    rows = [{k: v for k, v in r.items() if k not in ("quantizer", "bits", "quant")} for r in rows]
    return rows, {view: hists.get(f"{view}_{spec.key}") if view != "abs" else hists["abs"]
                  for view in ("abs", "rel", "dq", "bnd", "bndrel")}


def total_row(rows: list[dict]) -> dict:
    """The ``total`` row over per-tensor rows: counts and sums added, shares weighted by weight count."""
    numel = sum(r["numel"] for r in rows)
    total = {"tensor": "total", "layer": -1, "module": "all", "numel": numel}
    for key in ("zero_delta", "code_flips", "flips_boundary", "flips_scale", "dw_sq", "dq_sq", "dot"):
        total[key] = sum(r[key] for r in rows)
    total["mean_abs_delta"] = sum(r["mean_abs_delta"] * r["numel"] for r in rows) / numel
    total["max_abs_delta"] = max(r["max_abs_delta"] for r in rows)
    total["median_step"] = float(np.nanmedian([r["median_step"] for r in rows])) \
        if not all(np.isnan(r["median_step"]) for r in rows) else float("nan")
    total["below_half_step"] = sum(r["below_half_step"] * r["numel"] for r in rows) / numel
    total["code_flip_rate"] = total["code_flips"] / numel if not np.isnan(total["below_half_step"]) else float("nan")
    total.update(ratios(total))
    return total
