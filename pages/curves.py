"""Curves page: a run's metrics against bit width (RTN 8..2 bits and the bitsandbytes formats) for target, retrain
and unlearned, with the noise-control band, and the sentence that says whether rounding back or fragility explains
what came back. Computing a curve starts a `qru curve` job, like a run."""
import shlex

import streamlit as st

import ui
from qru.analysis.verdicts import HALF, UNDONE, curve_frame, undone_by_control
from qru.atomic import LockedError, is_locked
from qru.config import ConfigError, RunConfig
from qru.controls import CURVE_BITS, read_controls
from qru.jobs import launch_analysis, running_jobs
from qru.quant.spec import NOISE_KINDS
from qru.metrics import curve_metrics, headline, label
from qru.store import StoreError
from qru.views.curves import curve_figure, grid_sentence, onset_sentence, sentence, target_sentence, verdict_table
from qru.views.text import as_text

ui.in_frame()

st.title("Metric against bit width, with noise controls")
st.caption("Quantized: RTN int-k (lines) and bitsandbytes LLM.int8 / FP4 / NF4 (markers: diamonds for the unlearned "
           "model, open circles for the target, open squares for retrain). Noise band: the unlearned model with random "
           "perturbations of each block's quantization-error size instead of quantization (the block's errors "
           "permuted, or Gaussian with their RMS), over noise seeds; x = each control's mean. "
           f"Verdict per quantizer: under {UNDONE:.0%} undone = nothing to explain; noise undid at least {HALF:.0%} of "
           "what quantization undid = fragility; else rounding back. A share undone is stated only where the 32-bit "
           "effect and the perturbed target's distance to the unlearned model exceed the metric's noise (2 standard "
           "errors of the paired items, as on the Metrics page).")
runs = [r for r in ui.require_runs(metrics=True) if not r.run_id.startswith("import-")]
name = ui.names(runs)
store = ui.store()
curves, missing = {}, []
for info in runs:
    try:
        rows = read_controls(store, info.run_id)
    except StoreError as exc:
        st.error(as_text(exc))
        continue
    if [r for r in rows if r.get("control") != "grid"]:
        curves[info.run_id] = rows
    else:
        missing.append(info)
with st.expander("Compute a curve" + (f" ({len(missing)} picked run(s) have none yet)" if missing else ""),
                 expanded=bool(missing)):
    bits = st.multiselect("Bit widths (RTN int-k; 8 adds LLM.int8, 4 adds FP4, NF4 and GGUF Q4_1 / Q4_0)",
                          list(CURVE_BITS), default=list(CURVE_BITS), key="curves-bits") or list(CURVE_BITS)
    kinds = st.multiselect("Noise controls", list(NOISE_KINDS), default=list(NOISE_KINDS),
                           key="curves-kinds") or list(NOISE_KINDS)
    seeds = int(st.number_input("Noise seeds", min_value=1, max_value=5, value=2, step=1, key="curves-seeds"))
    n_specs = len(bits) + (8 in bits) + 4 * (4 in bits)
    st.caption(f"Per quantizer ({n_specs} here): the unlearned model quantized, and the target and unlearned model "
               f"under {len(kinds)} noise control(s) x {seeds} seed(s); the quantized target and retrain are shared "
               "with every run from the same start, and what a run already has is not computed again (seconds per "
               "evaluation on the tiny model, about a minute on SmolLM2-135M).")
    for info in runs:
        argv = ["curve", info.run_id, "--bits", *map(str, bits), "--kinds", *kinds,
                "--noise-seeds", *map(str, range(seeds)), "--quiet"]
        if is_locked(store.path(info.run_id) / ".controls.lock"):
            st.info(f"**{as_text(name[info.run_id])}**: its controls are being computed by another process (a "
                    "`qru curve` or `qru noise`); the chart shows each quantizer once it is stored.")
            continue
        st.code(f"qru --cache {shlex.quote(str(store.root))} " + shlex.join(argv[:-1]), language="bash")
        verb = "Compute more of the curve of" if info.run_id in curves else "Compute the curve of"
        if st.button(f"{verb} {as_text(name[info.run_id])}", key=f"curve-{info.run_id}"):
            try:
                launch_analysis(store, argv, f"curve of {name[info.run_id]}")
            except (ConfigError, LockedError, OSError) as exc:
                st.error(f"Could not start: {as_text(exc)}")
            else:
                st.rerun()
if running_jobs(store):
    st.fragment(ui.jobs_panel, run_every=2)()
if not curves:
    st.stop()
metric = st.selectbox("Metric", curve_metrics(), format_func=label, key="curves-metric")
data = {name[r]: (curve_frame(rows), ui.load(r, "metrics")) for r, rows in curves.items()}
st.plotly_chart(curve_figure(data, metric))
for run_id, rows in curves.items():
    frame, metrics = data[name[run_id]]
    samples = ui.load(run_id, "samples", stop=False)
    undone = undone_by_control(frame, metrics, metric, samples)
    st.markdown(" ".join(t for t in (sentence(name[run_id], undone, metric),
                                     onset_sentence(frame, metrics, undone, metric),
                                     target_sentence(frame, metrics, undone, metric), grid_sentence(rows)) if t))
    config = store.config(run_id)
    if isinstance(config, RunConfig) and config.unlearn.start_grid:
        st.caption(f"{as_text(name[run_id])} started from the target snapped to {as_text(config.unlearn.start_grid)}: "
                   "its target is on that grid by construction.")
    with st.expander(f"Share undone per quantizer: {as_text(name[run_id])}"):
        st.dataframe(verdict_table({m: undone_by_control(frame, metrics, m, samples)
                                    for m in headline()}), hide_index=True)
