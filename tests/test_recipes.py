"""One place builds a run (qru.recipes), and the command shown for a config builds the same config again
(qru.command_line): for every option of the Run page's form, and for sweeps, comparisons and imports."""
from __future__ import annotations

import json

import pytest

from qru import recipes
from qru.cli import configs_for
from qru.command_line import choices_of, command, comparison_command, import_command, sweep_command
from qru.config import ConfigError, RunConfig, UnlearnConfig, to_dict
from qru.jobs import read_job_file, write_job_file
from qru.store import run_id_of
from qru.views.runs import MODELS, START_GRIDS, data_choices, quantizer_choices

# Every option of the Run page's form, each away from its default (one at a time, on the embedded micro model).
FORM_OPTIONS = [
    {"method": "npo"}, {"method": "simnpo"}, {"method": "rmu"}, {"regularizer": "klr"}, {"regularizer": "none"},
    {"adapter": "lora"}, {"adapter": "lora", "lora_r": 8, "lora_alpha": 16}, {"lr": 3e-4}, {"lr": 1e-6},
    {"epochs": 7}, {"preset": "paper"}, {"method": "npo", "params": {"beta": 0.25}},
    {"method": "simnpo", "params": {"beta": 3.0, "gamma": 0.5}},
    {"method": "rmu", "params": {"rmu_layer": 1, "rmu_coeff": 5.0}}, {"sure": 0.1},
    {"method": "npo", "loss_form": "muse"}, {"target_recipe": "pretrain-finetune"},
    *({"start_grid": grid} for grid in START_GRIDS if grid), {"weight_precision": "bf16-rounded"},
    {"freeze_embeddings": True}, {"quant_type": "nf4"}, {"bits": [32, 4]}, {"bits": [8]},
    {"quantizer": "rtn", "bits": [32, 4, 3], "group_size": 64}, {"quantizer": "rtn", "symmetric": True},
    {"quantizer": "rtn", "group_size": 0, "bits": [2]}, {"quantizer": "gptq", "bits": [32, 4]},
    {"quantizer": "gptq", "symmetric": True, "group_size": 32}, {"seed": 3}, {"corpus_seed": 2},
    {"alpha": 0.5}, {"max_steps": 2}, {"batch_size": 2}, {"prompt_format": "muse"}, {"prompt_format": "healed"},
    {"max_eval_items": 5}, {"max_train_tokens": 1000},
]


@pytest.mark.parametrize("options", FORM_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_the_shown_command_builds_the_same_run(options):
    config = recipes.run_config(scale="micro", **options)
    argv = command(config)
    assert configs_for(argv) == [config] and run_id_of(configs_for(argv)[0]) == run_id_of(config)
    assert recipes.run_config(**choices_of(config)) == config


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_choice_of_the_form_round_trips(model, tmp_path):
    (tmp_path / "knowmem").mkdir()
    hf = {"model": "org/target", "retrain": "org/retrain", "corpus": "muse-books", "trust_remote_code": True}
    try:
        choices = data_choices(model, str(tmp_path), hf)
    except ConfigError as exc:  # a folder that is not MUSE's layout is refused before any run
        pytest.fail(str(exc))
    config = recipes.run_config(**choices, **quantizer_choices("fp4", [32, 4]))
    assert configs_for(command(config)) == [config]


def test_defaults_live_in_the_recipes_and_keep_the_stored_ids():
    assert recipes.run_config() == RunConfig()  # the embedded tiny model, GA+GDR full at lr 1e-4, 5 epochs
    assert [c.unlearn.label.split(" lr")[0] for c in recipes.run_configs()] == ["GA+GDR full", "NPO+GDR LoRA r32"]
    assert recipes.run_config(method="simnpo").unlearn.beta == 2.5  # SimNPO's own default beta
    assert recipes.run_config(method="rmu").unlearn.regularizer == "none"  # RMU has its own retain term
    assert recipes.run_config(adapter="lora", preset="paper").unlearn.lr == 1e-4
    assert recipes.run_config(quantizer="gptq").group_size == 0 and recipes.run_config(quantizer="rtn").group_size == 128
    assert UnlearnConfig().params == () and "params" not in json.dumps(RunConfig().unlearn.params)


def test_a_config_no_option_sets_is_not_written_as_a_command():
    import dataclasses
    config = recipes.run_config(scale="micro")
    odd = dataclasses.replace(config, unlearn=dataclasses.replace(config.unlearn, lora_dropout=0.2))
    with pytest.raises(ConfigError, match="cannot be written as a command"):
        command(odd)


def test_sweep_comparison_and_import_commands(tmp_path, micro_models):
    runs = recipes.sweep("zhang2025", (0, 1), scale="micro")
    assert configs_for(sweep_command("zhang2025", [0, 1], scale="micro")) == runs
    target = str(micro_models.root / "target")
    compared = recipes.comparison(target, target, ["bnb"])
    assert comparison_command(compared) == ["deltas", "--quantizers", "bnb", "--", compared.target, compared.unlearned]
    assert configs_for(comparison_command(compared)) == [compared]
    folder = tmp_path / "evals"
    folder.mkdir()
    (folder / "MUSE_EVAL.json").write_text("{}")
    entry = recipes.imported([f"unlearned@4={folder}"], "mine")
    assert import_command(entry)[:3] == ["import", "--name", "mine"] and configs_for(import_command(entry)) == [entry]


def test_job_files_carry_the_configs_one_way(tmp_path):
    configs = recipes.demo_set(scale="micro")
    write_job_file(tmp_path / "job.json", "run", configs)
    assert read_job_file(tmp_path / "job.json", "run") == configs
    write_job_file(tmp_path / "sweep.json", "sweep", configs[:2], "zhang2025", (0, 1))
    assert read_job_file(tmp_path / "sweep.json", "sweep") == {"configs": configs[:2], "sweep": "zhang2025",
                                                               "seeds": [0, 1]}
    with pytest.raises(ConfigError, match="not a job file of `qru deltas`"):
        read_job_file(tmp_path / "job.json", "deltas")
    (tmp_path / "bad.json").write_text(json.dumps({"command": "run", "configs": [{"seed": -1}]}))
    with pytest.raises(ConfigError, match="bad.json.*seed"):
        read_job_file(tmp_path / "bad.json", "run")
    with pytest.raises(ConfigError, match="missing"):
        read_job_file(tmp_path / "none.json", "run")


def test_the_cli_computes_a_job_file_and_refuses_options_beside_it(tmp_path, capsys):
    from qru.cli import main

    write_job_file(tmp_path / "job.json", "run", [recipes.run_config(scale="micro")])
    assert main(["--cache", str(tmp_path), "run", "--config", str(tmp_path / "job.json"), "--lr", "1e-3"]) == 2
    assert "--config replaces the options --lr" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_import_job_file_is_computed_and_its_prompt_format_round_trips(tmp_path, capsys):
    from qru.cli import main

    folder = tmp_path / "evals"
    folder.mkdir()
    (folder / "MUSE_EVAL.json").write_text(json.dumps({"forget_knowmem_ROUGE": {"agg_value": 0.5}}))
    for fmt in (None, "healed"):
        entry = recipes.imported([f"unlearned@32={folder}"], "x", prompt_format=fmt)
        assert entry.prompt_format == (fmt or "muse") and configs_for(import_command(entry)) == [entry]
    write_job_file(tmp_path / "job.json", "import", [entry])
    job = ["--cache", str(tmp_path / "store"), "import", "--config", str(tmp_path / "job.json")]
    assert main(job + ["--prompt-format", "muse"]) == 2
    assert "--config replaces the options --prompt-format" in capsys.readouterr().err
    assert main(job) == 0 and "healed prompts" in capsys.readouterr().out


def test_negative_numbers_and_dash_names_survive_the_command_round_trip(tmp_path):
    config = recipes.run_config(scale="micro", method="simnpo", params={"gamma": -1e-5})
    assert "--gamma=-1e-05" in command(config) and configs_for(command(config)) == [config]
    folder = tmp_path / "evals"
    folder.mkdir()
    (folder / "MUSE_EVAL.json").write_text("{}")
    entry = recipes.imported([f"unlearned@4={folder}"], "-x")
    assert configs_for(import_command(entry)) == [entry]


def test_sweep_job_files_are_checked_like_the_command_line(tmp_path, capsys):
    from qru.cli import main

    runs = recipes.sweep("zhang2025", (0,), scale="micro")[:1]
    for sweep, seeds, needle in (("", [0], "unknown sweep preset"), ("nope", [0], "unknown sweep preset"),
                                 ("zhang2025", [0, 0], "seeds must be distinct"), ("zhang2025", [1.5], "seeds"),
                                 ("zhang2025", [], "seeds"), ("zhang2025", [True], "seeds")):
        (tmp_path / "s.json").write_text(json.dumps({"command": "sweep", "configs": [to_dict(c) for c in runs],
                                                     "sweep": sweep, "seeds": seeds}))
        with pytest.raises(ConfigError, match=needle):
            read_job_file(tmp_path / "s.json", "sweep")
    write_job_file(tmp_path / "ok.json", "sweep", runs, "zhang2025", (0,))
    assert main(["--cache", str(tmp_path), "sweep", "--config", str(tmp_path / "ok.json"), "--preset", "lora2026",
                 "--seeds", "5"]) == 2
    assert "--config replaces the options --preset, --seeds" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_model_sizes_are_bounded():
    import dataclasses
    from qru.config import ModelConfig
    with pytest.raises(ConfigError, match="hidden_size"):
        dataclasses.replace(ModelConfig(), hidden_size=1_000_000_000, n_heads=4)
