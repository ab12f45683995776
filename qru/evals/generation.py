"""Batched greedy generation with left padding (transformers ``generate``)."""
from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast


def encode_prompts(tokenizer: PreTrainedTokenizerFast, prompts: list[str], max_prompt_len: int) -> list[list[int]]:
    """Token ids of each prompt as ``<|endoftext|> prompt`` (BOS as in training); long prompts keep their last
    ``max_prompt_len`` tokens. Raises ValueError if ``max_prompt_len`` < 2."""
    if max_prompt_len < 2:
        raise ValueError(f"max_prompt_len must be >= 2, got {max_prompt_len}")
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    return [([tokenizer.bos_token_id] + x)[-max_prompt_len:] for x in ids]


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
def greedy_generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, prompts: list[str],
                    max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy continuations (decoded, special tokens dropped) of ``prompts``, in input order.

    Prompts are sorted by length and generated ``batch_size`` at a time with left padding; each prompt keeps its
    last ``max_position_embeddings - max_new_tokens`` tokens. Raises ValueError if ``max_new_tokens`` < 1.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    limit = getattr(model.config, "max_position_embeddings", None) or 2048
    limit -= max_new_tokens
    encoded = encode_prompts(tokenizer, prompts, limit)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = left_pad([encoded[i] for i in idx], tokenizer.pad_token_id)
        ids, mask = ids.to(model.device), mask.to(model.device)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            outputs[i] = text
    return outputs
