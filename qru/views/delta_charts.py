"""Weight-delta charts from the stored, pre-binned histograms (``deltas_hist.npz``) and per-tensor rows
(``deltas.parquet``): whatever the model size, a figure carries a few hundred numbers.

Three views of the same update (qru.deltas): the float delta |dW| = |W_u - W_t| before quantization, the same in
units of the target's quantization step |dW|/Δ, and the dequantized delta |Q(W_u) - Q(W_t)| (what quantization
leaves of it). The vertical line is half a step, the largest change that rounding can hide.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from qru.deltas import MODULE_TYPES
from qru.quant.spec import QuantSpec
from qru.store import SUMMARY_COLUMNS
from qru.views.text import as_plot_text

MODES = {
    "abs": "float delta |W_u − W_t| (before quantization)",
    "rel": "float delta in steps |W_u − W_t| / Δ",
    "dq": "dequantized delta |Q(W_u) − Q(W_t)| (after quantization)",
    "bnd": "target weights' distance to the nearest rounding boundary",
}
LAYER_VALUES = {"code_flip_rate": "code-flip rate (share of weights whose quantized code changed)",
                "share_kept": "share of the update kept <Q(W_u)−Q(W_t), dW> / ||dW||² (1 kept, 0 erased)",
                "below_half_step": "share of weights with |dW| < Δ/2",
                "scale_changed": "share of weights whose code changed because the block's scale changed"}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


@dataclass
class HistSeries:
    """One run's histogram in one view: ``counts`` (int [n_bins]) of non-zero values on ``edges`` (n_bins + 1,
    positive, log-spaced), ``zeros`` values exactly 0 (not drawn), ``numel`` weights in all, ``line`` the x position
    of the marked threshold (None at 32 bits) and ``note`` the shares on each side."""

    name: str
    counts: np.ndarray
    edges: np.ndarray
    zeros: int
    numel: int
    line: float | None
    note: str


def delta_row(deltas: pd.DataFrame, quantizer: str, tensor: str) -> pd.Series:
    """The stored statistics row of ``tensor`` ("total" = all quantized Linear layers) under the quantizer with key
    ``quantizer`` (QuantSpec.key). Raises KeyError if the run has no such row."""
    rows = deltas[(deltas["quantizer"] == quantizer) & (deltas["tensor"] == tensor)]
    if rows.empty:
        raise KeyError(f"no delta statistics for {tensor} under {_label(quantizer)}")
    return rows.iloc[0]


def _label(key: str) -> str:
    try:
        return QuantSpec.from_key(key).label
    except ValueError:
        return key


def hist_series(name: str, hists: dict, deltas: pd.DataFrame, tensor: str, mode: str, quantizer: str) -> HistSeries:
    """The :class:`HistSeries` of a run (its ``hists`` and ``deltas`` as stored) for one tensor, view and quantizer
    key. Raises KeyError where the run lacks that view (32 bits for all but "abs"; runs stored before a view),
    quantizer or tensor."""
    if mode not in MODES:
        raise KeyError(f"unknown view {mode!r}")
    row = delta_row(deltas, quantizer, tensor)
    if tensor not in list(hists["tensors"]):
        raise KeyError(f"no histogram of {tensor}")
    index = list(hists["tensors"]).index(tensor)
    numel = int(row["numel"])
    quantized = not quantizer.endswith("@32")
    below = float(row["below_half_step"]) if quantized else float("nan")
    sides = f"{below:.1%} of weights below half a step, {1 - below:.1%} above" if quantized else "no quantization"
    if mode == "abs":
        return HistSeries(name, hists["abs"][index], hists["abs_edges"], int(row["zero_delta"]), numel,
                          row["median_step"] / 2 if quantized else None, sides)
    key = f"{mode}_{quantizer}"
    if key not in hists:
        raise KeyError(f"this run has no {MODES[mode]} histogram under {_label(quantizer)}")
    counts = hists[key][index]
    if mode == "rel":
        return HistSeries(name, counts, hists["rel_edges"], int(row["zero_delta"]), numel, 0.5, sides)
    if mode == "bnd":
        mean = float(row["mean_abs_delta"])
        within = counts[hists["abs_edges"][1:] <= mean].sum() / max(numel, 1)  # bins wholly below the mean
        return HistSeries(name, counts, hists["abs_edges"], numel - int(counts.sum()), numel, mean,
                          f"≥{within:.1%} of target weights lie closer to a boundary than this run's mean |dW|")
    moved, flips = int(counts.sum()), float(row["code_flip_rate"])
    return HistSeries(name, counts, hists["abs_edges"], numel - moved, numel, float(row["median_step"]),
                      f"{flips:.1%} of weights changed code, {moved / numel:.1%} changed value (code or block "
                      "scale)")


def flip_summary(row: pd.Series) -> dict:
    """The summary columns of a stored delta row (qru.store.SUMMARY_COLUMNS), plus ``flips_by_scale``: the share of
    code flips caused by a changed block scale rather than a boundary crossing (NaN where not stored or no flips)."""
    out = row[SUMMARY_COLUMNS].to_dict()
    flips = row.get("code_flips", 0)
    out["flips_by_scale"] = row["flips_scale"] / flips if "flips_scale" in row and flips else float("nan")
    return out


def histogram_figure(series: list[HistSeries], mode: str, title: str) -> go.Figure:
    """Overlaid bar histograms (share of weights, %) on a log10 x axis, with each run's threshold line."""
    fig = go.Figure()
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        logs = np.log10(s.edges)
        share = 100 * s.counts / max(s.numel, 1)
        keep = s.counts > 0
        fig.add_bar(x=((logs[:-1] + logs[1:]) / 2)[keep], y=share[keep], width=np.diff(logs)[keep],
                    name=as_plot_text(f"{s.name}: {s.note}; {s.zeros / max(s.numel, 1):.1%} exactly 0 (not drawn)"),
                    marker_color=color, opacity=0.55,
                    customdata=np.stack([s.edges[:-1], s.edges[1:]], axis=1)[keep],
                    hovertemplate="%{customdata[0]:.2e} – %{customdata[1]:.2e}: %{y:.3f}% of weights<extra></extra>")
    _threshold_lines(fig, series, mode)
    lo, hi = _x_range(series)
    ticks = list(range(lo, hi + 1))
    fig.update_layout(barmode="overlay", title=as_plot_text(title), bargap=0, height=430, margin=dict(t=60, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
                      xaxis=dict(title=MODES[mode] + " (log scale)", tickvals=ticks,
                                 ticktext=[f"1e{t}" for t in ticks], range=[lo, hi]),
                      yaxis_title="% of weights")
    return fig


def _threshold_lines(fig: go.Figure, series: list[HistSeries], mode: str) -> None:
    """One dashed line per distinct threshold (runs on the same target share it: drawn once, in grey)."""
    lines: dict[float, list[int]] = {}
    for i, s in enumerate(series):
        if s.line is not None and np.isfinite(s.line) and s.line > 0:
            lines.setdefault(float(f"{s.line:.3g}"), []).append(i)
    label = {"abs": "Δ/2 (median)", "rel": "half a step", "dq": "Δ (median)", "bnd": "mean |dW|"}[mode]
    for n, (x, owners) in enumerate(sorted(lines.items())):
        color = COLORS[owners[0] % len(COLORS)] if len(owners) == 1 and len(series) > 1 else "#444"
        fig.add_vline(x=float(np.log10(x)), line_dash="dash", line_color=color,
                      annotation_text=label if mode == "rel" else f"{label} = {x:.2g}",
                      annotation_position="top left" if n % 2 else "top right")


def _x_range(series: list[HistSeries]) -> tuple[int, int]:
    lows, highs = [], []
    for s in series:
        nz = np.nonzero(s.counts)[0]
        logs = np.log10(s.edges)
        if nz.size:
            lows.append(logs[nz[0]])
            highs.append(logs[nz[-1] + 1])
        if s.line and np.isfinite(s.line) and s.line > 0:
            lows.append(np.log10(s.line))
            highs.append(np.log10(s.line))
    if not lows:
        return -6, 0
    return int(np.floor(min(lows))) - 1, int(np.ceil(max(highs))) + 1


def layer_table(deltas: pd.DataFrame, quantizer: str, value: str) -> pd.DataFrame:
    """``value`` per layer (rows) and module type (columns q, k, v, o, gate, up, down, then any others) under the
    quantizer with key ``quantizer``."""
    rows = deltas[(deltas["quantizer"] == quantizer) & (deltas["tensor"] != "total")]
    if value == "scale_changed":
        if "flips_scale" not in rows.columns:
            return pd.DataFrame()
        rows = rows.assign(scale_changed=rows["flips_scale"] / rows["numel"])
    table = rows.pivot_table(index="layer", columns="module", values=value, aggfunc="mean")
    return table[[m for m in MODULE_TYPES if m in table.columns] + sorted(set(table.columns) - set(MODULE_TYPES))]


def shared_zmax(deltas: list[pd.DataFrame], quantizer: str, value: str) -> float:
    """The largest finite :func:`layer_table` value over several runs (one colour scale for all; 1 if none)."""
    values = np.concatenate([layer_table(d, quantizer, value).to_numpy(dtype=float).ravel() for d in deltas] + [[]])
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def layer_heatmap(deltas: pd.DataFrame, quantizer: str, value: str, title: str,
                  zmax: float | None = None) -> go.Figure:
    """Heatmap of :func:`layer_table` with the values written in the cells, colour scale 0..``zmax`` (pass the
    same ``zmax`` to compare runs; default: this run's maximum)."""
    table = layer_table(deltas, quantizer, value)
    fig = go.Figure(go.Heatmap(z=table.values, x=[m.removesuffix("_proj") for m in table.columns],
                               y=[f"layer {i}" for i in table.index], colorscale="Viridis", zmin=0,
                               zmax=zmax if zmax is not None else shared_zmax([deltas], quantizer, value),
                               text=np.vectorize(lambda v: f"{v:.3f}")(table.values), texttemplate="%{text}",
                               colorbar=dict(title="")))
    fig.update_layout(title=as_plot_text(title), height=120 + 40 * len(table), margin=dict(t=50, b=30),
                      yaxis=dict(autorange="reversed"), xaxis_title="module")
    return fig


__all__ = ["HistSeries", "LAYER_VALUES", "MODES", "delta_row", "flip_summary", "hist_series", "histogram_figure", "layer_heatmap",
           "layer_table", "shared_zmax"]
