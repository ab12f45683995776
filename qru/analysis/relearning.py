"""The share of the forgetting a relearning attack undoes, beside the share quantization undoes, on the same items.

From a relearning record (qru.relearn): for each metric and bit width b of the run,

    undone by quantization = (m_u,b - m_u,32) / (m_t,b - m_u,32)            (b < 32)
    undone by relearning   = (m_r,b - m_u,32) / (m_t,b - m_u,32)            (r: the relearned model at b bits)

(t: the target, u: the unlearned model, all on the held-out items the relearning text does not cover), each stated
only where qru.analysis.undone.share_undone states it: the full-precision effect and the denominator beyond the
metric's noise (2 standard errors of the paired 32-bit target - unlearned difference over those items, at least the
metric's floor), a forget metric's effect going the right way.
"""
from __future__ import annotations

import math

import pandas as pd

from qru.analysis.undone import noise, share_undone
from qru.metrics import table_columns

COLUMNS = ["metric", "bits", "effect_32", "noise", "noise_from", "by_quantization", "quantization_reason",
           "by_relearning", "relearning_reason"]


def _value(rows: list[dict], model: str, bits: int, metric: str) -> float:
    for row in rows:
        if row.get("model") == model and row.get("bits") == bits:
            value = row.get(metric)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")
    return float("nan")


def relearning_undone(record: dict, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per (metric, bit width) of a relearning record: the 32-bit effect m_t,32 - m_u,32, the noise
    threshold and how it was set, the share undone by quantization (NaN at 32 bits) and by relearning, each with
    the reason it is not stated ("" where it is). Empty where the record lacks 32-bit target / unlearned rows.
    ``metrics``: only these (default: every metric of the tables, qru.metrics.table_columns)."""
    rows, samples = record.get("rows", []), record.get("samples")
    bits = sorted({int(r["bits"]) for r in rows if r.get("model") == "relearned"}, reverse=True)
    out = []
    for metric in metrics or table_columns():
        t32, u32 = _value(rows, "target", 32, metric), _value(rows, "unlearned", 32, metric)
        if math.isnan(t32) or math.isnan(u32):
            continue
        threshold, how = noise(metric, samples, record.get("auc_retrain"))
        for b in bits:
            tb = _value(rows, "target", b, metric)
            quant, quant_why = share_undone(metric, t32, u32, tb, _value(rows, "unlearned", b, metric), threshold) \
                if b < 32 else (float("nan"), "full precision")
            relearn, relearn_why = share_undone(metric, t32, u32, tb, _value(rows, "relearned", b, metric), threshold)
            out.append({"metric": metric, "bits": b, "effect_32": t32 - u32, "noise": threshold, "noise_from": how,
                        "by_quantization": quant, "quantization_reason": quant_why, "by_relearning": relearn,
                        "relearning_reason": relearn_why})
    return pd.DataFrame(out, columns=COLUMNS)


__all__ = ["COLUMNS", "relearning_undone"]
