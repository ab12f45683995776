"""A whole run on real MUSE-News text: the shared sample plus retain training text taken from its privleak split."""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from qru.recipes import SCALES
from qru.config import CorpusConfig, EvalConfig, RunConfig, UnlearnConfig
from qru.corpus import CorpusError, check_trainable, load_muse_dir
from qru.pipeline import run
from qru.store import RunStore

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "muse-news-mini"


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="shared MUSE-News sample not present")
def test_run_on_muse_news_sample(tmp_path):
    with pytest.raises(CorpusError, match="retain"):
        check_trainable(load_muse_dir(FIXTURE))  # the sample ships raw/forget.txt only
    root = tmp_path / "muse-news"
    shutil.copytree(FIXTURE, root)
    retain = json.loads((root / "privleak" / "retain.json").read_text())
    (root / "raw" / "retain1.txt").write_text("\n\n".join(retain))
    forget = (root / "raw" / "forget.txt").read_text().split("\n\n")[:40]
    (root / "raw" / "forget.txt").write_text("\n\n".join(forget))  # keep the test fast
    model = dataclasses.replace(SCALES["micro"][1], epochs=1, max_len=192)
    config = RunConfig(corpus=CorpusConfig(source=str(root)), model=model,
                       unlearn=UnlearnConfig(method="npo", regularizer="gdr", lr=1e-3, max_steps=2),
                       bits=(32, 4), eval=EvalConfig(verbmem_max_new_tokens=16, knowmem_max_new_tokens=8,
                                                     prompt_format="muse"))
    store = RunStore(tmp_path / "cache")
    run_id = run(config, store)
    table = store.metrics(run_id)
    assert len(table) == 6 and table["verbmem"].between(0, 100).all()
    samples = store.read_json(run_id, "samples.json")
    assert len(samples["target@32"]["knowmem_forget"]) == len(load_muse_dir(FIXTURE).knowmem["forget_qa"])
    assert "[muse-news, d64x2, muse prompts]" in store.info(run_id).label
    # what did not fit the 192-token model is counted, per list, and said (never cut silently)
    fit = store.read_json(run_id, "plan.json")["fit"]
    texts = load_muse_dir(FIXTURE).privleak["forget"]
    assert fit["privleak_forget"]["items"] == len(texts) and fit["privleak_forget"]["cut"] > 0
    assert fit["knowmem_forget"]["icl_pairs_dropped"] > 0
    records = samples["target@32"]["knowmem_forget"]
    assert sum(r["icl_pairs_dropped"] for r in records) == fit["knowmem_forget"]["icl_pairs_dropped"]
    assert sum(r["tokens_cut"] for r in samples["target@32"]["nll_forget"]) == fit["privleak_forget"]["tokens_cut"]
    log = (store.path(run_id) / "log.txt").read_text()
    assert "plan: whole run: about" in log and "PrivLeak forget texts:" in log
