"""Bring your own: compare two checkpoints' weights under every quantizer, or import other tools' results; each is
started as a job from its config and stored beside qru's runs."""
import streamlit as st

import ui
import ui_forms
from qru import recipes
from qru.command_line import comparison_command, import_command
from qru.config import ConfigError
from qru.errors import CheckpointError, ResultImportError
from qru.interop import validate as validate_import
from qru.quant.spec import QUANTIZER_SETS
from qru.views.runs import HELP, IMPORT_HELP, import_entries
from qru.views.text import as_text

ui.in_frame()
st.title("Bring your own checkpoints and results")
st.fragment(ui.jobs_panel, run_every=2)()

st.subheader("Compare two checkpoints")
st.caption(HELP["compare"])
a, b = st.columns(2)
target = a.text_input("Target checkpoint folder", placeholder="/models/llama-2-7b-news-target", key="target")
unlearned = b.text_input("Unlearned checkpoint or LoRA adapter folder", placeholder="/models/npo-gdr",
                         key="unlearned")
chosen = st.radio("Quantizers", list(QUANTIZER_SETS), horizontal=True, format_func=QUANTIZER_SETS.get,
                  key="quantizers", help="the 59-quantizer set takes about 60 times as long as one quantizer")
if target.strip() and unlearned.strip():
    try:
        compared = recipes.comparison(target.strip(), unlearned.strip(), [chosen])
    except (ConfigError, CheckpointError) as exc:
        st.error(as_text(exc))
    else:
        ui_forms.job_box(comparison_command(compared), compared, "deltas", "comparison", "pages/deltas.py", "Compare")

st.subheader("Import other tools' results")
st.caption(IMPORT_HELP)
entries = st.text_area("One evaluation per line: [MODEL@BITS=]PATH", key="entries",
                       placeholder="unlearned@32=/saves/npo/evals\nunlearned@4=/saves/npo_4bit/evals\n"
                                   "retrain@32=/saves/retrain/evals")
label = st.text_input("Label", placeholder="NPO+GDR from open-unlearning", key="label")
if entries.strip():
    try:
        imported = recipes.imported(import_entries(entries), label.strip())
        validate_import(imported)
    except (ConfigError, ResultImportError) as exc:
        st.error(as_text(exc))
    else:
        ui_forms.job_box(import_command(imported), imported, "import", "import", "pages/metrics.py", "Import")
