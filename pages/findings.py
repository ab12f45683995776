"""Findings page: for the picked runs, in words generated from their stored numbers, whether PTQ undid the unlearning,
by how much, what rounding did to the weights, and which scenario options differ between the runs."""
import streamlit as st

import ui
from qru.analysis.findings import UNDONE_MOST, UNDONE_SOME, run_findings
from qru.config import RunConfig
from qru.controls import read_controls
from qru.findings import differences, sentences, summary_frame
from qru.relearn import read_relearns
from qru.store import StoreError
from qru.views.evaluation import mixed_formats
from qru.views.text import as_text
from qru.views.undone import THRESHOLD_TEXT

ui.in_frame()

st.title("Findings: which runs did quantization undo, and why?")
st.caption("Generated from the picked runs' stored metrics and weight deltas under each run's own quantizers. "
           + THRESHOLD_TEXT + " The verdict of a bit width is the median over the headline metrics (KnowMem-forget, "
           f"forget NLL, entity-token VerbMem): at least {UNDONE_MOST:.0%} reads “undid most”, at least "
           f"{UNDONE_SOME:.0%} “undid part”.")
runs = ui.require_runs(metrics=True)
name = ui.names(runs)
findings, imported = [], []
for info in runs:
    config = ui.store().config(info.run_id)
    metrics = ui.load(info.run_id, "metrics", stop=False)
    if not isinstance(config, RunConfig):
        imported.append(info.label)  # imported results have no weights or scenario to read
    if not isinstance(config, RunConfig) or metrics is None:
        continue
    try:
        controls = read_controls(ui.store(), info.run_id)
    except StoreError as exc:
        st.warning(as_text(exc))
        controls = []
    findings.append(run_findings(info.run_id, name[info.run_id], config, metrics,
                                 ui.load(info.run_id, "samples", stop=False), ui.load(info.run_id, "deltas", stop=False),
                                 controls, read_relearns(ui.store(), info.run_id)))
if imported:
    st.caption("Not shown (imported results have no weight deltas or scenario to read, see **Metrics**): "
               + as_text("; ".join(imported)))
if not findings:
    st.info("The picked runs are imported results or comparisons: pick runs computed by qru.")
    st.stop()

summary = summary_frame(findings)
if not summary.empty:
    st.dataframe(summary.style.format(precision=2, na_rep="—"), hide_index=True)
    st.download_button("Download CSV", summary.to_csv(index=False), "findings.csv", "text/csv", key="findings-csv")
if mixed := mixed_formats({name[r.run_id]: ui.store().config(r.run_id) for r in runs}):
    st.warning(as_text(mixed))
lines = differences(findings)
if lines:
    st.subheader("Between the runs")
    st.markdown("\n".join(f"- {line}" for line in lines))
for f in findings:
    st.subheader(as_text(f.name))
    st.markdown("\n".join(f"- {line}" for line in sentences(f)))
