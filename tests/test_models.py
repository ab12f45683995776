import json

from qru.config import ModelConfig
from qru.models import epoch_documents, ensure_models, is_qa_document, train_tokenizer

import torch


def test_tokenizer_is_deterministic_and_round_trips(micro_corpus):
    docs = micro_corpus.train_documents("target")
    a, b = train_tokenizer(docs, 400), train_tokenizer(docs, 400)
    assert a.get_vocab() == b.get_vocab() and len(a) <= 400
    text = docs[0]
    ids = a(text)["input_ids"]
    assert ids[0] == a.bos_token_id and ids[1:] == a(text, add_special_tokens=False)["input_ids"]  # BOS added itself
    assert a.decode(ids, skip_special_tokens=True) == text
    assert a.padding_side == "left" and a.pad_token == a.eos_token == "<|endoftext|>"


def test_qa_documents_are_chained_like_the_knowmem_prompt():
    docs = ["A passage.", "Question: q1\nAnswer: a1", "Question: q2\nAnswer: a2", "Question: q3\nAnswer: a3"]
    out = epoch_documents(docs, 2, torch.Generator().manual_seed(0))
    assert out[0] == "A passage." and len(out) == 3
    assert sorted("\n\n".join(out[1:]).split("\n\n")) == sorted(docs[1:])
    assert is_qa_document(docs[1]) and not is_qa_document(docs[0])
    assert epoch_documents(docs, 1, torch.Generator()) == docs


def test_models_are_cached_with_manifest(micro_models, micro_corpus, micro_configs, micro_cache):
    manifest = micro_models.manifest("target")
    assert manifest["corpus"]["seed"] == 0 and manifest["model"]["hidden_size"] == micro_configs[1].hidden_size
    assert micro_models.manifest("retrain")["documents"] < manifest["documents"]
    for kind in ("target", "retrain"):
        assert (micro_models.root / kind / "model.safetensors").is_file()
    mtime = (micro_models.root / "target" / "model.safetensors").stat().st_mtime
    again = ensure_models(micro_corpus, *micro_configs, micro_cache)  # loads, does not retrain
    assert (again.root / "target" / "model.safetensors").stat().st_mtime == mtime
    assert torch.equal(again.target.model.embed_tokens.weight, micro_models.target.model.embed_tokens.weight)


def test_target_memorizes_forget_set_better_than_retrain(micro_models, micro_corpus):
    from qru.unlearn.trainer import forget_nll
    tok, forget = micro_models.tokenizer, micro_corpus.privleak["forget"]
    assert forget_nll(micro_models.target, tok, forget, 256) < 0.5 * forget_nll(micro_models.retrain, tok, forget, 256)


def test_tokenizer_sees_holdout_text_but_models_do_not(micro_corpus):
    from qru.models import tokenizer_documents
    docs = tokenizer_documents(micro_corpus)
    assert set(micro_corpus.privleak["holdout"]) <= set(docs)
    assert not set(micro_corpus.privleak["holdout"]) & set(micro_corpus.train_documents("target"))


def test_cached_model_files_follow_the_umask(micro_models):
    import os
    umask = os.umask(0)
    os.umask(umask)
    for path in (micro_models.root / "target").iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
