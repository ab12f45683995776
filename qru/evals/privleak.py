"""PrivLeak (MUSE, Shi et al. 2024) from Min-K% prob (Shi et al. 2023), and per-text NLL.

Min-K% score of a text: -mean of its lowest K% token log-probs (K = 40%). AUC (scikit-learn) of forget texts
(label 0) vs holdout texts (label 1) using -score. PrivLeak = (AUC_model - AUC_retrain) / AUC_retrain x 100: about 0
is ideal, strongly negative means the forget set is still memorized, strongly positive means over-unlearning.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qru.evals.prompts import fit_text, pad_id
from qru.models import pad_batch
from qru.unlearn.losses import token_logprobs


@torch.inference_mode()
def text_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int,
                  batch_size: int = 16, prompt_format: str = "healed") -> tuple[list[np.ndarray], list[int]]:
    """Next-token log-probs (float64 arrays, one per text, natural log) of each text, and the tokens cut from each.

    A text is read as qru.evals.prompts.fit_text gives it (``healed``: BOS + text; ``muse``: ``tokenizer(text)``, as
    MUSE's privleak.py does) and cut to its first ``max_len`` tokens; every token after the first is scored.
    Raises ValueError on an unknown prompt format.
    """
    fitted = [fit_text(tokenizer, text, prompt_format, max_len) for text in texts]
    pad = pad_id(tokenizer)
    order = sorted(range(len(fitted)), key=lambda i: len(fitted[i].ids))
    result: list[np.ndarray] = [np.zeros(0)] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = {k: v.to(model.device) for k, v in pad_batch([fitted[i].ids for i in idx], pad).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        logp, mask = token_logprobs(logits, batch["labels"])
        for row, i in enumerate(idx):
            result[i] = logp[row][mask[row] > 0].double().cpu().numpy()
    return result, [f.dropped for f in fitted]


def mink_score(logprobs: np.ndarray, k: float = 0.4) -> float:
    """Min-K% prob score: -mean of the lowest ``max(1, int(k * n))`` of n token log-probs.

    Raises ValueError if ``logprobs`` is empty."""
    if len(logprobs) == 0:
        raise ValueError("Min-K% needs at least one token log-prob")
    count = max(1, int(len(logprobs) * k))
    return float(-np.sort(logprobs)[:count].mean())


def mia_auc(forget_scores: list[float], holdout_scores: list[float]) -> float:
    """ROC AUC of forget (label 0) vs holdout (label 1) texts using -score (scikit-learn ``roc_auc_score``).

    Near 0: forget texts are far more likely than holdout texts (memorized); 0.5: indistinguishable.
    """
    labels = [0] * len(forget_scores) + [1] * len(holdout_scores)
    return float(roc_auc_score(labels, [-s for s in forget_scores + holdout_scores]))


def privleak(auc_model: float, auc_retrain: float) -> float:
    """PrivLeak in percent: (AUC_model - AUC_retrain) / AUC_retrain x 100; NaN if the retrain AUC is 0 or missing."""
    if auc_retrain is None or not auc_retrain or math.isnan(auc_retrain):
        return float("nan")
    return (auc_model - auc_retrain) / auc_retrain * 100.0


def mean_nll(logprobs: list[np.ndarray]) -> float:
    """Token-weighted mean NLL (nats/token) over all texts."""
    total = sum(len(x) for x in logprobs)
    return float(-sum(x.sum() for x in logprobs) / max(total, 1))
