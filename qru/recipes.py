"""Every default of a qru run, and the one place that builds run configurations from keyword choices.

The command line, the Run page, the demo set, sweeps, jobs and tests all call these functions; a configuration
then travels one way: built here, serialized (``qru.config.to_dict``), started as a job from that JSON, and shown as
the command qru.command_line.command writes for it (running that command builds the same config, so the same run id).

Choices are keywords (``method="npo", adapter="lora", bits=(32, 4), scale="micro"`` ...); a choice left out takes
its default here. Method parameters (``beta``, ``gamma``, ``rmu_layer``, ...) come from the method's unit in
qru/unlearn/methods/ and are given as ``params={"beta": 0.2}``.
Errors: ConfigError naming the bad value (docs/design.md, "Layout").
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass

from qru.config import (ConfigError, CorpusConfig, DeltasConfig, EvalConfig, ImportConfig, ModelConfig, RunConfig,
                        UnlearnConfig, resolve_source)
from qru.quant.spec import BIT_WIDTHS

# Sizes: "tiny" is the embedded default (docs/design.md "Calibration"); "small" has a quarter of its entities (for
# the slower pretrained models); "micro" builds in about a minute, for tests and trying things out.
SCALES = {
    "tiny": (CorpusConfig(), ModelConfig()),
    "small": (CorpusConfig(n_forget=5, n_retain=20, n_holdout=5), ModelConfig()),
    "micro": (CorpusConfig(n_forget=3, n_retain=6, n_holdout=3),
              ModelConfig(vocab_size=400, hidden_size=64, intermediate_size=128, n_layers=2, n_heads=2,
                          max_len=256, epochs=40, lr=3e-3, batch_size=8)),
}
# Fine-tuning recipe of the packaged SmolLM2-135M into target / retrain models (docs/real-models.md): a few epochs
# at a fine-tuning learning rate instead of the from-scratch recipe of the embedded model.
PRETRAINED_RECIPES = {"smollm2": ModelConfig(source="smollm2", max_len=512, epochs=4, lr=1e-4, batch_size=8,
                                             warmup_frac=0.05, qa_chain=5)}
HF_MAX_LEN = 2048  # MUSE's evaluation length for Hugging Face models
# GPTQ's default group: per channel (the GPTQ paper's main setting; the embedded model's MLP width, 688, is not a
# multiple of 32, 64 or 128). RTN's default group: 128.
GROUP_SIZE = {"rtn": 128, "gptq": 0}
# Learning rates of the embedded default (docs/design.md "Calibration"): full fine-tuning at the papers' 1e-5 barely
# moves the tiny model's forget NLL while 5e-5..1e-4 unlearns; LoRA needs >= 3e-4. The papers' settings
# (docs/design.md "Unlearning losses") by name with preset "paper".
LR_PRESETS = {"embedded": ({"full": 1e-4, "lora": 5e-4}, 5), "paper": ({"full": 1e-5, "lora": 1e-4}, 5)}
# The default experiment of `qru run` without a method: full fine-tuning GA+GDR and LoRA NPO+GDR.
DEFAULT_PAIR = (("ga", "gdr", "full"), ("npo", "gdr", "lora"))


@dataclass(frozen=True)
class DemoRun:
    """One run of the demo set: its name, adapter, start grid (``""`` = natural) and 4-bit quantizer type."""

    name: str
    adapter: str
    start_grid: str
    quant_type_4bit: str


# The demo set (docs/design.md "Calibration"): NPO+GDR, full fine-tuning at lr 5e-5 and LoRA at 5e-4, quantized with
# NF4 (block 64), from the fp32 target as trained and from the target snapped to the NF4 grid, plus the control
# snapped to NF4 but quantized with FP4 (another grid). The runs measure which outcome happens here.
DEMO_GRID = "nf4-b64@4"
DEMO_LR = {"full": 5e-5, "lora": 5e-4}
DEMO_SET = (DemoRun("natural start, full fine-tuning", "full", "", "nf4"),
            DemoRun("natural start, LoRA", "lora", "", "nf4"),
            DemoRun("on-grid start, full fine-tuning", "full", DEMO_GRID, "nf4"),
            DemoRun("on-grid start, LoRA", "lora", DEMO_GRID, "nf4"),
            DemoRun("control: on the NF4 grid, quantized with FP4", "full", DEMO_GRID, "fp4"))

DATA_CHOICES = ("corpus", "corpus_seed", "scale", "model", "retrain_model", "tokenizer", "trust_remote_code",
                "precision", "max_len", "target_recipe", "max_train_tokens")


def default_prompt_format(corpus: CorpusConfig) -> str:
    """The prompt format a run gets unless one is chosen (docs/measures.md "Prompt formats"): ``healed`` on the
    embedded corpus, whose target is trained on that form; ``muse`` (MUSE's literal code) on MUSE corpora."""
    return "healed" if corpus.is_embedded else "muse"


def _local_or_id(name: str | None) -> str:
    """An existing local path made absolute; anything else (a hub id, or "") as it is."""
    name = name or ""
    path = os.path.expanduser(name)
    return os.path.abspath(path) if name and os.path.exists(path) else name


def _model_config(model: str, scale_model: ModelConfig, retrain_model: str | None, tokenizer: str | None,
                  trust_remote_code: bool, precision: str, max_len: int | None, target_recipe: str) -> ModelConfig:
    from qru.devices import check_precision, default_precision

    if model == "embedded":
        config = scale_model
    elif model in PRETRAINED_RECIPES:
        config = PRETRAINED_RECIPES[model]
    else:
        path = os.path.expanduser(model)
        if model.startswith((".", "/", "~")) or os.path.exists(path):
            if not os.path.isdir(path):
                raise ConfigError(f"model folder not found: {model}")
            model = os.path.abspath(path)
        config = ModelConfig(source=model, max_len=HF_MAX_LEN)
    precision = default_precision() if precision == "auto" else precision
    check_precision(precision)
    config = dataclasses.replace(config, retrain=_local_or_id(retrain_model), trust_remote_code=trust_remote_code,
                                 precision=precision, tokenizer=_local_or_id(tokenizer))
    if max_len is not None:
        config = dataclasses.replace(config, max_len=max_len)
    return dataclasses.replace(config, target_recipe=target_recipe) if target_recipe != "scratch" else config


def data_configs(corpus: str = "embedded", corpus_seed: int = 0, scale: str = "tiny", model: str = "embedded",
                 retrain_model: str | None = None, tokenizer: str | None = None, trust_remote_code: bool = False,
                 precision: str = "auto", max_len: int | None = None, target_recipe: str = "scratch",
                 max_train_tokens: int = 0) -> tuple[CorpusConfig, ModelConfig]:
    """The corpus and model configs of the data choices (what ``qru build-target`` builds).

    ``corpus``: "embedded", "muse-news" / "muse-books" or a MUSE-layout folder; ``scale``: a key of SCALES;
    ``model``: "embedded", "smollm2" or a Hugging Face id / folder; ``precision``: "auto" (bf16 on a CUDA GPU
    that supports it, else fp32), "fp32" or "bf16"; ``max_train_tokens``: cap on each training split (0 = all).
    Raises ConfigError for a bad value or a missing folder."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r} (choose from {', '.join(SCALES)})")
    corpus_config, scale_model = SCALES[scale]
    corpus_config = dataclasses.replace(corpus_config, source=resolve_source(corpus), seed=corpus_seed,
                                        max_train_tokens=max_train_tokens)
    return corpus_config, _model_config(model, scale_model, retrain_model, tokenizer, trust_remote_code, precision,
                                        max_len, target_recipe)


def _method_params(method: str, params: dict | None) -> dict:
    """The method's parameters: its defaults, overridden by ``params``. Raises ConfigError for a parameter the
    method does not have (naming the methods that do)."""
    from qru.unlearn.methods import METHODS, all_params

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    own = {p.name: p.default for p in METHODS[method].params}
    for name, value in (params or {}).items():
        if name not in own:
            owners = [m for m, cls in METHODS.items() if any(p.name == name for p in cls.params)]
            if not owners:
                raise ConfigError(f"no method has a parameter {name!r}")
            raise ConfigError(all_params()[name].refusal(owners, method))
        own[name] = value
    return own


def unlearn_config(method: str = "ga", regularizer: str | None = None, adapter: str = "full",
                   preset: str = "embedded", lr: float | None = None, epochs: int | None = None, alpha: float = 1.0,
                   params: dict | None = None, lora_r: int = 32, lora_alpha: int = 32, batch_size: int = 4,
                   max_steps: int = 0, loss_form: str = "faithful", sure: float = 0.0, start_grid: str = "",
                   weight_precision: str = "fp32", freeze_embeddings: bool = False,
                   sam_rho: float = 0.0, quant_aware: str = "", quant_aware_mix: float = 1.0) -> UnlearnConfig:
    """The UnlearnConfig of the unlearning choices. ``regularizer`` None = "gdr" (or "none" for a method with its
    own retain term); ``lr`` / ``epochs`` None = the ``preset``'s ("embedded" or "paper", LR_PRESETS).
    Raises ConfigError for a bad value."""
    from qru.unlearn.methods import METHODS

    values = _method_params(method, params)
    if preset not in LR_PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (choose from {', '.join(LR_PRESETS)})")
    rates, preset_epochs = LR_PRESETS[preset]
    if regularizer is None:
        regularizer = "none" if METHODS[method].own_retain else "gdr"
    legacy = {f.name for f in dataclasses.fields(UnlearnConfig)}
    fields = {k: v for k, v in values.items() if k in legacy}
    extra = tuple(sorted((k, v) for k, v in values.items() if k not in legacy))
    return UnlearnConfig(method=method, regularizer=regularizer, adapter=adapter,
                         lr=lr if lr is not None else rates.get(adapter, rates["full"]),
                         epochs=epochs if epochs is not None else preset_epochs, alpha=alpha, lora_r=lora_r,
                         lora_alpha=lora_alpha, batch_size=batch_size, max_steps=max_steps, loss_form=loss_form,
                         sure_share=sure, start_grid=start_grid, weight_precision=weight_precision,
                         freeze_embeddings=freeze_embeddings, sam_rho=sam_rho, quant_aware=quant_aware,
                         quant_aware_mix=quant_aware_mix, params=extra, **fields)


def run_config(quantizer: str = "bitsandbytes", bits: tuple[int, ...] | list[int] | None = None,
               quant_type: str | None = None, blocksize: int | None = None, group_size: int | None = None,
               symmetric: bool = False, quant_load: bool = False, seed: int = 0, prompt_format: str | None = None,
               max_eval_items: int = 0, **choices) -> RunConfig:
    """The RunConfig of keyword choices: the quantizer choices here, the data choices of :func:`data_configs`
    and the unlearning choices of :func:`unlearn_config` in ``choices``.

    ``bits`` None = (32, 8, 4); ``quant_type`` (bitsandbytes 4-bit type, default fp4) and ``blocksize`` (default 64)
    apply to bitsandbytes only; ``group_size`` (default 128 for RTN, 0 = per channel for GPTQ) and ``symmetric`` to
    rtn / gptq only; ``quant_load`` needs CUDA; ``prompt_format`` None = :func:`default_prompt_format` of the
    corpus; ``max_eval_items`` 0 = every item. Raises ConfigError naming a bad or misplaced value."""
    data = {k: choices.pop(k) for k in DATA_CHOICES if k in choices}
    corpus, model = data_configs(**data)
    unlearn = unlearn_config(**choices)
    grid = quantizer in GROUP_SIZE  # int-k grids with groups, no bitsandbytes types
    if not grid and (group_size is not None or symmetric):
        raise ConfigError("--group-size and --symmetric apply to --quantizer rtn and gptq only")
    if grid and (quant_type is not None or blocksize is not None):
        raise ConfigError("--quant-type and --blocksize apply to the bitsandbytes quantizer only")
    if quant_load:
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("--quant-load (bitsandbytes' quantized loading) needs a CUDA GPU; without one qru "
                              "evaluates the same quantizers by fake-quant")
    evaluation = EvalConfig(prompt_format=prompt_format or default_prompt_format(corpus), max_eval_items=max_eval_items)
    return RunConfig(corpus=corpus, model=model, unlearn=unlearn, bits=tuple(bits or BIT_WIDTHS), eval=evaluation,
                     quant_type_4bit=quant_type or "fp4", blocksize=blocksize or 64, seed=seed, quantizer=quantizer,
                     group_size=group_size if group_size is not None else GROUP_SIZE.get(quantizer, 128),
                     symmetric=symmetric, quant_load=quant_load)


def run_configs(method: str | None = None, regularizer: str | None = None, adapter: str | None = None,
                **choices) -> list[RunConfig]:
    """The runs of ``qru run``: one RunConfig, or DEFAULT_PAIR (GA+GDR full, NPO+GDR LoRA) when none of method,
    regularizer and adapter is chosen. Raises ConfigError."""
    if method is None and regularizer is None and adapter is None:
        return [run_config(method=m, regularizer=r, adapter=a, **choices) for m, r, a in DEFAULT_PAIR]
    return [run_config(method=method or "ga", regularizer=regularizer, adapter=adapter or "full", **choices)]


def demo_set(lr: float | None = None, **choices) -> list[RunConfig]:
    """The RunConfigs of DEMO_SET: NPO+GDR at DEMO_LR (or ``lr``) with each run's adapter, start grid and 4-bit type
    (bitsandbytes, block 64), on the other ``choices`` (data, bit widths, seed, hyper-parameters). Raises
    ConfigError for a choice the set fixes (quantizer, start point, SURE, frozen embeddings, no 4 bits)."""
    if choices.get("quantizer", "bitsandbytes") != "bitsandbytes" or "quant_type" in choices or \
            "blocksize" in choices:
        raise ConfigError("the demo set fixes its quantizers (bitsandbytes NF4 / FP4, block 64): drop --quantizer, "
                          "--quant-type and --blocksize")
    if choices.get("start_grid") or choices.get("freeze_embeddings") or choices.get("sure") or \
            4 not in (choices.get("bits") or [4]):
        raise ConfigError("the demo set fixes its start points, method and 4-bit comparison: drop --start-grid, "
                          "--freeze-embeddings and --sure, and keep 4 in --bits")
    for fixed in ("method", "regularizer", "adapter"):
        choices.pop(fixed, None)
    return [run_config(method="npo", regularizer="gdr", adapter=run.adapter, lr=lr or DEMO_LR[run.adapter],
                       start_grid=run.start_grid, quant_type=run.quant_type_4bit, **choices) for run in DEMO_SET]


def sweep(preset: str, seeds: tuple[int, ...] | list[int] = (0, 1, 2), **choices) -> list[RunConfig]:
    """The RunConfigs of sweep ``preset`` (qru.sweeps.PRESETS): one per combination and seed, seeds innermost, on
    the other ``choices``. A method parameter or loss form applies to the runs whose method has it (e.g. ``beta``
    to the NPO runs). Raises ConfigError for an unknown preset, no seeds, repeated seeds or a bad value."""
    from qru.sweeps import preset as preset_of
    from qru.unlearn.methods import METHODS

    spec = preset_of(preset)
    seeds = tuple(seeds)
    if not seeds:
        raise ConfigError("a sweep needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds repeat: {seeds}")
    for fixed in ("method", "regularizer", "adapter", "lr", "epochs", "lora_r", "lora_alpha", "seed", "preset"):
        choices.pop(fixed, None)
    params, form = choices.pop("params", None) or {}, choices.pop("loss_form", "faithful")
    for name, value in spec.choices:  # the preset's own choices, where the command does not set them
        if choices.get(name) is None:
            choices[name] = value
    varied = {name for combo in spec.combos for name, _ in (combo[4] if len(combo) > 4 else ())}
    defaults = inspect.signature(unlearn_config).parameters
    for name in sorted(varied):  # what the preset varies between its runs is not a choice of the sweep
        if name in choices and choices[name] != defaults[name].default:
            raise ConfigError(f"--{name.replace('_', '-')} is set run by run by the {preset} preset; it cannot be "
                              "given to the sweep")
    configs = []
    for method, regularizer, adapter, lr, *extra in spec.combos:
        own = {p.name for p in METHODS[method].params}
        muse = METHODS[method].muse_form or regularizer == "klr"  # the only runs a muse loss form changes
        base = run_config(method=method, regularizer=regularizer, adapter=adapter, lr=lr, epochs=spec.epochs,
                          params={k: v for k, v in params.items() if k in own}, loss_form=form if muse else "faithful",
                          **{**choices, **dict(extra[0] if extra else ())})
        configs += [dataclasses.replace(base, seed=seed) for seed in seeds]
    return configs


def comparison(target: str, unlearned: str, quantizers: tuple[str, ...] | list[str] = ("all",)) -> DeltasConfig:
    """The DeltasConfig of ``qru deltas TARGET UNLEARNED``: quantizer sets or keys (qru.quant.spec.quantizer_set).
    Raises ConfigError for a bad quantizer name and CheckpointError for an unreadable checkpoint."""
    from qru.compare import deltas_config
    from qru.quant.spec import quantizer_set

    return deltas_config(target, unlearned, quantizer_set(list(quantizers)))


def imported(entries: list[str], name: str = "", tool: str | None = None,
             prompt_format: str | None = None) -> ImportConfig:
    """The ImportConfig of ``qru import [MODEL@BITS=]PATH ...``; ``prompt_format`` None = ``muse`` (other tools' MUSE
    results follow MUSE's code). Raises ConfigError for a bad entry or name."""
    from qru.interop import import_config

    return import_config(list(entries), name, tool, prompt_format or "muse")


__all__ = ["DEFAULT_PAIR", "DEMO_SET", "GROUP_SIZE", "HF_MAX_LEN", "LR_PRESETS", "PRETRAINED_RECIPES", "SCALES",
           "comparison", "data_configs", "default_prompt_format", "demo_set", "imported", "run_config", "run_configs",
           "sweep", "unlearn_config"]
