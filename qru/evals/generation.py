"""Batched greedy generation with left padding (transformers ``generate``) of prompts already tokenized and fitted
(qru.evals.prompts)."""
from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qru.evals.prompts import pad_id


def context_length(model_config) -> int:
    """The context in tokens of a model with this transformers config (``max_position_embeddings``; 2048 where the
    config has none)."""
    return getattr(model_config, "max_position_embeddings", None) or 2048


def prompt_room(context: int, max_new_tokens: int) -> int:
    """Tokens a prompt may have so that it and ``max_new_tokens`` generated tokens fit a ``context`` of that many
    tokens. Raises ValueError if ``max_new_tokens`` < 1 or leaves fewer than 2 tokens for the prompt."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if context - max_new_tokens < 2:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's context of "
                         f"{context} tokens")
    return context - max_new_tokens


def prompt_limit(model: PreTrainedModel, max_new_tokens: int) -> int:
    """:func:`prompt_room` in ``model``'s context."""
    return prompt_room(context_length(model.config), max_new_tokens)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists to ``(input_ids, attention_mask)``, both int64 [B, T]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq):] = torch.tensor(seq)
        mask[i, width - len(seq):] = 1
    return ids, mask


@torch.inference_mode()
def greedy_generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]],
                    max_new_tokens: int, batch_size: int = 16, decode: dict | None = None) -> list[str]:
    """Greedy continuations of the token id lists ``prompts`` (each already fitted to the context), decoded with
    ``tokenizer.batch_decode(..., **decode)`` (default: special tokens skipped), in input order.

    Prompts are sorted by length and generated ``batch_size`` at a time with left padding. Raises ValueError if
    ``max_new_tokens`` < 1.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    decode = decode or {"skip_special_tokens": True}
    pad = pad_id(tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = left_pad([prompts[i] for i in idx], pad)
        ids, mask = ids.to(model.device), mask.to(model.device)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, ids.shape[1]:], **decode)
        for i, text in zip(idx, texts):
            outputs[i] = text
    return outputs
