"""Run page: choose a method and bit widths, start the run as a CLI job (or load it from the store), follow it."""
import shlex

import streamlit as st

import ui
from qru.atomic import LockedError
from qru.cli import configs_for
from qru.config import QUANTIZER_SETS, ConfigError
from qru.errors import CheckpointError, ModelLoadError, ResultImportError
from qru.interop import validate as validate_import
from qru.jobs import launch_job, list_jobs, running_job, running_jobs
from qru.store import run_id_of
from qru.sweeps import PRESETS as SWEEP_PRESETS, list_sweeps
from qru.views.runs import (HELP, HF_CORPORA, IMPORT_HELP, LR_GRID, MODELS, PRESETS, START_GRIDS, check_corpus,
                            check_models, estimate_seconds, form_argv, import_argv, method_argv, models_built,
                            scenario_argv, sweep_argv)

ui.in_frame()

store = ui.store()
st.title("Does quantization undo unlearning?")
st.caption("Unlearn a model's forget set (GA, NPO, SimNPO or RMU; full fine-tuning or LoRA; from the target as trained "
           "or snapped to a quantizer's grid), quantize it, and see whether the quantized copy remembers. Runs start "
           "as separate `qru` processes and are stored in the run store; their progress shows here.")
st.fragment(ui.jobs_panel, run_every=2)()


def launch(argv: list[str], title: str) -> None:
    try:
        launch_job(store, argv, title)
    except (ConfigError, CheckpointError, LockedError, OSError) as exc:
        st.error(f"Could not start: {exc}")
        return
    st.rerun()


def job_box(argv: list[str], config, what: str, page: str, start: str) -> None:
    """The command of a comparison or import job, and its state: running, in the store (with a button to show it on
    ``page``) or a button that starts it."""
    st.code(f"qru --cache {shlex.quote(str(store.root))} " + shlex.join(argv), language="bash")
    if running_job(store, [run_id_of(config)], running_jobs(store)):
        st.info(f"This {what} is running now (progress above): {config.label}")
    elif store.find(config):
        st.success(f"This {what} is already in the store: {config.label}")
        if st.button(f"Show the {what}"):
            ui.pick([run_id_of(config)])
            st.switch_page(page)
    elif st.button(start, type="primary"):
        launch(argv, config.label)


def minutes(configs) -> str:
    seconds = estimate_seconds(store, configs, models_built(store, configs[0]))
    if seconds is None:
        return "time depends on the model and hardware"
    return "about a minute" if seconds < 90 else f"about {seconds / 60:.0f} minutes"


demo = configs_for(["demo"])
try:
    empty = not store.list() and not list_jobs(store)
except OSError as exc:
    st.error(f"Cannot read the store {store.root}: {exc.strerror or exc}")
    st.stop()


def demo_box(first: bool) -> None:
    """The demo set of both outcomes (qru.scenarios.DEMO_SET): its time, state and a one-click start."""
    if first:
        st.subheader("First visit: run the demo set")
    todo = [c for c in demo if store.find(c) is None]
    st.write(f"Five runs on the embedded default. {HELP['demo']} On this machine that takes {minutes(todo or demo)}"
             + (", including building the tiny target and retrain models the first time." if first else ".")
             + " The pages fill in as the runs finish.")
    if running_job(store, [run_id_of(c) for c in demo], running_jobs(store)):
        st.info("The demo set is running now (progress above).")
    elif not todo:
        st.success("All five demo runs are in the store.")
        if st.button("Show the demo set's findings"):
            ui.pick([run_id_of(c) for c in demo])
            st.switch_page("pages/findings.py")
    elif st.button("Run the demo set" if first or len(todo) == len(demo) else
                   f"Run the demo set ({len(todo)} of {len(demo)} runs to compute)", type="primary"):
        launch(["demo"], f"demo set ({len(demo)} runs)")


if empty:
    demo_box(True)
else:
    with st.expander("Demo set: does PTQ undo the unlearning, and when? (five runs, both outcomes)"):
        demo_box(False)

st.subheader("New run")
model = st.selectbox("Model and corpus", list(MODELS))
st.caption(MODELS[model][1])
hf = {}
if model == "Hugging Face model":
    a, b = st.columns(2)
    hf["model"] = a.text_input("Target model (hub id or folder)", placeholder="muse-bench/MUSE-news_target")
    hf["retrain"] = b.text_input("Retrain model (optional, for PrivLeak)", placeholder="muse-bench/MUSE-news_retrain")
    hf["corpus"] = a.selectbox("Data", list(HF_CORPORA), format_func=HF_CORPORA.get)
    hf["trust_remote_code"] = b.checkbox("Trust remote code", help="let transformers run model code shipped with "
                                                                    "the model (off unless you trust its source)")
folder = model == "MUSE-layout folder" or hf.get("corpus") == "folder"
corpus = st.text_input("MUSE-layout folder", placeholder="/path/to/muse-news") if folder else ""
left, mid, right = st.columns(3)
method = left.radio("Method", ["ga", "npo", "simnpo", "rmu"], horizontal=True,
                    format_func={"ga": "GA", "npo": "NPO", "simnpo": "SimNPO", "rmu": "RMU"}.get)
left.caption(HELP["method"])
regularizer = mid.radio("Regularizer", ["none"] if method == "rmu" else ["gdr", "klr", "none"], format_func=str.upper,
                        horizontal=True, key=f"regularizer-{method == 'rmu'}")
mid.caption(HELP["regularizer"] + (" RMU has its own retain term." if method == "rmu" else ""))
adapter = right.radio("Adapter", ["full", "lora"], horizontal=True,
                      format_func={"full": "full fine-tuning", "lora": "LoRA"}.get)
right.caption(HELP["adapter"])
lora_r = lora_alpha = 32
if adapter == "lora":
    a, b = right.columns(2)
    lora_r = a.number_input("LoRA r", 1, 1024, 32)
    lora_alpha = b.number_input("LoRA alpha", 1, 4096, 32)
    right.caption(HELP["lora"])
preset = st.radio("Learning rate and epochs", list(PRESETS), horizontal=True,
                  format_func={"paper": "the papers' (lr 1e-5 full, 1e-4 LoRA)",
                               "embedded": "calibrated for the embedded model (1e-4 / 5e-4)"}.get)
st.caption(HELP["preset"])
left, mid, right = st.columns(3)
lr = left.select_slider("Learning rate", LR_GRID, PRESETS[preset][0][adapter], format_func="{:g}".format,
                       key=f"lr-{preset}-{adapter}", help=HELP["lr"] + " Other values: `qru run --lr`.")
epochs = mid.number_input("Epochs", 1, 100, PRESETS[preset][1], key=f"epochs-{preset}", help=HELP["epochs"])
with st.expander("More method options: SURE, loss forms, MUSE-like target"):
    a, b, c = st.columns(3)
    sure = a.slider("SURE: share of rows updated", 0.0, 0.5, 0.0, 0.05, disabled=adapter != "full",
                    help=HELP["sure"] + " 0 = off.")
    loss_form = b.radio("Loss forms", ["faithful", "muse"], horizontal=True, help=HELP["loss_form"],
                        format_func={"faithful": "faithful", "muse": "muse_bench's reference forms"}.get)
    target_recipe = c.radio("Embedded target", ["scratch", "pretrain-finetune"], help=HELP["target_recipe"],
                            format_func={"scratch": "trained from scratch",
                                         "pretrain-finetune": "base + fine-tuning (MUSE-like)"}.get)
with st.expander("Scenario: start point, weight precision, embeddings"):
    a, b, c = st.columns(3)
    start_grid = a.radio("Start point", list(START_GRIDS), format_func=START_GRIDS.get, help=HELP["start"])
    weight_precision = b.radio("Weights during unlearning", ["fp32", "bf16-rounded"], help=HELP["weight_precision"],
                               format_func={"fp32": "fp32", "bf16-rounded": "bf16 (rounded after every step)"}.get)
    frozen = c.radio("Embeddings", [False, True], disabled=adapter != "full", help=HELP["embeddings"],
                     format_func=lambda f: "frozen" if f else "trained (full fine-tuning)")
quant_type = st.radio("Quantizer", ["fp4", "nf4", "rtn", "gptq"], horizontal=True, format_func={
    "fp4": "bitsandbytes, FP4 at 4 bits", "nf4": "bitsandbytes, NF4 at 4 bits", "rtn": "RTN int-k",
    "gptq": "GPTQ int-k (calibrated)"}.get)
grid = quant_type in ("rtn", "gptq")
widths = [32, 8, 7, 6, 5, 4, 3, 2] if grid else [32, 8, 4]
bits = right.multiselect("Bit widths", widths, default=[32, 4, 3] if quant_type == "rtn" else [32, 4] if grid
                         else [32, 8, 4], key=f"bits-{quant_type}", help=HELP["bits"])
group_size, symmetric = 128, False
if grid:
    a, b = st.columns(2)
    group_size = a.selectbox("Group size", [128, 64, 32, 0] if quant_type == "rtn" else [0, 128, 64, 32],
                             format_func=lambda g: f"{g}" if g else "per channel", key=f"group-{quant_type}")
    symmetric = b.radio("Grid", [False, True], horizontal=True,
                        format_func=lambda s: "symmetric (absmax)" if s else "asymmetric (min/max)")
    st.caption(HELP[quant_type])
if not grid:
    st.caption(HELP["quant_type"] + " " + HELP["bits"])

try:
    argv = form_argv(model, method, regularizer, adapter, lr, int(epochs), bits, quant_type, int(lora_r),
                     int(lora_alpha), corpus, group_size, symmetric, hf)
    argv += method_argv(sure if adapter == "full" else 0.0, loss_form, target_recipe)
    argv += scenario_argv(start_grid, weight_precision, frozen and adapter == "full")
    config = configs_for(argv)[0]
    check_corpus(config)
    check_models(config)
except (ConfigError, ModelLoadError) as exc:
    st.error(str(exc))
    st.stop()
st.code(f"qru --cache {shlex.quote(str(store.root))} " + shlex.join(argv), language="bash")
if preset == "paper" and "embedded" in model:
    st.warning("At the papers' learning rates the embedded model barely unlearns (measured on this model class: see the README, 'Defaults of the embedded model'): expect "
               "little forgetting for quantization to undo. The calibrated preset unlearns visibly.")
busy = running_jobs(store)
if busy:
    st.caption("A job is running: a second one now shares the CPU cores and slows both.")
if store.info(run_id_of(config)).state in ("running", "queued") or running_job(store, [run_id_of(config)], busy):
    st.info(f"This configuration is running now (progress above): {config.label}")
elif store.find(config):
    st.success(f"This configuration is already in the store: {config.label}")
    show, rerun = st.columns([1, 4])
    if show.button("Show it", type="primary"):
        ui.pick([run_id_of(config)])
        st.switch_page("pages/metrics.py")
    if rerun.button("Re-run anyway"):
        launch(argv + ["--force"], config.unlearn.label)
elif st.button(f"Run ({minutes([config])})", type="primary"):
    launch(argv, config.unlearn.label)

st.subheader("Sweeps: the papers' experiments over several seeds")
st.caption(HELP["sweep"])
a, b, c = st.columns([2, 1, 2])
sweep_preset = a.selectbox("Preset", list(SWEEP_PRESETS), format_func=lambda p: f"{p}: {SWEEP_PRESETS[p].description}")
seeds = b.multiselect("Seeds", list(range(10)), default=[0, 1, 2])
sweep_model = c.selectbox("Model", [m for m in MODELS if m.startswith("embedded")], key="sweep-model")
try:
    sweep_args = sweep_argv(sweep_preset, seeds, sweep_model)
    sweep_runs = configs_for(sweep_args)
except ConfigError as exc:
    st.error(str(exc))
    st.stop()
st.code(f"qru --cache {shlex.quote(str(store.root))} " + shlex.join(sweep_args), language="bash")
finished = sum(store.find(c) is not None for c in sweep_runs)
sweep_ids = [run_id_of(c) for c in sweep_runs]
if running_job(store, sweep_ids, running_jobs(store)):
    st.info(f"This sweep is running now (progress above): {finished}/{len(sweep_runs)} runs finished")
elif finished == len(sweep_runs):
    st.success(f"All {len(sweep_runs)} runs of this sweep are in the store: see the paper table on the Metrics page")
    if st.button("Show the paper table"):
        st.switch_page("pages/metrics.py")
elif st.button(f"Run the sweep ({len(sweep_runs) - finished} of {len(sweep_runs)} runs to compute, "
               f"{minutes([c for c in sweep_runs if store.find(c) is None])})", type="primary"):
    launch(sweep_args, f"sweep {sweep_preset} ({len(sweep_runs)} runs)")
recorded = list_sweeps(store)
if recorded:
    st.caption("Recorded sweeps: " + "; ".join(info.label for info in recorded))

st.subheader("Compare two checkpoints")
st.caption(HELP["compare"])
a, b = st.columns(2)
target = a.text_input("Target checkpoint folder", placeholder="/models/llama-2-7b-news-target")
unlearned = b.text_input("Unlearned checkpoint or LoRA adapter folder", placeholder="/models/npo-gdr")
chosen = st.radio("Quantizers", list(QUANTIZER_SETS), horizontal=True, format_func=QUANTIZER_SETS.get,
                  help="the 59-quantizer set takes about 60 times as long as one quantizer")
if target.strip() and unlearned.strip():
    compare_argv = ["deltas", "--quantizers", chosen, "--", target.strip(), unlearned.strip()]
    try:
        compared = configs_for(compare_argv)[0]
    except (ConfigError, CheckpointError) as exc:
        st.error(str(exc))
        st.stop()
    job_box(compare_argv, compared, "comparison", "pages/deltas.py", "Compare")

st.subheader("Import other tools' results")
st.caption(IMPORT_HELP)
entries = st.text_area("One evaluation per line: [MODEL@BITS=]PATH", placeholder="unlearned@32=/saves/npo/evals\n"
                       "unlearned@4=/saves/npo_4bit/evals\nretrain@32=/saves/retrain/evals")
label = st.text_input("Label", placeholder="NPO+GDR from open-unlearning")
if entries.strip():
    try:
        import_args = import_argv(entries, label)
        imported = configs_for(import_args)[0]
        validate_import(imported)
    except (ConfigError, ResultImportError) as exc:
        st.error(str(exc))
        st.stop()
    job_box(import_args, imported, "import", "pages/metrics.py", "Import")
