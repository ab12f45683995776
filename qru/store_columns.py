"""What the stored tables and probe files of a run must hold (checked by qru.store.RunStore when it reads them)."""
from __future__ import annotations

from qru.metrics import required_columns

# Columns a stored table must have, with whether they must be numeric (the metrics: qru.metrics.required_columns).
METRIC_COLUMNS = {"model": False, "bits": True, "quant": False, **{name: True for name in required_columns()}}
DELTA_COLUMNS = {"bits": True, "quant": False, "tensor": False, "layer": True, "module": False, "numel": True,
                 "zero_delta": True, "mean_abs_delta": True, "median_step": True, "below_half_step": True,
                 "code_flip_rate": True, "share_kept": True, "cosine": True, "noise_ratio": True}


# The per-bit-width delta summary that `qru show` and the dashboard display (all in DELTA_COLUMNS).
SUMMARY_COLUMNS = ["bits", "quant", "mean_abs_delta", "median_step", "below_half_step", "code_flip_rate", "share_kept",
                   "cosine", "noise_ratio"]


def probe_problem(probe) -> str:
    """Why a probes.json entry is malformed ("" if it is fine)."""
    if not isinstance(probe, dict) or not isinstance(probe.get("outputs"), dict):
        return "not an object with outputs"
    if not (isinstance(probe.get("prompt"), str) and isinstance(probe.get("gt"), str)):
        return "prompt and gt must be text"
    for key, out in probe["outputs"].items():
        model, _, bits = key.partition("@")
        if not (model and bits.isascii() and bits.isdigit()):
            return f"output key {key!r} is not <model>@<bits>"
        if not (isinstance(out, dict) and isinstance(out.get("output"), str)
                and isinstance(out.get("rougeL_f1"), (int, float)) and not isinstance(out.get("rougeL_f1"), bool)):
            return f"output {key!r} lacks its text or ROUGE-L"
        spans = out.get("leaked_spans", [])
        if not (isinstance(spans, list) and all(isinstance(s, list) and len(s) == 2
                                                and all(type(x) is int for x in s) and 0 <= s[0] <= s[1]
                                                for s in spans)):
            return f"output {key!r} has malformed leaked_spans"
    return ""


__all__ = ["DELTA_COLUMNS", "METRIC_COLUMNS", "SUMMARY_COLUMNS", "probe_problem"]
