"""ROUGE-L with the rouge-score package (no stemmer), as MUSE scores VerbMem and KnowMem."""
from __future__ import annotations

from functools import lru_cache

from rouge_score import rouge_scorer


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(reference: str, prediction: str) -> dict[str, float]:
    """ROUGE-L of ``prediction`` against ``reference``: {"f1", "recall", "precision"}, each in [0, 1]."""
    score = _scorer().score(reference, prediction)["rougeL"]
    return {"f1": score.fmeasure, "recall": score.recall, "precision": score.precision}
