"""Noise controls and metric-vs-bit-width curves of a stored run (``qru noise``, ``qru curve``).

For a finished run, the models are rebuilt from the store (the target and retrain models from the model cache, the
start of unlearning from the run's scenario, the unlearned model from its stored delta or LoRA adapter) and evaluated

- quantized by each quantizer of the curve: RTN int-k at 8..2 bits and the bitsandbytes formats (LLM.int8 at 8,
  FP4 and NF4 at 4), for the target (the start of unlearning), the retrain and the unlearned model;
- with a noise control instead of quantization (qru.quant.noise: the block's error values permuted, or Gaussian noise
  with the block's error RMS), for the target and the unlearned model, over several noise seeds;

and, per quantizer, how close the target's weights sit to that quantizer's grid (:func:`grid_position`), plus how
close they sit to llama.cpp's 4-bit GGUF grids (qru.quant.gguf: Q4_1, Q4_0), and for a packaged pretrained model
(SmolLM2, distributed as Q4_1) how close its source weights, before fine-tuning into the target, sit to them.

Everything is kept in the run's ``controls.json`` (rows {model, quantizer, bits, control, seed, metrics...}); a
rerun computes only what is missing, under a lock, and writes after every quantizer, so a kill loses at most one
quantizer's work and never what is stored.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from safetensors.torch import load_file

from qru.atomic import exclusive, write_json
from qru.config import PACKAGED_MODELS, RunConfig
from qru.evals.privleak import privleak
from qru.evals.suite import evaluate
from qru.quant.bnb import quantizable_linears, quantize_tensor
from qru.quant.gguf import gguf_grid_position
from qru.quant.grid_position import position_summary, scale_anchors
from qru.quant.noise import KINDS, block_ids, noisy_model
from qru.quant.spec import GGUF_GRIDS, GGUFGrid, QuantSpec
from qru.scenarios import start_model
from qru.store import RunStore, StoreError

CONTROLS = "controls.json"
CURVE_BITS = (8, 7, 6, 5, 4, 3, 2)


@dataclass
class RunModels:
    """A stored run's models rebuilt: its config, corpus, model pair, the start of unlearning and the unlearned model."""

    config: RunConfig
    corpus: object
    pair: object
    start: torch.nn.Module
    unlearned: torch.nn.Module
    retrain_auc: float | None = None
    metrics: pd.DataFrame | None = None  # the run's metrics.json frame


def _finished_run(store: RunStore, run_id: str) -> RunConfig:
    """The RunConfig of a finished qru run. Raises StoreError for a comparison, an import or an unfinished run."""
    config = store.config(run_id)
    if not isinstance(config, RunConfig):
        raise StoreError(f"{run_id} is not a qru run (a comparison or import has no models to perturb)")
    if store.status(run_id).get("state") != "done":
        raise StoreError(f"run {run_id} is not finished")
    return config


def load_run_models(store: RunStore, run_id: str) -> RunModels:
    """Rebuild a finished run's models (see the module docstring). Raises StoreError if the run is not a finished
    qru run or its weights are missing."""
    from qru.corpus import ensure_corpus
    from qru.models import ensure_models

    config = _finished_run(store, run_id)
    corpus = ensure_corpus(config.corpus, store.root)
    pair = ensure_models(corpus, config.corpus, config.model, store.root)
    start = start_model(pair.target, config.unlearn)
    metrics = store.metrics(run_id)
    retrain = metrics[(metrics["model"] == "retrain") & (metrics["bits"] == 32)]
    auc = float(retrain.iloc[0]["auc"]) if not retrain.empty and "auc" in retrain.columns else None
    return RunModels(config, corpus, pair, start, _unlearned(store.path(run_id), pair.target, start), auc, metrics)


def unlearned_weights(folder: Path) -> Path:
    """The file a run's unlearned model is rebuilt from: ``unlearned_delta.safetensors`` or ``adapter/``'s weights.
    Raises StoreError naming the file if there is none, or it is not readable safetensors (truncated, damaged)."""
    from safetensors import safe_open

    delta_file, adapter = folder / "unlearned_delta.safetensors", folder / "adapter"
    if delta_file.is_file():
        weights = delta_file
    elif (adapter / "adapter_config.json").is_file():
        weights = adapter / "adapter_model.safetensors"
    else:
        raise StoreError(f"{folder} holds neither unlearned_delta.safetensors nor adapter/")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as handle:
            handle.keys()
    except Exception as exc:  # noqa: BLE001 (safetensors raises its own error type; a missing file is an OSError)
        raise StoreError(f"{weights} cannot be read ({_first_line(exc)}): the run's unlearned weights are damaged; "
                         "run it again with --force") from None
    return weights


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def _unlearned(folder: Path, target: torch.nn.Module, start: torch.nn.Module) -> torch.nn.Module:
    weights = unlearned_weights(folder)
    try:
        if weights.name == "unlearned_delta.safetensors":  # W_u = W_t + dW (full fine-tuning, or LoRA from a snap)
            model = copy.deepcopy(target)
            state = model.state_dict()
            with torch.no_grad():
                for name, delta in load_file(str(weights)).items():
                    if name not in state:
                        raise StoreError(f"{weights}: {name} is not a weight of the target")
                    state[name].add_(delta.to(state[name].dtype))
            return model.eval()
        from peft import PeftModel
        return PeftModel.from_pretrained(copy.deepcopy(start), str(weights.parent)).merge_and_unload().eval()
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 (safetensors, peft and torch errors of a damaged or mismatched file)
        raise StoreError(f"{weights} cannot be loaded ({_first_line(exc)}): the run's unlearned weights are damaged; "
                         "run it again with --force") from None


def curve_specs(config: RunConfig, bits: tuple[int, ...] = CURVE_BITS, group_size: int = 64) -> list[QuantSpec]:
    """The quantizers of a curve: RTN int-k (the run's own grid if it is an RTN run, else asymmetric with groups of
    ``group_size``) at each of ``bits``, then LLM.int8 at 8, and FP4 / NF4 (block 64) and llama.cpp's GGUF Q4_1 /
    Q4_0 (qru.quant.gguf.GGUFGrid) at 4, where 8 / 4 are in bits."""
    kind = "rtn-sym" if config.quantizer == "rtn" and config.symmetric else "rtn-asym"
    group = config.group_size if config.quantizer == "rtn" else group_size
    specs = [QuantSpec(b, kind, group_size=group) for b in bits]
    specs += [QuantSpec(8, "int8")] if 8 in bits else []
    specs += [QuantSpec(4, "fp4", 64), QuantSpec(4, "nf4", 64)] if 4 in bits else []
    specs += [GGUFGrid(key) for key in GGUF_GRIDS] if 4 in bits else []
    return specs


def grid_position(model: torch.nn.Module, spec: QuantSpec) -> dict:
    """Where a model's quantizable weights sit inside their bins under ``spec``
    (qru.quant.grid_position.position_summary):
    the mean of |W - Q(W)| / step (about 0.25 for weights spread evenly inside their bins, 0 on the grid), the share
    within NEAR_GRID of a step of a grid point (about 2 NEAR_GRID when spread evenly, 1 on the grid), both over the
    weights that do not set their block's scale (scale_anchors: on the grid by construction, 1 in 64 for FP4/NF4;
    none for RTN asymmetric, whose rounded zero point leaves them off the grid), the share left out and the count."""
    def parts():
        for module in quantizable_linears(model).values():
            w = module.weight.detach().float()
            q = quantize_tensor(w, spec)
            rel = (w - q.dequant).abs() / q.step.clamp(min=1e-30)
            keep = ~scale_anchors(w, block_ids(tuple(w.shape), spec)) if spec.quant_type != "rtn-asym" \
                else torch.ones_like(w, dtype=torch.bool)
            yield rel, keep
    return position_summary(parts())


def read_controls(store: RunStore, run_id: str) -> list[dict]:
    """The rows of a run's controls.json ([] if none). Raises StoreError if the file is not valid JSON or not a
    list of rows (dicts with model, quantizer, bits and control)."""
    path = store.path(run_id) / CONTROLS
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"run {run_id}: {CONTROLS} cannot be read ({exc})") from exc
    fields = ("model", "quantizer", "bits", "control")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(f in r for f in fields) for r in rows):
        raise StoreError(f"run {run_id}: {CONTROLS} is not a list of rows with {', '.join(fields)} (damaged? move it "
                         "away and recompute)")
    return rows


def _key(row: dict) -> tuple:
    return row["model"], row["quantizer"], row["control"], row.get("seed")


def compute_controls(store: RunStore, run_id: str, specs: list[QuantSpec], kinds: tuple[str, ...] = KINDS,
                     seeds: tuple[int, ...] = (0, 1, 2), quantized: bool = True,
                     progress: Callable[[str, int, int, str], None] | None = None) -> list[dict]:
    """Compute and store (controls.json) what is missing of: for each quantizer in ``specs``, the grid position of
    the target, the quantized target / retrain / unlearned models (``quantized``), and each noise control in
    ``kinds`` over ``seeds`` for the target and the unlearned model. Returns all stored rows.

    Raises StoreError (not a finished run, or its unlearned weights are missing or unreadable: checked before the
    lock file is made), ValueError (a quantizer without blocks, e.g. GPTQ) and LockedError (another process is
    computing this run's controls)."""
    progress = progress or (lambda *a: None)
    for spec in specs:
        if spec.bits == 32 or spec.is_gptq:
            raise ValueError(f"{spec.key}: controls need a quantizer that rounds block by block, below 32 bits")
    lock = store.path(run_id) / ".controls.lock"
    kinds, seeds = tuple(dict.fromkeys(kinds)), tuple(dict.fromkeys(seeds))  # a repeated kind or seed once
    for seed in seeds:
        if not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
            raise ValueError(f"noise seed must be an integer in 0..2**63-1, got {seed!r}")
    config = _finished_run(store, run_id)  # a bad run fails here, before the lock file is made
    unlearned_weights(store.path(run_id))
    with exclusive(lock, what=f"run {run_id} (its controls)"):
        rows = read_controls(store, run_id)
        done = {_key(r) for r in rows}
        models = None
        gguf = [item for item in _gguf_todo(config) if item not in done]
        todos = [(spec, _todo(spec, kinds, seeds, quantized, done | set(gguf))) for spec in specs]
        total, step = len(gguf) + sum(len(t) for _, t in todos), 0
        if gguf:
            models = load_run_models(store, run_id)
            progress("controls", step, total, "where the weights sit relative to the GGUF 4-bit grids")
            rows += _gguf_rows(models, gguf)
            step += len(gguf)
            done.update(_key(r) for r in rows)
            write_json(store.path(run_id) / CONTROLS, rows)
        for spec, todo in todos:
            if not todo:
                continue
            models = models or load_run_models(store, run_id)
            for model, control, seed in todo:
                what = "grid position" if control == "grid" else control + (f" seed {seed}" if seed is not None else "")
                progress("controls", step, total, f"{spec.label}: {model}, {what}")
                rows.append(_compute(models, spec, model, control, seed))
                done.add(_key(rows[-1]))
                step += 1
            write_json(store.path(run_id) / CONTROLS, rows)
        progress("controls", total, total, "done")
    return rows


def _gguf_todo(config: RunConfig) -> list[tuple]:
    """The GGUF grid rows of a run, as _key tuples: the target's, and a packaged pretrained source's."""
    models = ("target", "source") if config.model.source in PACKAGED_MODELS else ("target",)
    return [(m, key, "grid", None) for m in models for key in GGUF_GRIDS]


def _gguf_rows(models: RunModels, todo: list[tuple]) -> list[dict]:
    from qru.hub import load_causal_lm

    source = None
    if any(item[0] == "source" for item in todo):
        source = load_causal_lm(models.config.model.source, "fp32")
    rows = []
    for model, key, control, seed in todo:
        weights = models.start if model == "target" else source
        rows.append({"model": model, "quantizer": key, "bits": 4, "label": GGUF_GRIDS[key][1], "control": control,
                     "seed": seed, **gguf_grid_position(weights, key)})
    return rows


def _todo(spec: QuantSpec, kinds, seeds, quantized: bool, done: set) -> list[tuple]:
    items = [("target", "grid", None)]
    if quantized:
        items += [(m, "quantized", None) for m in ("target", "retrain", "unlearned")]
    items += [(m, k, s) for k in dict.fromkeys(kinds) for s in dict.fromkeys(seeds) for m in ("target", "unlearned")]
    return [it for it in items if (it[0], spec.key, it[1], it[2]) not in done]


def _compute(models: RunModels, spec: QuantSpec, model: str, control: str, seed: int | None) -> dict:
    row = {"model": model, "quantizer": spec.key, "bits": spec.bits, "label": spec.label, "control": control,
           "seed": seed}
    source = {"target": models.start, "retrain": models.pair.retrain, "unlearned": models.unlearned}[model]
    if control == "grid":
        return {**row, **(gguf_grid_position(source, spec.key) if spec.is_gguf else grid_position(source, spec))}
    if source is None:
        return {**row, "missing": "no retrain model"}
    if control == "quantized":
        metrics = _stored_quantized(models, spec, model)
    else:
        cfg = models.config
        metrics = evaluate(noisy_model(source, spec, control, seed), models.pair.tokenizer, models.corpus, cfg.eval,
                           cfg.model.max_len)["metrics"]
    if models.retrain_auc and "auc" in metrics:
        metrics["privleak"] = privleak(metrics["auc"], models.retrain_auc)
    return {**row, **metrics}


def _stored_quantized(models: RunModels, spec: QuantSpec, model: str) -> dict:
    """Metrics of ``model`` fake-quantized by ``spec``, from where the run already stored them: the run's own
    quantizers in its metrics.json, the target and retrain models from the reference evaluations cached beside
    the models (qru.pipeline, shared by every run from the same start); computed (and, for those two, cached) where
    missing. A run evaluated with bitsandbytes' quantized loading (--quant-load) is recomputed with fake-quant, the
    quantization its noise controls are sized on."""
    from qru.pipeline import reference_eval

    cfg = models.config
    if not cfg.quant_load and not spec.is_gguf:
        if spec.key in {s.key for s in cfg.quant_specs()}:
            stored = models.metrics[(models.metrics["model"] == model) & (models.metrics["bits"] == spec.bits)]
            if not stored.empty:
                return {k: v for k, v in stored.iloc[0].to_dict().items() if k not in ("model", "bits", "quant")}
        if model != "unlearned":
            return dict(reference_eval(models.pair, model, spec, models.corpus, cfg, models.start)["metrics"])
    source = models.unlearned if model == "unlearned" else models.start if model == "target" else models.pair.retrain
    return evaluate(spec.fake_quantize(source), models.pair.tokenizer, models.corpus, cfg.eval, cfg.model.max_len)["metrics"]


__all__ = ["CONTROLS", "CURVE_BITS", "RunModels", "compute_controls", "curve_specs", "grid_position",
           "load_run_models", "read_controls"]
