"""End to end through the CLI on the micro configuration: every stored file is checked."""
import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from qru.cli import main
from qru.evals.suite import METRICS
from qru.config import UnlearnConfig
from qru.store import RunStore


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out, out.err


@pytest.fixture(scope="module")
def full_run(micro_cache, micro_models):
    code = main(["--cache", str(micro_cache), "run", "--scale", "micro", "--method", "ga", "--regularizer", "gdr",
                 "--adapter", "full", "--lr", "1e-3", "--epochs", "2", "--quiet"])
    assert code == 0
    store = RunStore(micro_cache)
    return store, [r for r in store.ids() if r.startswith("ga-gdr-full-")][0]


def test_run_stores_every_file(full_run):
    store, run_id = full_run
    folder = store.path(run_id)
    for name in ("config.json", "status.json", "metrics.json", "samples.json", "deltas.parquet", "deltas_hist.npz",
                 "probes.json", "train_log.json", "log.txt", "unlearned_delta.safetensors"):
        assert (folder / name).is_file(), name
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
    assert store.status(run_id)["state"] == "done"
    assert store.config(run_id).unlearn.method == "ga"


def test_metric_table_rows_and_columns(full_run):
    store, run_id = full_run
    table = store.metrics(run_id)
    assert sorted(zip(table["model"], table["bits"])) == sorted(
        (m, b) for m in ("target", "retrain", "unlearned") for b in (32, 8, 4))
    assert set(METRICS) <= set(table.columns)
    retrain32 = table[(table.model == "retrain") & (table.bits == 32)].iloc[0]
    assert retrain32["privleak"] == pytest.approx(0.0)
    target32 = table[(table.model == "target") & (table.bits == 32)].iloc[0]
    assert target32["nll_forget"] < retrain32["nll_forget"]
    unlearned32 = table[(table.model == "unlearned") & (table.bits == 32)].iloc[0]
    assert unlearned32["nll_forget"] > target32["nll_forget"]  # the run did unlearn at full precision
    assert table[table.bits == 4]["quant"].unique().tolist() == ["fp4"]


def test_samples_probes_and_train_log(full_run):
    store, run_id = full_run
    samples = store.read_json(run_id, "samples.json")
    assert set(samples) == {f"{m}@{b}" for m in ("target", "retrain", "unlearned") for b in (32, 8, 4)}
    rec = samples["unlearned@4"]
    assert {"verbmem", "knowmem_forget", "knowmem_retain", "mink_forget", "mink_holdout"} <= set(rec)
    assert 0 <= rec["verbmem"][0]["rougeL_f1"] <= 1
    probes = store.read_json(run_id, "probes.json")
    assert len(probes) > 0 and set(probes[0]["outputs"]) == set(samples)
    out = probes[0]["outputs"]["target@32"]
    assert {"output", "rougeL_f1", "leaked_spans"} <= set(out) and probes[0]["gt"]
    log = store.read_json(run_id, "train_log.json")
    assert len(log) > 0 and {"forget_loss", "retain_loss", "loss"} <= set(log[0])


def test_deltas_are_pre_binned_under_every_quantizer(full_run):
    store, run_id = full_run
    deltas = store.deltas(run_id)
    assert set(deltas["bits"]) == {32, 8, 7, 6, 5, 4, 3, 2}
    assert deltas["quantizer"].nunique() == 60  # the run's 32 bits + the 59 quantizers of the analysis grid
    assert list(deltas["quantizer"].unique()[:3]) == ["none@32", "int8@8", "fp4-b64@4"]  # the run's own first
    totals = deltas[deltas.tensor == "total"].set_index("quantizer")
    assert 0 < totals.loc["fp4-b64@4", "code_flip_rate"] <= 1
    assert totals.loc["fp4-b64@4", "median_step"] > totals.loc["int8@8", "median_step"]
    steps = [totals.loc[f"rtn-asym-g64@{b}", "median_step"] for b in range(2, 9)]
    assert all(a > b for a, b in zip(steps, steps[1:]))  # one bit more halves the step (about)
    hists = store.histograms(run_id)
    assert {"abs_edges", "rel_edges", "tensors", "abs", "rel_int8@8", "rel_fp4-b64@4", "dq_fp4-b64@4",
            "bnd_rtn-sym-g0@2", "bndrel_rtn-asym-g128@5"} <= set(hists)
    flips = deltas[deltas.bits != 32]
    assert (flips["flips_boundary"] + flips["flips_scale"] == flips["code_flips"]).all()
    assert hists["bnd_fp4-b64@4"][-1].sum() <= totals.loc["fp4-b64@4", "numel"]  # all but weights on a boundary
    per = deltas[deltas.quantizer == "fp4-b64@4"]
    assert hists["rel_fp4-b64@4"].shape == (len(per), len(hists["rel_edges"]) - 1)
    numel = per.set_index("tensor").loc["total", "numel"]
    zeros = per.set_index("tensor").loc["total", "zero_delta"]
    assert hists["abs"][-1].sum() + zeros == numel
    delta = load_file(str(store.path(run_id) / "unlearned_delta.safetensors"))
    assert any(v.abs().max() > 0 for v in delta.values())


def test_rerun_is_found_and_show_ls_print_tables(full_run, micro_cache, capsys):
    store, run_id = full_run
    mtime = (store.path(run_id) / "metrics.json").stat().st_mtime
    out, err = _cli(capsys, "--cache", str(micro_cache), "run", "--scale", "micro", "--method", "ga",
                    "--regularizer", "gdr", "--adapter", "full", "--lr", "1e-3", "--epochs", "2", "--quiet")
    assert "found" in err and run_id in out and (store.path(run_id) / "metrics.json").stat().st_mtime == mtime
    out, _ = _cli(capsys, "--cache", str(micro_cache), "show", run_id)
    assert "knowmem_forget" in out and "unlearned" in out and "share_kept" in out
    out, _ = _cli(capsys, "--cache", str(micro_cache), "ls")
    assert run_id in out and "done" in out


def test_lora_run_stores_adapter_not_full_copy(micro_cache, micro_models, capsys):
    out, _ = _cli(capsys, "--cache", str(micro_cache), "run", "--scale", "micro", "--method", "npo",
                  "--regularizer", "gdr", "--adapter", "lora", "--lora-r", "4", "--lora-alpha", "8", "--lr", "3e-3",
                  "--epochs", "1", "--bits", "32", "4", "--quant-type", "nf4", "--quiet")
    store = RunStore(micro_cache)
    run_id = [r for r in store.ids() if r.startswith("npo-gdr-lora-")][0]
    folder = store.path(run_id)
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert not (folder / "unlearned_delta.safetensors").exists()
    adapter_bytes = (folder / "adapter" / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < (micro_models.root / "target" / "model.safetensors").stat().st_size
    assert set(store.metrics(run_id)["bits"]) == {32, 4}
    assert json.loads((folder / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_qru_deltas_on_a_runs_adapter_matches_the_runs_own_analysis(micro_cache, micro_models, capsys):
    """The streamed comparison of target + the stored LoRA adapter reproduces the pipeline's in-memory deltas."""
    from qru.compare import compare, deltas_config
    from qru.quant.spec import quantizer_set

    store = RunStore(micro_cache)
    run_id = [r for r in store.ids() if r.startswith("npo-gdr-lora-")][0]
    config = deltas_config(micro_models.root / "target", store.path(run_id) / "adapter",
                           quantizer_set(["nf4-b64@4", "rtn-asym-g32@3"]))
    streamed = store.deltas(compare(config, store))
    stored = store.deltas(run_id)
    for key in ("nf4-b64@4", "rtn-asym-g32@3"):
        a = streamed[streamed.quantizer == key].set_index("tensor")
        b = stored[stored.quantizer == key].set_index("tensor").loc[a.index]
        assert (a["code_flips"] - b["code_flips"]).abs().max() <= 2, key  # merge rounding may differ by an ulp
        np.testing.assert_allclose(a["share_kept"], b["share_kept"], rtol=1e-3, atol=1e-3)


def test_rtn_run_is_evaluated_at_its_own_bit_widths(micro_cache, micro_models, capsys):
    out, _ = _cli(capsys, "--cache", str(micro_cache), "run", "--scale", "micro", "--method", "ga",
                  "--regularizer", "gdr", "--adapter", "full", "--lr", "1e-3", "--epochs", "1", "--quantizer", "rtn",
                  "--bits", "32", "3", "--group-size", "32", "--symmetric", "--quiet")
    store = RunStore(micro_cache)
    run_id = [r for r in store.ids() if getattr(store.config(r), "quantizer", "") == "rtn"][0]
    metrics = store.metrics(run_id)
    assert set(metrics["bits"]) == {32, 3} and set(metrics["quant"]) == {"none", "rtn-sym"}
    assert "RTN sym g32" in out
    out, _ = _cli(capsys, "--cache", str(micro_cache), "show", run_id)
    assert "rtn-sym-g32@3" in out


def _full_disk(path, write):
    import errno
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.mark.parametrize("bad, needle", [
    (["--method", "rmu", "--rmu-layer", "99"], "RMU layer 99 does not exist"),
    (["--lr", "1e308"], r"lr must be a number in (0, 1], got 1e+308"),
    (["--epochs", "1000000000000", "--max-steps", "1"], "epochs must be an integer in [1, 10000]"),
    (["--disk-full"], "No space left on device"),
])
def test_bad_input_is_one_line_and_leaves_no_run_in_the_store(bad, needle, module_store, store_copy, capsys,
                                                              monkeypatch):
    store = store_copy(module_store, ("models", "corpus"), name="bad-input")  # the micro models, no runs
    if bad == ["--disk-full"]:
        monkeypatch.setattr("qru.atomic.atomic_write", _full_disk)
        bad = ["--max-steps", "1"]
    code = main(["--cache", str(store), "run", "--scale", "micro", "--bits", "32", "--quiet", *bad])
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert code == 2 and err.startswith("qru: error: ") and needle in err and err.count("\n") == 1, err
    assert RunStore(store).ids() == []
    assert main(["--cache", str(store), "ls"]) == 0
    assert capsys.readouterr().out.startswith("no runs")


def test_a_method_checks_a_hugging_face_model_before_the_run_is_stored(micro_models, tmp_path):
    from qru.config import ModelConfig, RunConfig
    from qru.errors import UnlearnError
    from qru.pipeline import run
    from qru.recipes import SCALES

    model = ModelConfig(source=str(micro_models.root / "target"), tokenizer=str(micro_models.root / "tokenizer"),
                        max_len=256)
    config = RunConfig(corpus=SCALES["micro"][0], model=model, bits=(32,),
                       unlearn=UnlearnConfig(method="rmu", regularizer="none", rmu_layer=3))
    with pytest.raises(UnlearnError, match=r"RMU layer 3 does not exist: .* 0 \(embeddings\) to 2"):
        run(config, RunStore(tmp_path))
    assert RunStore(tmp_path).ids() == []
