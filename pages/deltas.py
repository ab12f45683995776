"""Weight-deltas page: where the unlearning update lies against the quantizer's step, and what rounding kept."""
import pandas as pd
import streamlit as st

import ui
from qru.views.delta_charts import (LAYER_VALUES, MODES, delta_row, hist_series, histogram_figure, flip_summary,
                                    layer_heatmap, layer_table, shared_zmax)

ui.in_frame("deltas")

st.title("Weight deltas against the quantization step")
runs = ui.require_runs()
name = ui.names(runs)
loaded = {r.run_id: (r, ui.load(r.run_id, "deltas", stop=False), ui.load(r.run_id, "histograms", stop=False))
          for r in runs}
data = {k: v for k, v in loaded.items() if v[1] is not None and v[2] is not None}
if not data:
    st.stop()
bit_options = sorted({int(b) for _, d, _ in data.values() for b in d["bits"].unique()}, reverse=True)
if not bit_options:
    st.warning("The picked runs have no weight-delta rows.")
    st.stop()
left, mid, right = st.columns([2, 1, 2])
mode = left.radio("Show", list(MODES), format_func=MODES.get,
                  help="|dW| in weight units, |dW| in units of the target's step Δ, or what survives quantization")
choices = [b for b in bit_options if b != 32 or mode == "abs"]
if not choices:
    st.info("The picked runs were evaluated at 32 bits only: there is no quantization step to compare with. "
            "Showing the float delta.")
    mode, choices = "abs", bit_options
bits = mid.selectbox("Bit width", choices, index=len(choices) - 1,
                     help="redraws the step lines and shares for this quantizer")
tensors = list(next(iter(data.values()))[2]["tensors"])
tensor = right.selectbox("Tensor", tensors[::-1], format_func=lambda t: "all quantized Linear layers" if t == "total"
                         else t)
st.caption("Rounding to a grid with step Δ hides any change smaller than Δ/2 *if the weight sat on the grid*; a "
           "weight that sits anywhere inside its bin flips to the next level with probability about |dW|/Δ, so small "
           "updates survive on average. The dashed line marks half a step (the median over blocks in weight units; "
           "the shares beside each run count every weight against its own block's step).")
series, missing = [], []
for run_id, (info, deltas, hists) in data.items():
    try:
        series.append(hist_series(name[run_id], hists, deltas, tensor, mode, bits))
    except KeyError as exc:
        missing.append(f"{name[run_id]}: {exc.args[0] if exc.args else exc}")
for note in missing:
    st.warning(note)
if series:
    st.plotly_chart(histogram_figure(series, mode, f"{MODES[mode]} at {bits} bits — " + ("all quantized Linear layers" if tensor == "total" else tensor)))

st.subheader(f"Summary at {bits} bits")
summary = pd.DataFrame([{"run": name[info.run_id], **flip_summary(delta_row(d, bits, tensor))}
                        for info, d, _ in data.values() if ((d["bits"] == bits) & (d["tensor"] == tensor)).any()])
st.dataframe(summary, hide_index=True)
st.caption("below_half_step: share of weights with |dW| < Δ/2; code_flip_rate: share whose quantized code differs "
           "between target and unlearned model; share_kept: <Q(W_u)−Q(W_t), dW>/||dW||² (1 = the update survives "
           "quantization, 0 = erased); noise_ratio: ||Q(W_u)−Q(W_t)||/||dW||, the noise rounding adds, not survival. "
           "flips_by_scale: share of the flipped codes that flipped because the block's scale (absmax) changed, not "
           "because the weight crossed a rounding boundary.")

if bits != 32:
    st.subheader("Per layer and module")
    value = st.radio("Value", list(LAYER_VALUES), format_func=LAYER_VALUES.get, horizontal=True)
    shown = [(info, d) for info, d, _ in data.values() if not layer_table(d, bits, value).empty]
    columns = st.columns(max(1, min(len(shown), 2)))
    zmax = shared_zmax([d for _, d in shown], bits, value)
    for i, (info, deltas) in enumerate(shown):
        columns[i % len(columns)].plotly_chart(layer_heatmap(deltas, bits, value, name[info.run_id], zmax),
                                               key=f"heat-{i}")
