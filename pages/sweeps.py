"""Sweeps page: a preset of runs (the papers' experiments) over several seeds, started as one job, and the sweeps
recorded in the store; their paper tables are on the Metrics page."""
import streamlit as st

import ui
import ui_forms
from qru import recipes
from qru.command_line import shown, sweep_command
from qru.config import ConfigError
from qru.jobs import running_job, running_jobs
from qru.store import run_id_of
from qru.sweeps import PRESETS, list_sweeps
from qru.views.runs import HELP, MODELS, check_sweep_model
from qru.views.text import as_text

ui.in_frame()
store = ui.store()
st.title("Sweeps: the papers' experiments over several seeds")
st.caption(HELP["sweep"])
st.fragment(ui.jobs_panel, run_every=2)()
a, b, c = st.columns([2, 1, 2])
preset = a.selectbox("Preset", list(PRESETS), format_func=lambda p: f"{p}: {PRESETS[p].description}",
                     key="sweep-preset")
seeds = b.multiselect("Seeds", list(range(10)), default=[0, 1, 2], key="sweep-seeds")
model = c.selectbox("Model", [m for m in MODELS if m.startswith("embedded")], key="sweep-model")
try:
    if not seeds:
        raise ConfigError("pick at least one seed")
    data = check_sweep_model(model)
    runs = recipes.sweep(preset, tuple(seeds), **data)
except ConfigError as exc:
    st.error(as_text(exc))
    st.stop()
st.code(shown(sweep_command(preset, seeds, **data), store.root), language="bash")
finished = sum(store.find(c) is not None for c in runs)
if running_job(store, [run_id_of(c) for c in runs], running_jobs(store)):
    st.info(f"This sweep is running now (progress above): {finished}/{len(runs)} runs finished")
elif finished == len(runs):
    st.success(f"All {len(runs)} runs of this sweep are in the store: see the paper table on the Metrics page")
    if st.button("Show the paper table", key="sweep-show"):
        st.switch_page("pages/metrics.py")
elif st.button(f"Run the sweep ({len(runs) - finished} of {len(runs)} runs to compute, "
               f"{ui_forms.minutes([c for c in runs if store.find(c) is None])})", type="primary", key="sweep-run"):
    ui_forms.launch("sweep", runs, f"sweep {preset} ({len(runs)} runs)", sweep=preset, seeds=tuple(seeds))
recorded = list_sweeps(store)
if recorded:
    st.subheader("Recorded sweeps")
    for info in recorded:
        st.text(info.label)
