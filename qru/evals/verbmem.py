"""VerbMem (MUSE, Shi et al. 2024; muse_bench metrics/verbmem.py): verbatim memorization of the forget set.

For each {prompt, gt}: greedy-decode ``max_new_tokens`` tokens after the prompt; the ground truth is ``gt`` cut to
the same number of tokens; score = ROUGE-L F1 (rouge-score, no stemmer). VerbMem = mean score x 100.
"""
from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerFast

from qru.evals.generation import greedy_generate
from qru.evals.rouge import rouge_l


def truncate_tokens(tokenizer: PreTrainedTokenizerFast, text: str, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (decoded back to a string)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True)


def verbmem(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, items: list[dict], max_new_tokens: int = 128,
            batch_size: int = 16) -> tuple[float, list[dict]]:
    """VerbMem score (0-100) and per-item records {prompt, gt, output, rougeL_f1, rougeL_recall}.

    Raises ValueError on an empty item list.
    """
    if not items:
        raise ValueError("VerbMem needs at least one {prompt, gt} item")
    outputs = greedy_generate(model, tokenizer, [it["prompt"] for it in items], max_new_tokens, batch_size)
    records = []
    for item, output in zip(items, outputs):
        gt = truncate_tokens(tokenizer, item["gt"], max_new_tokens)
        score = rouge_l(gt, output)
        records.append({"prompt": item["prompt"], "gt": gt, "output": output, "rougeL_f1": score["f1"],
                        "rougeL_recall": score["recall"]})
    return 100.0 * sum(r["rougeL_f1"] for r in records) / len(records), records
