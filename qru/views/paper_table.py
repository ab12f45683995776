"""The paper-table view of a sweep: methods (or learning rates) x {full, LoRA} x bit widths, mean and 95% bootstrap
confidence interval over seeds, laid out like Zhang et al. 2025's Table 2, beside the papers' Llama-2-7B numbers.
"""
from __future__ import annotations

import math

import pandas as pd

from qru.config import RunConfig
from qru.metrics import METRICS, WEIGHT_COLUMNS as DELTA_COLUMNS
from qru.reference import COLUMNS as REFERENCE_COLUMNS, paper_table as reference_table
from qru.stats import bootstrap_ci

ADAPTER_NAMES = {"full": "full", "lora": "LoRA"}
# Decimals of a cell: the metric's paper_digits (qru.metrics: one for the x100 scores and PrivLeak, three for NLL);
# three for the weight-delta shares below.
DELTA_DIGITS = 3
# Weight-delta totals joined to the unlearned rows (qru.deltas): how much of the update survived that bit width.
METHOD_ORDER = ["GA", "GA+GDR", "GA+KLR", "NPO", "NPO+GDR", "NPO+KLR"]


def method_name(config: RunConfig) -> str:
    """``NPO+KLR``: the unlearning method and regularizer of a run, as the papers name them (with ``SURE 0.1`` or
    ``(muse loss forms)`` where the run has them)."""
    return config.unlearn.label.split(" full ")[0].split(" LoRA ")[0]


def _delta_totals(config: RunConfig, deltas: pd.DataFrame) -> pd.DataFrame:
    """bits, share_kept, code_flip_rate of the unlearned model under the run's own quantizer at each bit width."""
    keys = {s.key: s.bits for s in config.quant_specs() if s.bits < 32}
    totals = deltas[(deltas["tensor"] == "total") & deltas["quantizer"].isin(list(keys))]
    return pd.DataFrame({"bits": totals["quantizer"].map(keys), "model": "unlearned",
                         **{c: totals[c] for c in DELTA_COLUMNS}})


def sweep_frame(configs: dict[str, RunConfig], metrics: dict[str, pd.DataFrame],
                deltas: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per (run, model, bit width): run_id, method, adapter, lr, seed, model, bits and the metric columns,
    and, where ``deltas`` (run id -> deltas.parquet frame) is given, the unlearned rows' DELTA_COLUMNS under the
    run's own quantizer at that bit width.

    ``configs`` and ``metrics`` map run ids to their RunConfig and metrics.json frame; runs without metrics are
    left out."""
    parts = []
    for run_id, frame in metrics.items():
        config = configs[run_id]
        part = frame.copy()
        if deltas is not None and run_id in deltas:
            part = part.merge(_delta_totals(config, deltas[run_id]), on=["model", "bits"], how="left")
        part.insert(0, "run_id", run_id)
        part.insert(1, "method", method_name(config))
        part.insert(2, "adapter", ADAPTER_NAMES[config.unlearn.adapter])
        part.insert(3, "lr", config.unlearn.lr)
        part.insert(4, "seed", config.seed)
        part.insert(5, "scenario", config.unlearn.scenario_label)
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def load_sweep(store, run_ids: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """:func:`sweep_frame` of a sweep's finished runs in ``store`` (a qru.store.RunStore), with their weight-delta
    totals, and the ids of those not finished or unreadable (left out)."""
    configs, metrics, deltas, missing = {}, {}, {}, []
    for run_id in run_ids:
        try:
            if store.status(run_id).get("state") != "done":
                missing.append(run_id)
                continue
            configs[run_id], metrics[run_id] = store.config(run_id), store.metrics(run_id)
            deltas[run_id] = store.deltas(run_id)
        except Exception:  # noqa: BLE001 (a missing or corrupt run is reported, not fatal)
            metrics.pop(run_id, None)
            missing.append(run_id)
    return sweep_frame(configs, metrics, deltas), missing


def cell(values: list[float], digits: int = 1) -> str:
    """``mean [low, high]`` (95% bootstrap CI over the values), ``mean`` for one value, ``—`` for none."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "—"
    mean, low, high = bootstrap_ci(values)
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _row_key(frame: pd.DataFrame, rows: str) -> pd.Series:
    """The row name of each unlearned row: its method (or ``lr X``), plus whatever else tells runs apart that would
    otherwise be pooled into one cell: the learning rate where a method has several, the scenario where runs
    differ in it (sweeps read together)."""
    key = frame["method"] if rows == "method" else frame["lr"].map(lambda v: f"lr {v:g}")
    if rows == "method" and (frame.groupby(["method", "adapter"])["lr"].nunique() > 1).any():
        key = key + frame["lr"].map(lambda v: f" lr {v:g}")
    if rows != "method" and frame["method"].nunique() > 1:
        key = frame["method"] + " " + key
    return key + _scenario_suffix(frame)


def _scenario_suffix(frame: pd.DataFrame) -> pd.Series:
    scenario = frame["scenario"] if "scenario" in frame.columns else pd.Series("", index=frame.index)
    if scenario.nunique() <= 1:
        return pd.Series("", index=frame.index)
    return scenario.map(lambda v: f" [{v}]" if v else " [natural start]")


def paper_table(frame: pd.DataFrame, metric: str, rows: str = "method", digits: int | None = None) -> pd.DataFrame:
    """The sweep laid out as the papers' tables for one ``metric``: a row per method (``rows="method"``) or learning
    rate (``"lr"``) of the unlearned models, then the target and retrain rows; a column per (adapter, bit width),
    ``full @32`` first; cells ``mean [95% CI]`` over seeds (:func:`cell`) with ``digits`` decimals (default: the
    metric's paper_digits in qru.metrics, 1 for the x100 scores, 3 for NLL; 3 for the weight-delta shares). Raises
    KeyError for a metric the runs lack."""
    if digits is None:
        digits = METRICS[metric].paper_digits if metric in METRICS else DELTA_DIGITS
    if frame.empty:
        return pd.DataFrame()
    if metric not in frame.columns:
        raise KeyError(f"the sweep's runs have no metric {metric!r}")
    unlearned = frame[frame["model"] == "unlearned"].assign(row=lambda f: _row_key(f, rows))
    columns = [(a, b) for a in ("full", "LoRA") for b in sorted(frame["bits"].unique(), reverse=True)
               if ((unlearned["adapter"] == a) & (unlearned["bits"] == b)).any()]
    order = METHOD_ORDER if rows == "method" else []
    first = unlearned.drop_duplicates("row").set_index("row")
    names = sorted(first.index, key=lambda r: (order.index(first.loc[r, "method"]) if first.loc[r, "method"] in order
                                               else len(order), first.loc[r, "method"], first.loc[r, "lr"], r))
    table = []
    for name in names:
        sub = unlearned[unlearned["row"] == name]
        table.append({"": name, **{f"{a} @{b}": cell(sub[(sub["adapter"] == a) & (sub["bits"] == b)][metric]
                                                        .tolist(), digits) for a, b in columns}})
    references = frame[frame["model"].isin(["target", "retrain"])]
    suffix = _scenario_suffix(references).where(references["model"] == "target", "")  # one retrain for all starts
    references = references.assign(row=references["model"] + suffix)
    for name in dict.fromkeys(references.sort_values("model", key=lambda m: m != "target")["row"]):
        sub = references[references["row"] == name].drop_duplicates(["bits", "quant"])
        table.append({"": name, **{f"{a} @{b}": cell(sub[sub["bits"] == b][metric].tolist(), digits)
                                   for a, b in columns}})
    return pd.DataFrame(table)


def reference_layout(metric: str) -> pd.DataFrame:
    """The papers' Llama-2-7B numbers of ``metric`` in the same layout (rows method / target / retrain, columns
    ``<paper>, <corpus>, <adapter> @<bits>``); only what they report. Empty if they report nothing for it."""
    if metric not in REFERENCE_COLUMNS:
        return pd.DataFrame()
    cells: dict[str, dict[str, str]] = {}
    for row in reference_table().to_dict("records"):
        paper, corpus, model, precision, value = row["paper"], row["corpus"], row["model"], row["precision"], \
            row[metric]
        if value == "—":  # not reported
            continue
        name, _, adapter = model.partition(" ")
        bits = precision.split("-")[0]
        column = f"{paper}, {corpus}: {adapter or 'full'} @{bits}" if name not in ("target", "retrain") \
            else f"{paper}, {corpus}: @{bits}"
        cells.setdefault(name, {})[column] = value
    if not cells:
        return pd.DataFrame()
    table = pd.DataFrame.from_dict(cells, orient="index").fillna("—")
    return table.rename_axis("").reset_index()


__all__ = ["DELTA_COLUMNS", "cell", "load_sweep", "method_name", "paper_table", "reference_layout", "sweep_frame"]
