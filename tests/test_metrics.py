import math

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sklearn.metrics import roc_auc_score

from qru.evals.knowmem import cut_answer, knowmem_prompt
from qru.evals.privleak import mean_nll, mia_auc, mink_score, privleak
from qru.evals.probes import leaked_spans
from qru.evals.rouge import rouge_l


def test_rouge_l_matches_rouge_score_without_stemmer():
    ref, pred = "the cats were running home", "a cat was running home quickly"
    expected = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(ref, pred)["rougeL"]
    got = rouge_l(ref, pred)
    assert got["f1"] == pytest.approx(expected.fmeasure) and got["recall"] == pytest.approx(expected.recall)
    # by hand: LCS = "running home" (2 words); P = 2/6, R = 2/5
    assert got["f1"] == pytest.approx(2 * (2 / 6) * (2 / 5) / (2 / 6 + 2 / 5))


def test_mink_score_by_hand():
    logp = np.array([-0.1, -2.0, -0.5, -4.0, -0.2])
    # 40% of 5 tokens = 2 lowest: -4.0, -2.0 -> score = 3.0
    assert mink_score(logp, 0.4) == pytest.approx(3.0)
    assert mink_score(np.array([-1.5]), 0.4) == pytest.approx(1.5)  # at least one token
    with pytest.raises(ValueError):
        mink_score(np.array([]))


def test_mia_auc_matches_sklearn_and_extremes():
    forget, holdout = [0.1, 0.2, 0.9], [1.0, 0.3, 2.0]
    assert mia_auc(forget, holdout) == pytest.approx(roc_auc_score([0, 0, 0, 1, 1, 1],
                                                                   [-s for s in forget + holdout]))
    assert mia_auc([0.1, 0.2], [1.0, 2.0]) == 0.0  # memorized forget set: low scores -> AUC 0
    assert mia_auc([1.0, 2.0], [0.1, 0.2]) == 1.0


def test_privleak_formula():
    assert privleak(0.0, 0.5) == pytest.approx(-100.0)
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(0.6, 0.4) == pytest.approx(50.0)
    assert math.isnan(privleak(0.3, 0.0))


def test_mean_nll_is_token_weighted():
    assert mean_nll([np.array([-1.0, -1.0, -1.0]), np.array([-4.0])]) == pytest.approx(7 / 4)


def test_knowmem_prompt_and_answer_cut():
    prompt = knowmem_prompt([{"question": "Q1", "answer": "A1"}], "Q2")
    assert prompt == "Question: Q1\nAnswer: A1\n\nQuestion: Q2\nAnswer:"
    assert cut_answer(" 1953\n\nQuestion: next") == "1953"
    assert cut_answer(" Ann\nQuestion: x") == "Ann"
    assert cut_answer(" Bob Question: y") == "Bob"


def test_leaked_spans_mark_repeated_word_runs():
    ref = "Ann was born in Tismere and works at the Zaiseth Museum."
    out = "She was born in Tismere and likes the Zaiseth Museum."
    spans = leaked_spans(ref, out)
    assert [out[a:b] for a, b in spans] == ["was born in Tismere and", "the Zaiseth Museum."]
    assert leaked_spans(ref, "nothing in common here") == []


def test_leaked_spans_ignore_punctuation_around_words():
    ref = "He received the Gro Award. By profession he is a botanist."
    out = "He received the Gro Award is the Daivend Press"
    assert [out[a:b] for a, b in leaked_spans(ref, out)] == ["He received the Gro Award"]
