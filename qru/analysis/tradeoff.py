"""Forgetting against utility for the runs of a sweep, at full precision and at each quantized width, and which
points no other beats (the Pareto frontier); with, per run and width, the share of the forgetting undone by
quantization and by the relearning attack (docs/measures.md "Trade-off").

A *fix* is what tells a sweep's runs apart apart from the seed: method and regularizer with their options
(quantization-aware, SAM, ...), adapter, learning rate and scenario (start point): the row name of the paper table.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from qru.analysis.relearning import relearning_undone
from qru.analysis.undone import forgetting_undone, headline_median
from qru.config import RelearnConfig, RunConfig, config_key
from qru.metrics import headline, metric as metric_info, table_columns

FORGET_METRICS = ("knowmem_forget", "nll_forget")
UTILITY_METRIC = "knowmem_retain"
COLUMNS = ["run_id", "fix", "seed", "bits", *FORGET_METRICS, UTILITY_METRIC, "undone", "relearn_undone",
           "relearn_stored"]


def fix_name(config: RunConfig) -> str:
    """The fix of a run: its label without the seed-independent details every run of a sweep shares, e.g.
    ``NPO+GDR QA nf4-b64@4 LoRA r32 lr 0.0005 [start on nf4-b64@4 grid]``."""
    label = config.unlearn.label
    head, _, scenario = label.partition(" [")
    head = head.split(" x")[0]  # drop "x5 ep" and what follows (the same for every run of a preset)
    return head + (f" [{scenario}" if scenario else " [natural start]")


def run_points(run_id: str, config: RunConfig, metrics: pd.DataFrame, samples: dict | None,
               relearn: dict | None) -> list[dict]:
    """One point per bit width of a run: its fix, seed, the forget metrics and utility of the unlearned model, the
    median over the headline metrics of the share undone by quantization (NaN at 32 bits or where not measurable)
    and by relearning read at that width (``relearn``: the run's relearning record, qru.relearn; NaN without)."""
    keep = [c for c in metrics.columns if c not in set(table_columns()) - set(headline())]  # PrivLeak's bootstrap
    undone = forgetting_undone(metrics[keep], samples)  # is slow, and only the headline metrics are read here
    relearned = relearning_undone(relearn, headline()) if relearn else \
        pd.DataFrame(columns=["bits", "metric", "by_relearning"])
    out = []
    for _, row in metrics[metrics["model"] == "unlearned"].sort_values("bits", ascending=False).iterrows():
        b = int(row["bits"])
        point = {"run_id": run_id, "fix": fix_name(config), "seed": config.seed, "bits": b,
                 **{m: float(row[m]) if m in row and pd.notna(row[m]) else float("nan")
                    for m in (*FORGET_METRICS, UTILITY_METRIC)}}
        point["undone"] = headline_median(undone, "undone", b) if b < 32 else float("nan")
        point["relearn_undone"] = headline_median(relearned, "by_relearning", b)
        point["relearn_stored"] = relearn is not None
        out.append(point)
    return out


def _distinct(points: list[dict], keys: dict[str, str], labels: dict[str, str]) -> None:
    """Where runs that differ in more than the seed share a fix name (sweeps of other scales, quantizers or
    settings read together), give each its run label, and where even that is shared, the first digits of its key."""
    names: dict[str, set] = {}
    for p in points:
        names.setdefault(p["fix"], set()).add(keys[p["run_id"]])
    for p in points:
        if len(names[p["fix"]]) > 1:
            p["fix"] = labels[p["run_id"]]
    names = {}
    for p in points:
        names.setdefault(p["fix"], set()).add(keys[p["run_id"]])
    for p in points:
        if len(names[p["fix"]]) > 1:
            p["fix"] += f" #{keys[p['run_id']][:6]}"


def load_points(store, run_ids: list[str], relearn: RelearnConfig | None = None) -> pd.DataFrame:
    """:func:`run_points` of the finished qru runs among ``run_ids`` in ``store`` (others left out), with their
    relearning record under ``relearn`` (default: RelearnConfig(), the attack a sweep runs) where stored."""
    from qru.relearn import record_path, stored_record

    relearn = relearn or RelearnConfig()
    points, keys, labels = [], {}, {}
    for run_id in run_ids:
        try:
            config = store.config(run_id)
            if not isinstance(config, RunConfig) or store.status(run_id).get("state") != "done":
                continue
            points += run_points(run_id, config, store.metrics(run_id), _samples(store, run_id),
                                 stored_record(record_path(store, run_id, relearn)))
            keys[run_id] = config_key(dataclasses.replace(config, seed=0))
            labels[run_id] = fix_name(config).rsplit(" [", 1)[0] + " — " + config.label
        except Exception:  # noqa: BLE001 (a damaged run is left out, as the paper table does)
            continue
    _distinct(points, keys, labels)
    return pd.DataFrame(points, columns=COLUMNS)


def _samples(store, run_id: str) -> dict | None:
    """A run's samples.json, or None (the noise floors are used) where it is missing or unreadable."""
    try:
        return store.read_json(run_id, "samples.json")
    except Exception:  # noqa: BLE001 (StoreError; the share undone then falls back to the floors)
        return None


def pareto_front(x: np.ndarray, y: np.ndarray, y_lower_better: bool) -> np.ndarray:
    """bool [n]: the points (x_i, y_i) no other point beats, x utility (higher is better) and y forgetting
    (lower is better where ``y_lower_better``, else higher). A point is beaten by one at least as good on both and
    strictly better on one; NaN points are never on the front and beat nothing. Equal points are all on it."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    y = -y if y_lower_better else y  # both "higher is better" now
    ok = ~(np.isnan(x) | np.isnan(y))
    front = ok.copy()
    for i in np.flatnonzero(ok):
        better = ok & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        front[i] = not better.any()
    return front


def forgets_by_lower(metric: str) -> bool:
    """Whether a lower value of forget ``metric`` means more forgotten (KnowMem-forget: yes; forget NLL: no)."""
    return metric_info(metric).comes_back > 0


def fix_means(points: pd.DataFrame, forget: str) -> pd.DataFrame:
    """Per (fix, bits): the mean over seeds of ``forget`` and utility, their seed lists, and ``front``: whether
    the fix's mean point at that width is on the Pareto frontier of that width."""
    rows = []
    for (fix, bits), part in points.groupby(["fix", "bits"], sort=False):
        rows.append({"fix": fix, "bits": int(bits), "forget": part[forget].mean(), "utility": part[UTILITY_METRIC]
                     .mean(), "forget_values": part[forget].tolist(), "utility_values": part[UTILITY_METRIC].tolist(),
                     "seeds": part["seed"].tolist()})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["front"] = False
    for bits, part in frame.groupby("bits"):
        frame.loc[part.index, "front"] = pareto_front(part["utility"], part["forget"], forgets_by_lower(forget))
    return frame


def finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


__all__ = ["COLUMNS", "FORGET_METRICS", "UTILITY_METRIC", "finite", "fix_means", "fix_name", "forgets_by_lower",
           "load_points", "pareto_front", "run_points"]
