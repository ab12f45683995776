"""Metric-vs-bit-width curves of stored runs with the noise-control band, and the sentence that reads them.

Input: a run's controls.json rows (qru.controls) and its metrics.json frame (the 32-bit values). For a metric and an
unlearned model at bit width b, the share of the forgetting undone (qru.views.undone) is computed for quantization and
for each noise control of the same quantizer:

    undone = (m_u,b - m_u,32) / (m_t,b - m_u,32)      (m_t,b: the target under the same perturbation)

The verdict of a quantizer (``verdict``): nothing to explain where quantization undid less than UNDONE (0.2); else
*fragility* where the noise controls undid at least HALF (0.5) of what quantization undid (any perturbation of that
size undoes it), else *rounding back* (quantization undid far more than random noise of the same size: rounding
pulled the weights back to the target's codes).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from qru.views.metric_tables import COLUMNS
from qru.views.undone import metric_noise, share_undone

UNDONE, HALF = 0.2, 0.5
CURVE_METRICS = ("knowmem_forget", "nll_forget", "knowmem_retain", "privleak", "verbmem_entity")


def curve_frame(rows: list[dict]) -> pd.DataFrame:
    """controls.json rows as a frame (grid-position rows left out)."""
    frame = pd.DataFrame([r for r in rows if r.get("control") != "grid"])
    return frame if not frame.empty else pd.DataFrame(columns=["model", "quantizer", "bits", "control", "seed"])


def _full(metrics: pd.DataFrame, model: str, metric: str) -> float:
    rows = metrics[(metrics["model"] == model) & (metrics["bits"] == 32)]
    return float(rows.iloc[0][metric]) if not rows.empty and metric in rows.columns else float("nan")


UNDONE_COLUMNS = ["quantizer", "bits", "label", "control", "seed", "value", "undone", "reason"]


def undone_by_control(frame: pd.DataFrame, metrics: pd.DataFrame, metric: str, samples: dict | None = None) -> pd.DataFrame:
    """One row per (quantizer, control, seed) with the unlearned model's value and the share undone under that
    perturbation of both models (qru.views.undone.share_undone: NaN, with the reason, where the 32-bit effect or the
    perturbed target's distance to the unlearned model is within the metric's noise; ``samples``, the run's
    samples.json, sets that noise from the paired items, else the floors). ``.attrs["noise"]`` holds the threshold."""
    threshold = metric_noise(metrics, samples, metric)[0]
    u32, t32 = _full(metrics, "unlearned", metric), _full(metrics, "target", metric)
    out = []
    if metric in frame.columns:
        for (quantizer, control, seed), group in frame.groupby(["quantizer", "control", "seed"], dropna=False):
            u = group[group["model"] == "unlearned"]
            t = group[group["model"] == "target"]
            if u.empty or t.empty:
                continue
            ub, tb = float(u.iloc[0][metric]), float(t.iloc[0][metric])
            share, reason = share_undone(metric, t32, u32, tb, ub, threshold)
            out.append({"quantizer": quantizer, "bits": int(u.iloc[0]["bits"]),
                        "label": u.iloc[0].get("label", quantizer), "control": control, "seed": seed, "value": ub,
                        "undone": share, "reason": reason})
    result = pd.DataFrame(out, columns=UNDONE_COLUMNS)
    result.attrs["noise"] = threshold
    return result


def verdict(undone: pd.DataFrame, quantizer: str) -> dict:
    """For one quantizer: the share undone by quantization, the mean and max over the noise controls, and the
    verdict ("nothing undone", "fragility", "rounding back", or "not measured" with the reason)."""
    part = undone[undone["quantizer"] == quantizer]
    q = part[part["control"] == "quantized"]
    noise = part[~part["control"].isin(["quantized"])]["undone"].dropna()
    missing = {"quantized": float("nan"), "noise_mean": float("nan"), "noise_max": float("nan"),
               "verdict": "not measured"}
    if q.empty:
        return {**missing, "reason": "not quantized"}
    if not np.isfinite(q["undone"].iloc[0]):
        return {**missing, "reason": q["reason"].iloc[0] if "reason" in q.columns else ""}
    qv = float(q["undone"].iloc[0])
    result = {"quantized": qv, "noise_mean": float(noise.mean()) if len(noise) else float("nan"),
              "noise_max": float(noise.max()) if len(noise) else float("nan"), "reason": ""}
    if qv < UNDONE:
        result["verdict"] = "nothing undone"
    elif noise.empty:
        result.update(verdict="not measured", reason="quantization undid part, but no noise control's share is "
                                                     "beyond the noise (or none was computed)")
    elif result["noise_mean"] >= HALF * qv:
        result["verdict"] = "fragility"
    else:
        result["verdict"] = "rounding back"
    return result


def sentence(name: str, undone: pd.DataFrame, metric: str) -> str:
    """A sentence reading one run's curve for ``metric``, generated from the numbers."""
    title = COLUMNS.get(metric, metric)
    verdicts = {q: verdict(undone, q) for q in undone["quantizer"].unique()} if not undone.empty else {}
    measured = {q: v for q, v in verdicts.items() if v["verdict"] != "not measured"}
    if not measured:
        reasons = sorted({v["reason"] for v in verdicts.values() if v.get("reason")})
        why = "; ".join(reasons) if reasons else "the controls are missing"
        return f"**{name}**, {title}: no share undone can be stated ({why})."
    labels = undone.drop_duplicates("quantizer").set_index("quantizer")["label"]
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
    """Quantizers that move the target itself beyond the metric's noise (``undone.attrs["noise"]``) while their noise
    controls move it less than HALF as far: rounding, not the size of the perturbation, changes the target (its
    weights are pulled to particular grid points, e.g. back to the codes of a 4-bit source it was fine-tuned from).
    "" if none."""
    threshold, t32 = undone.attrs.get("noise", 0.0), _full(metrics, "target", metric)
    if metric not in frame.columns or not np.isfinite(t32):
        return ""
    target = frame[frame["model"] == "target"]
    parts = []
    for quantizer, group in target.groupby("quantizer", sort=False):
        q = group[group["control"] == "quantized"][metric].dropna()
        noise = group[group["control"] != "quantized"][metric].dropna()
        if q.empty or noise.empty:
            continue
        moved, noise_moved = abs(float(q.iloc[0]) - t32), float((noise - t32).abs().mean())
        if moved > threshold and noise_moved < HALF * moved:
            parts.append(f"{group['label'].iloc[0]} moves it from {t32:.3g} to {float(q.iloc[0]):.3g}, noise of the same "
                         f"size to {float(noise.mean()):.3g}")
    if not parts:
        return ""
    return (f"Rounding, not the size of the perturbation, changes the target's {COLUMNS.get(metric, metric)}: "
            + "; ".join(parts) + " (its weights are pulled to particular grid points, e.g. back to the codes of a "
            "4-bit source it was fine-tuned from).")


def verdict_table(undone: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per quantizer (in curve order) and metric (``undone``: metric -> :func:`undone_by_control`): the share of the
    forgetting undone by quantization and by the noise controls (mean, min..max over kinds and seeds), as
    percentages, and the verdict (or why none)."""
    rows = []
    for metric, part in undone.items():
        for quantizer in part["quantizer"].unique():
            v = verdict(part, quantizer)
            mine = part[part["quantizer"] == quantizer]
            noise = mine[mine["control"] != "quantized"]["undone"].dropna()
            quantized = mine[mine["control"] == "quantized"]["undone"]
            rows.append({"quantizer": mine["label"].iloc[0], "metric": COLUMNS.get(metric, metric),
                         "undone by quantization": _pct(float(quantized.iloc[0])) if len(quantized) else "—",
                         "undone by noise (mean)": _pct(float(noise.mean())) if len(noise) else "—",
                         "noise min..max": f"{_pct(noise.min())}..{_pct(noise.max())}" if len(noise) else "—",
                         "n noise": len(noise),
                         "verdict": v["verdict"] + (f" ({v['reason']})" if v.get("reason") else "")})
    return pd.DataFrame(rows)


def _pct(x: float) -> str:
    return f"{round(100 * x) or 0}%" if np.isfinite(x) else "—"


def onset_sentence(frame: pd.DataFrame, metrics: pd.DataFrame, undone: pd.DataFrame, metric: str) -> str:
    """Where RTN quantization (the RTN family with the most bit widths, :func:`rtn_families`) starts to change the
    target itself beyond the metric's noise (the highest RTN bit width where |m_t,b - m_t,32| exceeds
    ``undone.attrs["noise"]``), and whether the forgetting is undone (share >= UNDONE) before that point (at a
    higher bit width), at it, or only after it."""
    threshold = undone.attrs.get("noise", 0.0)
    t32 = _full(metrics, "target", metric)
    if metric not in frame.columns or not np.isfinite(t32):
        return ""
    families = rtn_families(frame)
    if not families:
        return ""
    rtn = _rtn(frame, families[0])
    rtn = rtn[rtn["control"] == "quantized"]
    target = rtn[rtn["model"] == "target"].set_index("bits")[metric].sort_index(ascending=False)
    if target.empty:
        return ""
    moved = [int(b) for b, v in target.items() if abs(v - t32) > threshold]
    q = _rtn(undone, families[0])
    q = q[q["control"] == "quantized"]
    undid = [int(b) for b, u in zip(q["bits"], q["undone"]) if np.isfinite(u) and u >= UNDONE]
    title = COLUMNS.get(metric, metric)
    low = int(target.index.min())
    onset = (f"RTN starts to change the target's {title} beyond the noise ({threshold:.3g}) at {max(moved)} bits"
             if moved else f"RTN changes the target's {title} by no more than the noise ({threshold:.3g}) down to "
                           f"{low} bits")
    if not undid:
        return onset + f"; no RTN width undid {UNDONE:.0%} or more of the forgetting."
    first = max(undid)
    when = ("before that point (the target itself is still intact there)" if not moved or first > max(moved) else
            "at that point" if first == max(moved) else "only after that point")
    return onset + f"; the forgetting is undone ({UNDONE:.0%} or more) from {first} bits down, {when}."


MARKERS = {"target": "circle-open", "retrain": "square-open", "unlearned": "diamond"}


def rtn_families(frame: pd.DataFrame) -> list[str]:
    """The RTN quantizer families of a curve frame (key without the bit width, e.g. ``rtn-asym-g64``), the one with
    the most bit widths first."""
    rtn = frame[frame["quantizer"].str.startswith("rtn")]
    families = rtn["quantizer"].str.split("@").str[0]
    return list(rtn.assign(family=families).groupby("family")["bits"].nunique().sort_values(ascending=False).index)


def _rtn(frame: pd.DataFrame, family: str) -> pd.DataFrame:
    return frame[frame["quantizer"].str.split("@").str[0] == family]


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
        if metric not in frame.columns:
            continue
        widths.update(int(b) for b in frame["bits"])
        families = rtn_families(frame)
        for family in families:
            rtn = _rtn(frame, family)
            tag = f" ({family})" if len(families) > 1 else ""
            for model, dash in (("target", "dot"), ("retrain", "dash"), ("unlearned", "solid")):
                q = rtn[(rtn["model"] == model) & (rtn["control"] == "quantized")].sort_values("bits")
                xs = [x_of(b) for b in q["bits"]] + [x_of(32)]
                fig.add_trace(go.Scatter(x=xs, y=list(q[metric]) + [_full(metrics, model, metric)],
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
                                     text=part["label"], hovertemplate="%{text}: %{y:.3g}",
                                     name=f"{name}: {model}, bitsandbytes / GGUF"))
        noise = frame[(frame["model"] == "unlearned") & (frame["control"] != "quantized")]
        if not noise.empty:
            means = noise.groupby(["quantizer", "label", "bits"])[metric].agg(["mean", "min", "max"]).reset_index()
            fig.add_trace(go.Scatter(x=[x_of(b) for b in means["bits"]], y=means["mean"], mode="markers",
                                     marker={"symbol": "x", "size": 8},
                                     error_y={"type": "data", "symmetric": False,
                                              "array": means["max"] - means["mean"],
                                              "arrayminus": means["mean"] - means["min"]},
                                     text=means["label"], hovertemplate="%{text}, noise: %{y:.3g}",
                                     name=f"{name}: unlearned, noise mean (min..max)"))
    ticks = sorted(widths - {32}) + [32]
    fig.update_layout(xaxis={"title": "bit width (RTN int-k lines; right: 32 bits)",
                             "tickvals": [x_of(b) for b in ticks], "ticktext": [str(b) for b in ticks]},
                      yaxis={"title": COLUMNS.get(metric, metric)}, height=480, margin={"t": 30})
    return fig


def controls_table(rows: list[dict], quantizers: list[str], metrics=("knowmem_forget", "nll_forget",
                                                                    "verbmem_entity", "knowmem_retain")) -> pd.DataFrame:
    """Quantized vs noise controls side by side for the quantizer keys ``quantizers``: one row per (quantizer,
    model, control) with each metric as ``mean ± sd (n)`` over noise seeds (the quantized value alone)."""
    frame = curve_frame(rows)
    if frame.empty or "label" not in frame.columns:
        return pd.DataFrame()
    frame = frame[frame["quantizer"].isin(quantizers)]
    out = []
    for (label, model, control), group in frame.groupby(["label", "model", "control"], sort=False):
        row = {"quantizer": label, "model": model, "perturbation": control}
        for metric in metrics:
            if metric in group.columns:
                values = group[metric].dropna()
                row[COLUMNS.get(metric, metric)] = (f"{values.iloc[0]:.3g}" if len(values) == 1 else
                                                    f"{values.mean():.3g} ± {values.std(ddof=1):.2g} (n={len(values)})"
                                                    if len(values) else "—")
        out.append(row)
    return pd.DataFrame(out)


ON_GRID_SHARE = 0.5  # over half the weights within 1% of a step of a grid point: "on" the grid
NEAR_SHARE, NEAR_OFFSET = 0.25, 0.15  # a quarter of the weights on grid points, or a mean offset well under 0.25


def grid_reading(row: dict) -> str:
    """"on", "near" or "not on" a grid, from a grid row's share_on_grid and mean_offset_steps (thresholds above;
    weights spread evenly inside their bins give about 2% and 0.25 steps)."""
    if row["share_on_grid"] > ON_GRID_SHARE:
        return "on"
    if row["share_on_grid"] > NEAR_SHARE or row["mean_offset_steps"] < NEAR_OFFSET:
        return "near"
    return "not on"


def _grid_words(rows: list[dict]) -> str:
    parts = [f"{r['label']}: {r['share_on_grid']:.1%} within 1% of a step of a grid point, mean offset "
             f"{r['mean_offset_steps']:.3f} steps" for r in rows]
    by = {w: [r["label"] for r in rows if grid_reading(r) == w] for w in ("on", "near", "not on")}
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
    grid = [r for r in rows if r.get("control") == "grid" and r.get("bits") == 4]
    target = [r for r in grid if r.get("model", "target") == "target"]
    source = [r for r in grid if r.get("model") == "source"]
    text = ("Measured on the target (the start of unlearning): " + _grid_words(target) + ".") if target else ""
    if source:
        text += (" " if text else "") + ("Its pretrained source, before fine-tuning into the target: "
                                         + _grid_words(source) + ".")
    return text


__all__ = ["CURVE_METRICS", "controls_table", "curve_figure", "curve_frame", "grid_reading", "grid_sentence",
           "onset_sentence", "rtn_families", "target_sentence", "sentence", "undone_by_control", "verdict",
           "verdict_table"]
