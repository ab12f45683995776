"""KnowMem (MUSE, Shi et al. 2024; muse_bench metrics/knowmem.py): knowledge of the answers to QA pairs.

Prompt = the ICL pairs as ``Question: {q}\\nAnswer: {a}\\n\\n``, then ``Question: {q}\\nAnswer:``; greedy decode
``max_new_tokens`` tokens, cut at "\\n\\n", "\\nQuestion" or "Question:"; score = ROUGE-L F1 of the answer.
KnowMem = mean score x 100 (on D_f: KnowMem-forget; on D_r: utility).

Deviation, for byte-level BPE: MUSE's prompt ends in "Answer: " (a trailing space). A byte-level BPE attaches that
space to the next word (" 1953"), so qru drops the trailing space from the prompt, as lm-evaluation-harness does.
"""
from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerFast

from qru.evals.generation import greedy_generate
from qru.evals.rouge import rouge_l

STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")


def knowmem_prompt(icl: list[dict], question: str) -> str:
    """The few-shot prompt for ``question`` (trailing space removed; see the module docstring)."""
    shots = "".join(f"Question: {qa['question']}\nAnswer: {qa['answer']}\n\n" for qa in icl)
    return f"{shots}Question: {question}\nAnswer:"


def cut_answer(text: str) -> str:
    """The generated answer up to the first stop string, stripped."""
    for stop in STOP_STRINGS:
        text = text.split(stop)[0]
    return text.strip()


def knowmem(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, qa: list[dict], icl: list[dict],
            max_new_tokens: int = 32, batch_size: int = 16) -> tuple[float, list[dict]]:
    """KnowMem score (0-100) and per-question records {question, answer, output, rougeL_f1, rougeL_recall}.

    Raises ValueError on an empty QA list.
    """
    if not qa:
        raise ValueError("KnowMem needs at least one {question, answer} pair")
    prompts = [knowmem_prompt(icl, item["question"]) for item in qa]
    outputs = [cut_answer(o) for o in greedy_generate(model, tokenizer, prompts, max_new_tokens, batch_size)]
    records = []
    for item, output in zip(qa, outputs):
        score = rouge_l(item["answer"], output)
        records.append({"question": item["question"], "answer": item["answer"], "output": output,
                        "rougeL_f1": score["f1"], "rougeL_recall": score["recall"]})
    return 100.0 * sum(r["rougeL_f1"] for r in records) / len(records), records
