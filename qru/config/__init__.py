"""Frozen configuration dataclasses for every stage of a qru run, split by stage: ``corpus`` (the texts), ``model``
(target and retrain), ``unlearn`` (method and recipe), ``run`` (bit widths, quantizer, evaluation: RunConfig),
``stored`` (checkpoint comparisons and imported results) and ``keys`` (JSON form and run keys).

Each dataclass validates its fields in ``__post_init__`` and raises :class:`ConfigError` naming the bad value, so a
bad choice or a corrupt stored config never reaches training code. ``config_key`` hashes a config's canonical JSON
form: equal configs give equal keys, which the model cache and the run store use to find earlier results.
The defaults of a run (scales, presets, method parameters) and the building of configs from choices live in
qru.recipes; the quantizer settings (QuantSpec) in qru.quant.spec.
"""
from qru.checks import ConfigError
from qru.config.corpus import MUSE_HUB, CorpusConfig, resolve_source
from qru.config.keys import (config_key, corpus_key_dict, eval_key_dict, model_key_dict, run_config_from_dict,
                             stored_config_from_dict, to_dict)
from qru.config.model import PACKAGED_MODELS, PRECISIONS, TARGET_RECIPES, ModelConfig
from qru.config.relearn import RELEARN_DATA, RelearnConfig
from qru.config.run import PROMPT_FORMATS, EvalConfig, RunConfig
from qru.config.stored import IMPORT_MODELS, IMPORT_TOOLS, DeltasConfig, ImportConfig, parse_import_entry
from qru.config.unlearn import ADAPTERS, LOSS_FORMS, REGULARIZERS, WEIGHT_PRECISIONS, UnlearnConfig

__all__ = ["ADAPTERS", "IMPORT_MODELS", "IMPORT_TOOLS", "LOSS_FORMS", "MUSE_HUB", "PACKAGED_MODELS", "PRECISIONS",
           "REGULARIZERS", "TARGET_RECIPES", "WEIGHT_PRECISIONS", "ConfigError", "CorpusConfig", "DeltasConfig",
           "EvalConfig", "ImportConfig", "ModelConfig", "PROMPT_FORMATS", "RELEARN_DATA", "RelearnConfig", "RunConfig", "UnlearnConfig", "config_key",
           "corpus_key_dict", "eval_key_dict", "model_key_dict",
           "parse_import_entry", "resolve_source", "run_config_from_dict", "stored_config_from_dict", "to_dict"]
