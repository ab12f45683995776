"""Probes page: forget-set prompts with every model's continuation, the text that reproduces the ground truth marked."""
import streamlit as st

import ui
from qru.views.probe_view import SORTS, leak_scores, ordered, output_keys, probe_html

ui.in_frame()

st.title("Probes: which completions leak the forgotten text?")
runs = ui.require_runs(metrics=True)
name = ui.names(runs)
run_id = st.selectbox("Run", [r.run_id for r in runs], format_func=name.get, key="probes-run")  # options: plain text
probes = ui.load(run_id, "probes")
if not probes:
    st.info("This run has no probe generations.")
    st.stop()
keys = output_keys(probes)
left, mid, right = st.columns([2, 1, 3])
sort = left.selectbox("Order", list(SORTS), key="probes-order")
min_gain = mid.number_input("Min. ROUGE-L gain", -1.0, 1.0, -1.0, 0.05, key="probes-min-gain",
                            help="keep prompts whose unlearned continuation gained at least this much ROUGE-L at "
                                 "the lowest bit width over 32 bits")
shown = right.multiselect("Continuations", keys, default=[k for k in keys if k.endswith("@32")  # per run: each run's
                                                          or k.startswith("unlearned@")],  # own default outputs
                          key=f"probes-outputs-{run_id}")
st.caption("Greedy continuations of forget-set prefixes (the VerbMem prompts). Marked: runs of 3+ words that repeat "
           "the ground truth (on templated biographies this includes shared template phrases, as the retrain "
           "model's rows show). ROUGE-L F1 against the ground truth beside each. Model text is shown as plain text.")
items = ordered(probes, sort, min_gain)
st.write(f"{len(items)} of {len(probes)} prompts")
for i, probe in items:
    score = leak_scores(probe)
    with st.expander(f"#{i + 1} · lowest bit width: {score['leak']:.0%} of the ground truth reproduced "
                     f"({score['leak_gain']:+.0%} vs 32 bits), ROUGE-L {score['low']:.2f} ({score['gain']:+.2f})",
                     expanded=i == items[0][0]):
        st.caption("Prompt")
        st.text(probe["prompt"])
        st.html(probe_html(probe, shown))
