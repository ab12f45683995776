"""The exact flip analysis of a stored run under one quantizer, as tables and words: code flips split into boundary
crossings and scale changes per module type, how far the target's weights sit from a rounding boundary, and a
plain-language reading of the numbers (qru.deltas defines every statistic)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from qru.deltas import MODULE_TYPES, ratios
from qru.views.text import as_text

SUMS = ["numel", "code_flips", "flips_boundary", "flips_scale", "dw_sq", "dq_sq", "dot"]
FLIP_SHARES = (0.01, 0.1, 0.5)


def module_table(deltas: pd.DataFrame, quantizer: str) -> pd.DataFrame:
    """Per module type (q, k, v, o, gate, up, down, others) and in total, under the quantizer key ``quantizer``:
    weights, code-flip rate, the shares of weights whose code changed by crossing a boundary / by a changed scale,
    and the share of the update kept. Empty if the run has no rows for that quantizer."""
    rows = deltas[(deltas["quantizer"] == quantizer) & (deltas["tensor"] != "total")]
    if rows.empty or not set(SUMS) <= set(rows.columns):
        return pd.DataFrame()
    sums = rows.groupby("module")[SUMS].sum()
    order = [m for m in MODULE_TYPES if m in sums.index] + sorted(set(sums.index) - set(MODULE_TYPES))
    sums = sums.loc[order]
    sums.loc["all"] = sums.sum()
    out = pd.DataFrame({"module": [m.removesuffix("_proj") for m in sums.index], "weights": sums["numel"].astype(int)})
    out["code_flip_rate"] = (sums["code_flips"] / sums["numel"]).to_numpy()
    out["crossed_boundary"] = (sums["flips_boundary"] / sums["numel"]).to_numpy()
    out["scale_changed"] = (sums["flips_scale"] / sums["numel"]).to_numpy()
    out["share_kept"] = [ratios(r)["share_kept"] for r in sums[["dw_sq", "dq_sq", "dot"]].to_dict("records")]
    return out.reset_index(drop=True)


def flip_thresholds(counts: np.ndarray, edges: np.ndarray, numel: int,
                    shares: tuple[float, ...] = FLIP_SHARES) -> dict[float, float]:
    """From the histogram of the target weights' distance to the nearest rounding boundary (``counts`` int
    [n_bins] of non-zero distances on ``edges`` [n_bins + 1]; the other ``numel - sum(counts)`` weights sit exactly
    on a boundary): for each share p, the smallest distance d (an upper bin edge, so exact to one bin) such that at
    least p of the weights lie within d of a boundary — the size an update moving every weight towards its nearest
    boundary needs to flip p of the codes. NaN where the share is never reached."""
    if numel <= 0:
        return {p: float("nan") for p in shares}
    cumulative = (numel - counts.sum() + np.cumsum(counts)) / numel
    out = {}
    for p in shares:
        hit = np.nonzero(cumulative >= p)[0]
        out[p] = float(edges[hit[0] + 1]) if hit.size else float("nan")
    return out


def explain(row: pd.Series, label: str, thresholds: dict[float, float] | None = None) -> str:
    """A few sentences (markdown) reading one stored delta row (qru.deltas) under the quantizer ``label`` (shown
    as text)."""
    label = as_text(label)
    if not np.isfinite(row.get("median_step", np.nan)):
        return (f"**{label}**: no quantization, so nothing is rounded away; the chart shows the update itself "
                f"(mean |dW| {row['mean_abs_delta']:.2g}).")
    step, mean = float(row["median_step"]), float(row["mean_abs_delta"])
    if mean == 0:
        return f"**{label}**: the two models' weights are identical here: there is no update to keep or erase."
    numel = max(int(row["numel"]), 1)
    flips = int(row["code_flips"])
    kept = float(row["share_kept"])
    split = (f"{int(row['flips_boundary']) / numel:.2%} because the weight crossed a rounding boundary, "
             f"{int(row['flips_scale']) / numel:.2%} because its block's scale changed"
             if pd.notna(row.get("flips_boundary")) and pd.notna(row.get("flips_scale"))
             else "this run was stored before qru told boundary crossings from scale changes")
    text = [f"Under **{label}** the median step is Δ = {step:.2g}; the unlearning moved the weights by "
            f"{mean:.2g} on average, **{mean / step:.2g} of a step**. {row['below_half_step']:.1%} of the weights "
            f"moved less than half a step.",
            f"**{flips / numel:.2%}** of the quantized codes differ between target and unlearned model: {split}."]
    if thresholds:
        parts = [f"{p:.0%} within {d:.2g}" for p, d in thresholds.items() if np.isfinite(d)]
        if parts:
            text.append("Distance of the target's weights to the nearest rounding boundary: " + ", ".join(parts) +
                        " — an update must reach that far to flip that share of codes.")
    if not np.isfinite(kept):
        text.append("The update is zero here.")
    elif kept >= 0.8:
        text.append(f"**Share kept {kept:.2f}: rounding kept the update on average.** Weights that sit anywhere "
                    "inside their bins flip by a whole step with a chance of about |dW|/Δ, so even a sub-step update "
                    "survives in expectation: this quantizer does not undo this unlearning.")
    elif kept <= 0.2:
        text.append(f"**Share kept {kept:.2f}: rounding erased most of the update.** The quantized unlearned weights "
                    "are mostly the quantized target's — the failure the papers describe; it needs the target's "
                    "weights to sit on this grid and updates well under a step (design notes, Calibration).")
    else:
        text.append(f"**Share kept {kept:.2f}: rounding kept part of the update.**")
    text.append(f"Noise ratio ||Q(W_u)−Q(W_t)||/||dW|| = {row['noise_ratio']:.2f}: the noise rounding adds, "
                "not survival.")
    return " ".join(text)


__all__ = ["FLIP_SHARES", "explain", "flip_thresholds", "module_table"]


def own_quantizer_totals(specs: list, deltas: pd.DataFrame) -> pd.DataFrame:
    """The total rows of a run's weight analysis under its own quantizers (``specs``: QuantSpecs below 32 bits):
    quantizer label, share kept, cosine, noise ratio, code-flip rate and the share of weights below half a step.
    Empty where the run has none of them."""
    keys = {s.key: s.label for s in specs if s.bits < 32}
    rows = deltas[(deltas["tensor"] == "total") & deltas["quantizer"].isin(list(keys))]
    cols = ["share_kept", "cosine", "noise_ratio", "code_flip_rate", "below_half_step"]
    out = rows[["quantizer"] + [c for c in cols if c in rows.columns]].copy()
    out.insert(0, "quantizer label", out["quantizer"].map(keys))
    return out.drop(columns="quantizer").reset_index(drop=True)

