"""The share of the forgetting that quantization undoes, for reading: a table per run and the rule in words.

The numbers (the share undone, the noise thresholds) come from qru.analysis.undone; the metrics' names and floors
from qru.metrics.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from qru.analysis.undone import Z
from qru.metrics import label, metric


def undone_table(undone: pd.DataFrame) -> pd.DataFrame:
    """qru.analysis.undone.forgetting_undone for reading: a row per metric (display names) with its full-precision
    effect, a column per bit width with the share undone as a percentage (or why it is not shown) and the noise
    threshold."""
    rows = []
    for name, group in undone.groupby("metric", sort=False):
        first = group.iloc[0]
        row = {"metric": label(name), "effect at 32 bits (target − unlearned)": f"{first['effect_32']:+.3g}"}
        for _, r in group.iterrows():
            share = r["undone"]
            row[f"undone at {r['bits']} bits"] = f"{round(100 * share) or 0}%" if np.isfinite(share) \
                else f"— ({r['reason']})"
        row["noise threshold"] = f"{first['noise']:.3g} ({first['noise_from']})"
        rows.append(row)
    return pd.DataFrame(rows)


THRESHOLD_TEXT = ("Share undone = (m_unlearned,b − m_unlearned,32) / (m_target,b − m_unlearned,32): 0% = quantization "
                  "kept the forgetting, 100% = back at the quantized target. Shown only where the full-precision "
                  f"effect and the denominator exceed the metric's noise: {Z:g} standard errors of the paired 32-bit "
                  "target − unlearned difference over the evaluation items (PrivLeak: bootstrap over texts), at "
                  f"least {metric('knowmem_forget').floor:g} point (scores) or {metric('nll_forget').floor:g} nats "
                  "(NLL).")



def relearning_table(undone: pd.DataFrame) -> pd.DataFrame:
    """qru.analysis.relearning.relearning_undone for reading: a row per metric (display names) with its 32-bit
    effect on the held-out items, then per bit width the share undone by quantization (``undone by PTQ @b``) beside
    the share undone by relearning read at that width (``undone by relearning @b``), as percentages or "—", the
    noise threshold, and why the dashes are not stated."""
    rows = []
    for name, group in undone.groupby("metric", sort=False):
        first = group.iloc[0]
        row, why = {"metric": label(name), "effect at 32 bits (target − unlearned)": f"{first['effect_32']:+.3g}"}, []
        for _, r in group.iterrows():
            cells = [("relearning", r["by_relearning"], r["relearning_reason"])]
            if r["bits"] < 32:
                cells.insert(0, ("PTQ", r["by_quantization"], r["quantization_reason"]))
            for what, share, reason in cells:
                row[f"undone by {what} @{r['bits']}"] = f"{round(100 * share) or 0}%" if np.isfinite(share) else "—"
                if not np.isfinite(share) and reason not in why:
                    why.append(reason)
        row["noise threshold"] = f"{first['noise']:.3g} ({first['noise_from']})"
        row["— means"] = "; ".join(why)
        rows.append(row)
    return pd.DataFrame(rows)


def relearning_caption(record: dict) -> str:
    """What a relearning record did, in a sentence: data, steps, learning rate, seed, the slice and the items."""
    config, split = record["config"], record["split"]
    what = ("the relearn slice of the forget set" + (f" (entities {', '.join(split['relearn_entities'])})"
                                                     if split.get("relearn_entities") else "")
            if config["data"] == "forget" else "retain text (the control)")
    held = f" about {', '.join(split['evaluated_entities'])}" if split.get("evaluated_entities") else ""
    share = f", share {config['share']:g}" if split.get("relearn_entities") else ""
    skipped = split.get("not_evaluated_bits") or []
    widths = "at 32 bits and the run's bit widths" + (
        f" except {', '.join(map(str, skipped))} bits (GPTQ needs calibration: not evaluated)" if skipped else "")
    return (f"{config['steps']} steps at lr {config['lr']:g} (batch {config['batch_size']}{share}, seed "
            f"{config['seed']}) on {what}, {split['documents']} documents; evaluated on the forget items{held} the "
            f"relearning text does not cover ({split['knowmem_forget']} KnowMem, {split['verbmem']} VerbMem, "
            f"{split['privleak_forget']} PrivLeak texts), {widths}. {float(record.get('seconds', 0)):.0f} s.")


__all__ = ["THRESHOLD_TEXT", "relearning_caption", "relearning_table", "undone_table"]
