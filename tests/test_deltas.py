import math

import numpy as np
import pytest
import torch

from qru.deltas import ABS_EDGES, REL_EDGES, log_histogram, model_deltas, tensor_delta
from qru.quant.bnb import quantize_tensor
from qru.quant.spec import QuantSpec

NF4 = QuantSpec(4, "nf4")


def _weights(seed=0):
    torch.manual_seed(seed)
    return torch.randn(8, 128) * 0.05


def _keep_absmax(w, dw):
    """Zero the update of the weights at each block's absmax, so the block's scale stays put."""
    blocks = w.reshape(-1, 64).abs()
    at_max = blocks == blocks.amax(1, keepdim=True)
    return dw.masked_fill(at_max.reshape(w.shape), 0.0)


def test_no_update_means_no_flips_and_nan_share():
    w = _weights()
    row, hists = tensor_delta(w, w.clone(), NF4)
    assert row["code_flips"] == 0 and row["zero_delta"] == w.numel()
    assert math.isnan(row["share_kept"]) and hists["abs"].sum() == 0


def test_update_below_half_step_on_grid_weights_is_erased():
    wt = quantize_tensor(_weights(), NF4).dequant          # weights sitting on the grid
    step = quantize_tensor(wt, NF4).step
    dw = _keep_absmax(wt, 0.1 * step * torch.sign(torch.randn_like(wt)))  # 0.1 step everywhere
    row, hists = tensor_delta(wt, wt + dw, NF4)
    assert row["code_flips"] == 0 and row["share_kept"] == pytest.approx(0.0, abs=1e-9)
    assert row["below_half_step"] == 1.0
    assert hists["rel"].sum() + row["zero_delta"] == wt.numel()
    assert hists["dq"].sum() == 0  # the dequantized delta is zero everywhere


def test_dequantized_delta_histogram_counts_the_flips_and_the_rescaled_blocks():
    wt = _weights()
    dw = _keep_absmax(wt, 0.3 * quantize_tensor(wt, NF4).step * torch.randn_like(wt))
    amax = wt.reshape(-1, 64).abs().amax(1, keepdim=True).expand(-1, 64).reshape(wt.shape)
    wu = torch.maximum(torch.minimum(wt + dw, amax), -amax)  # every block keeps its absmax, so its scale
    row, hists = tensor_delta(wt, wu, NF4)
    assert 0 < row["code_flips"] < wt.numel()
    assert hists["dq"].sum() == row["code_flips"]  # with unchanged scales only a code flip changes Q(W)
    row, hists = tensor_delta(wt, wt * 1.01, NF4)  # every scale changes, no code flips
    assert row["code_flips"] == 0 and hists["dq"].sum() > 0.9 * wt.numel()


def test_update_of_many_steps_is_kept():
    wt = _weights()
    dw = 0.5 * _weights(7)  # independent update of half the weights' spread: several steps for most weights
    row, _ = tensor_delta(wt, wt + dw, NF4)
    assert row["share_kept"] == pytest.approx(1.0, abs=0.1) and row["cosine"] > 0.9
    assert row["code_flip_rate"] > 0.5


def test_uniform_rescale_keeps_every_code():
    wt = _weights()
    row, _ = tensor_delta(wt, 1.3 * wt, NF4)  # absmax scales too: same levels, new values
    assert row["code_flips"] == 0 and row["share_kept"] == pytest.approx(1.0, abs=0.1)


def test_unbiased_rounding_keeps_small_updates_on_average():
    # docs/design.md "Calibration": weights anywhere inside their bins keep a sub-step update on average
    wt = _weights(1)
    step = quantize_tensor(wt, NF4).step
    dw = _keep_absmax(wt, 0.1 * step)
    row, _ = tensor_delta(wt, wt + dw, NF4)
    assert 0.02 < row["code_flip_rate"] < 0.3
    assert row["share_kept"] == pytest.approx(1.0, abs=0.35)
    assert row["noise_ratio"] > 1.0  # added noise, not survival


def test_log_histogram_counts_and_clipping():
    counts, zeros = log_histogram(torch.tensor([0.0, 1e-12, 1e-5, 1e-5, 5.0]), ABS_EDGES)
    assert zeros == 1 and counts.sum() == 4 and counts[0] == 1 and counts[-1] == 1
    assert len(REL_EDGES) == 81


def test_model_deltas_rows_and_total(micro_models):
    target = micro_models.target
    import copy
    unlearned = copy.deepcopy(target)
    with torch.no_grad():
        unlearned.model.layers[0].mlp.up_proj.weight.add_(1e-3)
    rows, hists = model_deltas(target, unlearned, QuantSpec(4, "fp4"))
    assert rows[-1]["tensor"] == "total" and len(rows) == hists["abs"].shape[0]
    changed = [r for r in rows[:-1] if r["zero_delta"] < r["numel"]]
    assert [r["tensor"] for r in changed] == ["model.layers.0.mlp.up_proj"]
    assert changed[0]["layer"] == 0 and changed[0]["module"] == "up_proj"
    assert np.array_equal(hists["abs"][-1], hists["abs"][:-1].sum(0))
    assert rows[-1]["code_flips"] == changed[0]["code_flips"]
    rows32, hists32 = model_deltas(target, unlearned, QuantSpec())
    assert hists32["rel"] is None and rows32[-1]["share_kept"] == pytest.approx(1.0)


def test_flips_split_into_boundary_crossings_and_scale_changes():
    wt = _weights()
    dw = _keep_absmax(wt, 0.3 * quantize_tensor(wt, NF4).step * torch.randn_like(wt))
    amax = wt.reshape(-1, 64).abs().amax(1, keepdim=True).expand(-1, 64).reshape(wt.shape)
    row, hists = tensor_delta(wt, torch.maximum(torch.minimum(wt + dw, amax), -amax), NF4)  # scales kept
    assert row["code_flips"] > 0 and row["flips_boundary"] == row["code_flips"] and row["flips_scale"] == 0
    scaled = wt.clone()
    scaled[0, wt[0, :64].abs().argmax()] *= 1.5  # only the first block's absmax grows: its other codes shift
    row, _ = tensor_delta(wt, scaled, NF4)
    assert row["flips_scale"] > 0 and row["flips_boundary"] <= 1
    assert row["flips_boundary"] + row["flips_scale"] == row["code_flips"]
    assert hists["bnd"].sum() + hists["bndrel"].sum() > 0 and hists["bndrel"].sum() <= wt.numel()


def test_boundary_histograms_add_up_and_sit_within_half_a_step():
    wt = _weights()
    _, hists = tensor_delta(wt, wt + 1e-4, NF4)
    assert hists["bndrel"].sum() == hists["bnd"].sum()
    rel_centres = np.sqrt(REL_EDGES[:-1] * REL_EDGES[1:])
    assert rel_centres[hists["bndrel"] > 0].max() <= 0.6  # never more than half a step from a boundary
