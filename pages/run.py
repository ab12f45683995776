"""Run page: choose a method and bit widths, start the run as a job (or load it from the store), follow it."""
import streamlit as st

import ui
import ui_forms
from qru import recipes
from qru.command_line import command, shown
from qru.config import ConfigError
from qru.errors import ModelLoadError
from qru.jobs import list_jobs, running_job, running_jobs
from qru.store import run_id_of
from qru.unlearn.methods import METHODS
from qru.views.runs import (HELP, LR_GRID, PRESETS, QUANT_AWARE, START_GRIDS, check_corpus, check_models, data_choices,
                            quantizer_choices)
from qru.views.text import as_text

ui.in_frame()
store = ui.store()
st.title("Does quantization undo unlearning?")
st.caption("Unlearn a model's forget set (" + ", ".join(c.label for c in METHODS.values()) + "; full fine-tuning or "
           "LoRA; from the target as trained or snapped to a quantizer's grid), quantize it, and see whether the "
           "quantized copy remembers. Runs start as separate `qru` processes and are stored in the run store; their "
           "progress shows here. Sweeps and your own checkpoints or results have pages of their own.")
st.fragment(ui.jobs_panel, run_every=2)()
demo = recipes.demo_set()
try:
    empty = not store.list() and not list_jobs(store)
except OSError as exc:
    st.error(as_text(f"Cannot read the store {store.root}: {exc.strerror or exc}"))
    st.stop()


def demo_box(first: bool) -> None:
    """The demo set of both outcomes (qru.recipes.DEMO_SET): its time, state and a one-click start."""
    if first:
        st.subheader("First visit: run the demo set")
    todo = [c for c in demo if store.find(c) is None]
    st.write(f"Five runs on the embedded default. {HELP['demo']} On this machine that takes "
             f"{ui_forms.minutes(todo or demo)}" + (", including building the tiny target and retrain models the first "
                                              "time." if first else ".") + " The pages fill in as the runs finish.")
    if running_job(store, [run_id_of(c) for c in demo], running_jobs(store)):
        st.info("The demo set is running now (progress above).")
    elif not todo:
        st.success("All five demo runs are in the store.")
        if st.button("Show the demo set's findings", key="demo-show"):
            ui.pick([run_id_of(c) for c in demo])
            st.switch_page("pages/findings.py")
    elif st.button("Run the demo set" if first or len(todo) == len(demo) else
                   f"Run the demo set ({len(todo)} of {len(demo)} runs to compute)", type="primary", key="demo-run"):
        ui_forms.launch("run", demo, f"demo set ({len(demo)} runs)")


if empty:
    demo_box(True)
else:
    with st.expander("Demo set: does PTQ undo the unlearning, and when? (five runs, both outcomes)"):
        demo_box(False)

st.subheader("New run")
model, corpus, hf = ui_forms.model_form()
left, mid, right = st.columns(3)
method = left.radio("Method", list(METHODS), horizontal=True, format_func=lambda m: METHODS[m].label, key="method")
left.caption(METHODS[method].help)
own_retain = METHODS[method].own_retain
regularizer = mid.radio("Regularizer", ["none"] if own_retain else ["gdr", "klr", "none"], format_func=str.upper,
                        horizontal=True, key=f"regularizer-{own_retain}")
mid.caption(HELP["regularizer"] + (f" {METHODS[method].label} has its own retain term." if own_retain else ""))
adapter = right.radio("Adapter", ["full", "lora"], horizontal=True, key="adapter",
                      format_func={"full": "full fine-tuning", "lora": "LoRA"}.get)
right.caption(HELP["adapter"])
lora = {}
if adapter == "lora":
    a, b = right.columns(2)
    lora = {"lora_r": int(a.number_input("LoRA r", 1, 1024, 32, key="lora-r")),
            "lora_alpha": int(b.number_input("LoRA alpha", 1, 4096, 32, key="lora-alpha"))}
    right.caption(HELP["lora"])
params = ui_forms.method_params(METHODS[method])
preset = st.radio("Learning rate and epochs", list(PRESETS), horizontal=True, key="preset",
                  format_func={"paper": "the papers' (lr 1e-5 full, 1e-4 LoRA)",
                               "embedded": "calibrated for the embedded model (1e-4 / 5e-4)"}.get)
st.caption(HELP["preset"])
left, mid, right = st.columns(3)
lr = left.select_slider("Learning rate", LR_GRID, PRESETS[preset][0][adapter], format_func="{:g}".format,
                        key=f"lr-{preset}-{adapter}", help=HELP["lr"] + " Other values: `qru run --lr`.")
epochs = mid.number_input("Epochs", 1, 100, PRESETS[preset][1], key=f"epochs-{preset}", help=HELP["epochs"])
with st.expander("More method options: SURE, loss forms, MUSE-like target"):
    a, b, c = st.columns(3)
    sure = a.slider("SURE: share of rows updated", 0.0, 0.5, 0.0, 0.05, disabled=adapter != "full", key="sure",
                    help=HELP["sure"] + " 0 = off.")
    loss_form = b.radio("Loss forms", ["faithful", "muse"], horizontal=True, help=HELP["loss_form"], key="loss-form",
                        format_func={"faithful": "faithful", "muse": "muse_bench's reference forms"}.get)
    target_recipe = c.radio("Embedded target", ["scratch", "pretrain-finetune"], help=HELP["target_recipe"],
                            key="target-recipe", format_func={"scratch": "trained from scratch",
                                                              "pretrain-finetune": "base + fine-tuning (MUSE-like)"}.get)
with st.expander("Scenario: start point, weight precision, embeddings"):
    a, b, c = st.columns(3)
    start_grid = a.radio("Start point", list(START_GRIDS), format_func=START_GRIDS.get, help=HELP["start"],
                         key="start-grid")
    weight_precision = b.radio("Weights during unlearning", ["fp32", "bf16-rounded"], help=HELP["weight_precision"],
                               key="weight-precision",
                               format_func={"fp32": "fp32", "bf16-rounded": "bf16 (rounded after every step)"}.get)
    frozen = c.radio("Embeddings", [False, True], disabled=adapter != "full", help=HELP["embeddings"], key="frozen",
                     format_func=lambda f: "frozen" if f else "trained (full fine-tuning)")
with st.expander("Fixes beyond LoRA: quantization-aware and sharpness-aware unlearning"):
    a, b, c = st.columns(3)
    quant_aware = a.selectbox("Quantization-aware: loss at Q(W) of", list(QUANT_AWARE), format_func=QUANT_AWARE.get,
                              help=HELP["quant_aware"], key="quant-aware")
    mix = b.slider("Weight of the loss at Q(W)", 0.05, 1.0, 1.0, 0.05, disabled=not quant_aware, key="qa-mix")
    sam_rho = c.number_input("SAM rho (0 = off)", 0.0, 10.0, 0.0, 0.01, help=HELP["sam"], key="sam-rho")
quantizer, bits, group_size, symmetric = ui_forms.quantizer_form(right)
evaluation = ui_forms.evaluation_form(model)

try:
    config = recipes.run_config(
        **data_choices(model, corpus, hf), method=method, regularizer=regularizer, adapter=adapter, lr=lr,
        epochs=int(epochs), params=params, **lora, sure=sure if adapter == "full" else 0.0, loss_form=loss_form,
        target_recipe=target_recipe, start_grid=start_grid, weight_precision=weight_precision,
        freeze_embeddings=frozen and adapter == "full", sam_rho=sam_rho, quant_aware=quant_aware,
        quant_aware_mix=mix if quant_aware else 1.0, **quantizer_choices(quantizer, bits, group_size, symmetric),
        **evaluation)
    check_corpus(config)
    check_models(config)
except (ConfigError, ModelLoadError) as exc:
    st.error(as_text(exc))
    st.stop()
st.code(shown(command(config), store.root), language="bash")
if config.quant_aware_note:
    st.warning(config.quant_aware_note)
if preset == "paper" and "embedded" in model:
    st.warning("At the papers' learning rates the embedded model barely unlearns (measured on this model class: see "
               "docs/experiments.md, 'Defaults of the embedded model'): expect little forgetting for quantization "
               "to undo. The calibrated preset unlearns visibly.")
busy = running_jobs(store)
if busy:
    st.caption("A job is running: a second one now shares the CPU cores and slows both.")
if store.info(run_id_of(config)).state in ("running", "queued") or running_job(store, [run_id_of(config)], busy):
    st.info(f"This configuration is running now (progress above): {as_text(config.label)}")
elif store.find(config):
    st.success(f"This configuration is already in the store: {as_text(config.label)}")
    show, rerun = st.columns([1, 4])
    if show.button("Show it", type="primary", key="show"):
        ui.pick([run_id_of(config)])
        st.switch_page("pages/metrics.py")
    if rerun.button("Re-run anyway", key="rerun"):
        ui_forms.launch("run", [config], config.unlearn.label, force=True)
elif st.button(f"Run ({ui_forms.minutes([config])})", type="primary", key="run"):
    ui_forms.launch("run", [config], config.unlearn.label)
