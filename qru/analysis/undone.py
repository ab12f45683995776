"""The share of the forgetting that quantization undoes, per metric and bit width, where it can be told from noise.

For a metric m, the unlearned model u and the target t (the model unlearning started from) at b bits:

    undone_b = (m_u,b - m_u,32) / (m_t,b - m_u,32)

0 = quantization left the unlearned model where it was at full precision; 1 = it is back at the quantized target's
value (the forgetting is undone); above 1 / below 0 = it overshot / moved further away. The share is reported only where
the full-precision effect |m_t,32 - m_u,32| and the denominator |m_t,b - m_u,32| both exceed the metric's noise:

    noise = max(floor, 2 x standard error of (m_t,32 - m_u,32) over the evaluation items)

with the items paired (the same prompts / texts for both models): per-item ROUGE-L for VerbMem / KnowMem, per-text
NLL, and for PrivLeak a seeded bootstrap over the forget and holdout texts (the retrain AUC held fixed). The floor is
the metric's noise floor (qru.metrics: 1 point for scores, 0.01 nats for NLL), and which way "remembers more" is
its direction there. The tables that read this are in qru.views.undone.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from qru.evals.privleak import mia_auc
from qru.metrics import headline, metric as metric_info, table_columns
from qru.stats import item_scores

Z = 2.0  # standard errors
BOOTSTRAP = 200  # PrivLeak resamples


def _paired_se(target: list[float], unlearned: list[float]) -> float:
    diff = np.asarray(target, dtype=float) - np.asarray(unlearned, dtype=float)
    return float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else float("nan")


def _privleak_se(target: dict, unlearned: dict, auc_retrain: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    nf, nh = len(target["mink_forget"]), len(target["mink_holdout"])
    tf, th = np.asarray(target["mink_forget"]), np.asarray(target["mink_holdout"])
    uf, uh = np.asarray(unlearned["mink_forget"]), np.asarray(unlearned["mink_holdout"])
    diffs = []
    for _ in range(BOOTSTRAP):
        f, h = rng.integers(0, nf, nf), rng.integers(0, nh, nh)
        diffs.append(mia_auc(tf[f].tolist(), th[h].tolist()) - mia_auc(uf[f].tolist(), uh[h].tolist()))
    return float(np.std(diffs, ddof=1)) * 100.0 / auc_retrain


def noise(metric: str, samples: dict | None, auc_retrain: float | None = None) -> tuple[float, str]:
    """(threshold, how it was set) of ``metric`` for one run: the floor, or Z standard errors of the paired 32-bit
    target-minus-unlearned difference where ``samples`` (the run's samples.json) has the per-item scores."""
    floor = metric_info(metric).floor
    target, unlearned = (samples or {}).get("target@32"), (samples or {}).get("unlearned@32")
    se = float("nan")
    try:
        if target and unlearned and metric == "privleak" and auc_retrain:
            se = _privleak_se(target, unlearned, auc_retrain)
        elif target and unlearned:
            se = _paired_se(item_scores(target, metric), item_scores(unlearned, metric))
    except (KeyError, ValueError, TypeError):
        se = float("nan")
    if math.isfinite(se) and Z * se > floor:
        return Z * se, f"{Z:g} SE"
    return floor, "floor"


def _value(metrics: pd.DataFrame, model: str, bits: int, metric: str) -> float:
    rows = metrics[(metrics["model"] == model) & (metrics["bits"] == bits)]
    if rows.empty or metric not in rows.columns or pd.isna(rows.iloc[0][metric]):
        return float("nan")
    return float(rows.iloc[0][metric])


def metric_noise(metrics: pd.DataFrame, samples: dict | None, metric: str) -> tuple[float, str]:
    """:func:`noise` of ``metric`` for a run given its metrics.json frame (for the retrain AUC of PrivLeak) and its
    samples.json (None: the floors)."""
    retrain = metrics[(metrics["model"] == "retrain") & (metrics["bits"] == 32)]
    auc_retrain = float(retrain.iloc[0]["auc"]) if not retrain.empty and "auc" in retrain.columns else None
    return noise(metric, samples, auc_retrain)


def share_undone(metric: str, t32: float, u32: float, tb: float, ub: float, threshold: float) -> tuple[float, str]:
    """(share undone, "") = ((ub - u32) / (tb - u32), "") for one metric under one perturbation of both models (t: the
    target, u: the unlearned model; 32: full precision, b: perturbed), or (NaN, why it is not stated) where the
    full-precision effect or the denominator is within ``threshold``, a forget metric's effect goes the wrong way
    (the unlearned model remembers more at 32 bits, or the perturbed target remembers less than the unlearned model
    at 32 bits: both models wrecked, nothing "came back"), or a value is missing (NaN)."""
    sign = metric_info(metric).comes_back  # direction of remembering; 0: utility metrics, either way
    if math.isnan(t32) or math.isnan(u32):
        return float("nan"), "not measured at 32 bits"
    if abs(t32 - u32) <= threshold:
        return float("nan"), "no full-precision effect beyond the noise"
    if sign and sign * (t32 - u32) <= 0:
        return float("nan"), "the unlearned model remembers more than the target at 32 bits: no forgetting to undo"
    if math.isnan(ub) or math.isnan(tb):
        return float("nan"), "not measured"
    if abs(tb - u32) <= threshold:
        return float("nan"), "the quantized target is within the noise of the unlearned model"
    if sign and sign * (tb - u32) <= 0:
        return float("nan"), "the quantized target no longer remembers more than the unlearned model"
    return (ub - u32) / (tb - u32), ""


def headline_median(frame: pd.DataFrame, column: str, bits: int) -> float:
    """The median of ``column`` (a share undone) over the headline metrics (qru.metrics.headline) of a
    :func:`forgetting_undone`-style frame at ``bits``, NaN values left out; NaN where none is left."""
    part = frame[(frame["bits"] == bits) & frame["metric"].isin(headline())][column].dropna()
    return float(part.median()) if not part.empty else float("nan")


def forgetting_undone(metrics: pd.DataFrame, samples: dict | None = None) -> pd.DataFrame:
    """One row per (metric, bit width below 32) of a run's metrics.json frame: metric, bits, the full-precision
    effect m_t,32 - m_u,32, the noise threshold and how it was set, the share undone (NaN where an effect is within
    the noise, or goes the wrong way: a forget metric where the unlearned model remembers more than the target) and
    ``reason`` (why it is not shown, else ""). Empty if the run lacks 32-bit target / unlearned rows.
    ``samples`` = the run's samples.json (per-item scores for the noise; without it the floors are used)."""
    rows = []
    retrain = metrics[(metrics["model"] == "retrain") & (metrics["bits"] == 32)]
    auc_retrain = float(retrain.iloc[0]["auc"]) if not retrain.empty and "auc" in retrain.columns else None
    low_bits = sorted({int(b) for b in metrics.loc[metrics["model"] == "unlearned", "bits"] if b != 32},
                      reverse=True)
    for metric in [c for c in table_columns() if c in metrics.columns]:
        u32, t32 = _value(metrics, "unlearned", 32, metric), _value(metrics, "target", 32, metric)
        if math.isnan(u32) or math.isnan(t32):
            continue
        threshold, how = noise(metric, samples, auc_retrain)
        for bits in low_bits:
            ub, tb = _value(metrics, "unlearned", bits, metric), _value(metrics, "target", bits, metric)
            share, reason = share_undone(metric, t32, u32, tb, ub, threshold)
            rows.append({"metric": metric, "bits": bits, "effect_32": t32 - u32, "noise": threshold,
                         "noise_from": how, "undone": share, "reason": reason})
    return pd.DataFrame(rows, columns=["metric", "bits", "effect_32", "noise", "noise_from", "undone", "reason"])


__all__ = ["BOOTSTRAP", "Z", "forgetting_undone", "headline_median", "metric_noise", "noise", "share_undone"]
