"""One run end to end: target -> unlearn -> for each bit width: quantize -> evaluate -> analyse -> store.

Reference rows (target and retrain at each bit width) do not depend on the unlearning method, so they are cached
beside the models (``<cache>/models/<key>/evals/``) and shared by every run on the same models. Without a retrain
model (a Hugging Face target given alone) PrivLeak is stored as missing, with the reason, in every row.

Under a multi-process ``accelerate launch`` every process unlearns its share (qru.unlearn.trainer); only the main
process evaluates, analyses and writes the run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from qru.atomic import atomic_write, write_json
from qru.config import ConfigError, ModelConfig, RunConfig, config_key, eval_key_dict, to_dict
from qru.corpus import check_trainable, ensure_corpus, load_muse_dir
from qru.deltas import deltas_files, scan, weight_pairs
from qru.devices import compute_device
from qru.errors import UnlearnError
from qru.evals.generation import context_length
from qru.evals.privleak import privleak
from qru.evals.probes import build_probes
from qru.evals.suite import add_entity_verbmem, evaluate
from qru.hub import check_model_source, load_any_tokenizer
from qru.models import ModelPair, cap_training, ensure_models, ensure_tokenizer, models_built
from qru.provenance import FILE as PROVENANCE, provenance
from qru.quant.bnb import fake_quantize, quantizable_linears
from qru.quant.load import quantized_copy
from qru.quant.spec import QuantSpec, analysis_grid
from qru.scenarios import is_natural, start_model, start_tag
from qru.store import RunStore, RunWriter, run_id_of
from qru.training_events import write_events
from qru.unlearn.methods import METHODS
from qru.unlearn.trainer import LORA_TARGETS, UnlearnResult, unlearn

Progress = Callable[[str, int, int, str], None]
NO_RETRAIN = ("no retrain model was given (--retrain-model): PrivLeak is measured against the retrain model's "
              "Min-K% AUC, and qru does not substitute another reference")
# Above this many quantizable weights, a run analyses its own quantizers and the bitsandbytes set only (the full
# 59-quantizer grid costs ~0.25 s per million weights per quantizer on a 2-core CPU); `qru deltas` does the rest.
FULL_GRID_MAX_WEIGHTS = 20_000_000


def reference_eval(pair: ModelPair, kind: str, spec: QuantSpec, corpus, config: RunConfig,
                    start: torch.nn.Module | None = None) -> dict:
    """The evaluation result (``evaluate``'s dict; its "metrics") of the target (``start``, the model unlearning
    started from, where it is not the stored target: qru.scenarios) or the retrain model (``kind``) under ``spec``,
    cached in ``<models>/evals/`` per start point, eval config and quantizer, so every run (and curve, qru.controls)
    from the same start shares it. Raises what evaluation and quantization raise."""
    tag = start_tag(config.unlearn) if kind == "target" else ""
    name = f"{kind}-{tag}" if tag else kind
    loaded = {"quant_load": True} if config.quant_load and spec.bits < 32 else {}  # bitsandbytes-loaded, not fake-quant
    # muse reads texts with the tokenizer's own special tokens: a tokenizer that adds others gives other numbers
    added = {"adds": list(pair.tokenizer("")["input_ids"])} if config.eval.prompt_format == "muse" else {}
    key = config_key({"eval": eval_key_dict(config.eval), "quant": to_dict(spec), "kind": name, **loaded, **added})
    path = pair.root / "evals" / f"{name}-{spec.bits}-{spec.quant_type}-{key}.json"
    if path.is_file():
        result = json.loads(path.read_text(encoding="utf-8"))
        if add_entity_verbmem(result, corpus, config.eval):  # cached before entity-token VerbMem existed
            write_json(path, result)
        return result
    model = (pair.target if start is None else start) if kind == "target" else pair.retrain
    result = evaluate(_quantized(model, spec, config, pair, corpus), pair.tokenizer, corpus, config.eval,
                      config.model.max_len)
    write_json(path, result)
    return result


def _quantized(model, spec: QuantSpec, config: RunConfig, pair: ModelPair, corpus):
    """``model`` under ``spec``: GPTQ calibrated on D_r, bitsandbytes' quantized loading when the run asks for it,
    else fake-quant."""
    if spec.is_gptq:
        return _gptq(model, spec, config, pair, corpus)[0]
    if config.quant_load and spec.bits < 32:
        return quantized_copy(model, spec)
    return fake_quantize(model, spec)


def _gptq(model, spec: QuantSpec, config: RunConfig, pair: ModelPair, corpus):
    """GPTQ of ``model`` with the retain set as calibration text (qru.quant.gptq)."""
    from qru.quant.gptq import gptq_quantize

    return gptq_quantize(model, pair.tokenizer, corpus.train_documents("retrain"), spec, config.model.max_len)


def _calibrated(pair: ModelPair, start, result: UnlearnResult, specs: list[QuantSpec], config: RunConfig,
                corpus) -> dict:
    """{GPTQ key: {Linear name: (Q(W_t), Q(W_u))}}: each side quantized in its own model (GPTQ is per model);
    W_t is the start of unlearning."""
    out = {}
    for spec in specs:
        if spec.is_gptq:
            targets, unlearned = _gptq(start, spec, config, pair, corpus)[1], \
                _gptq(result.model, spec, config, pair, corpus)[1]
            out[spec.key] = {name: (targets[name], unlearned[name]) for name in targets}
    return out


def _save_weights(writer: RunWriter, pair: ModelPair, result: UnlearnResult, config: RunConfig) -> None:
    """The unlearned weights as the LoRA adapter (peft layout) or, for full fine-tuning, dW = W_u - W_t, W_t the
    stored target. A LoRA run that did not start from the stored target (qru.scenarios) keeps its adapter in
    ``adapter-on-start/`` (it applies to the snapped / rounded start, which is not stored) and stores dW as well."""
    if result.adapter_state is not None:
        tensors = {k: v.contiguous() for k, v in result.adapter_state.items()}
        folder = writer.folder / ("adapter" if is_natural(config.unlearn) else "adapter-on-start")
        atomic_write(folder / "adapter_model.safetensors", lambda p: save_file(tensors, str(p)))
        write_json(folder / "adapter_config.json", {
            "peft_type": "LORA", "r": config.unlearn.lora_r, "lora_alpha": config.unlearn.lora_alpha,
            "lora_dropout": config.unlearn.lora_dropout, "target_modules": LORA_TARGETS, "bias": "none",
            "task_type": "CAUSAL_LM", "base_model_name_or_path": str(pair.root / "target")})
        if is_natural(config.unlearn):
            return
    target = pair.target.state_dict()
    delta = {k: (v.detach() - target[k]).float().cpu().contiguous() for k, v in result.model.state_dict().items()
             if k in target and not k.endswith("lm_head.weight")}
    atomic_write(writer.folder / "unlearned_delta.safetensors", lambda p: save_file(delta, str(p)))


def _metric_row(model: str, spec: QuantSpec, metrics: dict, auc_retrain: float | None) -> dict:
    if auc_retrain is None:
        return {"model": model, "bits": spec.bits, "quant": spec.quant_type, **metrics, "privleak": None,
                "privleak_missing": NO_RETRAIN}
    return {"model": model, "bits": spec.bits, "quant": spec.quant_type, **metrics,
            "privleak": privleak(metrics["auc"], auc_retrain)}


def execute(config: RunConfig, writer: RunWriter, cache_root: Path, progress: Progress) -> None:
    """Run every stage of ``config`` and write its files through ``writer``."""
    last = {"stage": None, "t": 0.0}

    def stage(name: str, done: int = 0, total: int = 0, message: str = "") -> None:
        now = time.monotonic()  # status.json is rewritten at most once a second within a stage
        if name != last["stage"] or done == total or now - last["t"] >= 1.0:
            writer.set_status("running", stage=name, done=done, total=total, message=message)
            last.update(stage=name, t=now)
        progress(name, done, total, message)

    stage("loading corpus")
    corpus = ensure_corpus(config.corpus, cache_root)
    announce_plan(config, corpus, writer, cache_root, stage)
    stage("loading target and retrain models" if config.model.retrain or not config.model.is_hf
          else "loading the target model (no retrain model given)")
    pair = ensure_models(corpus, config.corpus, config.model, cache_root, progress=stage)
    writer.log(f"models: {pair.root}")
    if pair.base is not None:
        memorization = memorization_deltas(pair, config, cache_root, stage)
        writer.log(f"memorization (target minus base) deltas: run {memorization}")
    start = start_model(pair.target, config.unlearn)
    if start is not pair.target:
        writer.log("start point: " + "; ".join(f"{k} {v}" for k, v in config.unlearn.scenario.items()) +
                   " (this model is the run's target and the NPO/KLR reference)")
    torch.manual_seed(config.seed)
    train = cap_training(corpus, pair.tokenizer, config.corpus.max_train_tokens)  # --max-train-tokens
    result = unlearn(start, pair.tokenizer, train.raw["forget"], train.train_documents("retrain"),
                     config.unlearn, config.model.max_len, seed=config.seed, progress=stage)
    processes = int(os.environ.get("WORLD_SIZE", "1") or 1)
    writer.log(f"unlearning: {len(result.history)} steps in {result.seconds:.1f} s on {processes} process(es), "
               f"{pair.target.device}, {config.model.precision}")
    writer.write_json("train_log.json", result.history)
    write_events(writer.folder, result.history, replace=True)  # TensorBoard; an unfinished attempt's are replaced
    _save_weights(writer, pair, result, config)
    retrain_auc = None
    if pair.retrain is not None:
        stage("evaluating the 32-bit retrain model (PrivLeak reference)")
        retrain_auc = reference_eval(pair, "retrain", QuantSpec(), corpus, config)["metrics"]["auc"]
    else:
        writer.log(f"PrivLeak missing: {NO_RETRAIN}")
    rows, samples = [], {}
    for i, spec in enumerate(config.quant_specs()):
        stage(f"evaluating at {spec.bits} bits", i, len(config.bits), spec.label)
        evals = _evaluate_all(pair, start, result, spec, corpus, config)
        for kind, ev in evals.items():
            rows.append(_metric_row(kind, spec, ev["metrics"], retrain_auc))
            samples[f"{kind}@{spec.bits}"] = ev["samples"]
        writer.log(f"{spec.label}: " + ", ".join(f"{r['model']} KnowMem-f {r['knowmem_forget']:.1f}"
                                                 for r in rows[-len(evals):]))
    writer.write_json("samples.json", samples)
    writer.write_json("probes.json", build_probes(samples, config.eval.n_probes))
    linears = quantizable_linears(pair.target)
    specs = analysis_specs(config, sum(m.weight.numel() for m in linears.values()))
    n_tensors = len(linears)
    quantized = sum(s.bits < 32 for s in specs)
    calibrated = _calibrated(pair, start, result, specs, config, corpus)
    delta_rows, hists = scan(weight_pairs(start, result.model), specs, progress=lambda i, name: stage(
        f"analysing deltas under {quantized} quantizers", i, n_tensors, name), calibrated=calibrated)
    writer.write_deltas(*deltas_files(delta_rows, hists))
    writer.write_json("metrics.json", rows)  # last: its presence means the results are complete


def announce_plan(config: RunConfig, corpus, writer: RunWriter, cache_root: Path, stage: Progress) -> None:
    """Say, before anything is trained, what the run will cost and what does not fit the model (qru.plan): each line
    goes to the progress output and the run's log; ``plan.json`` keeps the numbers (the Metrics page shows the fit
    report from it)."""
    from qru.plan import linear_weights, plan_run

    stage("planning: measuring this machine's speed on the run's model shape")
    tokenizer = ensure_tokenizer(corpus, config.corpus, config.model, cache_root)
    shape = model_config(config.model)
    n_quantizers = len(analysis_specs(config, linear_weights(shape)))
    plan = plan_run(config, corpus, tokenizer, shape, not models_built(config.corpus, config.model, cache_root),
                    n_quantizers)
    for line in plan.lines:
        writer.log(f"plan: {line}")
        stage("plan", 0, 0, line)
    writer.write_json("plan.json", plan.as_dict())


def _evaluate_all(pair: ModelPair, start, result: UnlearnResult, spec: QuantSpec, corpus, config: RunConfig) -> dict:
    """Metrics of the target (the start of unlearning), retrain (cached) and unlearned models quantized by ``spec``."""
    kinds = ("target", "retrain") if pair.retrain is not None else ("target",)
    evals = {kind: reference_eval(pair, kind, spec, corpus, config, start) for kind in kinds}
    evals["unlearned"] = evaluate(_quantized(result.model, spec, config, pair, corpus), pair.tokenizer, corpus,
                                  config.eval, config.model.max_len)
    return evals


def memorization_deltas(pair: ModelPair, config: RunConfig, cache_root: Path, progress: Progress) -> str:
    """For a pretrain-finetune target: the delta analysis of the memorization itself, target minus base, under the
    run's quantizers (how much of it survives), stored once per model pair as a ``deltas-<key>`` comparison (the
    Weight-deltas page shows it). Returns its run id."""
    from qru.compare import compare, deltas_config

    specs = [s for s in config.quant_specs() if not s.is_gptq] or [QuantSpec()]
    deltas = deltas_config(pair.base, pair.root / "target", specs)
    return compare(deltas, RunStore(cache_root), progress=lambda stage, done, total, msg: progress(
        f"memorization deltas (target minus base): {stage}", done, total, msg))


def analysis_specs(config: RunConfig, n_weights: int = 0) -> list[QuantSpec]:
    """The run's own quantizers (32 bits included) followed by the rest of :func:`qru.quant.spec.analysis_grid`; for a
    model with more than FULL_GRID_MAX_WEIGHTS quantizable weights, by the bitsandbytes quantizers only."""
    own = config.quant_specs()
    keys = {s.key for s in own}
    grid = analysis_grid(config.blocksize)
    if n_weights > FULL_GRID_MAX_WEIGHTS:
        grid = [s for s in grid if not s.is_rtn]
    return own + [s for s in grid if s.key not in keys]


def is_worker_process() -> bool:
    """True in a non-main process of a multi-process ``accelerate launch`` / torchrun (WORLD_SIZE > 1, RANK > 0)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and int(os.environ.get("RANK", "0") or 0) != 0


def _unlearn_only(config: RunConfig, cache_root: Path, progress: Progress) -> None:
    """A worker process's part of a distributed run: its share of the unlearning steps (the main process stores)."""
    corpus = ensure_corpus(config.corpus, cache_root)
    pair = ensure_models(corpus, config.corpus, config.model, cache_root, progress=progress)
    torch.manual_seed(config.seed)
    corpus = cap_training(corpus, pair.tokenizer, config.corpus.max_train_tokens)
    unlearn(pair.target, pair.tokenizer, corpus.raw["forget"], corpus.train_documents("retrain"), config.unlearn,
            config.model.max_len, seed=config.seed, progress=progress)


def model_config(model: ModelConfig):
    """The transformers config of the run's target, known before anything is built or stored: for the embedded model
    the LlamaConfig its ModelConfig describes (its vocabulary size is the tokenizer's, known once trained), else the
    config.json of the Hugging Face model (or the packaged model's GGUF header). Raises ModelLoadError as
    qru.hub.check_model_source."""
    if model.source == "embedded":
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=model.vocab_size, hidden_size=model.hidden_size,
                           intermediate_size=model.intermediate_size, num_hidden_layers=model.n_layers,
                           num_attention_heads=model.n_heads, num_key_value_heads=model.n_heads,
                           max_position_embeddings=model.max_len, tie_word_embeddings=True)
    from transformers import AutoConfig

    from qru.hub import _from_pretrained

    return _from_pretrained(AutoConfig.from_pretrained, model.source, "config",
                            trust_remote_code=model.trust_remote_code)


def check_method(config: RunConfig) -> None:
    """Raise UnlearnError if the run's unlearning method cannot run on its model (Method.check_model: RMU's layer
    must exist), or ConfigError if the model's context leaves no room for a prompt beside the generated tokens,
    before the run is stored."""
    shape = model_config(config.model)
    problem = METHODS[config.unlearn.method].check_model(config.unlearn, shape)
    if problem:
        raise UnlearnError(problem)
    context = context_length(shape)
    longest = max(config.eval.verbmem_max_new_tokens, config.eval.knowmem_max_new_tokens)
    if context < longest + 2:
        raise ConfigError(f"the model's context of {context} tokens leaves no room for a prompt beside the "
                          f"{longest} generated tokens (VerbMem generates {config.eval.verbmem_max_new_tokens}): "
                          "raise --max-len")


def run(config: RunConfig, store: RunStore | None = None, progress: Progress | None = None,
        force: bool = False) -> str:
    """Run ``config`` and store it; return its run id. A finished run of the same config is reused unless ``force``.

    Raises LockedError if another process is running the same config; any error of a stage is recorded in the run's
    status and log, then re-raised. What can be checked before the run is stored is checked first, so that bad input
    leaves nothing in the store: the corpus, the model sources, the method on the model (:func:`check_method`), and
    the store's room for the run's config (RunStore.open_run).
    """
    store = store or RunStore()
    progress = progress or (lambda *a: None)
    if not force and store.find(config):
        return run_id_of(config)
    if config.corpus.is_folder:  # a malformed or untrainable corpus folder fails here, store untouched
        check_trainable(load_muse_dir(config.corpus.source))
    if config.corpus.is_hub:  # fetched into the cache before the run is stored (an unreachable hub fails here)
        check_trainable(ensure_corpus(config.corpus, store.root))
    if config.model.source != "embedded":  # an unloadable model fails here, store untouched
        for source, role in ((config.model.source, "model"), (config.model.retrain, "retrain model")):
            if source:
                check_model_source(source, config.model.trust_remote_code, role)
        if config.model.is_hf:
            load_any_tokenizer(config.model.tokenizer or config.model.source, config.model.trust_remote_code)
    check_method(config)  # e.g. an RMU layer the model does not have fails here, store untouched
    if is_worker_process():
        _unlearn_only(config, store.root, progress)
        return run_id_of(config)
    with store.open_run(config) as writer:
        writer.set_status("running", stage="starting")
        writer.log(f"run {writer.run_id}: {config.label}")
        try:
            writer.write_json(PROVENANCE, provenance(config.quant_specs(), config.quant_load, compute_device()))
            execute(config, writer, store.root, progress)
        except BaseException as exc:
            writer.fail(exc)
            raise
        writer.set_status("done", stage="done", done=1, total=1)
        writer.log("done")
    return writer.run_id
