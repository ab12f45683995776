"""The relearning attack (issue 21 item 3, `qru relearn`): the split keeps the evaluated items out of the relearning
text, the attack is reproducible from its seed, never changes the stored run, is stored and read back, its shares
follow the same noise gate as quantization's, and the command line's refusals."""
import hashlib
import json

import pytest

from qru.analysis.relearning import relearning_undone
from qru.cli import configs_for, main
from qru.config import ConfigError, RelearnConfig
from qru.errors import UnlearnError
from qru.relearn import compute_relearn, read_relearns, record_path, relearn_split
from qru.store import RunStore
from qru.views.undone import relearning_caption, relearning_table


@pytest.fixture(scope="module")
def relearn_run(module_store):
    from qru.pipeline import run
    store = RunStore(module_store)
    argv = ["run", "--scale", "micro", "--method", "ga", "--bits", "32", "4", "--max-steps", "4", "--lr", "2e-3"]
    return store, run(configs_for(argv)[0], store)


def _folder_digest(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "relearn" not in p.parts}


def test_the_split_keeps_evaluated_items_out_of_the_relearning_text(micro_corpus):
    config = RelearnConfig(seed=3)
    docs, held, split = relearn_split(micro_corpus, config)
    names = [e["name"] for e in micro_corpus.entities if e["split"] == "forget"]
    assert sorted(split["relearn_entities"] + split["evaluated_entities"]) == sorted(names)
    assert split["relearn_entities"] and split["evaluated_entities"]
    for doc in docs:
        assert not any(n in doc for n in split["evaluated_entities"])
    for qa in held.knowmem["forget_qa"]:
        assert any(n in qa["question"] for n in split["evaluated_entities"])
    assert all(not any(d in t or t in d for d in docs) for t in held.privleak["forget"])
    assert held.knowmem["retain_qa"] == micro_corpus.knowmem["retain_qa"]  # utility items unchanged
    assert 0 < len(held.verbmem_forget) < len(micro_corpus.verbmem_forget)
    assert relearn_split(micro_corpus, config)[2] == split  # the seed decides the split
    others = [relearn_split(micro_corpus, RelearnConfig(seed=s))[2]["relearn_entities"] for s in range(6)]
    assert len({tuple(o) for o in others}) > 1
    retain_docs, retain_held, _ = relearn_split(micro_corpus, RelearnConfig(seed=3, data="retain"))
    assert retain_docs == micro_corpus.train_documents("retrain") and retain_held == held


def test_a_corpus_without_entities_relearns_on_documents_the_evaluation_does_not_use(micro_corpus):
    import dataclasses
    extra = "A page about something else entirely, never evaluated."
    bare = dataclasses.replace(micro_corpus, entities=[], raw={**micro_corpus.raw,
                                                               "forget": micro_corpus.raw["forget"] + [extra]})
    docs, held, split = relearn_split(bare, RelearnConfig())
    assert extra in docs and held.verbmem_forget == bare.verbmem_forget and split["relearn_entities"] == []
    assert all(not d.startswith(t[:80]) for d in docs for t in bare.privleak["forget"])
    with pytest.raises(UnlearnError, match="--data retain"):
        relearn_split(dataclasses.replace(micro_corpus, entities=[]), RelearnConfig())


def test_relearning_is_reproducible_stored_and_never_changes_the_run(relearn_run):
    store, run_id = relearn_run
    before = _folder_digest(store.path(run_id))
    config = RelearnConfig(steps=3, lr=1e-3, seed=1)
    first = compute_relearn(store, run_id, config)
    path = record_path(store, run_id, config)
    assert path.is_file() and _folder_digest(store.path(run_id)) == before
    again = compute_relearn(store, run_id, config, force=True)
    assert again["history"] == first["history"] and again["rows"] == first["rows"]  # same seed, same numbers
    other = compute_relearn(store, run_id, RelearnConfig(steps=3, lr=1e-3, seed=2))
    assert other["history"] != first["history"]
    assert [r["config"]["seed"] for r in read_relearns(store, run_id)] == [1, 2]
    models = {(r["model"], r["bits"]) for r in first["rows"]}
    assert models == {(m, b) for m in ("target", "unlearned", "relearned") for b in (32, 4)}
    relearned = next(r for r in first["rows"] if r["model"] == "relearned" and r["bits"] == 32)
    unlearned = next(r for r in first["rows"] if r["model"] == "unlearned" and r["bits"] == 32)
    assert relearned["nll_forget"] < unlearned["nll_forget"]  # relearning on the forget slice brings the NLL down
    assert json.loads(path.read_text())["rows"] == first["rows"]


def test_shares_use_the_noise_gate_on_hand_made_rows():
    rows = [{"model": "target", "bits": 32, "nll_forget": 0.1}, {"model": "unlearned", "bits": 32, "nll_forget": 2.1},
            {"model": "relearned", "bits": 32, "nll_forget": 1.1}, {"model": "target", "bits": 4, "nll_forget": 0.1},
            {"model": "unlearned", "bits": 4, "nll_forget": 1.6}, {"model": "relearned", "bits": 4,
                                                                    "nll_forget": 0.6}]
    frame = relearning_undone({"rows": rows, "samples": None})
    nll = frame[frame["metric"] == "nll_forget"].set_index("bits")
    assert nll.loc[32, "by_relearning"] == pytest.approx(0.5) and nll.loc[4, "by_relearning"] == pytest.approx(0.75)
    assert nll.loc[4, "by_quantization"] == pytest.approx(0.25) and nll.loc[32, "quantization_reason"]
    flat = [dict(r, nll_forget=0.1 + (0.005 if r["model"] != "target" else 0)) for r in rows]
    gated = relearning_undone({"rows": flat, "samples": None})
    assert gated["by_relearning"].isna().all() and "noise" in gated.iloc[0]["relearning_reason"]
    table = relearning_table(frame)
    assert list(table.columns)[2:5] == ["undone by relearning @32", "undone by PTQ @4", "undone by relearning @4"]
    assert table.iloc[0]["undone by relearning @32"] == "50%" and table.iloc[0]["— means"] == ""
    gated_table = relearning_table(gated)
    assert gated_table.iloc[0]["undone by relearning @32"] == "—" and "noise" in gated_table.iloc[0]["— means"]


def test_the_command_prints_the_shares_and_refuses_bad_values(relearn_run, capsys):
    store, run_id = relearn_run
    assert main(["--cache", str(store.root), "relearn", run_id[:8], "--steps", "2", "--lr", "1e-3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "undone by relearning @32" in out and "2 steps at lr 0.001" in out and "Share undone" in out
    record = read_relearns(store, run_id)[-1]
    assert relearning_caption(record).startswith("2 steps at lr 0.001")
    assert main(["--cache", str(store.root), "show", run_id]) == 0
    assert "Relearning attack: 2 steps at lr 0.001" in capsys.readouterr().out
    for bad, match in ((["--steps", "0"], "relearn steps"), (["--share", "1.5"], "relearn share"),
                       (["--seed", "-1"], "relearn seed")):
        assert main(["--cache", str(store.root), "relearn", run_id, *bad]) != 0
        assert match in capsys.readouterr().err
    assert main(["--cache", str(store.root), "relearn", "nosuchrun"]) != 0
    assert "no run" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        RelearnConfig(data="holdout")


def test_a_damaged_record_is_computed_again_and_ignored_by_readers(relearn_run):
    from qru.analysis.tradeoff import load_points
    from qru.relearn import valid_record

    store, run_id = relearn_run
    good = compute_relearn(store, run_id, RelearnConfig(steps=3, lr=1e-3, seed=1))
    assert valid_record(good)
    damaged = [{k: v for k, v in good.items() if k != "split"}, {**good, "split": None},
               {**good, "split": {}}, {**good, "seconds": "x"}, {**good, "rows": [1, 2]},
               {**good, "rows": [{k: v for k, v in good["rows"][0].items() if k != "bits"}]}]
    assert not any(valid_record(d) for d in damaged)
    config = RelearnConfig(steps=1, lr=1e-3, seed=5)
    path = record_path(store, run_id, config)
    for text in ["{not json", json.dumps(damaged[0]), json.dumps(damaged[4])]:
        path.write_text(text)
        assert all(r["config"]["seed"] != 5 for r in read_relearns(store, run_id))
        points = load_points(store, [run_id], config)
        assert len(points) == 2 and not points["relearn_stored"].any()  # the run is kept, the record is not
    record = compute_relearn(store, run_id, config)
    assert record["config"]["seed"] == 5 and json.loads(path.read_text())["config"]["seed"] == 5
    assert load_points(store, [run_id], config)["relearn_stored"].all()
