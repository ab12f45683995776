"""Streamlit glue of the relearning attack on the Metrics page: a run's stored attacks (the share undone by relearning
beside the share undone by quantization) and the form that starts `qru relearn` as a job. No computation."""
from __future__ import annotations

import shlex

import streamlit as st

import ui
from qru.analysis.relearning import relearning_undone
from qru.atomic import LockedError
from qru.config import RELEARN_DATA, ConfigError, RelearnConfig, RunConfig
from qru.jobs import launch_analysis
from qru.relearn import read_relearns, record_path, stored_record
from qru.views.text import as_text
from qru.views.undone import relearning_caption, relearning_table

LRS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
DATA = {"forget": "forget slice (the attack)", "retain": "retain text (the control)"}


def relearn_section(run_id: str, name: str) -> None:
    """The stored relearning attacks of ``run_id`` and a form to start another (a finished qru run only)."""
    store = ui.store()
    if not isinstance(store.config(run_id), RunConfig):
        return
    for record in read_relearns(store, run_id):
        st.caption(f"Relearning attack: {as_text(relearning_caption(record))}")
        st.dataframe(relearning_table(relearning_undone(record)), hide_index=True)
    with st.expander(f"Relearning attack on {as_text(name)}"):
        a, b, c = st.columns(3)
        steps = int(a.number_input("Steps", 1, 1000, RelearnConfig().steps, key=f"relearn-steps-{run_id}"))
        lr = b.select_slider("Learning rate", LRS, RelearnConfig().lr, format_func="{:g}".format,
                             key=f"relearn-lr-{run_id}")
        data = c.radio("Fine-tune on", RELEARN_DATA, format_func=DATA.get, key=f"relearn-data-{run_id}")
        try:
            config = RelearnConfig(steps=steps, lr=lr, data=data)
        except ConfigError as exc:
            st.error(as_text(exc))
            return
        argv = ["relearn", run_id, "--steps", str(steps), "--lr", f"{lr:g}", "--data", data]
        st.code(f"qru --cache {shlex.quote(str(store.root))} " + shlex.join(argv), language="bash")
        if stored_record(record_path(store, run_id, config)) is not None:
            st.caption("This attack is stored (above).")
        elif st.button("Relearn", key=f"relearn-{run_id}",
                       help="a few fine-tuning steps, then the target, unlearned and relearned model evaluated on "
                            "the held-out items at 32 bits and the run's widths (about 10 evaluations)"):
            try:
                launch_analysis(store, argv + ["--quiet"], f"relearning attack on {name}")
            except (ConfigError, LockedError, OSError) as exc:
                st.error(f"Could not start: {as_text(exc)}")
            else:
                st.rerun()
