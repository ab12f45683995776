"""Sweeps (presets of ordinary runs over seeds, resumable), bootstrap intervals, re-aggregation and the paper table."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from qru import sweeps
from qru.cli import configs_for, main
from qru.config import ConfigError, RunConfig, UnlearnConfig
from qru.stats import bootstrap_ci, item_scores, reaggregate
from qru.store import RunStore, run_id_of
from qru.recipes import sweep as sweep_configs
from qru.sweeps import PRESETS, Preset, SweepInfo, combine, list_sweeps, run_sweep
from qru.views.paper_table import paper_table, reference_layout, sweep_frame


def test_presets_are_the_papers_settings():
    zhang = sweep_configs("zhang2025")
    assert len(zhang) == 18 and {c.seed for c in zhang} == {0, 1, 2}
    assert [c.unlearn.label.split(" ")[0] for c in zhang[::3]] == ["GA", "GA+GDR", "GA+KLR", "NPO", "NPO+GDR",
                                                                    "NPO+KLR"]
    assert all(c.unlearn.adapter == "full" and c.unlearn.lr == 1e-5 and c.unlearn.epochs == 5 and
               c.bits == (32, 8, 4) and c.quant_type_4bit == "fp4" for c in zhang)
    lora = sweep_configs("lora2026", seeds=(7,))
    assert len(lora) == 6 and all(c.unlearn.adapter == "lora" and c.unlearn.lr == 1e-4 and c.unlearn.lora_r == 32
                                  and c.unlearn.lora_alpha == 32 and c.seed == 7 for c in lora)
    scan = sweep_configs("lr-scan", seeds=(0,))
    assert [(c.unlearn.adapter, c.unlearn.lr) for c in scan] == [
        ("full", 1e-6), ("full", 1e-5), ("full", 1e-4), ("full", 1e-3), ("lora", 1e-5), ("lora", 1e-4),
        ("lora", 1e-3)]
    # lr-scan's NPO+GDR full at 1e-5, seed 0, is zhang2025's run: one stored run serves both sweeps
    assert len({run_id_of(c) for c in zhang + lora + scan}) == 30


@pytest.mark.parametrize("name, seeds, message", [("nope", (0,), "unknown sweep preset 'nope'"),
                                                   ("zhang2025", (), "at least one seed"),
                                                   ("zhang2025", (1, 1), "seeds repeat")])
def test_bad_sweeps_are_refused(name, seeds, message):
    with pytest.raises(ConfigError, match=message):
        sweep_configs(name, seeds)


def test_cli_sweep_configs_keep_the_run_options():
    configs = configs_for(["sweep", "--preset", "zhang2025", "--seeds", "3", "4", "--scale", "micro", "--bits", "32",
                           "4", "--quant-type", "nf4", "--max-steps", "2"])
    assert len(configs) == 12 and {c.seed for c in configs} == {3, 4}
    assert all(c.bits == (32, 4) and c.quant_type_4bit == "nf4" and c.unlearn.max_steps == 2 and
               c.model.hidden_size == 64 for c in configs)


def test_bootstrap_interval():
    mean, low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 10.0])
    assert mean == 4.0 and 1.0 <= low < mean < high <= 10.0
    assert bootstrap_ci([1.0, 2.0, 3.0]) == bootstrap_ci([1.0, 2.0, 3.0])  # seeded
    assert np.isnan(bootstrap_ci([5.0])[1]) and bootstrap_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def _frame_of(values: dict[tuple[str, str, int], list[float]]) -> pd.DataFrame:
    rows = []
    for (method, adapter, bits), per_seed in values.items():
        for seed, v in enumerate(per_seed):
            rows.append({"run_id": f"{method}-{adapter}-{seed}", "method": method, "adapter": adapter, "lr": 1e-5,
                         "seed": seed, "model": "unlearned", "bits": bits, "quant": "q", "knowmem_forget": v})
    rows.append({"run_id": "x", "method": "GA", "adapter": "full", "lr": 1e-5, "seed": 0, "model": "target",
                 "bits": 32, "quant": "none", "knowmem_forget": 100.0})
    return pd.DataFrame(rows)


def test_paper_table_layout_and_cells():
    frame = _frame_of({("NPO", "full", 32): [10.0, 20.0, 30.0], ("NPO", "full", 4): [40.0, 40.0, 40.0],
                       ("GA", "full", 32): [5.0], ("GA", "LoRA", 32): [1.0, 3.0]})
    table = paper_table(frame, "knowmem_forget")
    assert list(table.columns) == ["", "full @32", "full @4", "LoRA @32"]
    assert list(table[""]) == ["GA", "NPO", "target"]  # the papers' method order, then the references
    npo = table.set_index("").loc["NPO"]
    mean, low, high = bootstrap_ci([10.0, 20.0, 30.0])
    assert npo["full @32"] == f"{mean:.1f} [{low:.1f}, {high:.1f}]" and npo["full @4"] == "40.0 [40.0, 40.0]"
    assert npo["LoRA @32"] == "—" and table.set_index("").loc["GA", "full @32"] == "5.0"
    with pytest.raises(KeyError):
        paper_table(frame, "verbmem")


def test_reference_layout_has_the_papers_numbers():
    ref = reference_layout("knowmem_forget").set_index("")
    assert ref.loc["NPO+KLR", "Zhang et al. 2025, NEWS: full @4"] == "53.7"
    assert ref.loc["target", "Zhang et al. 2025, NEWS: @32"] == "63.9"
    assert reference_layout("nll_forget").empty


SMALL = Preset("small-test", "two runs", (("npo", "gdr", "full", 1e-3), ("ga", "gdr", "lora", 1e-3)), epochs=1)


def test_sweep_resumes_after_a_kill_and_lays_out_its_runs(module_store, monkeypatch):
    import qru.pipeline as pipeline

    monkeypatch.setitem(PRESETS, SMALL.name, SMALL)
    configs = sweep_configs(SMALL.name, seeds=(0, 1), scale="micro", bits=(32, 4), max_steps=2)
    store = RunStore(module_store)
    real, calls = pipeline.execute, []

    def killed_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "execute", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(SMALL.name, configs, (0, 1), store)
    info = [i for i in list_sweeps(store) if i.preset == SMALL.name][0]
    assert (info.done, info.failed, len(info.run_ids)) == (2, 1, 4)
    monkeypatch.setattr(pipeline, "execute", real)
    seen = []
    ids, failures = run_sweep(SMALL.name, configs, (0, 1), store, announce=lambda i, n, c, found: seen.append(found))
    assert seen == [True, True, False, False] and not failures and ids == [run_id_of(c) for c in configs]
    frame = sweep_frame({i: store.config(i) for i in ids}, {i: store.metrics(i) for i in ids},
                        {i: store.deltas(i) for i in ids})
    table = paper_table(frame, "nll_forget").set_index("")
    assert list(table.index) == ["GA+GDR", "NPO+GDR", "target", "retrain"]
    assert table.loc["NPO+GDR", "full @32"].count("[") == 1 and table.loc["GA+GDR", "full @32"] == "—"
    kept = paper_table(frame, "share_kept", digits=3).set_index("")
    low = float(kept.loc["NPO+GDR", "full @4"].split(" ")[0])
    totals = [store.deltas(i).query("tensor == 'total' and quantizer == 'fp4-b64@4'").iloc[0]["share_kept"]
              for i in ids[:2]]
    assert low == pytest.approx(np.mean(totals), abs=1e-3) and kept.loc["target", "full @4"] == "—"


def test_samples_reaggregate_into_the_stored_metrics(module_store):
    store = RunStore(module_store)
    config = configs_for(["run", "--scale", "micro", "--method", "npo", "--bits", "32", "--max-steps", "2"])[0]
    from qru.pipeline import run
    run_id = run(config, store)
    samples = store.read_json(run_id, "samples.json")["unlearned@32"]
    stored = store.metrics(run_id).set_index("model").loc["unlearned"]
    for metric in ("verbmem", "knowmem_forget", "knowmem_retain", "auc", "nll_forget", "nll_retain", "nll_holdout"):
        assert reaggregate(samples, metric) == pytest.approx(stored[metric], rel=1e-9), metric
    assert len(item_scores(samples, "nll_forget")) == len(samples["nll_forget"])


def test_qru_sweep_command_prints_the_tables(module_store, monkeypatch, capsys):
    monkeypatch.setitem(PRESETS, SMALL.name, SMALL)
    import qru.cli
    monkeypatch.setattr(qru.cli, "build_parser", _parser_with(SMALL.name))
    code = main(["--cache", str(module_store), "sweep", "--preset", SMALL.name, "--seeds", "0", "1", "--scale",
                 "micro", "--bits", "32", "4", "--max-steps", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "knowmem_forget (unlearned: mean [95% bootstrap CI] over seeds 0 1)" in out
    assert "NPO+GDR" in out and "full @4" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["--cache", str(module_store), "sweep", "--preset", "nope"])
    assert exit_info.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


def test_paper_table_command_reads_recorded_sweeps_together(module_store, monkeypatch, capsys):
    monkeypatch.setitem(PRESETS, SMALL.name, SMALL)
    store = RunStore(module_store)
    configs = sweep_configs(SMALL.name, seeds=(0,), scale="micro", bits=(32, 4), max_steps=2)
    ids = run_sweep(SMALL.name, configs, (0,), store)[0]
    code = main(["--cache", str(module_store), "paper-table", SMALL.name, "--metric", "nll_forget"])
    out = capsys.readouterr().out
    assert code == 0 and "nll_forget (unlearned" in out and "full @4" in out and "LoRA @4" in out
    assert "knowmem_forget" not in out
    code = main(["--cache", str(module_store), "paper-table", "no-such-sweep"])
    assert code == 2 and "no sweep 'no-such-sweep'" in capsys.readouterr().err
    a = SweepInfo("a", SMALL.name, [0], ids, 2, 0)
    b = SweepInfo("b", "lr-scan", [1, 0], ids[:1] + ["other"], 1, 0)
    assert combine([a, b]) == (ids + ["other"], "method", [0, 1])
    assert combine([b])[1] == "lr"
    with pytest.raises(ConfigError, match="at least one sweep"):
        combine([])


def _parser_with(name):
    """build_parser whose --preset choices include a test preset (argparse fixes choices when it is built)."""
    import qru.cli
    original = qru.cli.build_parser

    def build():
        parser = original()
        for action in parser._subparsers._group_actions[0].choices["sweep"]._actions:  # noqa: SLF001
            if action.dest == "sweep":
                action.choices = sorted(PRESETS)
        return parser
    return build


def test_muse_loss_forms_apply_to_the_npo_and_klr_runs_of_a_sweep():
    configs = configs_for(["sweep", "--preset", "zhang2025", "--seeds", "0", "--loss-form", "muse"])
    forms = {c.unlearn.label.split(" full")[0]: c.unlearn.loss_form for c in configs}
    assert forms["GA+GDR"] == "faithful" and forms["NPO (muse loss forms)"] == "muse"
    assert forms["GA+KLR (muse loss forms)"] == "muse"


def test_gptq_groups_that_do_not_divide_the_embedded_model_fail_before_anything_is_stored(tmp_path):
    with pytest.raises(ConfigError, match="does not divide the embedded model's layer width 64"):
        configs_for(["--cache", str(tmp_path), "run", "--scale", "micro", "--quantizer", "gptq", "--group-size",
                     "128", "--bits", "32", "4"])
    assert not (tmp_path / "runs").exists()


def test_paper_table_keeps_learning_rates_and_scenarios_apart_when_sweeps_are_read_together():
    def rows(method, lr, scenario, value, model="unlearned"):
        return {"run_id": f"{method}{lr}{scenario}", "method": method, "adapter": "full", "lr": lr, "seed": 0,
                "scenario": scenario, "model": model, "bits": 4, "quant": "fp4", "nll_forget": value}
    frame = pd.DataFrame([rows("NPO+GDR", 1e-6, "", 1.0), rows("NPO+GDR", 1e-3, "", 2.0),
                          rows("NPO+GDR", 1e-6, "start on nf4-b64@4 grid", 3.0),
                          rows("NPO+GDR", 1e-6, "", 0.5, "target"),
                          rows("NPO+GDR", 1e-6, "start on nf4-b64@4 grid", 0.7, "target"),
                          rows("NPO+GDR", 1e-6, "", 6.0, "retrain"),
                          rows("NPO+GDR", 1e-6, "start on nf4-b64@4 grid", 6.0, "retrain")])
    table = paper_table(frame, "nll_forget").set_index("")["full @4"]
    assert table.to_dict() == {"NPO+GDR lr 1e-06 [natural start]": "1.000", "NPO+GDR lr 1e-06 [start on nf4-b64@4 grid]":
                               "3.000", "NPO+GDR lr 0.001 [natural start]": "2.000", "target [natural start]": "0.500",
                               "target [start on nf4-b64@4 grid]": "0.700", "retrain": "6.000"}
