"""Findings in plain words, generated from stored runs: which runs 4-bit (or any) PTQ undid and by how much, the share
of each weight update that rounding kept, the code-flip rates, and which scenario options differ between the runs.

Every sentence is built from the numbers (qru.views.undone for the share of the forgetting undone, qru.deltas for the
weight statistics under the run's own quantizer); thresholds that turn numbers into words are named here:

- UNDONE_MOST / UNDONE_SOME: a share undone of at least 0.5 reads "undid most", at least 0.2 "undid part",
  below that "kept"; the verdict of a bit width uses the headline metrics (KnowMem-forget, forget NLL,
  entity-token VerbMem) that have an effect beyond their noise, and takes their median.
- KEPT_UPDATE: rounding "kept the update" where share_kept >= 0.8, "erased most of it" where share_kept < 0.5.
- Noise controls (where ``qru noise`` / ``qru curve`` computed them): qru.views.curves.verdict, "rounding back" or
  "fragility"; the grid position of the target under the run's quantizer (qru.controls.grid_position) and, once per
  run, relative to every measured 4-bit grid, the GGUF ones included (qru.views.curves.grid_sentence: on / near /
  not on, thresholds there).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from qru.config import RunConfig
from qru.views.metric_tables import COLUMNS
from qru.views.curves import curve_frame, grid_reading, grid_sentence, undone_by_control, verdict
from qru.views.undone import forgetting_undone

HEADLINE = ("knowmem_forget", "nll_forget", "verbmem_entity")
UNDONE_MOST, UNDONE_SOME = 0.5, 0.2
KEPT_UPDATE, ERASED_UPDATE = 0.8, 0.5


@dataclass
class RunFindings:
    """The numbers behind one run's sentences: per own quantized bit width, the median share undone over the
    headline metrics (NaN if none measurable) and the weight statistics under that quantizer."""

    run_id: str
    name: str
    config: RunConfig
    undone: pd.DataFrame
    per_bits: list[dict]
    grid: str = ""  # where the target (and a pretrained source) sit relative to 4-bit grids, where measured


def _delta_total(deltas: pd.DataFrame | None, key: str) -> dict:
    if deltas is None or deltas.empty:
        return {}
    rows = deltas[(deltas["quantizer"] == key) & (deltas["tensor"] == "total")]
    return rows.iloc[0].to_dict() if not rows.empty else {}


def run_findings(run_id: str, name: str, config: RunConfig, metrics: pd.DataFrame, samples: dict | None,
                 deltas: pd.DataFrame | None, controls: list[dict] | None = None) -> RunFindings:
    """The numbers of one stored run (its config, metrics.json frame, samples.json, deltas.parquet frame and, where
    computed, its controls.json rows: noise controls and grid positions, qru.controls)."""
    undone = forgetting_undone(metrics, samples)
    by_control = {m: undone_by_control(curve_frame(controls or []), metrics, m, samples)
                  for m in ("knowmem_forget", "nll_forget")}
    per_bits = []
    for spec in config.quant_specs():
        if spec.bits == 32:
            continue
        part = undone[(undone["bits"] == spec.bits) & undone["metric"].isin(HEADLINE)]
        measured = part["undone"].dropna()
        per_bits.append({"bits": spec.bits, "quantizer": spec.key, "label": spec.label,
                         "undone": float(measured.median()) if not measured.empty else float("nan"),
                         "metrics": part, **{k: _delta_total(deltas, spec.key).get(k, float("nan")) for k in
                                             ("share_kept", "cosine", "noise_ratio", "code_flip_rate",
                                              "flips_boundary", "flips_scale", "numel", "below_half_step")},
                         "controls": {m: verdict(u, spec.key) for m, u in by_control.items()},
                         "grid": next((r for r in controls or [] if r.get("control") == "grid"
                                       and r.get("quantizer") == spec.key
                                       and r.get("model", "target") == "target"), None)})
    return RunFindings(run_id, name, config, undone, per_bits, grid_sentence(controls or []))


def _controls_words(b: dict) -> str:
    """What the noise controls of this quantizer say, where computed."""
    parts = []
    for metric, v in b.get("controls", {}).items():
        if v["verdict"] == "not measured":
            continue
        parts.append(f"{COLUMNS.get(metric, metric)}: quantization undid {pct(v['quantized'])}, random noise of the "
                     f"same per-block size {pct(v['noise_mean'])} on average (at most {pct(v['noise_max'])}) — "
                     f"{v['verdict']}")
    text = ("Noise controls: " + "; ".join(parts) + ".") if parts else ""
    grid = b.get("grid")
    if grid and grid.get("bits") != 4:  # 4-bit grids are read once per run (RunFindings.grid)
        text += (f" The target's weights sit {grid_reading(grid)} this grid ({grid['share_on_grid']:.1%} within 1% of "
                 f"a step of a grid point; mean offset {grid['mean_offset_steps']:.3f} steps, 0.25 if spread "
                 "evenly).")
    return text.strip()


def pct(x: float) -> str:
    """A share as a whole percentage, "—" for NaN, never "-0%"."""
    if not np.isfinite(x):
        return "—"
    value = round(100 * x)
    return f"{value if value else 0}%"


def _verdict(share: float) -> str:
    if share >= UNDONE_MOST:
        return f"undid most of the forgetting ({pct(share)})"
    if share >= UNDONE_SOME:
        return f"undid part of the forgetting ({pct(share)})"
    return f"kept the forgetting ({pct(share)} undone)"


def _metric_words(part: pd.DataFrame) -> str:
    words = []
    for _, row in part.iterrows():
        name = COLUMNS.get(row["metric"], row["metric"])
        words.append(f"{name} {pct(row['undone'])}" if np.isfinite(row["undone"]) else f"{name} — ({row['reason']})")
    return "; ".join(words) or "no headline metric was measured at this bit width"


def _weights_words(b: dict) -> str:
    kept = b["share_kept"]
    if not np.isfinite(kept):
        return "The weight analysis has no entry for this quantizer."
    numel = b["numel"] if np.isfinite(b["numel"]) and b["numel"] else float("nan")
    boundary = b["flips_boundary"] / numel if np.isfinite(numel) and np.isfinite(b["flips_boundary"]) else float("nan")
    split = f" ({boundary:.1%} by crossing a rounding boundary)" if np.isfinite(boundary) else ""
    how = "kept the update on average" if kept >= KEPT_UPDATE else \
        "erased most of the update" if kept < ERASED_UPDATE else "kept part of the update"
    return (f"Rounding {how}: share kept {kept:.2f} (cosine {b['cosine']:.2f} between Q(W_u)−Q(W_t) and dW; the "
            f"noise it adds, ||Q(W_u)−Q(W_t)||/||dW||, is {b['noise_ratio']:.2f}); {b['code_flip_rate']:.1%} of the "
            f"quantized codes differ from the target's{split}, and "
            f"{b['below_half_step']:.0%} of the weights moved less than half a step.")


def _why(b: dict) -> str:
    share, kept = b["undone"], b["share_kept"]
    if not (np.isfinite(share) and np.isfinite(kept)):
        return ""
    if share >= UNDONE_SOME and kept < ERASED_UPDATE:
        return ("The numbers point to rounding back: the quantized unlearned weights fall on the target's codes, so "
                "the quantized model is close to the quantized target.")
    if share >= UNDONE_SOME:
        return ("Rounding kept the update's direction, yet the metrics moved back: the forgetting is fragile to "
                "perturbations of this size rather than rounded away (compare a noise control of the same size).")
    if kept < ERASED_UPDATE:
        return ("Rounding erased much of the weight update, yet the metrics held: the part that survived (or the "
                "unquantized embeddings) carries the forgetting.")
    return ""


def sentences(f: RunFindings) -> list[str]:
    """Markdown sentences about one run, generated from its numbers."""
    c = f.config
    scenario = "; ".join(f"{k}: {v}" for k, v in c.unlearn.scenario.items())
    method = c.unlearn.label.split(" [")[0]
    out = [f"**{f.name}**" + ("" if f.name.startswith(method) else f" — {method}") + f"; {scenario}."]
    if not f.per_bits:
        out.append("This run has no quantized bit width: there is nothing for quantization to undo.")
    for b in f.per_bits:
        if not np.isfinite(b["undone"]):
            out.append(f"At **{b['label']}** no share of the forgetting undone can be stated: "
                       f"{_metric_words(b['metrics'])}.")
        else:
            out.append(f"At **{b['label']}**, PTQ {_verdict(b['undone'])} — median over the headline metrics; "
                       f"{_metric_words(b['metrics'])}.")
        out.append(_weights_words(b))
        controls = _controls_words(b)
        if controls:
            out.append(controls)
        why = _why(b)
        if why:
            out.append(why)
    if f.grid:
        out.append(f.grid)
    return out


SCENARIO_FIELDS = {"adapter": lambda c: "LoRA" if c.unlearn.adapter == "lora" else "full fine-tuning",
                   "method": lambda c: c.unlearn.label.split(" full")[0].split(" LoRA")[0],
                   "learning rate": lambda c: f"{c.unlearn.lr:g}",
                   "start": lambda c: c.unlearn.scenario["start"],
                   "weight precision": lambda c: c.unlearn.scenario["weight precision"],
                   "embeddings": lambda c: c.unlearn.scenario["embeddings"],
                   "quantizer": lambda c: ", ".join(s.label for s in c.quant_specs() if s.bits < 32) or "none",
                   "model": lambda c: c.model.label, "corpus": lambda c: c.corpus.source,
                   "training length": lambda c: f"{c.unlearn.epochs} epochs" + (
                       f", max {c.unlearn.max_steps} steps" if c.unlearn.max_steps else ""),
                   "seed": lambda c: str(c.seed)}


def differences(findings: list[RunFindings]) -> list[str]:
    """Sentences naming the scenario options that differ between the runs, and which runs PTQ undid most / least."""
    if len(findings) < 2:
        return []
    out = []
    for option, get in SCENARIO_FIELDS.items():
        values = {f.name: get(f.config) for f in findings}
        if len(set(values.values())) > 1:
            out.append(f"**{option}** differs: " + "; ".join(f"{n}: {v}" for n, v in values.items()) + ".")
    same = [o for o, get in SCENARIO_FIELDS.items() if len({get(f.config) for f in findings}) == 1]
    if same:
        out.append("The same in all picked runs: " + ", ".join(same) + ".")
    ranked = [(b["undone"], f.name, b["label"]) for f in findings for b in f.per_bits if np.isfinite(b["undone"])]
    if len(ranked) >= 2 and max(ranked)[0] >= UNDONE_SOME:
        ranked.sort()
        low, high = ranked[0], ranked[-1]
        out.append(f"Most forgetting undone: {high[1]} at {high[2]} ({pct(high[0])}); least: {low[1]} at {low[2]} "
                   f"({pct(low[0])}).")
    elif len(ranked) >= 2:
        out.append(f"No picked run had {pct(UNDONE_SOME)} or more of its forgetting undone at any bit width.")
    return out


def summary_frame(findings: list[RunFindings]) -> pd.DataFrame:
    """One row per (run, own quantized bit width): the scenario, the share undone per headline metric and the
    median, share kept, cosine, noise ratio and code-flip rate."""
    rows = []
    for f in findings:
        for b in f.per_bits:
            row = {"run": f.name, "start": f.config.unlearn.scenario["start"],
                   "adapter": SCENARIO_FIELDS["adapter"](f.config), "quantizer": b["label"]}
            for _, m in b["metrics"].iterrows():
                row[f"undone: {COLUMNS.get(m['metric'], m['metric'])}"] = m["undone"]
            row.update({"undone (median)": b["undone"], "share kept": b["share_kept"], "cosine": b["cosine"],
                        "noise ratio": b["noise_ratio"], "code-flip rate": b["code_flip_rate"]})
            rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["HEADLINE", "RunFindings", "differences", "run_findings", "sentences", "summary_frame"]
