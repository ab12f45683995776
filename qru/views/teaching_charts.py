"""Figures of the teaching view "Why 4-bit forgets to forget" (qru.teaching): one group of weights on its
quantization grid before and after the update, and where the block's target weights sit inside their bins.
No streamlit; every figure carries at most a few hundred numbers."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

COLORS = {"grid": "#bbbbbb", "target": "#1f77b4", "unlearned": "#ff7f0e", "crossed": "#d62728", "scale": "#9467bd"}


def grid_figure(group: dict, title: str) -> go.Figure:
    """One block/group of weights on its grid: the grid levels as horizontal lines (those within the drawn weights'
    range and one level beyond it), the target weights W_t (open circles) and the unlearned W_u (dots) by column,
    and, for code flips, where Q(W_u) lands (diamonds; red: the weight crossed a rounding boundary, purple: the
    block's scale changed). ``group`` is :func:`qru.teaching.drawn_group`'s dict; weight units on the y axis."""
    cols = np.arange(group["col"], group["col"] + len(group["w_t"]))
    w_t, w_u = group["w_t"].double().numpy(), group["w_u"].double().numpy()
    levels = group["levels"].double().numpy()
    lo, hi = float(min(w_t.min(), w_u.min())), float(max(w_t.max(), w_u.max()))
    below, above = levels[levels < lo], levels[levels > hi]
    shown = levels[(levels >= (below.max() if below.size else -math.inf))
                   & (levels <= (above.min() if above.size else math.inf))]
    x0, x1 = cols[0] - 0.5, cols[-1] + 0.5
    fig = go.Figure()
    xs = [v for _ in shown for v in (x0, x1, None)]
    ys = [v for level in shown for v in (level, level, None)]
    fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=COLORS["grid"], width=1),
                    name=f"grid levels ({len(levels)} in this group)", hoverinfo="skip")
    fig.add_scatter(x=cols, y=w_t, mode="markers", name="target W_t",
                    marker=dict(symbol="circle-open", size=9, color=COLORS["target"]),
                    hovertemplate="column %{x}: W_t = %{y:.6f}<extra></extra>")
    fig.add_scatter(x=cols, y=w_u, mode="markers", name="unlearned W_u = W_t + dW",
                    marker=dict(symbol="circle", size=5, color=COLORS["unlearned"]),
                    customdata=np.stack([w_u - w_t, (w_u - w_t) / group["step"].double().numpy()], axis=1),
                    hovertemplate="column %{x}: W_u = %{y:.6f}<br>dW = %{customdata[0]:.2e} "
                                  "(%{customdata[1]:.3f} steps)<extra></extra>")
    flipped, crossed = group["flipped"].numpy(), group["crossed"].numpy()
    for mask, name, color in ((flipped & crossed, "Q(W_u): code flip, boundary crossed", COLORS["crossed"]),
                              (flipped & ~crossed, "Q(W_u): code flip, block scale changed", COLORS["scale"])):
        if mask.any():
            fig.add_scatter(x=cols[mask], y=group["q_u"].double().numpy()[mask], mode="markers", name=name,
                            marker=dict(symbol="diamond", size=10, color=color),
                            hovertemplate="column %{x}: Q(W_u) = %{y:.6f}<extra></extra>")
    fig.update_layout(title=title, height=430, margin=dict(t=60, b=40), xaxis_title="column",
                      yaxis_title="weight value", legend=dict(orientation="h", yanchor="top", y=-0.15, x=0))
    return fig


def position_figure(counts: np.ndarray, edges: np.ndarray, moved_to_step: float) -> go.Figure:
    """Where the block's target weights sit inside their bins: % of weights by distance to the nearest rounding
    boundary, in steps (0 = on a boundary, 0.5 = on a level; :func:`qru.teaching.boundary_histogram`), with a dashed
    line at the moved weights' typical |dW| / Δ (``moved_to_step``; drawn at the right edge when beyond half a
    step): weights left of it are close enough to a boundary for the update to flip them."""
    counts = np.asarray(counts, dtype=float)
    share = 100 * counts / max(counts.sum(), 1)
    fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=share, width=np.diff(edges),
                           marker_color=COLORS["target"], opacity=0.7, name="target weights",
                           customdata=np.stack([edges[:-1], edges[1:]], axis=1),
                           hovertemplate="%{customdata[0]:.2f} – %{customdata[1]:.2f} steps: %{y:.2f}% of weights"
                                         "<extra></extra>"))
    if math.isfinite(moved_to_step) and moved_to_step > 0:
        x = min(moved_to_step, float(edges[-1]))
        text = f"typical |dW|/Δ = {moved_to_step:.2g}" + (" (beyond half a step)" if moved_to_step > edges[-1]
                                                         else "")
        fig.add_vline(x=x, line_dash="dash", line_color=COLORS["unlearned"], annotation_text=text,
                      annotation_position="top left" if x > 0.25 else "top right")
    fig.update_layout(title="Where the target weights sit inside their bins", height=430, bargap=0,
                      margin=dict(t=60, b=40), xaxis=dict(title="distance to the nearest rounding boundary (steps Δ)",
                                                          range=[float(edges[0]), float(edges[-1])]),
                      yaxis_title="% of weights", showlegend=False)
    return fig


__all__ = ["grid_figure", "position_figure"]
