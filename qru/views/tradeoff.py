"""The trade-off view of a sweep: forgetting against utility per fix, full precision to each quantized width as an
arrow, seeds as 95% bootstrap intervals, the points no other fix beats marked; the fixes table (forgetting,
utility, share undone by quantization and by relearning, mean [CI] over seeds) and the sentences that say which
fixes kept the forgetting. The numbers come from qru.analysis.tradeoff."""
from __future__ import annotations

import math
import re

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from qru.analysis.findings import UNDONE_MOST, UNDONE_SOME, undone_level
from qru.analysis.tradeoff import UTILITY_METRIC, finite, fix_means, forgets_by_lower
from qru.metrics import label, metric
from qru.stats import bootstrap_ci
from qru.views.paper_table import cell
from qru.views.text import as_plot_text, as_text

SYMBOLS = {32: "circle", 8: "diamond", 4: "square"}
PALETTE = qualitative.Dark24 + qualitative.Light24  # one colour per fix up to 48
_NEGATIVE_ZERO = re.compile(r"(?<![\d.])-0(?![\d.])")


def _ci(values: list[float]) -> tuple[float, float]:
    """(minus, plus) error-bar lengths of the 95% bootstrap interval of the mean (0, 0 for one value)."""
    values = finite(values)
    if len(values) < 2:
        return 0.0, 0.0
    mean, low, high = bootstrap_ci(values)
    return (mean - low, high - mean) if math.isfinite(low) else (0.0, 0.0)


def tradeoff_figure(points: pd.DataFrame, forget: str) -> go.Figure:
    """Utility (KnowMem-retain, x) against ``forget`` (y) of every fix of ``points`` (qru.analysis.tradeoff
    .load_points): a marker per fix and width at the mean over seeds with 95% bootstrap error bars, an arrow from
    full precision to each quantized width, and a black ring on the points no other fix beats at that width."""
    means = fix_means(points, forget)
    fig = go.Figure()
    if means.empty:
        return fig
    colors = {}
    for fix, part in means.groupby("fix", sort=False):
        colors.setdefault(fix, len(colors))
        part = part.sort_values("bits", ascending=False)
        ex, ey = zip(*[(_ci(r["utility_values"]), _ci(r["forget_values"])) for _, r in part.iterrows()])
        fig.add_trace(go.Scatter(
            x=part["utility"], y=part["forget"], mode="markers", name=as_plot_text(fix),
            marker=dict(size=11, symbol=[SYMBOLS.get(b, "x") for b in part["bits"]],
                        color=PALETTE[colors[fix] % len(PALETTE)],
                        line=dict(width=[3 if f else 0 for f in part["front"]], color="black")),
            error_x=dict(type="data", array=[e[1] for e in ex], arrayminus=[e[0] for e in ex], thickness=1),
            error_y=dict(type="data", array=[e[1] for e in ey], arrayminus=[e[0] for e in ey], thickness=1),
            text=[f"{b} bits, seeds {', '.join(map(str, s))}" + (" — not beaten at this width" if f else "")
                  for b, s, f in zip(part["bits"], part["seeds"], part["front"])],
            hovertemplate="%{fullData.name}<br>%{text}<br>utility %{x:.3g}, forget %{y:.3g}<extra></extra>"))
        full = part[part["bits"] == 32]
        for _, r in part[part["bits"] < 32].iterrows():
            if not full.empty:
                fig.add_annotation(x=r["utility"], y=r["forget"], ax=full.iloc[0]["utility"],
                                   ay=full.iloc[0]["forget"], xref="x", yref="y", axref="x", ayref="y",
                                   showarrow=True, arrowhead=2, arrowwidth=1, opacity=0.6, text="")
    better = "lower" if forgets_by_lower(forget) else "higher"
    fig.update_layout(xaxis_title=f"{label(UTILITY_METRIC)}: higher is better",
                      yaxis_title=f"{label(forget)} (forgetting: {better} is better)", height=560 + 22 * len(colors),
                      legend=dict(title="fix (○ 32 bits, ◇ 8, □ 4; ring: not beaten at its width)",
                                  orientation="h", yanchor="top", y=-0.15, xanchor="left", x=0))
    return fig


def _share(values) -> str:
    """``mean% [low, high]`` of shares (95% bootstrap interval over seeds), ``mean%`` for one, ``—`` for none."""
    text = _NEGATIVE_ZERO.sub("0", cell([100 * v for v in finite(values)], 0))  # "-0": a share that rounds to 0
    mean, _, rest = text.partition(" ")
    return "—" if mean == "—" else f"{mean}%" + (f" {rest}" if rest else "")


def fixes_table(points: pd.DataFrame, forget: str) -> pd.DataFrame:
    """A row per fix: ``forget`` and utility at each width, and the share of the forgetting undone by quantization
    (b < 32) and by relearning (read at each width), each ``mean [95% CI]`` over seeds ("—" where not measured)."""
    rows = []
    if points.empty:
        return pd.DataFrame()
    widths = sorted(points["bits"].unique(), reverse=True)
    for fix, part in points.groupby("fix", sort=False):
        row = {"fix": fix}
        for b in widths:
            at = part[part["bits"] == b]
            row[f"{label(forget)} @{b}"] = cell(at[forget].tolist(), metric(forget).paper_digits)
            utility = at[UTILITY_METRIC].tolist()
            row[f"{label(UTILITY_METRIC)} @{b}"] = cell(utility, metric(UTILITY_METRIC).paper_digits)
        for b in widths:
            if b < 32:
                row[f"undone by {b}-bit PTQ"] = _share(part[part["bits"] == b]["undone"])
        for b in widths:
            row[f"undone by relearning @{b}"] = _share(part[part["bits"] == b]["relearn_undone"])
        rows.append(row)
    return pd.DataFrame(rows)


def _level_names(points: pd.DataFrame, column: str, bits: int) -> dict[str, list[str]]:
    out = {"kept": [], "part": [], "most": [], "unmeasured": [], "missing": []}
    for fix, part in points[points["bits"] == bits].groupby("fix", sort=False):
        values = finite(part[column])
        mean = sum(values) / len(values) if values else float("nan")
        missing = column == "relearn_undone" and "relearn_stored" in part and not part["relearn_stored"].any()
        key = "missing" if missing else "unmeasured" if not values else undone_level(mean)
        out[key].append(f"{fix} ({_NEGATIVE_ZERO.sub('0', f'{100 * mean:.0f}')}%)" if values else fix)
    return out


def fixes_sentences(points: pd.DataFrame) -> list[str]:
    """Markdown sentences: at the lowest width, which fixes kept the forgetting under quantization and under
    relearning (mean share undone over seeds below UNDONE_SOME), which lost part or most of it, which could not be
    measured (no effect beyond the noise) and, for relearning, which have no stored attack."""
    if points.empty:
        return []
    low = int(points["bits"].min())
    out = []
    for column, what, bits in (("undone", f"{low}-bit PTQ", low), ("relearn_undone", "relearning", 32)):
        if column == "undone" and low == 32:
            continue
        levels = _level_names(points, column, bits)
        parts = [f"{name}: {as_text('; '.join(levels[key]))}" for key, name in
                 (("kept", f"kept (under {UNDONE_SOME:.0%} undone)"), ("part", "lost part"),
                  ("most", f"lost most (at least {UNDONE_MOST:.0%})"),
                  ("unmeasured", "not measurable (no effect beyond the noise)"),
                  ("missing", "not attacked yet")) if levels[key]]
        out.append(f"**Under {what}** — " + " · ".join(parts) + ".")
    return out


__all__ = ["fixes_sentences", "fixes_table", "tradeoff_figure"]
