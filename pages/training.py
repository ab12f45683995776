"""Training page: the per-step unlearning losses of the picked runs (forget term, retain term, total, learning rate),
full fine-tuning and LoRA on one chart; the same curves are in TensorBoard."""
import shlex

import streamlit as st

import ui
from qru.views.text import as_text
from qru.views.training import training_figure, training_frame

ui.in_frame()

st.title("Training: how did the unlearning losses move?")
st.caption("Per unlearning step, from each run's train_log.json: the forget term (the method's loss on the forget "
           "batch; gradient ascent makes it negative), the retain term (the regularizer's loss on a retain batch, "
           "weighted by alpha in the total) and the learning rate. Solid lines: full fine-tuning; dashed: LoRA.")
runs = ui.require_runs(metrics=False)
name = ui.names(runs)
frame, missing = training_frame(ui.store(), {r.run_id: name[r.run_id] for r in runs})
if missing:
    st.caption("No training log (imported results, checkpoint comparisons, runs that failed before unlearning): "
               + as_text("; ".join(missing)))
if frame.empty:
    st.info("None of the picked runs has a training log.")
    st.stop()
st.plotly_chart(training_figure(frame), key="training-chart")
st.caption("The same curves in TensorBoard (runs computed since qru writes event files beside each run):")
st.code(f"tensorboard --logdir {shlex.quote(str(ui.store().runs))}", language="bash")
st.download_button("Download CSV", frame.to_csv(index=False), "training-curves.csv", "text/csv", key="training-csv")
