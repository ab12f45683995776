"""Metric-vs-bit-width curves of stored runs with the noise-control band, and the sentences that read them.

The numbers come from qru.analysis.verdicts (the share of the forgetting undone by quantization and by each noise
control of the same quantizer, the verdict "rounding back" / "fragility", where RTN starts to change the target) and
qru.analysis.grid (where the target's weights sit relative to a grid); this module turns them into figures, tables
and sentences.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from qru.analysis.grid import READINGS, grid_reading, grid_rows
from qru.analysis.verdicts import (UNDONE, curve_frame, full_value, onset, rtn_families, rtn_part, target_moves,
                                   verdict, verdict_rows)
from qru.metrics import headline, label
from qru.views.text import as_plot_text, as_text


def sentence(name: str, undone: pd.DataFrame, metric: str) -> str:
    """A sentence (Markdown) reading one run's curve for ``metric``, generated from the numbers; the run's name
    and the stored quantizer labels shown as text."""
    name, title = as_text(name), label(metric)
    verdicts = {q: verdict(undone, q) for q in undone["quantizer"].unique()} if not undone.empty else {}
    measured = {q: v for q, v in verdicts.items() if v["verdict"] != "not measured"}
    if not measured:
        reasons = sorted({v["reason"] for v in verdicts.values() if v.get("reason")})
        why = "; ".join(reasons) if reasons else "the controls are missing"
        return f"**{name}**, {title}: no share undone can be stated ({why})."
    labels = undone.drop_duplicates("quantizer").set_index("quantizer")["label"].map(as_text)
    undid = {q: v for q, v in measured.items() if v["verdict"] != "nothing undone"}
    if not undid:
        worst = max(measured, key=lambda q: measured[q]["quantized"])
        return (f"**{name}**, {title}: no quantizer of the curve undid the forgetting (at most "
                f"{_pct(measured[worst]['quantized'])}, {labels[worst]}).")
    parts = []
    for q, v in sorted(undid.items(), key=lambda kv: -kv[1]["quantized"]):
        parts.append(f"{labels[q]}: {_pct(v['quantized'])} undone by quantization vs {_pct(v['noise_mean'])} (at "
                     f"most {_pct(v['noise_max'])}) by noise of the same size — {v['verdict']}")
    kinds = {v["verdict"] for v in undid.values()}
    cause = ("rounding back explains what came back" if kinds == {"rounding back"} else
             "fragility explains what came back" if kinds == {"fragility"} else
             "rounding back at some widths, fragility at others")
    return f"**{name}**, {title}: {cause}. " + "; ".join(parts) + "."


def target_sentence(frame: pd.DataFrame, metrics: pd.DataFrame, undone: pd.DataFrame, metric: str) -> str:
    """The quantizers that move the target itself beyond the metric's noise while their noise controls move it less
    than half as far (qru.analysis.verdicts.target_moves), in words: rounding, not the size of the perturbation,
    changes the target. "" if none."""
    parts = [f"{as_text(m['label'])} moves it from {m['full']:.3g} to {m['quantized']:.3g}, noise of the same size to "
             f"{m['noise_mean']:.3g}" for m in target_moves(frame, metrics, undone, metric)]
    if not parts:
        return ""
    return (f"Rounding, not the size of the perturbation, changes the target's {label(metric)}: "
            + "; ".join(parts) + " (its weights are pulled to particular grid points, e.g. back to the codes of a "
            "4-bit source it was fine-tuned from).")


def verdict_table(undone: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """qru.analysis.verdicts.verdict_rows for reading: per quantizer (in curve order) and metric (``undone``: metric ->
    undone_by_control), the share of the forgetting undone by quantization and by the noise controls (mean,
    min..max over kinds and seeds), as percentages, and the verdict (or why none)."""
    return pd.DataFrame([{"quantizer": r["label"], "metric": label(r["metric"]),
                          "undone by quantization": _pct(r["quantized"]),
                          "undone by noise (mean)": _pct(r["noise_mean"]) if r["n_noise"] else "—",
                          "noise min..max": (f"{_pct(r['noise_min'])}..{_pct(r['noise_max'])}" if r["n_noise"]
                                             else "—"),
                          "n noise": r["n_noise"],
                          "verdict": r["verdict"] + (f" ({r['reason']})" if r["reason"] else "")}
                         for r in verdict_rows(undone)])


def _pct(x: float) -> str:
    return f"{round(100 * x) or 0}%" if np.isfinite(x) else "—"


def onset_sentence(frame: pd.DataFrame, metrics: pd.DataFrame, undone: pd.DataFrame, metric: str) -> str:
    """Where RTN quantization starts to change the target itself beyond the metric's noise, and whether the
    forgetting is undone before that point (at a higher bit width), at it, or only after it
    (qru.analysis.verdicts.onset), in words; "" where the curve cannot tell."""
    o = onset(frame, metrics, undone, metric)
    if o is None:
        return ""
    title, threshold = label(metric), o["noise"]
    text = (f"RTN starts to change the target's {title} beyond the noise ({threshold:.3g}) at {o['onset']} bits"
            if o["onset"] is not None else f"RTN changes the target's {title} by no more than the noise "
                                           f"({threshold:.3g}) down to {o['lowest']} bits")
    if o["first_undone"] is None:
        return text + f"; no RTN width undid {UNDONE:.0%} or more of the forgetting."
    when = {"before": "before that point (the target itself is still intact there)", "at": "at that point",
            "after": "only after that point"}[o["when"]]
    return text + f"; the forgetting is undone ({UNDONE:.0%} or more) from {o['first_undone']} bits down, {when}."


MARKERS = {"target": "circle-open", "retrain": "square-open", "unlearned": "diamond"}


def curve_figure(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]], metric: str) -> go.Figure:
    """The metric against bit width for each run (``curves``: name -> (curve_frame, metrics frame)): the 32-bit
    value at x = 32 is drawn at the right of 8; RTN lines for target, retrain and unlearned (one set per RTN group
    size computed), the other formats (bitsandbytes, GGUF) as markers (the label on hover), and the unlearned
    model's noise controls: the band of each RTN family (min..max over controls and seeds) and each quantizer's
    noise mean as an x (visible where the band is as thin as the line, and for the other formats)."""
    fig = go.Figure()
    order = {32: 9}  # 32 bits drawn just right of 8
    x_of = lambda b: order.get(int(b), int(b))  # noqa: E731
    widths = set()
    for name, (frame, metrics) in curves.items():
        name = as_plot_text(name)  # names and stored labels drawn as text, not as Plotly's HTML
        if metric not in frame.columns:
            continue
        widths.update(int(b) for b in frame["bits"])
        families = rtn_families(frame)
        for family in families:
            rtn = rtn_part(frame, family)
            tag = f" ({as_plot_text(family)})" if len(families) > 1 else ""
            for model, dash in (("target", "dot"), ("retrain", "dash"), ("unlearned", "solid")):
                q = rtn[(rtn["model"] == model) & (rtn["control"] == "quantized")].sort_values("bits")
                xs = [x_of(b) for b in q["bits"]] + [x_of(32)]
                fig.add_trace(go.Scatter(x=xs, y=list(q[metric]) + [full_value(metrics, model, metric)],
                                         mode="lines+markers", name=f"{name}: {model}{tag}", line={"dash": dash}))
            noise = rtn[(rtn["model"] == "unlearned") & (rtn["control"] != "quantized")]
            if not noise.empty:
                band = noise.groupby("bits")[metric].agg(["min", "max"]).sort_index()
                xs = [x_of(b) for b in band.index]
                fig.add_trace(go.Scatter(x=xs + xs[::-1], y=list(band["max"]) + list(band["min"])[::-1],
                                         fill="toself", opacity=0.25, line={"width": 0},
                                         name=f"{name}: unlearned, noise band{tag}"))
        other = frame[~frame["quantizer"].str.startswith("rtn") & (frame["control"] == "quantized")]
        for model, part in other.groupby("model", sort=False):
            fig.add_trace(go.Scatter(x=[x_of(b) for b in part["bits"]], y=part[metric], mode="markers",
                                     marker={"symbol": MARKERS.get(model, "diamond"), "size": 10},
                                     text=part["label"].map(as_plot_text), hovertemplate="%{text}: %{y:.3g}",
                                     name=f"{name}: {model}, bitsandbytes / GGUF"))
        noise = frame[(frame["model"] == "unlearned") & (frame["control"] != "quantized")]
        if not noise.empty:
            means = noise.groupby(["quantizer", "label", "bits"])[metric].agg(["mean", "min", "max"]).reset_index()
            fig.add_trace(go.Scatter(x=[x_of(b) for b in means["bits"]], y=means["mean"], mode="markers",
                                     marker={"symbol": "x", "size": 8},
                                     error_y={"type": "data", "symmetric": False,
                                              "array": means["max"] - means["mean"],
                                              "arrayminus": means["mean"] - means["min"]},
                                     text=means["label"].map(as_plot_text), hovertemplate="%{text}, noise: %{y:.3g}",
                                     name=f"{name}: unlearned, noise mean (min..max)"))
    ticks = sorted(widths - {32}) + [32]
    fig.update_layout(xaxis={"title": "bit width (RTN int-k lines; right: 32 bits)",
                             "tickvals": [x_of(b) for b in ticks], "ticktext": [str(b) for b in ticks]},
                      yaxis={"title": label(metric)}, height=480, margin={"t": 30})
    return fig


def controls_table(rows: list[dict], quantizers: list[str], metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Quantized vs noise controls side by side for the quantizer keys ``quantizers``: one row per (quantizer,
    model, control) with each metric (default: the headline metrics and utility, KnowMem-retain) as
    ``mean ± sd (n)`` over noise seeds (the quantized value alone)."""
    metrics = metrics or (*headline(), "knowmem_retain")
    frame = curve_frame(rows)
    if frame.empty or "label" not in frame.columns:
        return pd.DataFrame()
    frame = frame[frame["quantizer"].isin(quantizers)]
    out = []
    for (name, model, control), group in frame.groupby(["label", "model", "control"], sort=False):
        row = {"quantizer": name, "model": model, "perturbation": control}
        for metric in metrics:
            if metric in group.columns:
                values = group[metric].dropna()
                row[label(metric)] = (f"{values.iloc[0]:.3g}" if len(values) == 1 else
                                      f"{values.mean():.3g} ± {values.std(ddof=1):.2g} (n={len(values)})"
                                      if len(values) else "—")
        out.append(row)
    return pd.DataFrame(out)


def _grid_words(rows: list[dict]) -> str:
    parts = [f"{as_text(r['label'])}: {r['share_on_grid']:.1%} within 1% of a step of a grid point, mean offset "
             f"{r['mean_offset_steps']:.3f} steps" for r in rows]
    by = {w: [as_text(r["label"]) for r in rows if grid_reading(r) == w] for w in READINGS}
    reading = [f"{w} the grid of " + ", ".join(labels) for w, labels in by.items() if labels and w != "not on"]
    if by["not on"]:
        reading.append(("spread inside their bins under " + ", ".join(by["not on"])) if reading else
                       "spread inside their bins (evenly spread weights give about 2% within 1% of a step and a mean "
                       "offset of 0.25 steps; the weights that set each block's scale, on the grid by construction, "
                       "are left out), not on a 4-bit grid")
    return "; ".join(parts) + " — its weights sit " + "; ".join(reading)


def grid_sentence(rows: list[dict]) -> str:
    """Where the target's weights (and a pretrained source's, before fine-tuning into the target) sit inside their
    4-bit bins, in words, from controls.json's grid rows (4-bit RTN / FP4 / NF4 and the GGUF grids)."""
    target, source = grid_rows(rows, "target"), grid_rows(rows, "source")
    text = ("Measured on the target (the start of unlearning): " + _grid_words(target) + ".") if target else ""
    if source:
        text += (" " if text else "") + ("Its pretrained source, before fine-tuning into the target: "
                                         + _grid_words(source) + ".")
    return text


__all__ = ["MARKERS", "controls_table", "curve_figure", "grid_sentence", "onset_sentence", "sentence",
           "target_sentence", "verdict_table"]
