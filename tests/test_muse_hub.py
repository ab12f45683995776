"""MUSE from the Hugging Face hub: ``datasets`` reads a repository in the hub's layout (here a local copy made from
MUSE-layout files) into a cached MUSE folder, and a run on ``--corpus muse-news`` uses it."""
import json
import shutil
from pathlib import Path

import pytest

from hub_repo import write_hub_repo
from qru.cli import main
from qru.config import MUSE_HUB, EvalConfig
from qru.corpus import CorpusError, load_muse_dir
from qru.corpus.hub import fetch_muse, muse_files
from qru.evals.knowmem import knowmem_prompt
from qru.store import RunStore

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "muse-news-mini"


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="shared MUSE-News sample not present")
def test_hub_layout_reads_back_as_the_real_sample(tmp_path):
    sample = load_muse_dir(FIXTURE)
    repo = write_hub_repo(sample, tmp_path / "MUSE-News")
    fetched = load_muse_dir(fetch_muse(str(repo), tmp_path / "cache" / "muse-news"))
    assert fetched.knowmem == sample.knowmem and fetched.verbmem_forget == sample.verbmem_forget
    assert fetched.privleak == sample.privleak and fetched.raw == sample.raw
    # MUSE's lengths: 10 ICL pairs per KnowMem prompt, 128-token VerbMem and 32-token KnowMem generations
    assert len(fetched.knowmem["forget_qa_icl"]) == 10
    assert knowmem_prompt(fetched.knowmem["forget_qa_icl"], "Q?").count("Question:") == 11
    assert (EvalConfig().verbmem_max_new_tokens, EvalConfig().knowmem_max_new_tokens) == (128, 32)


def test_run_on_muse_news_from_the_hub(micro_corpus, tmp_path, monkeypatch, capsys):
    repo = write_hub_repo(micro_corpus, tmp_path / "MUSE-News")
    monkeypatch.setitem(MUSE_HUB, "muse-news", str(repo))
    cache = tmp_path / "store"
    assert main(["--cache", str(cache), "run", "--corpus", "muse-news", "--scale", "micro", "--method", "npo",
                 "--adapter", "lora", "--max-steps", "2", "--bits", "32", "4", "--quiet"]) == 0
    store = RunStore(cache)
    (run_id,) = store.ids()
    assert store.config(run_id).corpus.source == "muse-news"
    assert "[muse-news," in store.info(run_id).label
    cached = cache / "corpus" / "muse-news"
    assert json.loads((cached / "knowmem" / "forget_qa.json").read_text()) == micro_corpus.knowmem["forget_qa"]
    samples = store.read_json(run_id, "samples.json")
    assert len(samples["target@32"]["knowmem_forget"]) == len(micro_corpus.knowmem["forget_qa"])
    shutil.rmtree(repo)  # a second run reads the cached copy, without the hub
    assert main(["--cache", str(cache), "run", "--corpus", "muse-news", "--scale", "micro", "--method", "npo",
                 "--adapter", "lora", "--max-steps", "3", "--bits", "32", "--quiet"]) == 0
    capsys.readouterr()


def test_unreachable_hub_is_named_and_nothing_is_stored(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(MUSE_HUB, "muse-books", str(tmp_path / "no-such-repo"))
    cache = tmp_path / "store"
    assert main(["--cache", str(cache), "run", "--corpus", "muse-books", "--scale", "micro", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot fetch" in err and "hub cannot be reached" in err and "--corpus PATH" in err, err
    assert err.count("\n") == 1, err
    assert not (cache / "corpus" / "muse-books").exists()
    assert RunStore(cache).ids() == []


def test_hub_dataset_of_another_layout_is_refused(tmp_path):
    class Table(list):
        column_names = ["text"]

    def load_dataset(repo, subset, split):  # a dataset with only a text column everywhere
        return Table([{"text": "a"}])
    with pytest.raises(CorpusError, match="lacks the column"):
        muse_files("some/other-dataset", load_dataset)
