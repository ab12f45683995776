"""How evaluation texts become token ids: the two prompt formats, and fitting each item into the model's context.

Prompt formats (docs/measures.md "Prompt formats"; docs/design.md "Reference definitions"):

- ``muse``: MUSE's literal code (muse_bench metrics/verbmem.py, knowmem.py, privleak.py). Every text is tokenized
  with a plain ``tokenizer(text)``, so special tokens are the ones the model's own tokenizer adds (Llama's adds BOS,
  GPT-2-style tokenizers add none); the KnowMem prompt ends in ``"Answer: "`` with its trailing space; the VerbMem
  ground truth is cut to ``max_new_tokens`` tokens of ``tokenizer(gt)`` (special tokens included, as MUSE does) and
  texts are decoded with ``clean_up_tokenization_spaces=True`` where transformers applies it (not to BPE tokenizers
  since transformers 5).
- ``healed``: qru's earlier form, kept for the embedded corpus (whose target is trained on it) and for every run
  stored before the option existed: BOS is put in front by hand, the text is tokenized without special tokens, and
  the KnowMem prompt drops the trailing space after ``"Answer:"`` (token healing, as lm-evaluation-harness does: a
  byte-level BPE attaches that space to the next word).

Fitting: a prompt keeps its leading special tokens and question whatever happens. A VerbMem prompt longer than the
context left for generation keeps its last tokens; a KnowMem prompt drops whole in-context pairs from the front
(and only if no pair is left, the front of the question); a PrivLeak text longer than the scoring length keeps its
first tokens. Every cut is counted (:class:`Fitted`) and reported (qru.evals.fit), never silent.
"""
from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from qru.config.run import PROMPT_FORMATS


@dataclass(frozen=True)
class Fitted:
    """Token ids of one evaluation item after fitting, with what was cut.

    Attributes:
        ids: the token ids fed to the model (list of int).
        dropped: tokens cut (from the front of a prompt, or from the end of a PrivLeak text); 0 if it fit.
        pairs_dropped: KnowMem in-context pairs dropped from the front of the prompt.
    """

    ids: list[int]
    dropped: int = 0
    pairs_dropped: int = 0

    @property
    def cut(self) -> bool:
        return bool(self.dropped or self.pairs_dropped)


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its EOS (GPT-2-style tokenizers have none)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def check_format(prompt_format: str) -> None:
    """Raise ValueError unless ``prompt_format`` is one of PROMPT_FORMATS."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")


def encode(tokenizer: PreTrainedTokenizerBase, text: str, prompt_format: str) -> list[int]:
    """Token ids of ``text``: ``tokenizer(text)`` for ``muse``; BOS (where the tokenizer has one) + the text's ids
    without special tokens for ``healed``. Raises ValueError on an unknown format."""
    check_format(prompt_format)
    if prompt_format == "muse":
        return list(tokenizer(text)["input_ids"])
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    return bos + list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prefix_length(tokenizer: PreTrainedTokenizerBase, prompt_format: str) -> int:
    """How many leading special tokens :func:`encode` puts in front of every text (kept when a prompt is cut)."""
    check_format(prompt_format)
    if prompt_format == "healed":
        return 0 if tokenizer.bos_token_id is None else 1
    ids = list(tokenizer("")["input_ids"])
    return len(ids) if all(i in tokenizer.all_special_ids for i in ids) else 0


def keep_last(ids: list[int], limit: int, prefix: int) -> Fitted:
    """``ids`` cut to ``limit`` tokens by dropping tokens after the first ``prefix`` ones (the special tokens), so
    the end of the prompt (what the model continues) is kept. Raises ValueError if ``limit`` <= ``prefix``."""
    if limit <= prefix:
        raise ValueError(f"the context left for a prompt ({limit} tokens) does not exceed its {prefix} special "
                         "token(s)")
    if len(ids) <= limit:
        return Fitted(ids)
    return Fitted(ids[:prefix] + ids[len(ids) - (limit - prefix):], dropped=len(ids) - limit)


def knowmem_prompt(icl: list[dict], question: str, prompt_format: str = "healed") -> str:
    """The few-shot KnowMem prompt: each ICL pair as ``Question: {q}\\nAnswer: {a}\\n\\n``, then
    ``Question: {question}\\nAnswer: `` (``muse``) or ``...\\nAnswer:`` without the trailing space (``healed``)."""
    check_format(prompt_format)
    shots = "".join(f"Question: {qa['question']}\nAnswer: {qa['answer']}\n\n" for qa in icl)
    end = "Answer: " if prompt_format == "muse" else "Answer:"
    return f"{shots}Question: {question}\n{end}"


def fit_knowmem(tokenizer: PreTrainedTokenizerBase, icl: list[dict], question: str, prompt_format: str,
                limit: int) -> Fitted:
    """The KnowMem prompt of ``question`` in at most ``limit`` tokens: whole ICL pairs dropped from the front until it
    fits; with none left, the front of the question is cut after the special tokens."""
    for start in range(len(icl) + 1):
        ids = encode(tokenizer, knowmem_prompt(icl[start:], question, prompt_format), prompt_format)
        if len(ids) <= limit:
            return Fitted(ids, pairs_dropped=start)
    fitted = keep_last(ids, limit, prefix_length(tokenizer, prompt_format))
    return Fitted(fitted.ids, dropped=fitted.dropped, pairs_dropped=len(icl))


def fit_verbmem(tokenizer: PreTrainedTokenizerBase, prompt: str, prompt_format: str, limit: int) -> Fitted:
    """A VerbMem prompt in at most ``limit`` tokens (its special tokens and last tokens kept)."""
    return keep_last(encode(tokenizer, prompt, prompt_format), limit, prefix_length(tokenizer, prompt_format))


def fit_text(tokenizer: PreTrainedTokenizerBase, text: str, prompt_format: str, max_len: int) -> Fitted:
    """A PrivLeak / NLL text as scored: its first ``max_len`` tokens (``healed`` reads it as BOS + text, the closing
    EOS of training not scored; ``muse`` as ``tokenizer(text)``)."""
    ids = encode(tokenizer, text, prompt_format)
    return Fitted(ids[:max_len], dropped=max(0, len(ids) - max_len))


def ground_truth(tokenizer: PreTrainedTokenizerBase, gt: str, max_tokens: int, prompt_format: str) -> str:
    """The VerbMem ground truth cut to ``max_tokens`` tokens and decoded (special tokens skipped): of the text's own
    ids for ``healed``; of ``tokenizer(gt)`` for ``muse`` (so a tokenizer that adds BOS keeps ``max_tokens - 1``
    tokens of text, as MUSE's code does)."""
    check_format(prompt_format)
    if prompt_format == "muse":
        ids = list(tokenizer(gt)["input_ids"])[:max_tokens]
        return tokenizer.decode(ids, skip_special_tokens=True, **_cleans_up(tokenizer, prompt_format))
    ids = tokenizer(gt, add_special_tokens=False)["input_ids"][:max_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True)


def _cleans_up(tokenizer: PreTrainedTokenizerBase, prompt_format: str) -> dict:
    """MUSE decodes with ``clean_up_tokenization_spaces=True``; transformers >= 5 skips that clean-up for BPE
    tokenizers anyway (with a warning), so it is asked for only where it applies."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    bpe = backend is not None and type(backend.model).__name__ == "BPE"
    return {"clean_up_tokenization_spaces": True} if prompt_format == "muse" and not bpe else {}


def decode_kwargs(tokenizer: PreTrainedTokenizerBase, prompt_format: str) -> dict:
    """Keyword arguments of ``batch_decode`` for generated text: special tokens skipped; MUSE's clean-up of
    tokenization spaces in the ``muse`` format (:func:`_cleans_up`)."""
    check_format(prompt_format)
    return {"skip_special_tokens": True, **_cleans_up(tokenizer, prompt_format)}
