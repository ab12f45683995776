"""Curves page: a run's metrics against bit width (RTN 8..2 bits and the bitsandbytes formats) for target, retrain
and unlearned, with the noise-control band, and the sentence that says whether rounding back or fragility explains
what came back. Computing a curve starts a `qru curve` job, like a run."""
import shlex

import streamlit as st

import ui
from qru.atomic import LockedError
from qru.config import ConfigError, RunConfig
from qru.controls import read_controls
from qru.jobs import launch_job, running_jobs
from qru.store import StoreError
from qru.views.curves import (CURVE_METRICS, HALF, UNDONE, curve_figure, curve_frame, grid_sentence, sentence,
                              undone_by_control)
from qru.views.metric_tables import COLUMNS

ui.in_frame()

st.title("Metric against bit width, with noise controls")
st.caption("Quantized: RTN int-k (lines) and bitsandbytes LLM.int8 / FP4 / NF4 (diamonds). Noise band: the unlearned "
           "model with random perturbations of each block's quantization-error size instead of quantization (the "
           "block's errors permuted, or Gaussian with their RMS), over noise seeds. "
           f"Verdict per quantizer: under {UNDONE:.0%} undone = nothing to explain; noise undid at least {HALF:.0%} of "
           "what quantization undid = fragility; else rounding back.")
runs = [r for r in ui.require_runs(metrics=True) if not r.run_id.startswith("import-")]
name = ui.names(runs)
store = ui.store()
curves, missing = {}, []
for info in runs:
    try:
        rows = read_controls(store, info.run_id)
    except StoreError as exc:
        st.error(str(exc))
        continue
    if [r for r in rows if r.get("control") != "grid"]:
        curves[info.run_id] = rows
    else:
        missing.append(info)
for info in missing:
    argv = ["curve", info.run_id, "--quiet"]
    st.info(f"**{name[info.run_id]}** has no curve yet: computing one evaluates 3 models x 10 quantizers and 2 "
            "models x 2 noise controls x 2 seeds x 10 quantizers (minutes on the tiny model).")
    st.code(f"qru --cache {shlex.quote(str(store.root))} " + shlex.join(argv[:-1]), language="bash")
    if st.button(f"Compute the curve of {name[info.run_id]}", key=f"curve-{info.run_id}"):
        try:
            launch_job(store, argv, f"curve of {name[info.run_id]}")
        except (ConfigError, LockedError, OSError) as exc:
            st.error(f"Could not start: {exc}")
        else:
            st.rerun()
if running_jobs(store):
    st.fragment(ui.jobs_panel, run_every=2)()
if not curves:
    st.stop()
metric = st.selectbox("Metric", list(CURVE_METRICS), format_func=lambda m: COLUMNS.get(m, m))
data = {name[r]: (curve_frame(rows), ui.load(r, "metrics")) for r, rows in curves.items()}
st.plotly_chart(curve_figure(data, metric))
for run_id, rows in curves.items():
    frame, metrics = data[name[run_id]]
    text = sentence(name[run_id], undone_by_control(frame, metrics, metric), metric)
    grid = grid_sentence(rows)
    st.markdown(text + (" " + grid if grid else ""))
    config = store.config(run_id)
    if isinstance(config, RunConfig) and config.unlearn.start_grid:
        st.caption(f"{name[run_id]} started from the target snapped to {config.unlearn.start_grid}: its target is "
                   "on that grid by construction.")
