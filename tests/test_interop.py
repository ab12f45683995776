"""Other tools' results in the store (open-unlearning MUSE_EVAL.json, muse_bench evaluation folders and CSV) and
qru runs exported in open-unlearning's shape."""
import json

import pandas as pd
import pytest

from qru.cli import main
from qru.interop import export_run, import_config, import_results, read_muse_dir, read_open_unlearning
from qru.store import RunStore


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _ou_eval(folder, verbmem: float, knowmem_f: float, privleak: float | None = None):
    """A MUSE_EVAL.json as open-unlearning writes it (ROUGE 0-1, per-sample records keyed by index)."""
    data = {
        "forget_verbmem_ROUGE": {"agg_value": verbmem, "value_by_index": {
            "0": {"input": "The mayor of Lund said", "ground_truth": "that the bridge will open in May.",
                  "generation": "that the bridge will open in May.", "rougeL_f1": 1.0, "rougeL_recall": 1.0,
                  "rouge1_recall": 1.0},
            "1": {"input": "Rain fell on", "ground_truth": "the city for ten days.", "generation": "a dog.",
                  "rougeL_f1": 0.0, "rougeL_recall": 0.0, "rouge1_recall": 0.0}}},
        "forget_knowmem_ROUGE": {"agg_value": knowmem_f, "value_by_index": {
            "0": {"input": "Question: When will the bridge open?\nAnswer:", "ground_truth": "May",
                  "generation": "May", "rougeL_f1": 1.0, "rougeL_recall": 1.0}}},
        "retain_knowmem_ROUGE": {"agg_value": 0.5},
        "mia_min_k": {"agg_value": 0.25},
        "extraction_strength": {"agg_value": 0.1},
    }
    if privleak is not None:
        data["privleak"] = {"agg_value": privleak}
    return _write(folder / "MUSE_EVAL.json", data).parent


def test_open_unlearning_results_read_on_qru_scale(tmp_path):
    ev = read_open_unlearning(_ou_eval(tmp_path / "npo", 0.5, 0.25, privleak=-42.0))
    assert ev["metrics"] == {"verbmem": 50.0, "knowmem_forget": 25.0, "knowmem_retain": 50.0, "privleak": -42.0,
                             "auc": 0.25}
    assert [r["output"] for r in ev["samples"]["verbmem"]] == ["that the bridge will open in May.", "a dog."]
    assert ev["samples"]["knowmem_forget"][0]["answer"] == "May"


def test_import_shows_on_metrics_and_probes(tmp_path, capsys):
    full = _ou_eval(tmp_path / "full", 0.10, 0.30, privleak=5.0)
    quant = _ou_eval(tmp_path / "q4", 0.40, 0.55, privleak=-90.0)
    cache = tmp_path / "store"
    assert main(["--cache", str(cache), "import", "--name", "NPO from open-unlearning", f"unlearned@32={full}",
                 f"unlearned@4={quant}"]) == 0
    out = capsys.readouterr().out
    assert "imported open-unlearning: NPO from open-unlearning (unlearned@32, unlearned@4; muse prompts)" in out
    store = RunStore(cache)
    (run_id,) = store.ids()
    assert run_id.startswith("import-")
    frame = store.metrics(run_id).set_index(["model", "bits"])
    assert frame.loc[("unlearned", 4), "verbmem"] == pytest.approx(40.0)
    assert frame.loc[("unlearned", 32), "privleak"] == pytest.approx(5.0)
    probes = store.probes(run_id)
    assert set(probes[0]["outputs"]) == {"unlearned@32", "unlearned@4"}
    assert probes[0]["outputs"]["unlearned@4"]["leaked_spans"]  # the generation repeats the ground truth
    # the same files again: found, not imported twice
    assert main(["--cache", str(cache), "import", "--name", "NPO from open-unlearning", f"unlearned@32={full}",
                 f"unlearned@4={quant}"]) == 0
    assert "found in the store" in capsys.readouterr().err and len(store.ids()) == 1


def _muse_temp(folder, rouge: float, auc: float):
    """One model's temp_dir as muse_bench's eval.py writes it."""
    log = [{"prompt": "The mayor of Lund said", "gt": "that the bridge will open in May.",
            "response": "that the bridge will open", "rougeL": rouge, "rougeL_recall": rouge}]
    for sub in ("verbmem_f", "knowmem_f", "knowmem_r"):
        _write(folder / sub / "agg.json", {"mean_rougeL": rouge, "mean_rougeL_recall": rouge})
        _write(folder / sub / "log.json", log if sub == "verbmem_f" else
               [{"question": "When?", "answer": "May", "response": "May", "rougeL": rouge}])
    _write(folder / "privleak" / "auc.json", {"forget_holdout_Min-40%": auc, "forget_holdout_Min-20%": 0.1})
    return folder


def test_muse_bench_folders_get_privleak_from_the_imported_retrain(tmp_path):
    entries = [f"target@32={_muse_temp(tmp_path / 'target', 0.9, 0.1)}",
               f"retrain@32={_muse_temp(tmp_path / 'retrain', 0.2, 0.5)}",
               f"unlearned@32={_muse_temp(tmp_path / 'npo', 0.1, 0.55)}",
               f"unlearned@4={_muse_temp(tmp_path / 'npo4', 0.6, 0.2)}"]
    config = import_config(entries, "muse_bench")
    assert config.tool == "muse"
    store = RunStore(tmp_path / "store")
    frame = store.metrics(import_results(config, store)).set_index(["model", "bits"])
    assert frame.loc[("unlearned", 4), "privleak"] == pytest.approx((0.2 - 0.5) / 0.5 * 100)
    assert frame.loc[("retrain", 32), "privleak"] == pytest.approx(0.0)
    assert frame.loc[("target", 32), "verbmem"] == pytest.approx(90.0)
    alone = import_config([entries[2]])  # without a retrain model the AUC has no reference
    row = store.metrics(import_results(alone, store)).iloc[0]
    assert pd.isna(row["privleak"]) and "no retrain model" in row["privleak_missing"]
    assert read_muse_dir(tmp_path / "npo")["samples"]["verbmem"][0]["output"] == "that the bridge will open"


def test_muse_csv_row(tmp_path):
    csv = tmp_path / "out.csv"
    pd.DataFrame([{"name": "npo_klr", "verbmem_f": 16.6, "privleak": -94.0, "knowmem_f": 36.6, "knowmem_r": 33.3},
                  {"name": "npo_klr_4bit", "verbmem_f": 34.1, "privleak": -99.8, "knowmem_f": 53.7,
                   "knowmem_r": 48.8}]).to_csv(csv, index=False)
    store = RunStore(tmp_path / "store")
    config = import_config([f"unlearned@32={csv}::npo_klr", f"unlearned@4={csv}::npo_klr_4bit"])
    frame = store.metrics(import_results(config, store)).set_index(["model", "bits"])
    assert frame.loc[("unlearned", 4), "knowmem_forget"] == pytest.approx(53.7)
    assert frame.loc[("unlearned", 32), "privleak"] == pytest.approx(-94.0)


@pytest.mark.parametrize("make, needle", [
    (lambda p: _write(p / "MUSE_EVAL.json", {"privleak": {"agg_value": 1}}).parent, "none of forget_verbmem_ROUGE"),
    (lambda p: (p / "MUSE_EVAL.json").write_text("{"), "not readable JSON"),
    (lambda p: _write(p / "MUSE_EVAL.json", {"forget_verbmem_ROUGE": {"agg_value": "high"}}).parent,
     "expected a finite number"),
    (lambda p: p, "not a muse_bench evaluation folder"),
])
def test_bad_results_are_named_and_nothing_is_stored(tmp_path, capsys, make, needle):
    folder = tmp_path / "bad"
    folder.mkdir()
    make(folder)
    cache = tmp_path / "store"
    assert main(["--cache", str(cache), "import", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qru: error:") and needle in err and err.count("\n") == 1, err
    assert RunStore(cache).ids() == []


@pytest.mark.parametrize("content, needle", [
    ('{"forget_verbmem_ROUGE": {"agg_value": 1' + "0" * 400 + '}}', "expected a finite number"),
    ('{"z": ' + "[" * 100000 + "]" * 100000 + "}", "not readable JSON"),
    ('{"forget_verbmem_ROUGE": {"agg_value": 42.0}}', "outside 0..1"),
    ('{"forget_verbmem_ROUGE": {"agg_value": 0.5}, "mia_min_k": {"agg_value": 7}}', "outside 0..1"),
    ('{"forget_verbmem_ROUGE": {"agg_value": 0.5, "value_by_index": {"0": {"generation": ["a", null], '
     '"rougeL_f1": 0.5}}}}', "expected text"),
    ('{"forget_verbmem_ROUGE": {"agg_value": 0.5, "value_by_index": {"0": {"generation": "a", "rougeL_f1": 0.5, '
     '"rougeL_recall": "high"}}}}', "expected a finite number"),
])
def test_malformed_values_are_refused_in_one_line(tmp_path, capsys, content, needle):
    (tmp_path / "ou").mkdir()
    (tmp_path / "ou" / "MUSE_EVAL.json").write_text(content)
    assert main(["--cache", str(tmp_path / "store"), "import", str(tmp_path / "ou")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qru: error:") and needle in err and err.count("\n") == 1, err
    assert RunStore(tmp_path / "store").ids() == []


def test_csv_rows_named_like_missing_values_duplicates_and_bad_cells(tmp_path, capsys):
    csv = tmp_path / "OUT.CSV"
    csv.write_text("name,verbmem_f,knowmem_f,knowmem_r,privleak\nNA,1,2,3,4\nnpo,5,6,7,8\nnpo,9,9,9,9\n"
                   "bad,abc,1,2,3\nbig,150,1,2,3\n")
    store = RunStore(tmp_path / "store")
    frame = store.metrics(import_results(import_config([f"{csv}::NA"]), store))
    assert frame.iloc[0]["verbmem"] == pytest.approx(1.0)  # "NA" is a row's name, not a missing value
    for row, needle in (("npo", "ambiguous"), ("bad", "expected a number, got 'abc'"), ("big", "outside 0..100"),
                        ("zzz", "no row named 'zzz'")):
        assert main(["--cache", str(tmp_path / "s2"), "import", f"{csv}::{row}"]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err


def test_privleak_reasons_paths_with_separators_and_mixed_formats(tmp_path):
    ou = _ou_eval(tmp_path / "odd::name", 0.2, 0.3)  # '::' inside a folder name is a path, not a CSV row
    data = json.loads((ou / "MUSE_EVAL.json").read_text())
    del data["mia_min_k"]
    (ou / "MUSE_EVAL.json").write_text(json.dumps(data))
    muse = _muse_temp(tmp_path / "muse", 0.5, 0.4)
    config = import_config([f"unlearned@32={ou}", f"unlearned@4={muse}"])
    assert config.tool == "auto" and "both formats" in config.label
    store = RunStore(tmp_path / "store")
    frame = store.metrics(import_results(config, store)).set_index("bits")
    assert "neither PrivLeak nor the Min-K% AUC" in frame.loc[32, "privleak_missing"]
    assert "no retrain model was imported" in frame.loc[4, "privleak_missing"]
    assert set(frame["quant"]) == {"none", "imported"}  # qru cannot know another tool's 4-bit type
    # an entry lacking a metric exports without it and reads back
    dest = tmp_path / "export"
    export_run(store, store.ids()[0], dest)
    back = read_open_unlearning(dest / "unlearned_32bit")
    assert back["metrics"]["verbmem"] == pytest.approx(20.0) and "knowmem_forget" in back["metrics"]


def test_bad_entries_are_named(tmp_path, capsys):
    for entry, needle in (("student@32=x", "imported model must be"), ("unlearned@9=x", "bit width"),
                          (f"unlearned@4={tmp_path / 'none'}", "not found"), ("", "empty")):
        assert main(["--cache", str(tmp_path / "s"), "import", entry]) == 2
        assert needle in capsys.readouterr().err


def test_export_round_trips_through_import(micro_models, micro_cache, tmp_path, capsys):
    assert main(["--cache", str(micro_cache), "run", "--scale", "micro", "--method", "npo", "--adapter", "full",
                 "--lr", "1e-3", "--epochs", "1", "--quiet"]) == 0
    store = RunStore(micro_cache)
    run_id = [r for r in store.ids() if r.startswith("npo-gdr-full")][0]
    dest = tmp_path / "export"
    assert main(["--cache", str(micro_cache), "export", run_id, str(dest)]) == 0
    out = capsys.readouterr().out
    assert "exported 3 evaluation(s)" in out and "unlearned_4bit/MUSE_EVAL.json" in out
    data = json.loads((dest / "unlearned_4bit" / "MUSE_EVAL.json").read_text())
    assert set(data) >= {"forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "privleak"}
    assert 0 <= data["forget_verbmem_ROUGE"]["agg_value"] <= 1
    back = RunStore(tmp_path / "back")
    config = import_config([f"unlearned@{b}={dest / f'unlearned_{b}bit'}" for b in (32, 8, 4)])
    assert config.tool == "open-unlearning"
    ours = store.metrics(run_id).query("model == 'unlearned'").set_index("bits")
    theirs = back.metrics(import_results(config, back)).set_index("bits")
    for col in ("verbmem", "knowmem_forget", "knowmem_retain", "privleak"):
        assert theirs[col].to_dict() == pytest.approx(ours[col].to_dict()), col
    with pytest.raises(Exception, match="already exists"):
        export_run(store, run_id, dest)
    with pytest.raises(Exception, match="checkpoint comparison"):
        export_run(store, "deltas-0123456789ab", tmp_path / "d")
    assert main(["--cache", str(micro_cache), "import", "--name", "two\nlines", str(dest / "unlearned_4bit")]) == 2


def test_a_huge_name_and_an_export_under_a_file_are_one_line_errors(tmp_path, capsys):
    folder = _ou_eval(tmp_path / "ou", 0.5, 0.4)
    cache = tmp_path / "store"
    assert main(["--cache", str(cache), "import", "--name", "x" * 100_000, str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qru: error:") and err.count("\n") == 1 and "200 characters" in err and len(err) < 400, err
    assert RunStore(cache).ids() == []
    assert main(["--cache", str(cache), "import", "--name", "y" * 200, str(folder)]) == 0
    (run_id,) = RunStore(cache).ids()
    capsys.readouterr()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for dest in (blocker / "export", blocker / "deeper" / "export"):
        assert main(["--cache", str(cache), "export", run_id, str(dest)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("qru: error:") and err.count("\n") == 1 and str(dest) in err and "not a folder" in err
    assert blocker.read_text() == "x" and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
