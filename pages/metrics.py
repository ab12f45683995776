"""Metrics page: MUSE metrics of target, retrain and unlearned models at each bit width, and what came back."""
import streamlit as st

import ui
from ui_relearn import relearn_section
from qru.analysis.undone import forgetting_undone
from qru.reference import SETTING, paper_table
from qru.stats import CONFIDENCE
from qru.sweeps import combine, list_sweeps
from qru.metrics import labels as metric_labels
from qru.views.undone import THRESHOLD_TEXT, undone_table
from qru.command_line import shown
from qru.controls import read_controls
from qru.jobs import running_jobs
from qru.store import StoreError
from qru.views.curves import controls_table
from qru.views.paper_table import DELTA_COLUMNS, load_sweep, paper_table as sweep_table, reference_layout
from qru.views.metric_tables import (came_back, came_back_cells, changes, comparison, comparison_mask, highlight,
                                     run_table, thresholds_text)
from qru.views.evaluation import evaluation_lines, mixed_formats
from qru.views.text import as_text

ui.in_frame()

st.title("Metrics: does the quantized model remember?")


def show_paper_table() -> None:
    """Recorded sweeps laid out like the papers' tables, mean and bootstrap interval over seeds."""
    sweeps = list_sweeps(ui.store())
    if not sweeps:
        st.info("No sweep recorded yet: start one on the **Run** page (Sweeps) or with `qru sweep --preset zhang2025`.")
        return
    a, b = st.columns([3, 2])
    by_id = {i.sweep_id: i for i in sweeps}
    picked = a.multiselect("Sweeps", list(by_id), default=list(by_id)[:1], format_func=lambda s: by_id[s].label,
                           key="metrics-sweeps", help="several sweeps are read as one table: zhang2025 and lora2026 "
                           "together give the full fine-tuning and LoRA columns side by side")
    labels = {**metric_labels(), **DELTA_COLUMNS}
    metric = b.selectbox("Metric", list(labels), format_func=labels.get, key="metrics-sweep-metric",
                         help="the last two: weight deltas of the unlearned model under the run's own quantizer")
    if not picked:
        st.info("Pick at least one sweep.")
        return
    run_ids, rows, seeds = combine([by_id[s] for s in picked])
    frame, missing = load_sweep(ui.store(), run_ids)
    if missing:
        st.caption(f"{len(missing)} of {len(run_ids)} runs not finished yet (left out); a sweep resumes "
                   "where it stopped when started again.")
    if frame.empty:
        return
    st.caption(f"Unlearned models: mean [{CONFIDENCE:.0%} percentile bootstrap interval of the mean over seeds "
               f"{', '.join(map(str, seeds))}] (scipy); target and retrain rows do not depend on the seed. "
               "Columns: adapter @ bit width.")
    try:
        table = sweep_table(frame, metric, rows)
    except KeyError:
        st.info(f"The sweeps' runs have no {labels[metric]}.")
        return
    st.dataframe(table, hide_index=True)
    st.download_button("Download CSV", table.to_csv(index=False), f"{'+'.join(picked)}-{metric}.csv", "text/csv",
                       key="metrics-sweep-csv")
    reference = reference_layout(metric)
    if not reference.empty:
        st.caption(f"Beside it, the papers' numbers for {labels[metric]}: {SETTING}. 4-bit = bitsandbytes FP4.")
        st.dataframe(reference, hide_index=True)


def show_noise_controls(run_id: str) -> None:
    """The run's quantized bit widths beside its noise controls (qru noise / qru curve), if computed."""
    try:
        rows = read_controls(ui.store(), run_id)
        specs = [s.key for s in ui.store().config(run_id).quant_specs() if s.bits < 32]
    except (StoreError, AttributeError):
        return
    table = controls_table(rows, specs)
    if table.empty:
        st.caption(f"Noise controls: none yet (`{shown(['noise', run_id], ui.store().root)}`, or a curve on the "
                   "**Curves** page).")
        return
    st.caption("Quantized vs noise controls (random perturbations of each block's quantization-error size): if the "
               "noise moves the unlearned model as far as quantization does, fragility explains it; if not, rounding "
               "back does.")
    st.dataframe(table, hide_index=True)


if st.radio("Show", ["runs picked in the sidebar", "paper table of a sweep"], horizontal=True,
            key="metrics-mode") == "paper table of a sweep":
    show_paper_table()
    st.stop()
runs = ui.require_runs(metrics=True)
if running_jobs(ui.store()):  # a relearning attack started below shows its progress here
    st.fragment(ui.jobs_panel, run_every=2)()
st.caption("VerbMem, KnowMem: ROUGE-L F1 x 100 (MUSE); PrivLeak: Min-40% AUC vs the 32-bit retrain model, % (0 "
           "ideal, -100 still memorized); NLL in nats/token. Red: a quantized model moved toward remembering the "
           f"forget set compared with the same model at 32 bits ({thresholds_text()}).")
name = ui.names(runs)
tables = {name[r.run_id]: t for r in runs if (t := ui.load(r.run_id, "metrics", stop=False)) is not None}
runs = [r for r in runs if name[r.run_id] in tables]
if not runs:
    st.stop()

view = st.radio("View", ["per run", "comparison across runs"], horizontal=True, key="metrics-view",
                disabled=len(runs) < 2, help="pick two or more runs in the sidebar to compare them")
if view == "per run" or len(runs) < 2:
    for info in runs:
        st.subheader(as_text(name[info.run_id]))
        table = run_table(tables[name[info.run_id]])
        st.dataframe(highlight(table, came_back_cells(table)), hide_index=True)
        missing = tables[name[info.run_id]].get("privleak_missing")
        if missing is not None and missing.notna().any():
            st.caption(f"PrivLeak missing: {as_text(missing.dropna().iloc[0])}")
        st.caption(" ".join(evaluation_lines(ui.store(), info.run_id)))  # generated text: flags in `code`
        change = changes(table)
        if not change.empty:
            st.caption("Change from 32 bits (metric at b bits minus the same model at 32 bits)")
            st.dataframe(highlight(change, came_back(change), signed=True), hide_index=True)
            undone = undone_table(forgetting_undone(tables[name[info.run_id]],
                                                    ui.load(info.run_id, "samples", stop=False)))
            if not undone.empty:
                st.caption("Share of the forgetting undone by quantization. " + THRESHOLD_TEXT)
                st.dataframe(undone, hide_index=True)
        show_noise_controls(info.run_id)
        relearn_section(info.run_id, name[info.run_id])
        st.download_button("Download CSV", table.to_csv(index=False), f"{info.run_id}-metrics.csv", "text/csv",
                           key=f"csv-{info.run_id}")
else:
    low = sorted({int(b) for t in tables.values() for b in t["bits"] if b != 32}) or [32]
    bits = st.selectbox("Compare 32 bits with", low, format_func=lambda b: f"{b} bits", key="metrics-compare-bits")
    table = comparison(tables, bits)
    if mixed := mixed_formats({name[r.run_id]: ui.store().config(r.run_id) for r in runs}):
        st.warning(as_text(mixed))
    st.dataframe(highlight(table, comparison_mask(table)), hide_index=True,
                 column_config={"model": st.column_config.TextColumn(width="large", pinned=True)})
    st.download_button("Download CSV", table.to_csv(index=False), f"comparison-{bits}bit.csv", "text/csv",
                       key="metrics-comparison-csv")

st.subheader("Published reference numbers")
st.caption(f"{SETTING}. Zhang et al. 2025 (ICLR, arXiv 2410.16454) and arXiv 2602.13151; 4-bit = bitsandbytes FP4. "
           "A different model and corpus: shown for orientation, not as numbers qru should reproduce.")
reference = paper_table()
st.dataframe(reference, hide_index=True, height=38 * (len(reference) + 1))
