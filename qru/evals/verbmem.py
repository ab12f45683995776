"""VerbMem (MUSE, Shi et al. 2024; muse_bench metrics/verbmem.py): verbatim memorization of the forget set.

For each {prompt, gt}: greedy-decode ``max_new_tokens`` tokens after the prompt; the ground truth is ``gt`` cut to
the same number of tokens; score = ROUGE-L F1 (rouge-score, no stemmer). VerbMem = mean score x 100. How prompts
are tokenized and fitted into the context: qru.evals.prompts.
"""
from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qru.evals.generation import greedy_generate, prompt_limit
from qru.evals.prompts import decode_kwargs, fit_verbmem, ground_truth
from qru.evals.rouge import rouge_l


def verbmem(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, items: list[dict], max_new_tokens: int = 128,
            batch_size: int = 16, prompt_format: str = "healed") -> tuple[float, list[dict]]:
    """VerbMem score (0-100) and per-item records {prompt, gt, output, rougeL_f1, rougeL_recall, prompt_tokens_cut}.

    ``prompt_tokens_cut`` counts the prompt tokens dropped to fit the model's context (0 if it fit). Raises
    ValueError on an empty item list or an unknown prompt format.
    """
    if not items:
        raise ValueError("VerbMem needs at least one {prompt, gt} item")
    limit = prompt_limit(model, max_new_tokens)
    fitted = [fit_verbmem(tokenizer, it["prompt"], prompt_format, limit) for it in items]
    outputs = greedy_generate(model, tokenizer, [f.ids for f in fitted], max_new_tokens, batch_size,
                              decode_kwargs(tokenizer, prompt_format))
    records = []
    for item, output, fit in zip(items, outputs, fitted):
        gt = ground_truth(tokenizer, item["gt"], max_new_tokens, prompt_format)
        score = rouge_l(gt, output)
        records.append({"prompt": item["prompt"], "gt": gt, "output": output, "rougeL_f1": score["f1"],
                        "rougeL_recall": score["recall"], "prompt_tokens_cut": fit.dropped})
    return 100.0 * sum(r["rougeL_f1"] for r in records) / len(records), records
