"""Metric tables of stored runs: target, retrain and unlearned at each bit width, the change from 32 bits, which
changes mean the forgotten knowledge came back, and a comparison across runs.

A change "came back" when a quantized model moved toward remembering relative to the same model at 32 bits by more
than the metric's noise floor, for the metrics of the forget set (qru.metrics: direction and floor): VerbMem or
KnowMem-forget up, PrivLeak down (more negative = more memorized), forget NLL down. Columns, their display names and
decimals come from qru.metrics too.
"""
from __future__ import annotations

import re

import pandas as pd

from qru.metrics import METRICS, forget_columns, label, labels, metric, table_columns

MODEL_ORDER = {"target": 0, "retrain": 1, "unlearned": 2}
RED = "background-color: #f6c6c6; color: #7a0000"


def run_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows target, retrain, unlearned, each at its bit widths (highest first); columns model, bits, quant and the
    metric columns (qru.metrics.table_columns) that the run has."""
    cols = ["model", "bits", "quant"] + [c for c in table_columns() if c in metrics.columns]
    table = metrics[cols].copy()
    table["_order"] = table["model"].map(MODEL_ORDER).fillna(9)
    return table.sort_values(["_order", "bits"], ascending=[True, False]).drop(columns="_order") \
        .reset_index(drop=True)


def changes(table: pd.DataFrame) -> pd.DataFrame:
    """For each model and each bit width below 32: metric at b bits minus the same model at 32 bits.
    Empty if the run has no 32-bit rows."""
    metric_cols = [c for c in table_columns() if c in table.columns]
    rows = []
    for model, group in table.groupby("model", sort=False):
        full = group[group["bits"] == 32]
        if full.empty:
            continue
        for _, row in group[group["bits"] != 32].iterrows():
            rows.append({"model": model, "bits": row["bits"], "quant": row["quant"],
                         **{c: row[c] - full.iloc[0][c] for c in metric_cols}})
    return pd.DataFrame(rows, columns=["model", "bits", "quant", *metric_cols])


def came_back(change: pd.DataFrame) -> pd.DataFrame:
    """Boolean frame shaped like ``change``: True where the unlearned model's change of a forget-set metric moves
    toward remembering by more than the metric's floor (qru.metrics)."""
    mask = pd.DataFrame(False, index=change.index, columns=change.columns)
    unlearned = change["model"] == "unlearned" if "model" in change.columns else True
    for col in forget_columns():
        if col in change.columns:
            m = metric(col)
            mask[col] = ((m.comes_back * change[col]) > m.floor) & unlearned
    return mask


def came_back_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Boolean frame shaped like :func:`run_table`'s ``table``: True on the unlearned model's quantized rows whose
    value came back (target and retrain rows are references: they had nothing to forget)."""
    mask = pd.DataFrame(False, index=table.index, columns=table.columns)
    for i, row in table.iterrows():
        full = table[(table["model"] == row["model"]) & (table["bits"] == 32)]
        if row["model"] != "unlearned" or row["bits"] == 32 or full.empty:
            continue
        delta = pd.DataFrame([{c: row[c] - full.iloc[0][c] for c in forget_columns() if c in table.columns}])
        for col, flag in came_back(delta).iloc[0].items():
            mask.loc[i, col] = bool(flag)
    return mask


def highlight(table: pd.DataFrame, mask: pd.DataFrame, signed: bool = False):
    """A pandas Styler of ``table`` with the True cells of ``mask`` in red, metric columns under their display
    names and numbers rounded for reading to their metric's decimals (qru.metrics: NLL 3, the rest 2; other float
    columns 2); changes (``signed``, or columns named "Δ ...") with their sign."""
    shown = table.rename(columns=labels())
    formats = {}
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            sign = "+" if signed or str(col).startswith("Δ") else ""
            formats[col] = "{:" + sign + f".{_digits(str(col))}f" + "}"
    colors = mask.rename(columns=labels()).map(lambda v: RED if v else "").values
    return shown.style.apply(lambda _: colors, axis=None).format(formats, na_rep="—")


_BY_LABEL = {m.label: m for m in METRICS.values()}


def _digits(column: str) -> int:
    """Decimals of a shown column: a metric's display name, alone or as :func:`comparison` names it ("<name> 32",
    "<name> <bits>", "Δ <name>"); 2 for any other column."""
    name = re.sub(r" \d+$", "", column.removeprefix("Δ "))
    found = _BY_LABEL.get(column) or _BY_LABEL.get(name)
    return found.digits if found else 2


def _comparison_row(metrics: pd.DataFrame, model: str, name: str, bits: int) -> dict:
    group = metrics[metrics["model"] == model]
    full, low = group[group["bits"] == 32], group[group["bits"] == bits]
    row = {"model": name}
    for col, title in labels().items():
        if col in metrics.columns:
            a = full.iloc[0][col] if not full.empty else float("nan")
            b = low.iloc[0][col] if not low.empty else float("nan")
            row.update({f"{title} 32": a, f"{title} {bits}": b, f"Δ {title}": b - a})
    return row


def comparison(runs: dict[str, pd.DataFrame], bits: int) -> pd.DataFrame:
    """One row per model across picked runs: the target and retrain references, then each run's unlearned model,
    with each metric at 32 bits, at ``bits`` and the change ("<metric> 32", "<metric> <bits>", "Δ <metric>").
    Runs on the same models share one target and one retrain row; a run whose references differ (another model,
    corpus or bit widths) gets its own, named after it; a run without either bit width adds none."""
    refs, rows = [], []
    for run, metrics in runs.items():
        for model in ("target", "retrain"):
            row = _comparison_row(metrics, model, model, bits)
            values = tuple(v for k, v in row.items() if k != "model")
            if all(pd.isna(v) for v in values) or any(model == m and _same(values, v) for m, v in refs):
                continue
            if any(model == m for m, _ in refs):
                row["model"] = f"{model} ({run})"
            refs.append((model, values))
            rows.append(row)
    rows.sort(key=lambda r: not r["model"].startswith("target"))  # targets first, then retrains
    rows += [_comparison_row(metrics, "unlearned", run, bits) for run, metrics in runs.items()]
    return pd.DataFrame(rows)


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all((x == y) or (pd.isna(x) and pd.isna(y)) for x, y in zip(a, b))


def comparison_mask(table: pd.DataFrame) -> pd.DataFrame:
    """True on the unlearned models' "Δ <metric>" cells of a :func:`comparison` table whose change came back
    (:func:`came_back`'s rule); the target and retrain reference rows are never marked."""
    mask = pd.DataFrame(False, index=table.index, columns=table.columns)
    unlearned = ~table["model"].str.match(r"^(target|retrain)( \(|$)")
    for col in forget_columns():
        m, name = metric(col), f"Δ {label(col)}"
        if name in table.columns:
            mask[name] = ((m.comes_back * table[name]) > m.floor) & unlearned
    return mask


def thresholds_text() -> str:
    """The "came back" rule in words, for captions."""
    parts = [f"{m.label} {'up' if m.comes_back > 0 else 'down'} by more than {m.floor:g}"
             for m in map(metric, forget_columns())]
    return "; ".join(parts)


__all__ = ["came_back", "came_back_cells", "changes", "comparison", "comparison_mask",
           "highlight", "run_table", "thresholds_text"]
