"""The embedded tokenizer: byte-level BPE trained on the corpus with the ``tokenizers`` library, one special token
that is BOS, EOS and padding, and a post-processor that puts BOS in front of every encoded text."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from qru.atomic import atomic_write
from qru.corpus.muse import MuseCorpus

SPECIAL = "<|endoftext|>"


def train_tokenizer(documents: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style) trained on ``documents`` with the ``tokenizers`` library.

    One special token, ``<|endoftext|>``, serves as BOS, EOS and padding; padding is on the left for batched
    generation. The post-processor puts BOS in front of every encoded text (:func:`bos_processor`), so a plain
    ``tokenizer(text)`` in any tool (MUSE's code, lm-evaluation-harness) reads texts as the model was trained on
    them. Raises ValueError if ``documents`` is empty.
    """
    if not documents:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SPECIAL], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(documents, trainer=trainer)
    tok.post_processor = bos_processor(tok.token_to_id(SPECIAL))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL,
                                   padding_side="left")


def bos_processor(bos_id: int) -> processors.TemplateProcessing:
    """The embedded tokenizer's post-processor: ``<|endoftext|> $A`` (and ``<|endoftext|> $A <|endoftext|> $B`` for
    a pair), the special token being BOS with id ``bos_id``."""
    return processors.TemplateProcessing(single=f"{SPECIAL} $A", pair=f"{SPECIAL} $A {SPECIAL} $B:1",
                                         special_tokens=[(SPECIAL, bos_id)])


def add_bos_processor(folder: Path) -> bool:
    """Give a saved embedded tokenizer (``folder/tokenizer.json``) the BOS post-processor if it was built before
    qru added one; token ids of texts read without special tokens do not change. The file is replaced atomically.
    Returns True if it changed the file."""
    path = folder / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    if tok.post_processor is not None:
        return False
    tok.post_processor = bos_processor(tok.token_to_id(SPECIAL))
    atomic_write(path, lambda p: tok.save(str(p)))
    return True


def tokenizer_documents(corpus: MuseCorpus) -> list[str]:
    """The texts the tokenizer is trained on: forget, retain and holdout documents alike.

    Holdout text must be in the tokenizer's training data: otherwise forget-set names become single merged tokens
    while holdout names stay split into rare pieces, and Min-K% separates forget from holdout texts even for the
    retrain model, which saw neither (PrivLeak's reference AUC would drop to 0). A tokenizer stores no model weights,
    so this does not train the model on the holdout set.
    """
    return corpus.train_documents("target") + corpus.raw.get("holdout", []) + corpus.privleak["holdout"]


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a saved tokenizer folder, with left padding for generation."""
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    tok.padding_side = "left"
    return tok
