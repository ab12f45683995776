"""Trade-off page: for the runs of recorded sweeps (the fixes preset above all), forgetting against utility at full
precision and at each quantized width, seeds as intervals, the points no other fix beats marked; which fixes kept
the forgetting under quantization and under relearning, and the table behind it."""
import streamlit as st

import ui
from qru.analysis.tradeoff import FORGET_METRICS, load_points
from qru.metrics import label
from qru.stats import CONFIDENCE
from qru.sweeps import combine, list_sweeps
from qru.views.tradeoff import fixes_sentences, fixes_table, tradeoff_figure
from qru.views.undone import THRESHOLD_TEXT

ui.in_frame()
st.title("Trade-off: forgetting against utility, through quantization and relearning")
st.caption("Each fix (method, adapter, quantization-aware or SAM, start point) is a point per bit width: the mean "
           f"over seeds with {CONFIDENCE:.0%} bootstrap intervals, an arrow from full precision to each quantized "
           "width; a black ring marks the points no other fix beats at that width (at least as much utility and "
           "forgetting, more of one). Relearning: a few fine-tuning steps on forget documents the evaluation does not "
           "use (`qru relearn`; the fixes preset runs it for every run). " + THRESHOLD_TEXT)
sweeps = list_sweeps(ui.store())
if not sweeps:
    st.info("No sweep recorded yet: run the **fixes** preset on the **Sweeps** page, or `qru sweep --preset fixes`.")
    st.stop()
by_id = {i.sweep_id: i for i in sweeps}
fixes = [s for s in by_id if by_id[s].preset == "fixes"]
a, b = st.columns([3, 2])
picked = a.multiselect("Sweeps", list(by_id), default=(fixes or list(by_id))[:1], key="tradeoff-sweeps",
                       format_func=lambda s: by_id[s].label)
forget = b.radio("Forgetting measured by", list(FORGET_METRICS), format_func=label, horizontal=True,
                 key="tradeoff-forget")
if not picked:
    st.info("Pick at least one sweep.")
    st.stop()
run_ids, _, seeds = combine([by_id[s] for s in picked])
points = load_points(ui.store(), run_ids)
if points.empty:
    st.info("None of these sweeps' runs has finished yet.")
    st.stop()
done, attacked = points["run_id"].nunique(), points.loc[points["relearn_stored"], "run_id"].nunique()
st.caption(f"{done} of {len(run_ids)} runs finished; seeds {', '.join(map(str, seeds))}; {attacked} of them attacked "
           "by relearning (the default attack)" + (": `qru relearn RUN`, or run the sweep again." if attacked < done
                                                   else "."))
st.plotly_chart(tradeoff_figure(points, forget))
sentences = fixes_sentences(points)
if sentences:
    st.markdown("\n".join(f"- {s}" for s in sentences))
table = fixes_table(points, forget)
st.dataframe(table, hide_index=True)
st.download_button("Download CSV", table.to_csv(index=False), "tradeoff.csv", "text/csv", key="tradeoff-csv")
