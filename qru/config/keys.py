"""Configs as JSON and their keys: the canonical form that names runs and cached models, and its inverse."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from qru.checks import ConfigError
from qru.config.corpus import CorpusConfig
from qru.config.model import ModelConfig
from qru.config.run import EvalConfig, RunConfig
from qru.config.stored import DeltasConfig, ImportConfig
from qru.config.unlearn import UnlearnConfig


def to_dict(config: Any) -> dict:
    """A config dataclass (or a dict of them) as plain JSON-ready data (tuples become lists)."""
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    return json.loads(json.dumps(data, default=lambda o: dataclasses.asdict(o)))


# Fields added after runs were stored, left out of the key while they hold their default, so that the ids of
# earlier runs (and the folders of cached models) stay valid.
_LATER_DEFAULTS = {"quantizer": "bitsandbytes", "group_size": 128, "symmetric": False, "quant_load": False}
_LATER_MODEL_DEFAULTS = {"source": "embedded", "retrain": "", "trust_remote_code": False, "precision": "fp32",
                         "tokenizer": "", "target_recipe": "scratch", "finetune_epochs": 10, "finetune_lr": 1e-4}
_LATER_CORPUS_DEFAULTS = {"max_train_tokens": 0}
_LATER_EVAL_DEFAULTS = {"prompt_format": "healed", "max_eval_items": 0}
_LATER_UNLEARN_DEFAULTS = {"loss_form": "faithful", "gamma": 0.0, "sure_share": 0.0, "rmu_layer": -1,
                           "rmu_coeff": 6.5, "start_grid": "", "weight_precision": "fp32",
                           "freeze_embeddings": False, "sam_rho": 0.0, "quant_aware": "",
                           "quant_aware_mix": 1.0, "params": []}


def _without_later(data: dict, later: dict) -> dict:
    return {k: v for k, v in data.items() if not (k in later and v == later[k])}


def model_key_dict(model: "ModelConfig") -> dict:
    """A ModelConfig as a dict for hashing, without the fields added later while they hold their defaults."""
    return _without_later(to_dict(model), _LATER_MODEL_DEFAULTS)


def corpus_key_dict(corpus: "CorpusConfig") -> dict:
    """A CorpusConfig as a dict for hashing (cached corpora and models), without later fields at their defaults."""
    return _without_later(to_dict(corpus), _LATER_CORPUS_DEFAULTS)


def eval_key_dict(config: "EvalConfig") -> dict:
    """An EvalConfig as a dict for hashing (runs and cached reference evaluations), without later fields at their
    defaults: a run stored before the prompt format existed keeps its id and reads as ``healed``."""
    return _without_later(to_dict(config), _LATER_EVAL_DEFAULTS)


def config_key(config: Any, length: int = 12) -> str:
    """Hex digest of the canonical JSON form of a config dataclass or dict (sorted keys), ``length`` hex digits.

    For a RunConfig, the fields added later are left out while they hold their defaults."""
    data = to_dict(config)
    if isinstance(config, ImportConfig):  # imports stored before the prompt format existed keep their ids
        data = _without_later(data, {"prompt_format": "muse"})
    if isinstance(config, RunConfig):
        data = _without_later(data, _LATER_DEFAULTS)
        data["model"] = model_key_dict(config.model)
        data["unlearn"] = _without_later(data["unlearn"], _LATER_UNLEARN_DEFAULTS)
        data["corpus"] = corpus_key_dict(config.corpus)
        data["eval"] = eval_key_dict(config.eval)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def run_config_from_dict(data: dict) -> RunConfig:
    """Rebuild a RunConfig from :func:`to_dict` output. Raises ConfigError on unknown fields or bad values."""
    if not isinstance(data, dict):
        raise ConfigError(f"run config: expected an object, got {type(data).__name__}")
    parts = {"corpus": CorpusConfig, "model": ModelConfig, "unlearn": UnlearnConfig, "eval": EvalConfig}
    kwargs = dict(data)
    for name, cls in parts.items():
        if name in kwargs:
            kwargs[name] = _build(cls, kwargs[name], f"run config field {name}")
    if "bits" in kwargs:
        if not isinstance(kwargs["bits"], list):
            raise ConfigError(f"run config field bits: expected a list, got {kwargs['bits']!r}")
        kwargs["bits"] = tuple(kwargs["bits"])
    return _build(RunConfig, kwargs, "run config")


def stored_config_from_dict(data: dict) -> "RunConfig | DeltasConfig | ImportConfig":
    """A stored config.json: a :class:`DeltasConfig` where ``kind`` is ``"deltas"``, an :class:`ImportConfig` where
    it is ``"import"``, else a RunConfig. Raises ConfigError on unknown fields or bad values."""
    kinds = {"import": (ImportConfig, "entries"), "deltas": (DeltasConfig, "quantizers")}
    if isinstance(data, dict) and data.get("kind") in kinds:
        cls, listed = kinds[data["kind"]]
        kwargs = dict(data)
        if not isinstance(kwargs.get(listed), list):
            raise ConfigError(f"{data['kind']} config field {listed}: expected a list, got {kwargs.get(listed)!r}")
        kwargs[listed] = tuple(kwargs[listed])
        return _build(cls, kwargs, f"{data['kind']} config")
    return run_config_from_dict(data)
