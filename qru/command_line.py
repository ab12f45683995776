"""The command line that computes a config: the inverse of qru.recipes. The Run page shows it, and running it
builds the same config (the same run id); :func:`choices_of` checks that round trip for every config it writes.

Flags appear in a fixed order (data, model, method, recipe, scenario, quantizer, bit widths), a choice at its default
is left out, and method, regularizer, adapter, learning rate, epochs and bit widths are always written.
"""
from __future__ import annotations

import dataclasses
import shlex

from qru.config import ConfigError, DeltasConfig, ImportConfig, RunConfig
from qru.recipes import GROUP_SIZE, HF_MAX_LEN, PRETRAINED_RECIPES, SCALES, default_prompt_format, imported, run_config


def _data_choices(config: RunConfig) -> dict:
    """The data choices that rebuild ``config``'s corpus and model (the scale found by comparing recipes)."""
    from qru.devices import default_precision

    corpus, model = config.corpus, config.model
    precision = {"precision": model.precision} if model.precision != default_precision() else {}
    data = {"corpus": corpus.source, "corpus_seed": corpus.seed, **precision,
            "max_train_tokens": corpus.max_train_tokens}
    if model.is_hf:
        return {"model": model.source, "retrain_model": model.retrain or None, "tokenizer": model.tokenizer or None,
                "trust_remote_code": model.trust_remote_code,
                "max_len": model.max_len if model.max_len != HF_MAX_LEN else None, **data}
    out: dict = {}
    for scale, (scale_corpus, scale_model) in SCALES.items():
        recipe = PRETRAINED_RECIPES.get(model.source, scale_model)
        if dataclasses.replace(scale_corpus, source=corpus.source, seed=corpus.seed,
                               max_train_tokens=corpus.max_train_tokens) != corpus:
            continue
        if dataclasses.replace(recipe, max_len=model.max_len, target_recipe=model.target_recipe,
                               precision=model.precision) == model:
            out.update(scale=scale, model=model.source,
                       max_len=model.max_len if model.max_len != recipe.max_len else None, **data,
                       target_recipe=model.target_recipe)
            return out
    raise ConfigError(f"the corpus and model of {config.label} are not a recipe of qru.recipes (a scale and "
                      f"model choice): it cannot be written as a command")


def choices_of(config: RunConfig) -> dict:
    """The keyword choices that :func:`run_config` turns into ``config`` again (``run_config(**choices_of(c)) ==
    c``). Raises ConfigError for a config no choices build (fields with no choice, e.g. a changed EvalConfig)."""
    from qru.unlearn.methods import METHODS

    u = config.unlearn
    own = {p.name: p.default for p in METHODS[u.method].params}
    params = {name: u.param(name) for name, default in own.items() if u.param(name) != default}
    grid = config.quantizer in GROUP_SIZE
    choices = {**_data_choices(config), "method": u.method, "regularizer": u.regularizer, "adapter": u.adapter,
               "lr": u.lr, "epochs": u.epochs, "alpha": u.alpha, "params": params or None, "lora_r": u.lora_r,
               "lora_alpha": u.lora_alpha, "batch_size": u.batch_size, "max_steps": u.max_steps,
               "loss_form": u.loss_form, "sure": u.sure_share, "start_grid": u.start_grid,
               "weight_precision": u.weight_precision, "freeze_embeddings": u.freeze_embeddings,
               "sam_rho": u.sam_rho, "quant_aware": u.quant_aware, "quant_aware_mix": u.quant_aware_mix,
               "quantizer": config.quantizer, "group_size": config.group_size if grid else None,
               "symmetric": config.symmetric, "quant_type": None if grid else config.quant_type_4bit,
               "blocksize": None if grid else config.blocksize, "bits": list(config.bits),
               "quant_load": config.quant_load, "seed": config.seed,
               "prompt_format": None if config.eval.prompt_format == default_prompt_format(config.corpus)
               else config.eval.prompt_format, "max_eval_items": config.eval.max_eval_items}
    choices = {k: v for k, v in choices.items() if v is not None}
    try:
        rebuilt = run_config(**dict(choices))
    except ConfigError as exc:
        raise ConfigError(f"{config.label} cannot be written as a command: {exc}") from exc
    if rebuilt != config:
        raise ConfigError(f"{config.label} has settings no command-line option sets (e.g. its evaluation or LoRA "
                          f"dropout): it cannot be written as a command")
    return choices


# Choices left out of a command while they hold these values (run_config's defaults).
_QUIET = {"corpus": "embedded", "corpus_seed": 0, "scale": "tiny", "model": "embedded", "alpha": 1.0,
          "lora_r": 32, "lora_alpha": 32, "batch_size": 4, "max_steps": 0, "loss_form": "faithful", "sure": 0.0,
          "start_grid": "", "weight_precision": "fp32", "freeze_embeddings": False, "sam_rho": 0.0,
          "quant_aware": "", "quant_aware_mix": 1.0, "quantizer": "bitsandbytes",
          "quant_type": "fp4", "blocksize": 64, "symmetric": False, "quant_load": False, "seed": 0,
          "target_recipe": "scratch", "trust_remote_code": False, "max_train_tokens": 0, "max_eval_items": 0}


def _flags(choices: dict, quiet: dict) -> list[str]:
    """``--name value`` for each choice (method parameters by their own names), leaving out those in ``quiet``."""
    argv = []
    for name, value in choices.items():
        if name in quiet and value == quiet[name]:
            continue
        flag = "--" + name.replace("_", "-")
        if name == "params":
            for param, v in value.items():
                argv += _option("--" + param.replace("_", "-"), _number(v))
        elif isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += _option(flag, _number(value) if isinstance(value, float) else str(value))
    return argv


def _option(flag: str, value: str) -> list[str]:
    """``[flag, value]``, or ``[flag=value]`` where the value starts with "-" (argparse would take ``-1e-05`` or
    ``-x`` for an option)."""
    return [f"{flag}={value}"] if value.startswith("-") else [flag, value]


def command(config: RunConfig) -> list[str]:
    """The ``qru run`` arguments (after ``qru [--cache DIR]``) that compute ``config``: method, regularizer,
    adapter, lr, epochs and bit widths always, every other option where it differs from its default.
    Raises ConfigError where no command builds the config (see :func:`choices_of`)."""
    choices = choices_of(config)
    if choices.get("adapter") != "lora":
        choices.pop("lora_r"), choices.pop("lora_alpha")
    return ["run", *_flags(choices, _QUIET)]


def sweep_command(preset: str, seeds: list[int] | tuple[int, ...], **choices) -> list[str]:
    """The ``qru sweep`` arguments of preset ``preset`` over ``seeds`` with data ``choices`` (each written, defaults
    included, e.g. ``--scale tiny``)."""
    return ["sweep", "--preset", preset, "--seeds", *map(str, seeds), *_flags(choices, {})]


def comparison_command(config: DeltasConfig) -> list[str]:
    """The ``qru deltas`` arguments of a comparison: its quantizers (by set name where they are one of the sets),
    then ``--`` and the two checkpoints."""
    from qru.quant.spec import QUANTIZER_SETS, quantizer_set

    keys = list(config.quantizers)
    named = [name for name in QUANTIZER_SETS if [s.key for s in quantizer_set([name])] == keys]
    return ["deltas", "--quantizers", *(named[:1] or [k for k in keys if k != "none@32"] or ["none@32"]),
            "--", config.target, config.unlearned]


def import_command(config: ImportConfig) -> list[str]:
    """The ``qru import`` arguments of an import: its label, its format where detection would differ, then ``--``
    and the entries."""
    name = _option("--name", config.name) if config.name else []
    tool = ["--tool", config.tool] if config.tool != "auto" and imported(list(config.entries), config.name).tool \
        != config.tool else []
    fmt = ["--prompt-format", config.prompt_format] if config.prompt_format != "muse" else []
    return ["import", *name, *tool, *fmt, "--", *config.entries]


def shown(argv: list[str], cache: str | None = None) -> str:
    """A command as one shell line: ``qru [--cache DIR] ARGV`` with shell quoting; the store as an absolute path, so
    that the line pasted in any folder reaches the same store."""
    from pathlib import Path

    return "qru " + (f"--cache {shlex.quote(str(Path(cache).resolve()))} " if cache else "") + shlex.join(argv)


def _number(value) -> str:
    """A number as short text that reads back as exactly the same value (``5e-05``, ``0.0001``, ``3``)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


__all__ = ["choices_of", "command", "comparison_command", "import_command", "shown", "sweep_command"]
