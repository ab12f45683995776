"""Repeats and per-sample scores: bootstrap confidence intervals and re-aggregation of stored samples.

Confidence intervals are percentile bootstrap intervals of the mean (scipy.stats.bootstrap, seeded), over the seeds of
a sweep or over the items of one run. Per-sample scores (a run's samples.json, qru.evals.suite) re-aggregate into the
stored metrics: VerbMem / KnowMem = mean ROUGE-L F1 x 100 (MUSE), NLL = token-weighted mean, AUC from the Min-K%
scores (docs/design.md "Reference definitions").
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import bootstrap

from qru.evals.privleak import mia_auc

CONFIDENCE = 0.95
RESAMPLES = 2000
ITEM_METRICS = ("verbmem", "knowmem_forget", "knowmem_retain")
NLL_METRICS = ("nll_forget", "nll_retain", "nll_holdout")


def bootstrap_ci(values, confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of ``values`` (1-D, finite floats) with a ``confidence`` percentile bootstrap interval of the
    mean (scipy.stats.bootstrap, RESAMPLES resamples, seeded). Fewer than 2 values: the interval is (nan, nan);
    identical values: it is the value itself. NaN values are dropped first. Raises ValueError for no values."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to aggregate")
    mean = float(data.mean())
    if data.size < 2:
        return mean, float("nan"), float("nan")
    if np.all(data == data[0]):
        return mean, mean, mean
    result = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=RESAMPLES, method="percentile",
                       rng=np.random.default_rng(seed))
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def item_scores(samples: dict, metric: str) -> list[float]:
    """Per-item scores of ``metric`` in one model's samples: ROUGE-L F1 x 100 per VerbMem / KnowMem item (entity-token
    VerbMem: per item that has entity values), or the NLL per token of each text (nats/token). Raises KeyError if the samples do not hold that metric."""
    if metric in ITEM_METRICS:
        return [100.0 * r["rougeL_f1"] for r in samples[metric]]
    if metric == "verbmem_entity":
        if not any("entity_f1" in r for r in samples["verbmem"]):
            raise KeyError("these samples have no entity-token VerbMem scores")
        return [100.0 * r["entity_f1"] for r in samples["verbmem"] if r.get("entity_f1") is not None]
    if metric in NLL_METRICS:
        return [r["nll"] / max(r["tokens"], 1) for r in samples[metric]]
    raise KeyError(f"no per-item scores for {metric!r} (choose from "
                   f"{', '.join(ITEM_METRICS + ('verbmem_entity',) + NLL_METRICS)})")


def reaggregate(samples: dict, metric: str) -> float:
    """``metric`` recomputed from one model's per-sample records: the value metrics.json stores for it (``auc`` from
    the Min-K% scores; NLL token-weighted). Raises KeyError if the samples do not hold it."""
    if metric == "auc":
        return mia_auc(samples["mink_forget"], samples["mink_holdout"])
    if metric in NLL_METRICS:
        rows = samples[metric]
        return sum(r["nll"] for r in rows) / max(sum(r["tokens"] for r in rows), 1)
    scores = item_scores(samples, metric)
    return float(np.mean(scores))


__all__ = ["bootstrap_ci", "item_scores", "reaggregate"]
