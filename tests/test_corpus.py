import json
from pathlib import Path

import pytest

from qru.config import CorpusConfig
from qru.corpus import CorpusError, build_files, load_muse_dir, write_corpus
from qru.corpus.entities import ATTRIBUTES, make_entities

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "muse-news-mini"


def _tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    cfg = CorpusConfig(n_forget=4, n_retain=8, n_holdout=4)
    write_corpus(cfg, tmp_path / "a")
    write_corpus(cfg, tmp_path / "b")
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    other = build_files(CorpusConfig(n_forget=4, n_retain=8, n_holdout=4, seed=1))
    assert other["raw/forget.txt"] != build_files(cfg)["raw/forget.txt"]


def test_entities_have_at_least_six_attributes_and_unique_names():
    people = make_entities(50, seed=3)
    assert len({p.name for p in people}) == 50
    assert all(len(p.attributes) >= 6 and set(p.attributes) == set(ATTRIBUTES) for p in people)
    assert all(len(p.qa_pairs()) == len(ATTRIBUTES) for p in people)


def test_layout_splits_and_holdout_never_trained(tmp_path):
    cfg = CorpusConfig(n_forget=3, n_retain=6, n_holdout=3, passages_per_entity=2)
    corpus = load_muse_dir(write_corpus(cfg, tmp_path / "c"))
    entities = json.loads((tmp_path / "c" / "entities.json").read_text())
    holdout = [e["name"] for e in entities if e["split"] == "holdout"]
    forget = [e["name"] for e in entities if e["split"] == "forget"]
    train_text = "\n".join(corpus.train_documents("target"))
    retrain_text = "\n".join(corpus.train_documents("retrain"))
    assert all(name not in train_text for name in holdout)
    assert all(name in train_text and name not in retrain_text for name in forget)
    assert len(corpus.knowmem["forget_qa"]) == 3 * len(ATTRIBUTES)
    assert len(corpus.verbmem_forget) == 3 * 2 and len(corpus.privleak["holdout"]) == 3 * 2
    for item in corpus.verbmem_forget:  # prompt + gt is a forget passage
        assert item["prompt"] + item["gt"] in corpus.privleak["forget"]
    icl_questions = {q["question"] for q in corpus.knowmem["forget_qa_icl"]}
    assert not icl_questions & {q["question"] for q in corpus.knowmem["forget_qa"]}


def _write_muse(root: Path) -> Path:
    qa = [{"question": "Who?", "answer": "Ann"}, {"question": "When?", "answer": "1990"}]
    files = {"knowmem/forget_qa.json": qa, "knowmem/forget_qa_icl.json": qa[:1], "knowmem/retain_qa.json": qa,
             "knowmem/retain_qa_icl.json": qa[1:], "verbmem/forget.json": [{"prompt": "Once", "gt": " upon"}],
             "privleak/forget.json": ["a b"], "privleak/retain.json": ["c d"], "privleak/holdout.json": ["e f"]}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(data))
    (root / "raw").mkdir()
    (root / "raw" / "forget.txt").write_text("First doc.\n\nSecond doc.\n")
    return root


def test_loader_reads_a_muse_folder_the_test_writes(tmp_path):
    corpus = load_muse_dir(_write_muse(tmp_path))
    assert corpus.knowmem["retain_qa_icl"] == [{"question": "When?", "answer": "1990"}]
    assert corpus.raw["forget"] == ["First doc.", "Second doc."] and corpus.raw["retain1"] == []
    assert corpus.train_documents("retrain") == []


@pytest.mark.parametrize("rel, content, needle", [
    ("knowmem/forget_qa.json", "{not json", "not valid JSON"),
    ("verbmem/forget.json", json.dumps([{"prompt": "x"}]), "gt"),
    ("privleak/holdout.json", json.dumps([1, 2]), "list of strings"),
])
def test_loader_names_the_bad_file(tmp_path, rel, content, needle):
    root = _write_muse(tmp_path)
    (root / rel).write_text(content)
    with pytest.raises(CorpusError, match=needle) as info:
        load_muse_dir(root)
    assert rel.split("/")[-1] in str(info.value)


def test_loader_missing_folder_and_file(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_muse_dir(tmp_path / "nope")
    root = _write_muse(tmp_path)
    (root / "privleak" / "retain.json").unlink()
    with pytest.raises(CorpusError, match="retain.json"):
        load_muse_dir(root)


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="shared MUSE-News sample not present")
def test_loader_reads_the_real_muse_news_sample():
    corpus = load_muse_dir(FIXTURE)
    assert len(corpus.verbmem_forget) > 0 and all(set(i) == {"prompt", "gt"} for i in corpus.verbmem_forget)
    assert len(corpus.knowmem["forget_qa_icl"]) > 0 and len(corpus.privleak["holdout"]) > 0
    assert len(corpus.raw["forget"]) > 0


def test_loader_reports_non_utf8_raw_text(tmp_path):
    root = _write_muse(tmp_path)
    (root / "raw" / "retain1.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(CorpusError, match="retain1.txt"):
        load_muse_dir(root)
