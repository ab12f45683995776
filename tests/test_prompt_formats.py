"""Prompt formats, fitting items into the model, subsampling and chunked training text (qru.evals.prompts,
qru.evals.fit, qru.models.encode_chunks / cap_training), the keys that keep stored runs' ids, and the plan a run
says before it starts (qru.plan)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from qru import recipes
from qru.config import EvalConfig, ImportConfig, RunConfig, config_key, stored_config_from_dict, to_dict
from qru.evals.fit import cut_sentences, evaluation_corpus, fit_report, subsample
from qru.evals.prompts import encode, fit_knowmem, fit_text, fit_verbmem, knowmem_prompt, prefix_length
from qru.models import cap_training, encode_chunks, encode_documents, models_dir
from qru.plan import Speed, plan_run
from qru.store import run_id_of


@pytest.fixture(scope="module")
def tok(micro_models):
    return micro_models.tokenizer


def test_the_two_formats_write_and_tokenize_prompts_as_documented(tok):
    icl = [{"question": "Q1?", "answer": "A1"}]
    assert knowmem_prompt(icl, "Q2?", "muse").endswith("Q2?\nAnswer: ")
    assert knowmem_prompt(icl, "Q2?", "healed").endswith("Q2?\nAnswer:")
    text = "Question: Q2?\nAnswer:"
    assert encode(tok, text, "muse") == encode(tok, text, "healed") == tok(text)["input_ids"]  # BOS by the tokenizer
    assert encode(tok, text, "healed")[0] == tok.bos_token_id and prefix_length(tok, "muse") == 1
    with pytest.raises(ValueError, match="prompt format must be one of"):
        encode(tok, text, "raw")
    with pytest.raises(Exception, match="prompt format must be one of muse, healed, got 'raw'"):
        EvalConfig(prompt_format="raw")


def test_knowmem_drops_whole_pairs_from_the_front_never_bos_or_question(tok):
    icl = [{"question": f"Who was person number {i}?", "answer": f"Answer {i}"} for i in range(10)]
    full = encode(tok, knowmem_prompt(icl, "Where did X grow up?", "healed"), "healed")
    fitted = fit_knowmem(tok, icl, "Where did X grow up?", "healed", len(full) - 1)
    assert fitted.pairs_dropped == 1 and fitted.dropped == 0 and fitted.ids[0] == tok.bos_token_id
    assert fitted.ids == encode(tok, knowmem_prompt(icl[1:], "Where did X grow up?", "healed"), "healed")
    assert fit_knowmem(tok, icl, "Where did X grow up?", "healed", len(full)).pairs_dropped == 0
    tight = fit_knowmem(tok, icl, "Where did X grow up?", "muse", 4)  # not even the question fits: its end is kept
    assert tight.pairs_dropped == 10 and tight.dropped > 0 and len(tight.ids) == 4 and tight.ids[0] == tok.bos_token_id


def test_verbmem_keeps_bos_and_the_end_and_texts_keep_the_start(tok):
    prompt = "Neibrurk Seiklouth works at the Zaiseth Museum. In spare hours"
    ids = encode(tok, prompt, "healed")
    fitted = fit_verbmem(tok, prompt, "healed", 5)
    assert fitted.ids == [tok.bos_token_id] + ids[-4:] and fitted.dropped == len(ids) - 5
    text = fit_text(tok, prompt, "muse", 6)
    assert text.ids == ids[:6] and text.dropped == len(ids) - 6 and fit_text(tok, prompt, "muse", 999).dropped == 0


def test_fit_report_counts_what_evaluation_cuts(tok, micro_corpus):
    e = EvalConfig(max_eval_items=2)
    report = fit_report(tok, micro_corpus, e, context=150, max_len=40)
    assert report["verbmem"]["items"] == 2 and report["verbmem"]["of"] == len(micro_corpus.verbmem_forget)
    assert report["privleak_forget"]["cut"] == 2 and report["privleak_forget"]["tokens_cut"] > 0
    assert report["knowmem_forget"]["icl_pairs_dropped"] > 0  # 150 - 32 tokens hold fewer than all ICL pairs
    lines = cut_sentences(report)
    assert any(line.startswith("PrivLeak forget texts: 2 of") and "cut to fit the model (40 tokens each)" in line
               for line in lines)
    assert "not comparable" in lines[-1] and "`--max-len`" in lines[-1]
    assert any("evaluated (`--max-eval-items`)" in line for line in lines)
    assert cut_sentences(fit_report(tok, micro_corpus, EvalConfig(), 4096, 4096)) == []
    assert cut_sentences(None) == []


def test_subsampling_is_even_and_deterministic(micro_corpus):
    assert subsample(list(range(10)), 3) == [0, 3, 6]
    assert subsample([1, 2], 5) == [1, 2] and subsample([1, 2], 0) == [1, 2]
    small = evaluation_corpus(micro_corpus, EvalConfig(max_eval_items=1))
    assert len(small.verbmem_forget) == 1 and small.knowmem["forget_qa_icl"] == micro_corpus.knowmem["forget_qa_icl"]
    assert evaluation_corpus(micro_corpus, EvalConfig()) is micro_corpus


def test_training_text_is_chunked_not_truncated(tok):
    long_doc = " ".join(["Neibrurk Seiklouth works at the Zaiseth Museum."] * 40)
    n = len(tok(long_doc, add_special_tokens=False)["input_ids"]) + 2
    chunks = encode_chunks(tok, [long_doc, "short text"], 64)
    assert sum(len(c) for c in chunks[:-1]) == n and all(len(c) <= 64 for c in chunks)  # every token trained on
    assert encode_documents(tok, [long_doc], 64)[0] == chunks[0]  # truncation kept only the first window
    assert encode_chunks(tok, ["short text"], 64) == encode_documents(tok, ["short text"], 64)


def test_max_train_tokens_caps_each_split(tok, micro_corpus):
    capped = cap_training(micro_corpus, tok, 50)
    for split in ("forget", "retain1"):
        tokens = sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in capped.raw[split])
        assert 45 <= tokens <= 52 and micro_corpus.raw[split][0].startswith(capped.raw[split][0])
    assert cap_training(micro_corpus, tok, 0) is micro_corpus


def test_stored_ids_are_kept_and_new_choices_are_recorded(micro_cache):
    stored = json.loads(json.dumps(to_dict(RunConfig())))
    del stored["eval"]["prompt_format"], stored["eval"]["max_eval_items"], stored["corpus"]["max_train_tokens"]
    old = stored_config_from_dict(stored)  # a config.json written before these fields existed
    assert old.eval.prompt_format == "healed" and run_id_of(old) == run_id_of(RunConfig())
    assert config_key(RunConfig()) == "9fbcf2e2f70a"  # the default run's id before this change
    ids = {run_id_of(recipes.run_config(**c)) for c in ({}, {"prompt_format": "muse"}, {"max_eval_items": 5},
                                                         {"max_train_tokens": 100})}
    assert len(ids) == 4
    corpus, model = recipes.data_configs(scale="micro")
    capped, _ = recipes.data_configs(scale="micro", max_train_tokens=100)
    assert models_dir(capped, model, micro_cache) != models_dir(corpus, model, micro_cache)
    entries = ("unlearned@32=/x",)
    old_import = {"entries": list(entries), "tool": "muse", "fingerprint": "f", "name": "", "kind": "import"}
    assert config_key(ImportConfig(entries, "muse", "f")) == config_key(old_import)
    assert stored_config_from_dict(old_import).prompt_format == "muse"


def test_muse_corpora_default_to_the_muse_format(tmp_path):
    for sub in ("knowmem", "verbmem", "privleak"):
        (tmp_path / sub).mkdir()
    assert recipes.run_config(corpus=str(tmp_path)).eval.prompt_format == "muse"
    assert recipes.run_config().eval.prompt_format == "healed"
    assert recipes.run_config(corpus=str(tmp_path), prompt_format="healed").label.endswith("healed prompts]")
    assert recipes.imported.__defaults__[-1] is None  # imports read as muse unless told otherwise


def test_plan_counts_tokens_and_adds_up_the_time(tok, micro_corpus):
    config = recipes.run_config(scale="micro", method="npo", max_steps=4, bits=[32, 4])
    from qru.pipeline import model_config

    speed = Speed(train=1000.0, score=10000.0, generate=100.0)
    plan = plan_run(config, micro_corpus, tok, model_config(config.model), build=True, n_quantizers=10, speed=speed)
    docs = micro_corpus.train_documents("target")
    assert plan.stages["model build"]["tokens"] > sum(len(c) for c in encode_chunks(tok, docs, 256)) * 40 * 0.9
    assert plan.stages["evaluation"]["evaluations"] == 2 * 3  # target, retrain, unlearned at 32 and 4 bits
    assert plan.seconds == pytest.approx(sum(s["seconds"] for s in plan.stages.values()))
    assert plan.stages["model build"]["seconds"] == pytest.approx(plan.stages["model build"]["tokens"] / 1000.0)
    assert any(line.startswith("whole run: about") for line in plan.lines)
    assert plan.lines[-1] == "evaluation lists: every item evaluated, every item fits the model"
    built = plan_run(config, micro_corpus, tok, model_config(config.model), build=False, n_quantizers=10, speed=speed)
    assert "model build" not in built.stages
    short = dataclasses.replace(config, model=dataclasses.replace(config.model, max_len=200))
    cut = plan_run(short, micro_corpus, tok, model_config(short.model), build=False, n_quantizers=1, speed=speed)
    assert any(line.startswith("evaluation lists: PrivLeak forget texts") for line in cut.lines)


@pytest.mark.parametrize("how", ["null", "removed"])
def test_an_old_embedded_tokenizer_is_given_bos_when_next_used(micro_cache, micro_models, micro_corpus, store_copy,
                                                               how):
    from qru.models import ensure_tokenizer

    root = store_copy(micro_cache, ("models",))
    corpus_cfg, model_cfg = recipes.data_configs(scale="micro")
    path = models_dir(corpus_cfg, model_cfg, root) / "tokenizer" / "tokenizer.json"
    data = json.loads(path.read_text())
    data["post_processor"] = None
    if how == "removed":
        del data["post_processor"]
    path.write_text(json.dumps(data))
    tok = ensure_tokenizer(micro_corpus, corpus_cfg, model_cfg, root)
    assert tok("x")["input_ids"][0] == tok.bos_token_id and json.loads(path.read_text())["post_processor"]
    assert tok("x", add_special_tokens=False)["input_ids"] == micro_models.tokenizer("x", add_special_tokens=False)[
        "input_ids"]  # the ids of every text are unchanged


def test_subsampling_options_are_bounded_and_idle_ones_are_said(tok, micro_corpus):
    from qru.config import ConfigError, CorpusConfig
    from qru.pipeline import model_config

    with pytest.raises(ConfigError, match="max_eval_items must be at most 10,000,000"):
        EvalConfig(max_eval_items=10**400)
    with pytest.raises(ConfigError, match="max_train_tokens must be at most"):
        CorpusConfig(max_train_tokens=10**13)
    config = recipes.run_config(scale="micro", max_train_tokens=10**9, max_eval_items=10**6, bits=[32])
    speed = Speed(train=1000.0, score=10000.0, generate=100.0)
    plan = plan_run(config, micro_corpus, tok, model_config(config.model), build=False, n_quantizers=1, speed=speed)
    assert any(line.startswith("--max-train-tokens 1,000,000,000 cuts nothing here") for line in plan.lines)
    assert any(line.startswith("--max-eval-items 1,000,000 is at least") for line in plan.lines)
    assert config.label.endswith("1,000,000,000 train tokens/split, 1,000,000 eval items/list]")


def test_runs_on_different_subsets_or_formats_are_marked():
    from qru.views.evaluation import mixed_formats

    a, b = recipes.run_config(scale="micro"), recipes.run_config(scale="micro", max_eval_items=5)
    assert mixed_formats({"a": a, "a again": a}) == ""
    assert "different subsets or lengths (a: all items per list, --max-len 256; b: 5 items" in mixed_formats(
        {"a": a, "b": b})
    said = mixed_formats({"a": a, "m": recipes.run_config(scale="micro", prompt_format="muse")})
    assert "different prompt formats" in said and "healed: a" in said and "muse: m" in said
