"""The numbers behind the Findings (qru.findings writes the sentences): per run and own quantized bit width, the
median share of the forgetting undone over the headline metrics (qru.metrics.headline), the weight statistics under
that quantizer (qru.deltas), the noise-control verdicts (qru.analysis.verdicts) and the target's grid row; and the
thresholds that turn those numbers into words:

- UNDONE_MOST / UNDONE_SOME: a share undone of at least 0.5 is "most" undone, at least 0.2 "part", below that the
  forgetting was kept (:func:`undone_level`); the share of a bit width is the median over the headline metrics that
  have an effect beyond their noise.
- KEPT_UPDATE / ERASED_UPDATE: rounding kept the update where share_kept >= 0.8, erased most of it where
  share_kept < 0.5 (:func:`update_level`).
- :func:`cause`: what the share undone and the share kept together point to.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from qru.analysis.relearning import relearning_undone
from qru.analysis.undone import forgetting_undone, headline_median
from qru.analysis.verdicts import curve_frame, undone_by_control, verdict
from qru.config import RunConfig
from qru.metrics import headline

UNDONE_MOST, UNDONE_SOME = 0.5, 0.2
KEPT_UPDATE, ERASED_UPDATE = 0.8, 0.5
# The weight statistics of a bit width (the "total" row of deltas.parquet under the run's own quantizer).
WEIGHT_STATS = ("share_kept", "cosine", "noise_ratio", "code_flip_rate", "flips_boundary", "flips_scale", "numel",
                "below_half_step")


@dataclass
class RunFindings:
    """The numbers behind one run's sentences: per own quantized bit width, the median share undone over the
    headline metrics (NaN if none measurable) and the weight statistics under that quantizer."""

    run_id: str
    name: str
    config: RunConfig
    undone: pd.DataFrame
    per_bits: list[dict]
    grid_rows: list[dict] | None = None  # controls.json rows of the grid positions (4-bit: read once per run)
    relearning: list[dict] | None = None  # per stored relearning attack: its record and medians (relearn_medians)


def _delta_total(deltas: pd.DataFrame | None, key: str) -> dict:
    if deltas is None or deltas.empty:
        return {}
    rows = deltas[(deltas["quantizer"] == key) & (deltas["tensor"] == "total")]
    return rows.iloc[0].to_dict() if not rows.empty else {}


def relearn_medians(record: dict) -> dict:
    """A relearning record (qru.relearn) in numbers: {"record", "by_relearning": {bits: median share undone over
    the headline metrics}, "by_quantization": {bits: the same for quantization, on the same held-out items}}
    (NaN where no headline metric is measurable)."""
    frame = relearning_undone(record)
    bits = sorted(frame["bits"].unique(), reverse=True) if not frame.empty else []
    return {"record": record, **{column: {int(b): headline_median(frame, column, b) for b in bits}
                                 for column in ("by_relearning", "by_quantization")}}


def run_findings(run_id: str, name: str, config: RunConfig, metrics: pd.DataFrame, samples: dict | None,
                 deltas: pd.DataFrame | None, controls: list[dict] | None = None,
                 relearns: list[dict] | None = None) -> RunFindings:
    """The numbers of one stored run (its config, metrics.json frame, samples.json, deltas.parquet frame and, where
    computed, its controls.json rows: noise controls and grid positions, qru.controls, and its relearning records,
    qru.relearn). The noise-control verdicts use the headline metrics every corpus has (KnowMem-forget, forget
    NLL)."""
    undone = forgetting_undone(metrics, samples)
    by_control = {m: undone_by_control(curve_frame(controls or []), metrics, m, samples)
                  for m in headline(every_corpus=True)}
    per_bits = []
    for spec in config.quant_specs():
        if spec.bits == 32:
            continue
        part = undone[(undone["bits"] == spec.bits) & undone["metric"].isin(headline())]
        per_bits.append({"bits": spec.bits, "quantizer": spec.key, "label": spec.label,
                         "undone": headline_median(undone, "undone", spec.bits),
                         "metrics": part, **{k: _delta_total(deltas, spec.key).get(k, float("nan"))
                                             for k in WEIGHT_STATS},
                         "controls": {m: verdict(u, spec.key) for m, u in by_control.items()},
                         "grid": next((r for r in controls or [] if r.get("control") == "grid"
                                       and r.get("quantizer") == spec.key
                                       and r.get("model", "target") == "target"), None)})
    grid = [r for r in controls or [] if r.get("control") == "grid"]
    return RunFindings(run_id, name, config, undone, per_bits, grid, [relearn_medians(r) for r in relearns or []])


def undone_level(share: float) -> str:
    """"most" (share undone >= UNDONE_MOST), "part" (>= UNDONE_SOME) or "kept" (less: the forgetting was kept)."""
    return "most" if share >= UNDONE_MOST else "part" if share >= UNDONE_SOME else "kept"


def update_level(kept: float) -> str:
    """What rounding did to the weight update: "kept" (share_kept >= KEPT_UPDATE), "erased" (< ERASED_UPDATE) or
    "part"."""
    return "kept" if kept >= KEPT_UPDATE else "erased" if kept < ERASED_UPDATE else "part"


def cause(share: float, kept: float) -> str:
    """What a bit width's share undone and share kept point to: "rounding back" (part or more undone, most of the
    update erased: the quantized weights fall back on the target's codes), "fragility" (part or more undone, the
    update's direction kept), "held" (little undone although most of the update was erased), or "" (nothing to
    explain, or a number is missing)."""
    if not (np.isfinite(share) and np.isfinite(kept)):
        return ""
    if share >= UNDONE_SOME:
        return "rounding back" if kept < ERASED_UPDATE else "fragility"
    return "held" if kept < ERASED_UPDATE else ""


def ranked_undone(findings: list[RunFindings]) -> list[tuple[float, str, str]]:
    """(share undone, run name, bit-width label) of every run's measured bit widths, least undone first."""
    return sorted((b["undone"], f.name, b["label"]) for f in findings for b in f.per_bits if np.isfinite(b["undone"]))


__all__ = ["ERASED_UPDATE", "KEPT_UPDATE", "RunFindings", "UNDONE_MOST", "UNDONE_SOME", "WEIGHT_STATS", "cause",
           "ranked_undone", "relearn_medians", "run_findings", "undone_level", "update_level"]
