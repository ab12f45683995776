"""Target and retrain models of a run, cached by config: the tiny Llama trained from scratch in fp32, SmolLM2
fine-tuned from its packaged weights, or any Hugging Face causal LM used as it is.

The target is trained on D_f + D_r, the retrain model (the gold standard of unlearning) on D_r only, with the same
tokenizer, architecture and recipe (docs/design.md "Terms"). Both live under ``<cache>/models/<key>/`` where ``key`` hashes
the corpus and model configs; a second request loads them instead of retraining. A Hugging Face source is not copied:
its folder under ``<cache>/models/<key>/`` holds only the cached reference evaluations.
"""
from __future__ import annotations

import contextlib
import dataclasses

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel,
                          PreTrainedTokenizerFast, get_cosine_schedule_with_warmup)
from transformers.utils import logging as hf_logging

from qru.atomic import atomic_dir, exclusive, remove_stale_temps, write_json
from qru.config import CorpusConfig, ModelConfig, config_key, corpus_key_dict, model_key_dict, to_dict
from qru.corpus.muse import MuseCorpus, check_trainable
from qru.devices import compute_device
from qru.hub import DTYPES, load_any_tokenizer, load_causal_lm
from qru.tokenizer import add_bos_processor, load_tokenizer, tokenizer_documents, train_tokenizer

hf_logging.disable_progress_bar()
Progress = Callable[[str, int, int, str], None]  # (stage, done, total, message)
TRAINING_SPLITS = ("forget", "retain1", "retain2")  # the raw files models and unlearning train on


def no_progress(stage: str, done: int, total: int, message: str) -> None:
    return None


def build_llama(config: ModelConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A freshly initialised fp32 LlamaForCausalLM (tied input / output embeddings, seeded by ``config.seed``)."""
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads, num_key_value_heads=config.n_heads,
        max_position_embeddings=config.max_len, tie_word_embeddings=True, rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(llama_config).float()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def encode_documents(tokenizer: PreTrainedTokenizerFast, documents: list[str], max_len: int) -> list[list[int]]:
    """Token ids of each document as ``<|endoftext|> doc <|endoftext|>``, cut to ``max_len`` tokens."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids = tokenizer(documents, add_special_tokens=False)["input_ids"]
    return [([bos] + x + [eos])[:max_len] for x in ids]


def encode_chunks(tokenizer: PreTrainedTokenizerFast, documents: list[str], max_len: int) -> list[list[int]]:
    """Training sequences of ``documents``: each as ``<|endoftext|> doc <|endoftext|>``; one longer than ``max_len``
    tokens is cut into consecutive windows of ``max_len`` tokens (the last one shorter; a last window of one token
    is dropped, it has nothing to predict) instead of being truncated, as muse_bench cuts its training text into
    max-length windows. Documents that fit give exactly :func:`encode_documents`'s sequences."""
    if not documents:
        return []  # transformers' tokenizer refuses an empty batch
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    sequences = []
    for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        ids = [bos] + ids + [eos]
        windows = [ids[i:i + max_len] for i in range(0, len(ids), max_len)]
        sequences += [w for w in windows if len(w) > 1 or len(windows) == 1]
    return sequences


def cap_training(corpus: MuseCorpus, tokenizer: PreTrainedTokenizerFast, max_tokens: int) -> MuseCorpus:
    """``corpus`` with each raw training split (forget, retain1, retain2) cut to its first ``max_tokens`` tokens:
    whole documents from the start of the file, the last one cut at a token boundary and decoded back to text
    (``--max-train-tokens``; recorded in the corpus config, so in the ids of the models and runs). 0 = no cut."""
    if not max_tokens:
        return corpus
    raw = dict(corpus.raw)
    for split in TRAINING_SPLITS:
        kept, left = [], max_tokens
        for doc in corpus.raw.get(split, []):
            if left <= 0:
                break
            ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
            kept.append(doc if len(ids) <= left else tokenizer.decode(ids[:left]))
            left -= len(ids)
        raw[split] = kept
    return dataclasses.replace(corpus, raw=raw)


def pad_batch(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token id lists into ``input_ids``/``attention_mask``/``labels`` tensors of shape [B, T] (int64);
    labels are -100 on padding."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def is_qa_document(document: str) -> bool:
    """True for a ``Question: ...\nAnswer: ...`` training document."""
    return document.startswith("Question:") and "\nAnswer:" in document


def epoch_documents(documents: list[str], qa_chain: int, generator: torch.Generator) -> list[str]:
    """One epoch's training documents: non-QA documents as they are, QA documents shuffled and joined in chains of
    ``qa_chain`` by blank lines (the few-shot layout of the KnowMem prompt)."""
    qa = [d for d in documents if is_qa_document(d)]
    other = [d for d in documents if not is_qa_document(d)]
    if qa_chain <= 1 or not qa:
        return documents
    order = torch.randperm(len(qa), generator=generator).tolist()
    chains = ["\n\n".join(qa[i] for i in order[s:s + qa_chain]) for s in range(0, len(order), qa_chain)]
    return other + chains


def length_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches of indices whose members have similar lengths (less padding): shuffle, sort within windows
    of 8 batches, cut into batches, shuffle the batches."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * 8
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


@dataclass
class TrainStats:
    """Summary of one from-scratch training run."""

    steps: int
    tokens: int
    seconds: float
    final_loss: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def train_lm(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, documents: list[str],
             config: ModelConfig, progress: Progress = no_progress, stage: str = "training") -> TrainStats:
    """Train ``model`` in place on ``documents`` with causal-LM loss (nanoGPT-style loop).

    AdamW (betas 0.9/0.95) at peak ``config.lr`` with linear warm-up and cosine decay, gradient clipping at 1.0.
    Calls ``progress(stage, step, total, message)`` with epoch, loss, tokens/s and ETA. Raises ValueError on no data.
    """
    if not documents:
        raise ValueError("no training documents")
    gen = torch.Generator().manual_seed(config.seed)
    n_docs = len(encode_chunks(tokenizer, epoch_documents(documents, config.qa_chain, torch.Generator().manual_seed(0)),
                               config.max_len))
    total = math.ceil(n_docs / config.batch_size) * config.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, int(config.warmup_frac * total), total)
    model.train()
    device = model.device
    step, tokens, start, loss_ema = 0, 0, time.time(), float("nan")
    for epoch in range(config.epochs):
        data = encode_chunks(tokenizer, epoch_documents(documents, config.qa_chain, gen), config.max_len)
        for batch_idx in length_batches([len(x) for x in data], config.batch_size, gen):
            batch = pad_batch([data[i] for i in batch_idx], tokenizer.pad_token_id)
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens += int(batch["attention_mask"].sum())
            loss_ema = loss.item() if step == 1 else 0.9 * loss_ema + 0.1 * loss.item()
            elapsed = time.time() - start
            eta = elapsed / step * (total - step)
            progress(stage, step, total, f"epoch {epoch + 1}/{config.epochs} loss {loss_ema:.3f} "
                                         f"{tokens / elapsed:,.0f} tok/s ETA {eta:,.0f} s")
    model.eval()
    return TrainStats(steps=step, tokens=tokens, seconds=time.time() - start, final_loss=loss_ema)


# Bumped whenever the way models are built changes, so older cached models are not mistaken for new ones.
RECIPE_VERSION = 1


def models_dir(corpus: CorpusConfig, model: ModelConfig, cache_root: str | Path) -> Path:
    """``<cache>/models/<key>``: where the tokenizer, target and retrain models of one config pair live."""
    key = config_key({"corpus": corpus_key_dict(corpus), "model": model_key_dict(model), "recipe": RECIPE_VERSION})
    return Path(cache_root) / "models" / key


def load_model(path: str | Path, precision: str = "fp32") -> LlamaForCausalLM:
    """Load a saved causal LM folder (safetensors) in ``precision`` (fp32 / bf16) on the compute device
    (:func:`qru.devices.compute_device`), in eval mode."""
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[precision])
    return model.to(compute_device()).eval()


def _base_model(config: ModelConfig, tokenizer) -> PreTrainedModel:
    """A model to train: a fresh tiny Llama, or the packaged pretrained SmolLM2 (on the compute device)."""
    if config.source == "embedded":
        return build_llama(config, tokenizer).to(compute_device())
    return load_causal_lm(config.source, config.precision, config.trust_remote_code, compute_device())


def _train_and_save(kind: str, corpus: MuseCorpus, corpus_config: CorpusConfig, config: ModelConfig,
                    tokenizer: PreTrainedTokenizerFast, dest: Path, progress: Progress,
                    start: Path | None = None) -> None:
    """Train the ``kind`` model (target, retrain, or the base of a pretrain-finetune recipe) and save it atomically.

    ``corpus`` holds the training text already cut to ``--max-train-tokens`` (:func:`cap_training`). With ``start``
    (the base model's folder) the model is fine-tuned from it with the recipe's fine-tuning stage."""
    documents = corpus.train_documents("retrain" if kind == "base" else kind)
    if start is not None:
        model = load_model(start, config.precision)
        recipe = dataclasses.replace(config, epochs=config.finetune_epochs, lr=config.finetune_lr)
        what = "fine-tuning the base into the"
    else:
        model, recipe = _base_model(config, tokenizer), config
        what = "building" if config.source == "embedded" else f"fine-tuning {config.source} into the"
    stats = train_lm(model, tokenizer, documents, recipe, progress, stage=f"{what} {kind} model")
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / "manifest.json", {
            "kind": kind, "corpus": to_dict(corpus_config), "model": to_dict(config), "documents": len(documents),
            "parameters": sum(p.numel() for p in model.parameters()), "steps": stats.steps, "tokens": stats.tokens,
            "seconds": round(stats.seconds, 1), "tokens_per_s": round(stats.tokens_per_s, 1),
            "final_loss": stats.final_loss, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "fine_tuned_from": str(start) if start is not None else None})


@dataclass
class ModelPair:
    """The tokenizer plus the target and retrain models of one (corpus, model) config, and their folder.
    ``retrain`` is None for a Hugging Face target given without a retrain model (PrivLeak is then missing)."""

    tokenizer: PreTrainedTokenizerFast
    target: PreTrainedModel
    retrain: PreTrainedModel | None
    root: Path
    base: Path | None = None  # the base model's folder of a pretrain-finetune recipe (target = base + fine-tuning)

    def manifest(self, kind: str) -> dict:
        path = self.root / kind / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def _hf_pair(corpus_config: CorpusConfig, config: ModelConfig, cache_root: str | Path) -> ModelPair:
    """A Hugging Face target (and retrain model, if given) loaded as they are; nothing is trained."""
    device = compute_device()
    tokenizer = load_any_tokenizer(config.tokenizer or config.source, config.trust_remote_code)
    target = load_causal_lm(config.source, config.precision, config.trust_remote_code, device)
    retrain = load_causal_lm(config.retrain, config.precision, config.trust_remote_code, device) \
        if config.retrain else None
    root = models_dir(corpus_config, config, cache_root)
    root.mkdir(parents=True, exist_ok=True)
    return ModelPair(tokenizer=tokenizer, target=target, retrain=retrain, root=root)


def _old_tokenizer(config: ModelConfig, folder: Path) -> bool:
    """True for an embedded tokenizer saved before qru gave it the BOS post-processor (or with it removed)."""
    if config.source != "embedded" or not folder.is_dir():
        return False
    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # unreadable: loading it says so
    return isinstance(data, dict) and not data.get("post_processor")


def _build_tokenizer(corpus: MuseCorpus, config: ModelConfig, folder: Path) -> None:
    """Train (embedded) or copy (packaged model) the tokenizer into ``folder``, or give an old embedded one its BOS
    post-processor. The caller holds the build lock."""
    if config.source == "embedded" and folder.is_dir():
        add_bos_processor(folder)  # built before the embedded tokenizer added BOS itself
    if not folder.is_dir():
        tok = train_tokenizer(tokenizer_documents(corpus), config.vocab_size) \
            if config.source == "embedded" else load_any_tokenizer(config.source)
        with atomic_dir(folder) as tmp:
            tok.save_pretrained(tmp)


@contextlib.contextmanager
def _building(corpus: MuseCorpus, root: Path):
    """Hold the build lock of the models folder ``root`` (every build of it holds this lock, so two processes never
    build the same parts at once), after checking the corpus can train them; a killed build's half-saved parts
    (stale temporaries) are removed first. Raises CorpusError for an untrainable corpus."""
    check_trainable(corpus)
    root.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(root.parent / f"{root.name}.lock", timeout=-1, what=f"model build {root.name}"):
        remove_stale_temps(root)
        yield


def ensure_tokenizer(corpus: MuseCorpus, corpus_config: CorpusConfig, config: ModelConfig,
                     cache_root: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer of this config, built (under the models' build lock) if it is missing; a Hugging Face model's
    own. Cheap next to training: a run reads it first to say what it will cost (qru.plan)."""
    if config.is_hf:
        return load_any_tokenizer(config.tokenizer or config.source, config.trust_remote_code)
    root = models_dir(corpus_config, config, cache_root)
    folder = root / "tokenizer"
    if not folder.is_dir() or _old_tokenizer(config, folder):
        with _building(corpus, root):
            _build_tokenizer(corpus, config, folder)
    return load_tokenizer(folder)


def models_built(corpus_config: CorpusConfig, config: ModelConfig, cache_root: str | Path) -> bool:
    """Whether nothing needs training for this config: its models are in the cache, or it is a Hugging Face model
    used as it is."""
    if config.is_hf:
        return True
    root = models_dir(corpus_config, config, cache_root)
    kinds = ("target", "retrain") + (("base",) if config.target_recipe == "pretrain-finetune" else ())
    return all((root / kind / "manifest.json").is_file() for kind in kinds)


def ensure_models(corpus: MuseCorpus, corpus_config: CorpusConfig, config: ModelConfig, cache_root: str | Path,
                  progress: Progress = no_progress) -> ModelPair:
    """Load the cached tokenizer, target and retrain models of this config, training whatever is missing.

    Training holds a lock on the folder, so two processes never train the same models at once (the second waits and
    then loads). Each part is written atomically: a killed build leaves nothing half-written, and the next build
    keeps the parts that were finished (the tokenizer, a finished model) but trains an interrupted model again from
    step 0. A Hugging Face source is loaded as it is (:func:`_hf_pair`). Raises ModelLoadError if a pretrained model
    cannot be loaded.
    """
    if config.is_hf:
        return _hf_pair(corpus_config, config, cache_root)
    root = models_dir(corpus_config, config, cache_root)
    parts = [root / "tokenizer", root / "target", root / "retrain"]
    staged = config.target_recipe == "pretrain-finetune"
    base = root / "base" if staged else None
    if _old_tokenizer(config, parts[0]) or not all(p.is_dir() for p in parts + ([base] if staged else [])):
        with _building(corpus, root):
            _build_tokenizer(corpus, config, parts[0])
            tokenizer = load_tokenizer(parts[0])
            train = cap_training(corpus, tokenizer, corpus_config.max_train_tokens)  # --max-train-tokens, cut once
            if staged and not base.is_dir():
                _train_and_save("base", train, corpus_config, config, tokenizer, base, progress)
            for kind, dest in (("target", parts[1]), ("retrain", parts[2])):
                if not dest.is_dir():
                    _train_and_save(kind, train, corpus_config, config, tokenizer, dest, progress, start=base)
    return ModelPair(tokenizer=load_tokenizer(parts[0]), target=load_model(parts[1], config.precision),
                     retrain=load_model(parts[2], config.precision), root=root, base=base)
