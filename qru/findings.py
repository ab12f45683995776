"""Findings in plain words, generated from stored runs: which runs 4-bit (or any) PTQ undid and by how much, the share
of each weight update that rounding kept, the code-flip rates, and which scenario options differ between the runs.

Every sentence is built from the numbers of qru.analysis.findings (the share of the forgetting undone per bit width,
the weight statistics under the run's own quantizer, the noise-control verdicts) and worded with its thresholds:

- a share undone of at least UNDONE_MOST (0.5) reads "undid most", at least UNDONE_SOME (0.2) "undid part", below
  that "kept"; the verdict of a bit width is the median over the headline metrics (qru.metrics.headline:
  KnowMem-forget, forget NLL, entity-token VerbMem) that have an effect beyond their noise.
- rounding "kept the update" where share_kept >= 0.8, "erased most of it" where share_kept < 0.5.
- Noise controls (where ``qru noise`` / ``qru curve`` computed them): qru.analysis.verdicts.verdict, "rounding back"
  or "fragility"; the grid position of the target under the run's quantizer (qru.controls.grid_position) and, once
  per run, relative to every measured 4-bit grid, the GGUF ones included (qru.views.curves.grid_sentence: on / near
  / not on, thresholds in qru.analysis.grid).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from qru.analysis.findings import RunFindings, UNDONE_SOME, cause, ranked_undone, undone_level, update_level
from qru.analysis.grid import grid_reading
from qru.metrics import label
from qru.views.curves import grid_sentence
from qru.views.text import as_text


def _controls_words(b: dict) -> str:
    """What the noise controls of this quantizer say, where computed."""
    parts = []
    for metric, v in b.get("controls", {}).items():
        if v["verdict"] == "not measured":
            continue
        parts.append(f"{label(metric)}: quantization undid {pct(v['quantized'])}, random noise of the "
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
    return {"most": f"undid most of the forgetting ({pct(share)})",
            "part": f"undid part of the forgetting ({pct(share)})",
            "kept": f"kept the forgetting ({pct(share)} undone)"}[undone_level(share)]


def _metric_words(part: pd.DataFrame) -> str:
    words = []
    for _, row in part.iterrows():
        name = label(row["metric"])
        words.append(f"{name} {pct(row['undone'])}" if np.isfinite(row["undone"]) else f"{name} — ({row['reason']})")
    return "; ".join(words) or "no headline metric was measured at this bit width"


def _weights_words(b: dict) -> str:
    kept = b["share_kept"]
    if not np.isfinite(kept):
        return "The weight analysis has no entry for this quantizer."
    numel = b["numel"] if np.isfinite(b["numel"]) and b["numel"] else float("nan")
    boundary = b["flips_boundary"] / numel if np.isfinite(numel) and np.isfinite(b["flips_boundary"]) else float("nan")
    split = f" ({boundary:.1%} by crossing a rounding boundary)" if np.isfinite(boundary) else ""
    how = {"kept": "kept the update on average", "erased": "erased most of the update",
           "part": "kept part of the update"}[update_level(kept)]
    return (f"Rounding {how}: share kept {kept:.2f} (cosine {b['cosine']:.2f} between Q(W_u)−Q(W_t) and dW; the "
            f"noise it adds, ||Q(W_u)−Q(W_t)||/||dW||, is {b['noise_ratio']:.2f}); {b['code_flip_rate']:.1%} of the "
            f"quantized codes differ from the target's{split}, and "
            f"{b['below_half_step']:.0%} of the weights moved less than half a step.")


WHY = {"rounding back": "The numbers point to rounding back: the quantized unlearned weights fall on the target's "
                        "codes, so the quantized model is close to the quantized target.",
       "fragility": "Rounding kept the update's direction, yet the metrics moved back: the forgetting is fragile to "
                    "perturbations of this size rather than rounded away (compare a noise control of the same size).",
       "held": "Rounding erased much of the weight update, yet the metrics held: the part that survived (or the "
               "unquantized embeddings) carries the forgetting."}


def _why(b: dict) -> str:
    return WHY.get(cause(b["undone"], b["share_kept"]), "")


def sentences(f: RunFindings) -> list[str]:
    """Markdown sentences about one run, generated from its numbers (names and labels shown as text)."""
    c = f.config
    scenario = as_text("; ".join(f"{k}: {v}" for k, v in c.unlearn.scenario.items()))
    method = c.unlearn.label.split(" [")[0]
    out = [f"**{as_text(f.name)}**" + ("" if f.name.startswith(method) else f" — {as_text(method)}")
           + f"; {scenario}."]
    if not f.per_bits:
        out.append("This run has no quantized bit width: there is nothing for quantization to undo.")
    for b in f.per_bits:
        if not np.isfinite(b["undone"]):
            out.append(f"At **{as_text(b['label'])}** no share of the forgetting undone can be stated: "
                       f"{_metric_words(b['metrics'])}.")
        else:
            out.append(f"At **{as_text(b['label'])}**, PTQ {_verdict(b['undone'])} — median over the headline "
                       f"metrics; {_metric_words(b['metrics'])}.")
        out.append(_weights_words(b))
        controls = _controls_words(b)
        if controls:
            out.append(controls)
        why = _why(b)
        if why:
            out.append(why)
    grid = grid_sentence(f.grid_rows or [])
    if grid:
        out.append(grid)
    out += [_relearn_words(r) for r in f.relearning or []]
    return out


def _relearn_words(r: dict) -> str:
    """A relearning attack in a sentence: what it undid at full precision and after quantization, beside what
    quantization alone undid on the same held-out items."""
    c = r["record"]["config"]
    what = "the forget slice" if c["data"] == "forget" else "retain text (the control)"
    head = f"A relearning attack ({c['steps']} steps at lr {c['lr']:g} on {what}, seed {c['seed']})"
    parts = []
    for b, share in r["by_relearning"].items():
        at = "at full precision" if b == 32 else f"read at {b} bits"
        parts.append(f"{at} {pct(share) if np.isfinite(share) else 'no measurable share'}")
    quant = [f"{b}-bit quantization {pct(s)}" for b, s in r["by_quantization"].items() if b < 32 and np.isfinite(s)]
    tail = f"; on the same items {', '.join(quant)}" if quant else ""
    return f"{head}: share of the forgetting undone (median over the headline metrics, on held-out items) " \
           f"{', '.join(parts) or 'not measurable'}{tail}."


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
    """Sentences (Markdown) naming the scenario options that differ between the runs, and which runs PTQ undid most /
    least; names and values shown as text."""
    if len(findings) < 2:
        return []
    out = []
    for option, get in SCENARIO_FIELDS.items():
        values = {f.name: get(f.config) for f in findings}
        if len(set(values.values())) > 1:
            said = "; ".join(f"{as_text(n)}: {as_text(v)}" for n, v in values.items())
            out.append(f"**{option}** differs: {said}.")
    same = [o for o, get in SCENARIO_FIELDS.items() if len({get(f.config) for f in findings}) == 1]
    if same:
        out.append("The same in all picked runs: " + ", ".join(same) + ".")
    ranked = ranked_undone(findings)
    if len(ranked) >= 2 and ranked[-1][0] >= UNDONE_SOME:
        low, high = ranked[0], ranked[-1]
        out.append(f"Most forgetting undone: {as_text(high[1])} at {as_text(high[2])} ({pct(high[0])}); least: "
                   f"{as_text(low[1])} at {as_text(low[2])} ({pct(low[0])}).")
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
                row[f"undone: {label(m['metric'])}"] = m["undone"]
            row.update({"undone (median)": b["undone"], "share kept": b["share_kept"], "cosine": b["cosine"],
                        "noise ratio": b["noise_ratio"], "code-flip rate": b["code_flip_rate"]})
            attack = next((r for r in f.relearning or [] if r["record"]["config"]["data"] == "forget"), None)
            if attack:
                row["undone by relearning (median, 32 bits)"] = attack["by_relearning"].get(32, float("nan"))
            rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["SCENARIO_FIELDS", "WHY", "differences", "pct", "sentences", "summary_frame"]
