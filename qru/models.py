"""Target and retrain models of a run, cached by config: the tiny Llama trained from scratch in fp32, SmolLM2
fine-tuned from its packaged weights, or any Hugging Face causal LM used as it is.

The target is trained on D_f + D_r, the retrain model (the gold standard of unlearning) on D_r only, with the same
tokenizer, architecture and recipe (docs/design.md "Terms"). Both live under ``<cache>/models/<key>/`` where ``key`` hashes
the corpus and model configs; a second request loads them instead of retraining. A Hugging Face source is not copied:
its folder under ``<cache>/models/<key>/`` holds only the cached reference evaluations.
"""
from __future__ import annotations

import dataclasses

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel,
                          PreTrainedTokenizerFast, get_cosine_schedule_with_warmup)
from transformers.utils import logging as hf_logging

from qru.atomic import atomic_dir, exclusive, remove_stale_temps, write_json
from qru.config import CorpusConfig, ModelConfig, config_key, model_key_dict, to_dict
from qru.corpus.muse import MuseCorpus, check_trainable
from qru.devices import compute_device
from qru.hub import DTYPES, load_any_tokenizer, load_causal_lm

SPECIAL = "<|endoftext|>"
hf_logging.disable_progress_bar()
Progress = Callable[[str, int, int, str], None]  # (stage, done, total, message)


def no_progress(stage: str, done: int, total: int, message: str) -> None:
    return None


def train_tokenizer(documents: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style) trained on ``documents`` with the ``tokenizers`` library.

    One special token, ``<|endoftext|>``, serves as BOS, EOS and padding; padding is on the left for batched
    generation. Raises ValueError if ``documents`` is empty.
    """
    if not documents:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SPECIAL], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(documents, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL,
                                   padding_side="left")


def tokenizer_documents(corpus: MuseCorpus) -> list[str]:
    """The texts the tokenizer is trained on: forget, retain and holdout documents alike.

    Holdout text must be in the tokenizer's training data: otherwise forget-set names become single merged tokens
    while holdout names stay split into rare pieces, and Min-K% separates forget from holdout texts even for the
    retrain model, which saw neither (PrivLeak's reference AUC would drop to 0). A tokenizer stores no model weights,
    so this does not train the model on the holdout set.
    """
    return corpus.train_documents("target") + corpus.raw.get("holdout", []) + corpus.privleak["holdout"]


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
    n_docs = len(epoch_documents(documents, config.qa_chain, torch.Generator().manual_seed(0)))
    total = math.ceil(n_docs / config.batch_size) * config.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, int(config.warmup_frac * total), total)
    model.train()
    device = model.device
    step, tokens, start, loss_ema = 0, 0, time.time(), float("nan")
    for epoch in range(config.epochs):
        data = encode_documents(tokenizer, epoch_documents(documents, config.qa_chain, gen), config.max_len)
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
    key = config_key({"corpus": to_dict(corpus), "model": model_key_dict(model), "recipe": RECIPE_VERSION})
    return Path(cache_root) / "models" / key


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a saved tokenizer folder, with left padding for generation."""
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    tok.padding_side = "left"
    return tok


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

    With ``start`` (the base model's folder) the model is fine-tuned from it with the recipe's fine-tuning stage."""
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


def ensure_models(corpus: MuseCorpus, corpus_config: CorpusConfig, config: ModelConfig, cache_root: str | Path,
                  progress: Progress = no_progress) -> ModelPair:
    """Load the cached tokenizer, target and retrain models of this config, training whatever is missing.

    Training holds a lock on the folder, so two processes never train the same models at once (the second waits and
    then loads). Each part is written atomically: a killed build leaves nothing half-written. A Hugging Face source
    is loaded as it is (:func:`_hf_pair`). Raises ModelLoadError if a pretrained model cannot be loaded.
    """
    if config.is_hf:
        return _hf_pair(corpus_config, config, cache_root)
    root = models_dir(corpus_config, config, cache_root)
    parts = [root / "tokenizer", root / "target", root / "retrain"]
    staged = config.target_recipe == "pretrain-finetune"
    base = root / "base" if staged else None
    if not all(p.is_dir() for p in parts + ([base] if staged else [])):
        check_trainable(corpus)
        with exclusive(root.parent / f"{root.name}.lock", timeout=-1, what=f"model build {root.name}"):
            remove_stale_temps(root)  # a killed build's half-saved models (every build of root holds this lock)
            if not parts[0].is_dir():
                tok = train_tokenizer(tokenizer_documents(corpus), config.vocab_size) \
                    if config.source == "embedded" else load_any_tokenizer(config.source)
                with atomic_dir(parts[0]) as tmp:
                    tok.save_pretrained(tmp)
            tokenizer = load_tokenizer(parts[0])
            if staged and not base.is_dir():
                _train_and_save("base", corpus, corpus_config, config, tokenizer, base, progress)
            for kind, dest in (("target", parts[1]), ("retrain", parts[2])):
                if not dest.is_dir():
                    _train_and_save(kind, corpus, corpus_config, config, tokenizer, dest, progress, start=base)
    return ModelPair(tokenizer=load_tokenizer(parts[0]), target=load_model(parts[1], config.precision),
                     retrain=load_model(parts[2], config.precision), root=root, base=base)
