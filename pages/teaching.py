"""Teaching page "Why 4-bit forgets to forget": one block of weights, an update and a quantizer, live; no model."""
from pathlib import Path

import streamlit as st

import ui
from qru.quant.spec import RTN_GROUP_SIZES
from qru.teaching import (BLOCK_SHAPE, CONCENTRATION, QUANTIZERS, STARTS, UPDATE_KINDS, UPDATE_SIZES, bit_choices,
                          block_stats, boundary_histogram, drawn_group, make_block, make_update, quantizer_spec,
                          reading)
from qru.views.teaching_charts import grid_figure, position_figure

ui.in_frame()

st.title("Why 4-bit forgets to forget")
st.markdown(f"A block of {BLOCK_SHAPE[0]} × {BLOCK_SHAPE[1]} target weights W_t drawn like a trained Linear layer's "
            "(N(0, 0.02)) is moved by an unlearning update dW and quantized, before and after, with the quantizer "
            "you pick. Does Q(W_t + dW) still differ from Q(W_t) in the direction of dW?")
left, mid, right = st.columns(3)
quant_type = left.selectbox("Quantizer", list(QUANTIZERS), format_func=QUANTIZERS.get, key="teaching-quantizer")
bits_offered = bit_choices(quant_type)
bits = mid.selectbox("Bit width", bits_offered, index=bits_offered.index(4) if 4 in bits_offered else 0,
                     key="teaching-bits")
group = right.selectbox("RTN group size", RTN_GROUP_SIZES, index=2, disabled=not quant_type.startswith("rtn"),
                        format_func=lambda g: f"{g} weights" if g else "per channel (whole row)", key="teaching-group")
spec = quantizer_spec(quant_type, bits, group)
size = st.select_slider("Update size: RMS change per weight (log scale; every kind of update has the same "
                        "Frobenius norm)", UPDATE_SIZES, value=1e-5, format_func=lambda v: f"{v:.0e}",
                        key="teaching-size")
kind = st.radio("Update", list(UPDATE_KINDS), format_func=UPDATE_KINDS.get, horizontal=True, key="teaching-update")
start = st.radio("Target weights sit", list(STARTS), format_func=STARTS.get, horizontal=True, key="teaching-start")

w_t = make_block(start=start, spec=spec)
w_u = w_t + make_update(w_t, size, kind)
stats = block_stats(w_t, w_u, spec)
cells = st.columns(4)
cells[0].metric("Code flips", f"{stats['code_flip_rate']:.2%}",
                help="share of weights whose quantized code differs between Q(W_t) and Q(W_u)")
cells[0].caption(f"{stats['code_flips']:,} weights: {stats['flips_boundary']:,} crossed a rounding boundary; "
                 f"{stats['flips_scale']:,} flipped because their block/group scale changed")
cells[1].metric("|dW| < Δ/2", f"{stats['below_half_step']:.1%}", help="share of weights moved by less than half "
                "their step Δ: the most rounding can hide")
spread = f" ± {stats['share_kept_se']:.2f}" if start == "bin" else ""
cells[2].metric("Share kept", f"{stats['share_kept']:.2f}{spread}",
                help="<Q(W_u) − Q(W_t), dW> / ||dW||²: 1 = the update survives on average, 0 = erased. ± : the "
                     "spread expected from which weights happen to flip")
cells[3].metric("Update / median step", f"{stats['update_to_step']:.3g}",
                help="RMS of dW over the median step Δ of the block")
cells[3].caption(f"median Δ = {stats['median_step']:.2e}; the moved weights: {stats['moved_to_step']:.3g} steps")
st.markdown(reading(stats, start))

drawn = drawn_group(w_t, w_u, spec)
charts = st.columns(2)
charts[0].plotly_chart(grid_figure(drawn, f"{spec.label}: row {drawn['row']}, columns {drawn['col']}–"
                                          f"{drawn['col'] + len(drawn['w_t']) - 1}"))
charts[0].caption("The block or group that dW moves most.")
charts[1].plotly_chart(position_figure(*boundary_histogram(w_t, spec), stats["moved_to_step"]))

st.markdown(f"""
**What you see.** *Weights anywhere inside their bins*, as training leaves them: a weight changes code only when dW
carries it across a rounding boundary, which happens to about |dW|/Δ of them, and then it moves a whole step in dW's
direction. Rounding is unbiased: almost every code stays put, yet on average the update survives (share kept ≈ 1)
however small it is. One block holds few flips for a tiny update, so its share kept is noisy; a model's millions of
weights average that out.

*Weights on the grid* (a quantized model, unlearned and re-quantized): every weight sits on a level, half a step from
both boundaries on the uniform RTN and int8 grids (half the smaller gap on the uneven FP4 / NF4 levels), so smaller
moves are rounded back and the update is erased (share kept ≈ 0; what remains is the weights that set each block's
scale, which land on the outermost levels whatever their value). This is the papers' mechanism (Zhang et al. 2024,
arXiv 2410.16454). It needs the same grid: weights snapped to one quantizer's grid sit anywhere inside another's
bins.

*The concentrated rank-1 update* puts the same norm into 1/{CONCENTRATION} of the rows and 1/{CONCENTRATION} of the
columns, so each touched weight moves {CONCENTRATION}× as far; once those moves pass half a step they survive even
from the grid. The rank-1 update spread over the whole block moves a typical weight as little as the diffuse one and
is erased almost alike (its entries, products of two Gaussians, have heavier tails): what protects an update is how
far each weight moves, not its rank. The LoRA runs of arXiv 2602.13151 also used a 10× higher learning rate than
full fine-tuning.

On the small model measured for qru, 4-bit PTQ undid none of the unlearning of naturally trained weights; reversion
appeared only with a target already on the quantizer's grid and per-weight updates under about 0.2 step. Stored runs
show which case a real model is in.""")

runs = ui.picked_runs()
if st.button("See this in a stored run", disabled=not runs, help=f"the Weight-deltas page at {spec.label}",
             key="teaching-jump"):
    st.session_state["deltas_request"] = {"quantizer": spec.key}
    st.switch_page(Path(ui.__file__).resolve().parent / "pages" / "deltas.py")
if not runs:
    st.caption("Pick a finished run in the sidebar to see this quantizer on its weight deltas.")
