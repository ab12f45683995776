"""qru dashboard: the run store at a glance (streamlit run app.py). All computation lives in qru/."""
import os

import pandas as pd
import streamlit as st

from qru.cli import TABLE_COLUMNS
from qru.launch import launch_cli
from qru.store import SUMMARY_COLUMNS, RunStore, StoreError

st.set_page_config(page_title="qru", layout="wide")
store = RunStore(st.sidebar.text_input("Run store", os.environ.get("QRU_CACHE", "cache")))
st.title("Does quantization undo unlearning?")
st.caption("Runs of the embedded default: a tiny Llama trained on fictitious people, unlearned with GA or NPO, "
           "quantized to 8 and 4 bits (bitsandbytes).")

runs = store.list()
if st.sidebar.button("Run the default experiment",
                     help="GA+GDR full fine-tuning and NPO+GDR LoRA at 32/8/4 bits; ~5 min to build the models "
                          "the first time, then ~2 min per run on 2 CPU cores"):
    launch_cli(["run"], store.root)
    st.sidebar.success("Started in the background: refresh to follow its progress.")
if not runs:
    st.info("The store is empty. Press **Run the default experiment** in the sidebar, or run `qru run` in a shell.")
    st.stop()

st.dataframe(pd.DataFrame([{"run": r.run_id, "label": r.label, "state": r.state, "stage": r.stage,
                            "progress": r.progress, "error": r.error} for r in runs]), hide_index=True,
             column_config={"progress": st.column_config.ProgressColumn(min_value=0, max_value=1)})
done = [r for r in runs if r.state == "done"]
if not done:
    st.stop()
run_id = st.selectbox("Run", [r.run_id for r in done], format_func=lambda r: f"{store.info(r).label} — {r}")
try:
    metrics = store.metrics(run_id)
    deltas = store.deltas(run_id)
    probes = store.read_json(run_id, "probes.json")
except StoreError as exc:
    st.error(str(exc))
    st.stop()
st.subheader("Metrics")
st.dataframe(metrics[[c for c in TABLE_COLUMNS if c in metrics.columns]], hide_index=True)
st.subheader("Weight deltas against the quantization step (all quantized Linear layers)")
st.dataframe(deltas[deltas.tensor == "total"][SUMMARY_COLUMNS], hide_index=True)
st.subheader("Probe generations (forget set)")
for probe in probes[:3]:
    with st.expander(probe["prompt"]):
        st.markdown(f"**Ground truth:** {probe['gt']}")
        for key, out in probe["outputs"].items():
            st.markdown(f"**{key}** (ROUGE-L {out['rougeL_f1']:.2f}): {out['output']}")
