"""Weight-deltas page: where the unlearning update lies against the quantizer's step, and what rounding kept."""
import pandas as pd
import streamlit as st

import ui
from qru.quant.spec import QuantSpec
from qru.views.delta_charts import (LAYER_VALUES, MODES, delta_row, flip_summary, hist_series, histogram_figure,
                                    layer_heatmap, layer_table, shared_zmax)
from qru.views.flip_analysis import explain, flip_thresholds, module_table, own_quantizer_totals
from qru.views.text import as_text

ui.in_frame()

st.title("Weight deltas against the quantization step")
runs = ui.require_runs(deltas=True)
name = ui.names(runs)
loaded = {r.run_id: (r, ui.load(r.run_id, "deltas", stop=False), ui.load(r.run_id, "histograms", stop=False))
          for r in runs}
data = {k: v for k, v in loaded.items() if v[1] is not None and v[2] is not None}
if not data:
    st.stop()
keys = sorted({q for _, d, _ in data.values() for q in d["quantizer"].unique()})
own = sorted({s.key: s for r in data for s in ui.store().config(r).quant_specs() if s.bits < 32}.values(),
             key=lambda s: (abs(s.bits - 4), s.bits))  # the runs' own quantizers, 4 bits (the papers') first
key = ui.quantizer_picker(keys, [s.key for s in own])
if key is None:
    st.warning("The picked runs have no weight-delta rows.")
    st.stop()
label = QuantSpec.from_key(key).label
few = {r: d["quantizer"].nunique() for r, (_, d, _) in data.items() if d["quantizer"].nunique() < 60}
if any(not r.startswith("deltas-") for r in few):
    st.caption("Runs stored before the quantizer grid hold only their own bit widths; re-run them for all.")
if any(r.startswith("deltas-") for r in few):
    st.caption("Some checkpoint comparisons were analysed under a few quantizers only (`qru deltas --quantizers`); "
               "compare again with `--quantizers all` for every one.")
left, right = st.columns([1, 2])
mode = left.radio("Show", list(MODES) if not key.endswith("@32") else ["abs"], format_func=MODES.get, key="deltas-mode",
                  help="|dW| in weight units or in steps Δ, what survives quantization, or how far the target's "
                       "weights sit from a rounding boundary")
tensors = list(next(iter(data.values()))[2]["tensors"])
tensor = right.selectbox("Tensor", tensors[::-1], format_func=lambda t: "all quantized Linear layers"
                         if t == "total" else t, key="deltas-tensor")
series, rows, notes = [], {}, []
for run_id, (info, deltas, hists) in data.items():
    try:
        series.append(hist_series(name[run_id], hists, deltas, tensor, mode, key))
        rows[run_id] = delta_row(deltas, key, tensor)
    except KeyError as exc:
        notes.append(f"{name[run_id]}: {exc.args[0] if exc.args else exc}")
for note in notes:
    st.warning(as_text(note))
chart, words = st.columns([3, 2])
if series:
    chart.plotly_chart(histogram_figure(series, mode, f"{MODES[mode]} — {label} — "
                                        + ("all quantized Linear layers" if tensor == "total" else tensor)))
for run_id, row in rows.items():
    hists = data[run_id][2]
    bnd = hists.get(f"bnd_{key}")
    index = list(hists["tensors"]).index(tensor)
    limits = flip_thresholds(bnd[index], hists["abs_edges"], int(row["numel"])) if bnd is not None else None
    words.markdown(f"**{as_text(name[run_id])}** — " + explain(row, label, limits))

st.subheader(f"Summary under {as_text(label)}")
st.dataframe(pd.DataFrame([{"run": name[r], **flip_summary(row)} for r, row in rows.items()]), hide_index=True)
st.caption("below_half_step: share of weights with |dW| < Δ/2; code_flip_rate: share whose quantized code differs "
           "between target and unlearned model; share_kept: <Q(W_u)−Q(W_t), dW>/||dW||² (1 = the update survives "
           "quantization, 0 = erased); noise_ratio: ||Q(W_u)−Q(W_t)||/||dW||, the noise rounding adds, not survival; "
           "flips_by_scale: share of the flipped codes that flipped because the block's scale changed.")

st.subheader("Each run under its own quantizers")
st.caption("The runs side by side under the quantizers their metrics were computed with (a run quantized with FP4 "
           "and one with NF4 are each read under their own grid here, whatever the picker above shows).")
own_rows = []
for run_id, (info, deltas, _) in data.items():
    config = ui.store().config(run_id)
    if hasattr(config, "unlearn"):
        part = own_quantizer_totals(config.quant_specs(), deltas)
        part.insert(0, "start", config.unlearn.scenario["start"])
        part.insert(0, "run", name[run_id])
        own_rows.append(part)
if own_rows:
    st.dataframe(pd.concat(own_rows, ignore_index=True), hide_index=True)

if not key.endswith("@32"):
    st.subheader("Code flips by module type")
    st.caption("crossed_boundary: the unlearned weight lies across a rounding boundary of the target's own grid; "
               "scale_changed: it does not, but its block's or group's scale (absmax, min/max) moved, shifting the "
               "whole grid. Both as shares of the module's weights.")
    for run_id, (info, deltas, _) in data.items():
        table = module_table(deltas, key)
        if not table.empty:
            st.markdown(f"**{as_text(name[run_id])}**")
            st.dataframe(table, hide_index=True)
    st.subheader("Per layer and module")
    value = st.radio("Value", list(LAYER_VALUES), format_func=LAYER_VALUES.get, horizontal=True, key="deltas-value")
    shown = [(info, d) for info, d, _ in data.values() if not layer_table(d, key, value).empty]
    columns = st.columns(max(1, min(len(shown), 2)))
    zmax = shared_zmax([d for _, d in shown], key, value)
    for i, (info, deltas) in enumerate(shown):
        columns[i % len(columns)].plotly_chart(layer_heatmap(deltas, key, value, name[info.run_id], zmax),
                                               key=f"heat-{i}")
