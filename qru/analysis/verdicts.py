"""Rounding back or fragility: the share of the forgetting undone by quantization vs by noise controls of the same
size, the verdict per quantizer, where RTN starts to change the target, and quantizers whose rounding (not the size
of the perturbation) moves the target itself.

Input: a run's controls.json rows (qru.controls) and its metrics.json frame (the 32-bit values). For a metric and an
unlearned model at bit width b, the share of the forgetting undone (qru.analysis.undone) is computed for quantization
and for each noise control of the same quantizer:

    undone = (m_u,b - m_u,32) / (m_t,b - m_u,32)      (m_t,b: the target under the same perturbation)

The verdict of a quantizer (:func:`verdict`): nothing to explain where quantization undid less than UNDONE (0.2);
else *fragility* where the noise controls undid at least HALF (0.5) of what quantization undid (any perturbation of
that size undoes it), else *rounding back* (quantization undid far more than random noise of the same size: rounding
pulled the weights back to the target's codes). The sentences and figures that read these are in qru.views.curves.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from qru.analysis.undone import metric_noise, share_undone

UNDONE, HALF = 0.2, 0.5
UNDONE_COLUMNS = ["quantizer", "bits", "label", "control", "seed", "value", "undone", "reason"]


def curve_frame(rows: list[dict]) -> pd.DataFrame:
    """controls.json rows as a frame (grid-position rows left out)."""
    frame = pd.DataFrame([r for r in rows if r.get("control") != "grid"])
    return frame if not frame.empty else pd.DataFrame(columns=["model", "quantizer", "bits", "control", "seed"])


def full_value(metrics: pd.DataFrame, model: str, metric: str) -> float:
    """``metric`` of ``model`` at 32 bits in a run's metrics.json frame (NaN if missing)."""
    rows = metrics[(metrics["model"] == model) & (metrics["bits"] == 32)]
    return float(rows.iloc[0][metric]) if not rows.empty and metric in rows.columns else float("nan")


def undone_by_control(frame: pd.DataFrame, metrics: pd.DataFrame, metric: str,
                      samples: dict | None = None) -> pd.DataFrame:
    """One row per (quantizer, control, seed) with the unlearned model's value and the share undone under that
    perturbation of both models (qru.analysis.undone.share_undone: NaN, with the reason, where the 32-bit effect or
    the perturbed target's distance to the unlearned model is within the metric's noise; ``samples``, the run's
    samples.json, sets that noise from the paired items, else the floors). ``.attrs["noise"]`` holds the threshold."""
    threshold = metric_noise(metrics, samples, metric)[0]
    u32, t32 = full_value(metrics, "unlearned", metric), full_value(metrics, "target", metric)
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


def verdict_rows(undone: dict[str, pd.DataFrame]) -> list[dict]:
    """Per metric and quantizer (in curve order; ``undone``: metric -> :func:`undone_by_control`): the quantizer's key
    and label, the metric, the share undone by quantization (NaN if none), the noise controls' shares (mean, min,
    max, how many) and :func:`verdict`'s verdict and reason."""
    rows = []
    for metric, part in undone.items():
        for quantizer in part["quantizer"].unique():
            v = verdict(part, quantizer)
            mine = part[part["quantizer"] == quantizer]
            noise = mine[mine["control"] != "quantized"]["undone"].dropna()
            quantized = mine[mine["control"] == "quantized"]["undone"]
            rows.append({"quantizer": quantizer, "label": mine["label"].iloc[0], "metric": metric,
                         "quantized": float(quantized.iloc[0]) if len(quantized) else float("nan"),
                         "noise_mean": float(noise.mean()) if len(noise) else float("nan"),
                         "noise_min": float(noise.min()) if len(noise) else float("nan"),
                         "noise_max": float(noise.max()) if len(noise) else float("nan"), "n_noise": len(noise),
                         "verdict": v["verdict"], "reason": v.get("reason", "")})
    return rows


def rtn_families(frame: pd.DataFrame) -> list[str]:
    """The RTN quantizer families of a curve frame (key without the bit width, e.g. ``rtn-asym-g64``), the one with
    the most bit widths first."""
    rtn = frame[frame["quantizer"].str.startswith("rtn")]
    families = rtn["quantizer"].str.split("@").str[0]
    return list(rtn.assign(family=families).groupby("family")["bits"].nunique().sort_values(ascending=False).index)


def rtn_part(frame: pd.DataFrame, family: str) -> pd.DataFrame:
    """The rows of one RTN family (:func:`rtn_families`) of a curve or :func:`undone_by_control` frame."""
    return frame[frame["quantizer"].str.split("@").str[0] == family]


def onset(frame: pd.DataFrame, metrics: pd.DataFrame, undone: pd.DataFrame, metric: str) -> dict | None:
    """Where RTN quantization (the RTN family with the most bit widths) starts to change the target itself beyond
    the metric's noise, and where the forgetting is undone, or None where the curve cannot tell (no such metric, no
    32-bit target, no RTN width). Keys: ``noise`` (``undone.attrs["noise"]``), ``onset`` (the highest RTN bit width
    where |m_t,b - m_t,32| exceeds it, None if none), ``lowest`` (the lowest RTN bit width), ``first_undone`` (the
    highest width whose share undone is at least UNDONE, None if none) and ``when`` (the undoing starts "before"
    the onset, at a higher bit width or with no onset at all, "at" it or "after" it; None if nothing was undone)."""
    threshold = undone.attrs.get("noise", 0.0)
    t32 = full_value(metrics, "target", metric)
    if metric not in frame.columns or not np.isfinite(t32):
        return None
    families = rtn_families(frame)
    if not families:
        return None
    rtn = rtn_part(frame, families[0])
    rtn = rtn[rtn["control"] == "quantized"]
    target = rtn[rtn["model"] == "target"].set_index("bits")[metric].sort_index(ascending=False)
    if target.empty:
        return None
    moved = [int(b) for b, v in target.items() if abs(v - t32) > threshold]
    q = rtn_part(undone, families[0])
    q = q[q["control"] == "quantized"]
    undid = [int(b) for b, u in zip(q["bits"], q["undone"]) if np.isfinite(u) and u >= UNDONE]
    start = max(moved) if moved else None
    first = max(undid) if undid else None
    when = None if first is None else "before" if start is None or first > start else "at" if first == start \
        else "after"
    return {"noise": threshold, "onset": start, "lowest": int(target.index.min()), "first_undone": first,
            "when": when}


def target_moves(frame: pd.DataFrame, metrics: pd.DataFrame, undone: pd.DataFrame, metric: str) -> list[dict]:
    """Quantizers that move the target itself beyond the metric's noise (``undone.attrs["noise"]``) while their noise
    controls move it less than HALF as far: rounding, not the size of the perturbation, changes the target. One dict
    per such quantizer (curve order): ``label``, ``full`` (the target at 32 bits), ``quantized`` (quantized) and
    ``noise_mean`` (the mean under its noise controls). Empty if none."""
    threshold, t32 = undone.attrs.get("noise", 0.0), full_value(metrics, "target", metric)
    if metric not in frame.columns or not np.isfinite(t32):
        return []
    target = frame[frame["model"] == "target"]
    out = []
    for _, group in target.groupby("quantizer", sort=False):
        q = group[group["control"] == "quantized"][metric].dropna()
        noise = group[group["control"] != "quantized"][metric].dropna()
        if q.empty or noise.empty:
            continue
        moved, noise_moved = abs(float(q.iloc[0]) - t32), float((noise - t32).abs().mean())
        if moved > threshold and noise_moved < HALF * moved:
            out.append({"label": group["label"].iloc[0], "full": t32, "quantized": float(q.iloc[0]),
                        "noise_mean": float(noise.mean())})
    return out


__all__ = ["HALF", "UNDONE", "UNDONE_COLUMNS", "curve_frame", "full_value", "onset", "rtn_families", "rtn_part",
           "target_moves", "undone_by_control", "verdict", "verdict_rows"]
