"""The teaching view "Why 4-bit forgets to forget" (qru.teaching, its figures and its page): hand-checkable facts
about rounding a block of weights, and the page driven through AppTest. No model; a few seconds."""
import json
import math
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from qru.config import RunConfig
from qru.quant.bnb import quantize_tensor
from qru.quant.spec import QuantSpec
from qru.store import RunStore
from qru.teaching import (CONCENTRATION, UPDATE_KINDS, UPDATE_SIZES, bit_choices, block_stats, boundary_histogram,
                          drawn_group, group_levels, make_block, make_update, quantizer_spec, reading)
from qru.views.teaching_charts import grid_figure, position_figure

FP4 = QuantSpec(bits=4, quant_type="fp4", blocksize=64)
SPECS = [FP4, QuantSpec(bits=4, quant_type="nf4"), QuantSpec(bits=8, quant_type="int8"),
         QuantSpec(bits=3, quant_type="rtn-asym", group_size=64), QuantSpec(bits=2, quant_type="rtn-sym", group_size=0)]
ROOT = Path(__file__).resolve().parents[1]


def _stats(start, size, kind="diffuse", spec=FP4, seed=0):
    w_t = make_block(seed, start=start, spec=spec)
    return block_stats(w_t, w_t + make_update(w_t, size, kind), spec)


def test_update_sizes_are_1_2_5_per_decade_from_1e6_to_1e1():
    assert UPDATE_SIZES[0] == 1e-6 and UPDATE_SIZES[-1] == 0.1 and len(UPDATE_SIZES) == 16
    assert UPDATE_SIZES[:4] == (1e-6, 2e-6, 5e-6, 1e-5) and list(UPDATE_SIZES) == sorted(UPDATE_SIZES)


def test_every_update_kind_has_the_same_frobenius_norm_and_the_low_rank_ones_rank_1():
    block = make_block(0, rows=16, cols=64)
    norms = {kind: float(make_update(block, 1e-3, kind).double().norm()) for kind in UPDATE_KINDS}
    assert norms == pytest.approx({k: 1e-3 * math.sqrt(16 * 64) for k in UPDATE_KINDS}, rel=1e-5)
    concentrated = make_update(block, 1e-3, "lowrank")
    assert int((concentrated != 0).sum()) == (16 // CONCENTRATION) * (64 // CONCENTRATION)  # 2 rows x 8 columns
    assert int((concentrated != 0).any(1).sum()) == 2 and int((concentrated != 0).any(0).sum()) == 8
    for kind in ("lowrank", "lowrank-spread"):
        assert torch.linalg.matrix_rank(make_update(block, 1e-3, kind).double(), rtol=1e-5) == 1
    assert bool((make_update(block, 1e-3, "diffuse") != 0).all())
    assert torch.equal(make_update(block, 1e-3, "diffuse", seed=3), make_update(block, 1e-3, "diffuse", seed=3))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_a_grid_start_sits_on_the_grid_and_quantizes_to_the_same_codes(spec):
    natural = make_block(0, rows=16, cols=128)
    snapped = make_block(0, rows=16, cols=128, start="grid", spec=spec)
    assert torch.allclose(snapped, quantize_tensor(natural, spec).dequant)
    assert torch.equal(quantize_tensor(snapped, spec).codes, quantize_tensor(natural, spec).codes)
    assert torch.allclose(quantize_tensor(snapped, spec).dequant, snapped, atol=1e-7)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_an_update_far_below_the_step_on_grid_weights_flips_no_code_and_is_erased(spec):
    s = _stats("grid", 1e-6, spec=spec)
    assert s["update_to_step"] < 0.01 and s["below_half_step"] == 1.0
    assert s["code_flips"] == 0
    # Only the weight that sets each block's scale (it lands on the top level whatever its value) keeps its update:
    # about one weight in 64 for blocks or groups of 64, one in a row of 1024 for the per-channel / per-row grids.
    assert abs(s["share_kept"]) < 0.05  # per channel: the row's scale shifts every level a little, either way


def test_weights_anywhere_in_their_bins_keep_a_small_diffuse_update_on_average():
    s = _stats("bin", 1e-4)  # about 0.013 of a step: 1.5% of the codes flip
    assert s["update_to_step"] < 0.02 and s["below_half_step"] > 0.99
    assert 0.005 < s["code_flip_rate"] < 0.03
    assert s["code_flip_rate"] == pytest.approx(s["expected_flip_rate"], rel=0.2)  # about |dW|/Δ of them flip
    assert abs(s["share_kept"] - 1) < max(4 * s["share_kept_se"], 0.1)
    assert s["flips_boundary"] + s["flips_scale"] == s["code_flips"]


def test_the_same_small_update_is_kept_from_the_bins_and_erased_from_the_grid():
    assert _stats("bin", 1e-5, spec=SPECS[1])["share_kept"] > 0.7
    assert _stats("grid", 1e-5, spec=SPECS[1])["share_kept"] < 0.05


def test_a_concentrated_update_of_the_same_norm_survives_a_grid_start_where_diffuse_ones_do_not():
    nf4 = SPECS[1]  # 2e-4 is about 0.04 of an NF4 step: each concentrated entry moves 8x that, ~0.3 step
    diffuse, concentrated = _stats("grid", 2e-4, "diffuse", nf4), _stats("grid", 2e-4, "lowrank", nf4)
    spread = _stats("grid", 2e-4, "lowrank-spread", nf4)
    assert concentrated["moved_to_step"] == pytest.approx(CONCENTRATION * diffuse["moved_to_step"], rel=0.01)
    assert concentrated["share_kept"] > 0.7
    assert diffuse["share_kept"] < 0.1 and spread["share_kept"] < 0.1  # rank 1 alone does not protect it


def test_a_huge_update_flips_most_codes_and_is_kept():
    s = _stats("grid", 0.1)
    assert s["code_flip_rate"] > 0.8 and s["share_kept"] > 0.95 and s["below_half_step"] < 0.1


def test_weights_in_their_bins_sit_evenly_and_grid_weights_half_a_step_from_both_boundaries():
    int8 = SPECS[2]  # a uniform grid much finer than the weights' spread: even within 10%
    counts, edges = boundary_histogram(make_block(0), int8, bins=10)
    assert edges[0] == 0 and edges[-1] == 0.5 and counts.sum() == 64 * 1024
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()
    for spec in SPECS[2:]:  # uniform grids: a weight on a level is half a step from both boundaries
        counts, _ = boundary_histogram(make_block(0, rows=16, cols=128, start="grid", spec=spec), spec, bins=10)
        assert counts[-1] / counts.sum() > 0.95
    for spec in SPECS[:2]:  # FP4 / NF4 levels are unevenly spaced: half the smaller gap, in steps of the other one
        counts, _ = boundary_histogram(make_block(0, rows=16, cols=128, start="grid", spec=spec), spec, bins=10)
        assert counts[-1] / counts.sum() > 0.5


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_the_drawn_group_lies_on_its_grid_levels(spec):
    w_t = make_block(1, rows=8, cols=256)
    w_u = w_t + make_update(w_t, 1e-2, "lowrank")
    group = drawn_group(w_t, w_u, spec)
    width = len(group["w_t"])
    assert width == {"fp4": 64, "nf4": 64, "int8": 64}.get(spec.quant_type, spec.group_size or 64)
    assert float((w_u - w_t)[group["row"], group["col"]:group["col"] + width].norm()) > 0  # a moved group
    gaps = (group["q_t"][:, None] - group["levels"][None, :]).abs().min(1).values
    assert float(gaps.max()) < 1e-6
    assert torch.equal(group["flipped"], quantize_tensor(w_t, spec).codes[group["row"], group["col"]:group["col"]
                       + width] != quantize_tensor(w_u, spec).codes[group["row"], group["col"]:group["col"] + width])


def test_group_levels_by_hand():
    w = torch.tensor([[0.0, 0.1, -0.35, 0.7]])
    levels = group_levels(w, QuantSpec(bits=2, quant_type="rtn-asym", group_size=0), 0, 0)
    assert levels.tolist() == pytest.approx([-0.35, 0.0, 0.35, 0.7])  # scale 0.35, zero point 1
    levels = group_levels(w, QuantSpec(bits=3, quant_type="rtn-sym", group_size=0), 0, 3)
    assert levels.tolist() == pytest.approx([k * 0.7 / 3 for k in range(-3, 4)])


def test_figures_carry_the_grid_the_weights_and_the_flips():
    w_t = make_block(0, start="grid", spec=FP4)
    w_u = w_t + make_update(w_t, 1e-2, "lowrank")
    fig = grid_figure(drawn_group(w_t, w_u, FP4), "t")
    names = [trace.name for trace in fig.data]
    assert names[1:3] == ["target W_t", "unlearned W_u = W_t + dW"] and names[0].startswith("grid levels")
    assert any(n.startswith("Q(W_u): code flip") for n in names)
    assert len(json.dumps(fig.to_plotly_json(), default=str)) < 100_000
    fig = position_figure(*boundary_histogram(w_t, FP4), 3.0)
    assert len(fig.data) == 1 and "beyond half a step" in fig.layout.annotations[0].text


def test_quantizer_choices_and_keys():
    assert bit_choices("fp4") == (4,) and bit_choices("int8") == (8,) and bit_choices("rtn-sym")[-1] == 2
    assert quantizer_spec("nf4", 4).key == "nf4-b64@4"
    spec = quantizer_spec("rtn-asym", 3, 128)
    assert spec.key == "rtn-asym-g128@3" and QuantSpec.from_key(spec.key) == spec


@pytest.mark.parametrize("call, needle", [
    (lambda: make_block(-1), "-1"),
    (lambda: make_block(0, rows=0), "rows"),
    (lambda: make_block(0, start="edge"), "'edge'"),
    (lambda: make_block(0, start="grid"), "None"),
    (lambda: make_block(0, std=-0.5), "-0.5"),
    (lambda: make_block(0, start="grid", spec=QuantSpec()), "32"),
    (lambda: make_update(torch.zeros(4, 4), 0.0), "0.0"),
    (lambda: make_update(torch.zeros(4, 4), float("nan")), "nan"),
    (lambda: make_update(torch.zeros(4, 4), 1e-3, "sparse"), "'sparse'"),
    (lambda: make_update(torch.zeros(4), 1e-3), r"\(4,\)"),
    (lambda: block_stats(torch.zeros(2, 64), torch.zeros(2, 32), FP4), r"\(2, 32\)"),
    (lambda: quantizer_spec("fp4", 3), "3"),
    (lambda: quantizer_spec("int4", 4), "'int4'"),
    (lambda: quantizer_spec("rtn-sym", 4, 48), "48"),
    (lambda: group_levels(torch.zeros(2, 64), FP4, 5, 0), r"\(5, 0\)"),
    (lambda: reading({}, "middle"), "'middle'"),
])
def test_bad_arguments_raise_value_errors_naming_the_value(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_reading_tells_kept_from_erased():
    assert "kept the update" in reading(_stats("bin", 1e-3), "bin")
    assert "erased" in reading(_stats("grid", 1e-5), "grid")
    assert "noisy" in reading(_stats("bin", 1e-6), "bin")


# -- the page ------------------------------------------------------------------------------------------------------
# The frame runs the teaching page as its default page (tests/test_app.py); st.switch_page is wrapped to record the
# request at the moment of the jump, since the Weight-deltas page may consume it.
FRAME = """import sys
sys.path.insert(0, {root!r})
import streamlit as st
import ui
_switch = st.switch_page
def _record(page, **kwargs):
    st.session_state["_jumped"] = {{"page": str(page), "request": st.session_state.get("deltas_request")}}
    _switch(page, **kwargs)
st.switch_page = _record
try:
    ui.frame("teaching")
finally:
    st.switch_page = _switch
"""


def _page(root) -> AppTest:
    at = AppTest.from_string(FRAME.format(root=str(ROOT)), default_timeout=60)
    at.session_state["store_root"] = str(root)
    at.run()
    assert not at.exception, at.exception
    return at


def _metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def test_page_counts_follow_the_start_the_update_and_the_quantizer(tmp_path):
    at = _page(tmp_path)
    assert [t.value for t in at.title] == ["Why 4-bit forgets to forget"]
    assert set(_metrics(at)) == {"Code flips", "|dW| < Δ/2", "Share kept", "Update / median step"}
    assert len(at.get("plotly_chart")) == 2
    natural = _metrics(at)
    assert "±" in natural["Share kept"] and natural["Code flips"] != "0.00%"
    at.radio(key="teaching-start").set_value("grid").run()  # the same update on grid-snapped weights: erased
    grid = _metrics(at)
    assert grid["Code flips"] == "0.00%" and float(grid["Share kept"]) < 0.05
    assert "erased" in " ".join(m.value for m in at.markdown)
    at.select_slider(key="teaching-size").set_value(1e-3).run()
    at.radio(key="teaching-update").set_value("lowrank").run()  # concentrated: kept even from the grid
    assert float(_metrics(at)["Share kept"]) > 0.9 and _metrics(at)["Code flips"] != "0.00%"
    assert at.selectbox(key="teaching-group").disabled  # group size: RTN only
    at.selectbox(key="teaching-quantizer").select("rtn-asym").run()
    assert not at.selectbox(key="teaching-group").disabled and at.selectbox(key="teaching-bits").value == 4
    at.selectbox(key="teaching-bits").select(2).run()
    at.selectbox(key="teaching-group").select(0).run()
    assert not at.exception and _metrics(at) != grid
    titles = [str(json.loads(c.proto.spec)["layout"].get("title")) for c in at.get("plotly_chart")]
    assert any("2-bit RTN asym per-channel" in t for t in titles)  # the grid chart's title


def test_page_jump_button_needs_a_run_and_requests_the_same_quantizer(tmp_path):
    at = _page(tmp_path)
    button = next(b for b in at.button if b.label == "See this in a stored run")
    assert button.disabled and any("Pick a finished run" in c.value for c in at.caption)

    store = RunStore(tmp_path)
    with store.open_run(RunConfig()) as run:
        run.set_status("done")
    at = _page(tmp_path)  # the sidebar picks the finished run
    at.selectbox(key="teaching-quantizer").select("nf4").run()
    button = next(b for b in at.button if b.label == "See this in a stored run")
    assert not button.disabled
    button.click().run()
    assert not at.exception, at.exception
    jumped = at.session_state["_jumped"]
    assert jumped["request"] == {"quantizer": "nf4-b64@4"}
    assert Path(jumped["page"]) == ROOT / "pages" / "deltas.py"
    assert not [t for t in at.title if t.value == "Why 4-bit forgets to forget"]  # now on the Weight-deltas page
