"""The MUSE-like target construction: a base trained on D_r, target and retrain fine-tuned from it."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from qru.cli import configs_for
from qru.config import ConfigError, ModelConfig, RunConfig, config_key
from qru.store import RunStore


def test_recipe_is_validated_and_old_keys_are_kept():
    assert config_key(RunConfig()) == "9fbcf2e2f70a"  # new fields at their defaults leave run ids unchanged
    with pytest.raises(ConfigError, match="unknown target recipe"):
        ModelConfig(target_recipe="two-stage")
    with pytest.raises(ConfigError, match="builds the embedded model only"):
        ModelConfig(source="smollm2", target_recipe="pretrain-finetune")
    staged = configs_for(["run", "--scale", "micro", "--target-recipe", "pretrain-finetune", "--method", "npo"])[0]
    assert staged.model.target_recipe == "pretrain-finetune" and "pretrain+finetune" in staged.label
    assert config_key(staged) != config_key(dataclasses.replace(staged, model=dataclasses.replace(
        staged.model, target_recipe="scratch")))


def test_pretrain_finetune_builds_a_base_and_stores_the_memorization_deltas(tmp_path):
    from qru.pipeline import run

    config = configs_for(["run", "--scale", "micro", "--target-recipe", "pretrain-finetune", "--method", "npo",
                          "--bits", "32", "4", "--max-steps", "2"])[0]
    store = RunStore(tmp_path)
    run(config, store)
    models = next((tmp_path / "models").glob("*/base")).parent
    manifest = json.loads((models / "target" / "manifest.json").read_text())
    assert manifest["fine_tuned_from"] == str(models / "base")
    assert manifest["steps"] < json.loads((models / "base" / "manifest.json").read_text())["steps"]
    compared = [i for i in store.ids() if i.startswith("deltas-")]
    assert len(compared) == 1
    total = store.deltas(compared[0]).query("tensor == 'total' and quantizer == 'fp4-b64@4'").iloc[0]
    assert total["mean_abs_delta"] > 0 and 0 < total["share_kept"] < 2
