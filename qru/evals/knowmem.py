"""KnowMem (MUSE, Shi et al. 2024; muse_bench metrics/knowmem.py): knowledge of the answers to QA pairs.

Prompt = the ICL pairs as ``Question: {q}\\nAnswer: {a}\\n\\n``, then ``Question: {q}\\nAnswer: `` (the trailing
space kept in the ``muse`` prompt format, dropped in ``healed``: qru.evals.prompts); greedy decode
``max_new_tokens`` tokens, cut at "\\n\\n", "\\nQuestion" or "Question:"; score = ROUGE-L F1 of the answer.
KnowMem = mean score x 100 (on D_f: KnowMem-forget; on D_r: utility). A prompt longer than the context drops whole
ICL pairs from the front, counted per record.
"""
from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qru.evals.generation import greedy_generate, prompt_limit
from qru.evals.prompts import decode_kwargs, fit_knowmem, knowmem_prompt
from qru.evals.rouge import rouge_l

STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")
__all__ = ["STOP_STRINGS", "cut_answer", "knowmem", "knowmem_prompt"]


def cut_answer(text: str) -> str:
    """The generated answer up to the first stop string, stripped."""
    for stop in STOP_STRINGS:
        text = text.split(stop)[0]
    return text.strip()


def knowmem(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, qa: list[dict], icl: list[dict],
            max_new_tokens: int = 32, batch_size: int = 16,
            prompt_format: str = "healed") -> tuple[float, list[dict]]:
    """KnowMem score (0-100) and per-question records {question, answer, output, rougeL_f1, rougeL_recall,
    icl_pairs_dropped, prompt_tokens_cut}.

    Raises ValueError on an empty QA list or an unknown prompt format.
    """
    if not qa:
        raise ValueError("KnowMem needs at least one {question, answer} pair")
    limit = prompt_limit(model, max_new_tokens)
    fitted = [fit_knowmem(tokenizer, icl, item["question"], prompt_format, limit) for item in qa]
    outputs = [cut_answer(o) for o in greedy_generate(model, tokenizer, [f.ids for f in fitted], max_new_tokens,
                                                      batch_size, decode_kwargs(tokenizer, prompt_format))]
    records = []
    for item, output, fit in zip(qa, outputs, fitted):
        score = rouge_l(item["answer"], output)
        records.append({"question": item["question"], "answer": item["answer"], "output": output,
                        "rougeL_f1": score["f1"], "rougeL_recall": score["recall"],
                        "icl_pairs_dropped": fit.pairs_dropped, "prompt_tokens_cut": fit.dropped})
    return 100.0 * sum(r["rougeL_f1"] for r in records) / len(records), records
