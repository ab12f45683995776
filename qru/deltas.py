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

import numpy as np
import pandas as pd
import torch

from qru.quant.bnb import QuantizedTensor, quantizable_linears, quantize_tensor
from qru.quant.spec import QuantSpec

# |dW| in weight units, 1e-10 .. 1 (values outside are clipped into the end bins; exact zeros counted apart).
ABS_EDGES = np.logspace(-10, 0, 101)
# |dW| / Δ, 1e-6 .. 100.
REL_EDGES = np.logspace(-6, 2, 81)
MODULE_TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def log_histogram(values: torch.Tensor, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts (int64 [len(edges)-1]) of the non-zero ``values`` on ``edges`` (clipped into the end bins), and the
    number of exact zeros."""
    # float32 compared with float64 edges in blocks: exact, half the memory
    v = values.detach().flatten().float().cpu().numpy()
    nonzero = v[v != 0]
    zeros = int(v.size - nonzero.size)
    np.clip(nonzero, edges[0], edges[-1], out=nonzero)
    counts, _ = np.histogram(nonzero, bins=edges)
    return counts.astype(np.int64), zeros


def _layer_and_module(name: str) -> tuple[int, str]:
    parts = name.split(".")
    layer = next((int(p) for p in parts if p.isdigit()), -1)
    return layer, parts[-1]


def _sums(dw: torch.Tensor, dq: torch.Tensor) -> dict:
    """||dW||^2, ||dQ||^2 and <dQ, dW>, accumulated in float64."""
    dw64, dq64 = dw.flatten().double(), dq.flatten().double()
    return {"dw_sq": float(torch.dot(dw64, dw64)), "dq_sq": float(torch.dot(dq64, dq64)),
            "dot": float(torch.dot(dw64, dq64))}


def ratios(sums: dict) -> dict:
    """share_kept, cosine and noise_ratio from the sums ||dW||^2, ||dQ||^2 and <dQ, dW> (NaN where dW = 0)."""
    dw_sq, dq_sq, dot = sums["dw_sq"], sums["dq_sq"], sums["dot"]
    if dw_sq == 0:
        return {"share_kept": float("nan"), "cosine": float("nan"), "noise_ratio": float("nan")}
    cos = dot / np.sqrt(dw_sq * dq_sq) if dq_sq > 0 else 0.0
    return {"share_kept": dot / dw_sq, "cosine": float(cos), "noise_ratio": float(np.sqrt(dq_sq / dw_sq))}


def float_delta(w_target: torch.Tensor, w_unlearned: torch.Tensor) -> tuple[torch.Tensor, dict, np.ndarray]:
    """dW = W_u - W_t (float32, the weights' shape), its quantizer-independent row entries (numel, zero_delta,
    mean_abs_delta, max_abs_delta) and the counts of |dW| on ABS_EDGES (int64 [100]).
    Raises ValueError if the shapes differ."""
    if w_target.shape != w_unlearned.shape:
        raise ValueError(f"weight shapes differ: {tuple(w_target.shape)} vs {tuple(w_unlearned.shape)}")
    dw = w_unlearned.detach().float() - w_target.detach().float()
    size = dw.abs()
    abs_counts, zeros = log_histogram(size, ABS_EDGES)
    row = {"numel": dw.numel(), "zero_delta": zeros,
           "mean_abs_delta": float(size.double().mean()) if dw.numel() else 0.0,
           "max_abs_delta": float(size.max()) if dw.numel() else 0.0}
    return dw, row, abs_counts


def quantized_delta(w_target: torch.Tensor, w_unlearned: torch.Tensor, dw: torch.Tensor,
                    spec: QuantSpec, quantized: tuple[QuantizedTensor, QuantizedTensor] | None = None
                    ) -> tuple[dict, dict]:
    """The quantizer-dependent statistics of one weight pair (float, same shape [out, in]; ``dw`` = W_u - W_t)
    under ``spec`` (see the module docstring): a row (median_step, below_half_step, code_flips, code_flip_rate,
    flips_boundary, flips_scale, the sums and ratios) and histograms {"rel", "dq", "bnd", "bndrel"} (int64 [n_bins];
    all None at 32 bits). ``quantized`` = (Q(W_t), Q(W_u)) where the quantizer is not per tensor (GPTQ, qru.quant.gptq:
    each side calibrated in its own model). Raises ValueError where the quantizer cannot take the weight."""
    if spec.bits == 32:
        row = {"median_step": float("nan"), "below_half_step": float("nan"), "code_flips": 0,
               "code_flip_rate": float("nan"), "flips_boundary": 0, "flips_scale": 0, **_sums(dw, dw)}
        row.update(ratios(row))
        return row, {"rel": None, "dq": None, "bnd": None, "bndrel": None}
    wt, wu = w_target.detach().float(), w_unlearned.detach().float()
    if quantized is not None:
        qt, qu = quantized
    elif spec.is_gptq:
        raise ValueError(f"{spec.key}: GPTQ quantizes whole models with calibration text; pass its result")
    else:
        qt, qu = quantize_tensor(wt, spec), quantize_tensor(wu, spec, detail=False)
    flipped = qt.codes != qu.codes
    dq = qu.dequant - qt.dequant
    del qu  # peak memory: only one quantized copy of each side at a time
    crossed = qt.grid_codes(wu) != qt.codes  # the code W_u gets on the target's own grid (scales kept)
    flips = int(flipped.sum())
    row = {"code_flips": flips, "code_flip_rate": flips / max(dw.numel(), 1),
           "flips_boundary": int((flipped & crossed).sum()), "flips_scale": int((flipped & ~crossed).sum()),
           **_sums(dw, dq)}
    del flipped, crossed, qt.codes
    hists = {"dq": log_histogram(dq.abs(), ABS_EDGES)[0]}
    del dq
    step = qt.step.clamp(min=1e-30)
    rel = dw.abs().div_(step)
    row.update({"median_step": float(qt.step.median()), "below_half_step": float((rel < 0.5).double().mean())})
    hists["rel"] = log_histogram(rel, REL_EDGES)[0]
    del rel
    hists["bnd"] = log_histogram(qt.boundary, ABS_EDGES)[0]
    hists["bndrel"] = log_histogram(qt.boundary.div_(step), REL_EDGES)[0]
    row.update(ratios(row))
    return row, {k: hists[k] for k in ("rel", "dq", "bnd", "bndrel")}


def tensor_delta(w_target: torch.Tensor, w_unlearned: torch.Tensor, spec: QuantSpec) -> tuple[dict, dict]:
    """Statistics and histograms of one weight pair (both float, same shape [out, in]) under ``spec``.

    Returns ``(row, hists)``: row = counts, sums and ratios (see the module docstring); hists = {"abs": counts of
    |dW| on ABS_EDGES, "rel": counts of |dW|/Δ on REL_EDGES, "dq": counts of |Q(W_u) - Q(W_t)| on ABS_EDGES, "bnd":
    the target weights' distance to their nearest rounding boundary on ABS_EDGES, "bndrel": the same in steps on
    REL_EDGES; all but "abs" None at 32 bits}, all int64 [n_bins] over non-zero values.
    Raises ValueError if the shapes differ.
    """
    dw, row, abs_counts = float_delta(w_target, w_unlearned)
    q_row, hists = quantized_delta(w_target, w_unlearned, dw, spec)
    return {**row, **q_row}, {"abs": abs_counts, **hists}


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
         calibrated: dict[str, dict[str, tuple[QuantizedTensor, QuantizedTensor]]] | None = None
         ) -> tuple[list[dict], dict]:
    """Delta statistics of every weight pair under every quantizer in ``specs``, one pair at a time, so that a
    streamed source needs memory for a few tensors only.

    ``pairs`` yields (tensor name, W_t, W_u) (float, same shape [out, in]). Returns ``(rows, hists)``: one row per
    (quantizer, tensor) plus a ``total`` row per quantizer, with ``quantizer`` (QuantSpec.key), ``bits``, ``quant``,
    ``tensor``, ``layer``, ``module`` and the entries of :func:`tensor_delta`; hists = {"abs": int64 [n_tensors + 1,
    100], "<view>_<quantizer key>": int64 [n_tensors + 1, n_bins] for the views rel, dq, bnd, bndrel of every
    quantizer below 32 bits}, rows in tensor order, the last one the total. ``progress(i, name)`` is called before
    each tensor. ``calibrated[spec key][tensor name]`` = (Q(W_t), Q(W_u)) of model-level quantizers (GPTQ).
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
        dw, base, abs_counts = float_delta(wt, wu)
        hist_rows["abs"].append(abs_counts)
        layer, module = _layer_and_module(name)
        for spec in specs:
            given = (calibrated or {}).get(spec.key, {}).get(name)
            q_row, hists = quantized_delta(wt, wu, dw, spec, given)
            by_spec[spec.key].append({"quantizer": spec.key, "bits": spec.bits, "quant": spec.quant_type,
                                      "tensor": name, "layer": layer, "module": module, **base, **q_row})
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
