"""Probe generations: forget-set prompts with every model's greedy continuation, for reading what leaks.

The continuations are the VerbMem generations themselves (same prompts, greedy, same length), so probes cost no
extra compute. Each continuation carries its ROUGE-L against the ground truth and the spans of it that also occur in
the ground truth (longest common word sequences of 3+ words), which the dashboard marks as leaked text.
"""
from __future__ import annotations

import string
from difflib import SequenceMatcher

MIN_SPAN_WORDS = 3


def leaked_spans(reference: str, output: str, min_words: int = MIN_SPAN_WORDS) -> list[list[int]]:
    """Character spans [start, end) of ``output`` that repeat ``reference`` for at least ``min_words`` consecutive
    words (whitespace-split; words compared without the punctuation around them, so "Award." matches "Award"),
    in order."""
    words = output.split()
    ref_words = [_bare(w) for w in reference.split()]
    starts, pos = [], 0
    for word in words:
        pos = output.index(word, pos)
        starts.append(pos)
        pos += len(word)
    matcher = SequenceMatcher(a=[_bare(w) for w in words], b=ref_words, autojunk=False)
    spans = []
    for block in matcher.get_matching_blocks():
        if block.size >= min_words:
            last = block.a + block.size - 1
            spans.append([starts[block.a], starts[last] + len(words[last])])
    return spans


def _bare(word: str) -> str:
    return word.strip(string.punctuation) or word


def build_probes(samples: dict, n_probes: int) -> list[dict]:
    """The first ``n_probes`` VerbMem items with each model's output, keyed ``"<model>@<bits>"`` as in ``samples``.

    ``samples`` maps "<model>@<bits>" to the per-sample records of :func:`qru.evals.suite.evaluate`.
    """
    keys = list(samples)
    if not keys:
        return []
    first = samples[keys[0]]["verbmem"][:n_probes]
    probes = []
    for i, item in enumerate(first):
        outputs = {}
        for key in keys:
            rec = samples[key]["verbmem"][i]
            outputs[key] = {"output": rec["output"], "rougeL_f1": rec["rougeL_f1"],
                            "leaked_spans": leaked_spans(item["gt"], rec["output"])}
        probes.append({"prompt": item["prompt"], "gt": item["gt"], "outputs": outputs})
    return probes
