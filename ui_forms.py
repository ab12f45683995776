"""Streamlit widgets shared by the Run, Sweeps and Bring-your-own pages: starting jobs from configs built by
qru.recipes, the boxes that show a job's command and state, and the Run form's model and quantizer sections.
No computation: configs come from qru.recipes, commands from qru.command_line, times from qru.views.runs."""
from __future__ import annotations

import streamlit as st

import ui
from qru.atomic import LockedError
from qru.command_line import shown
from qru.config import ConfigError
from qru.errors import CheckpointError
from qru.jobs import launch as launch_job, running_job, running_jobs
from qru.store import run_id_of
from qru.views.runs import HELP, HF_CORPORA, MODELS, estimate_seconds, models_built, on_muse_corpus
from qru.views.text import as_text


def launch(command: str, configs: list, title: str, **options) -> None:
    """Start a job computing ``configs`` (qru.jobs.launch) and redraw; a refusal is shown as an error."""
    store = ui.store()
    try:
        launch_job(store, command, configs, title, **options)
    except (ConfigError, CheckpointError, LockedError, OSError) as exc:
        st.error(f"Could not start: {as_text(exc)}")
        return
    st.rerun()


def minutes(configs: list) -> str:
    """How long computing ``configs`` takes here, in words."""
    store = ui.store()
    seconds = estimate_seconds(store, configs, models_built(store, configs[0]))
    if seconds is None:
        return "time stated when it starts"
    return "about a minute" if seconds < 90 else f"about {seconds / 60:.0f} minutes"


def job_box(argv: list[str], config, command: str, what: str, page: str, start: str) -> None:
    """The command of a comparison or import job and its state: running, in the store (with a button to show it on
    ``page``) or a button that starts it from the serialized ``config``."""
    store = ui.store()
    st.code(shown(argv, store.root), language="bash")
    if running_job(store, [run_id_of(config)], running_jobs(store)):
        st.info(f"This {what} is running now (progress above): {as_text(config.label)}")
    elif store.find(config):
        st.success(f"This {what} is already in the store: {as_text(config.label)}")
        if st.button(f"Show the {what}", key=f"show-{what}"):
            ui.pick([run_id_of(config)])
            st.switch_page(page)
    elif st.button(start, type="primary", key=f"start-{what}"):
        launch(command, [config], config.label)


def model_form() -> tuple[str, str, dict]:
    """The model and corpus choice: (MODELS key, MUSE-layout folder or "", Hugging Face fields)."""
    model = st.selectbox("Model and corpus", list(MODELS), key="model")
    st.caption(MODELS[model][1])
    hf = {}
    if model == "Hugging Face model":
        a, b = st.columns(2)
        hf["model"] = a.text_input("Target model (hub id or folder)", placeholder="muse-bench/MUSE-news_target",
                                   key="hf-model")
        hf["retrain"] = b.text_input("Retrain model (optional, for PrivLeak)", key="hf-retrain",
                                     placeholder="muse-bench/MUSE-news_retrain")
        hf["corpus"] = a.selectbox("Data", list(HF_CORPORA), format_func=HF_CORPORA.get, key="hf-corpus")
        hf["trust_remote_code"] = b.checkbox("Trust remote code", key="hf-trust", help="let transformers run model "
                                             "code shipped with the model (off unless you trust its source)")
    folder = model == "MUSE-layout folder" or hf.get("corpus") == "folder"
    corpus = st.text_input("MUSE-layout folder", placeholder="/path/to/muse-news", key="folder") if folder else ""
    return model, corpus, hf


def evaluation_form(model: str) -> dict:
    """Prompt format and subsampling (qru.recipes keywords prompt_format, max_eval_items, max_train_tokens), the
    format defaulting to the corpus's (muse on MUSE data, healed on the embedded corpus)."""
    formats = ["muse", "healed"] if on_muse_corpus(model) else ["healed", "muse"]
    with st.expander(f"Evaluation: prompt format ({formats[0]} by default here), subsampling"):
        a, b, c = st.columns(3)
        fmt = a.radio("Prompt format", formats, key=f"prompt-format-{formats[0]}", help=HELP["prompt_format"],
                      format_func=lambda f: f + (" (default)" if f == formats[0] else ""))
        items = b.number_input("Evaluation items per list (0 = all)", 0, 100_000, 0, key="max-eval-items",
                               help=HELP["subsample"])
        tokens = c.number_input("Training tokens per split (0 = all)", 0, 10**9, 0, step=10_000,
                                key="max-train-tokens", help=HELP["subsample"])
        if fmt == "muse" and not on_muse_corpus(model):
            st.caption("The embedded target is trained on the healed form: in the muse format its KnowMem reads "
                       "near 0 (docs/measures.md, \"Prompt formats\").")
    return {"prompt_format": fmt, "max_eval_items": int(items), "max_train_tokens": int(tokens)}


def quantizer_form(column) -> tuple[str, list[int], int, bool]:
    """The quantizer choice: (fp4 / nf4 / rtn / gptq, bit widths (in ``column``), group size, symmetric)."""
    quantizer = st.radio("Quantizer", ["fp4", "nf4", "rtn", "gptq"], horizontal=True, key="quantizer", format_func={
        "fp4": "bitsandbytes, FP4 at 4 bits", "nf4": "bitsandbytes, NF4 at 4 bits", "rtn": "RTN int-k",
        "gptq": "GPTQ int-k (calibrated)"}.get)
    grid = quantizer in ("rtn", "gptq")
    bits = column.multiselect("Bit widths", [32, 8, 7, 6, 5, 4, 3, 2] if grid else [32, 8, 4], key=f"bits-{quantizer}",
                              default=[32, 4, 3] if quantizer == "rtn" else [32, 4] if grid else [32, 8, 4],
                              help=HELP["bits"])
    group_size, symmetric = 128, False
    if grid:
        a, b = st.columns(2)
        group_size = a.selectbox("Group size", [128, 64, 32, 0] if quantizer == "rtn" else [0, 128, 64, 32],
                                 format_func=lambda g: f"{g}" if g else "per channel", key=f"group-{quantizer}")
        symmetric = b.radio("Grid", [False, True], horizontal=True, key="symmetric",
                            format_func=lambda s: "symmetric (absmax)" if s else "asymmetric (min/max)")
        st.caption(HELP[quantizer])
    else:
        st.caption(HELP["quant_type"] + " " + HELP["bits"])
    return quantizer, bits, group_size, symmetric


def method_params(method_class) -> dict:
    """Number inputs for the method's parameters (its unit's Param list), at their defaults."""
    params = {}
    for param, column in zip(method_class.params, st.columns(max(1, len(method_class.params)))):
        value = column.number_input(f"{method_class.label} {param.short or param.name}", value=param.default,
                                    step=1 if param.integer else None, format="%d" if param.integer else "%g",
                                    help=param.help, key=f"param-{method_class.name}-{param.name}")
        params[param.name] = int(value) if param.integer else float(value)
    return params
