import math

import pytest
import torch
import torch.nn.functional as F

from qru.unlearn.losses import ga_loss, gdr_loss, klr_loss, nll, npo_loss, sequence_logprob

# Two sequences of 3 tokens over a vocabulary of 3; the second one's last position is padding.
LOGITS = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]],
                       [[1.0, 1.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]])
LABELS = torch.tensor([[0, 1, 2], [1, 0, -100]])


def _lp(row, tok):
    return row[tok] - math.log(sum(math.exp(v) for v in row))


def test_sequence_logprob_by_hand():
    seq0 = _lp([2, 0, 0], 1) + _lp([0, 1, 0], 2)   # position t predicts token t+1
    seq1 = _lp([1, 1, 0], 0)
    assert sequence_logprob(LOGITS, LABELS).tolist() == pytest.approx([seq0, seq1], abs=1e-6)


def test_nll_matches_cross_entropy_and_ga_is_its_negative():
    expected = F.cross_entropy(LOGITS[:, :-1].reshape(-1, 3), LABELS[:, 1:].reshape(-1), ignore_index=-100)
    assert nll(LOGITS, LABELS).item() == pytest.approx(expected.item(), abs=1e-6)
    assert ga_loss(LOGITS, LABELS).item() == pytest.approx(-expected.item(), abs=1e-6)
    assert gdr_loss(LOGITS, LABELS).item() == pytest.approx(expected.item(), abs=1e-6)


def test_npo_by_hand():
    beta = 0.1
    ref = torch.zeros_like(LOGITS)  # uniform reference: log p_ref = n_tokens * log(1/3)
    lp = sequence_logprob(LOGITS, LABELS)
    lr = torch.tensor([2 * math.log(1 / 3), math.log(1 / 3)])
    expected = -(2 / beta) * sum(math.log(1 / (1 + math.exp(beta * (a - b)))) for a, b in zip(lp.tolist(),
                                                                                               lr.tolist())) / 2
    assert npo_loss(LOGITS, LABELS, ref, beta).item() == pytest.approx(expected, rel=1e-5)


def test_npo_at_reference_is_2_log2_over_beta_and_rejects_bad_beta():
    assert npo_loss(LOGITS, LABELS, LOGITS.clone(), 0.1).item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="beta"):
        npo_loss(LOGITS, LABELS, LOGITS, 0.0)


def test_npo_gradient_pushes_likelihood_down():
    logits = LOGITS.clone().requires_grad_(True)
    npo_loss(logits, LABELS, LOGITS.clone(), 0.1).backward()
    # descending the loss lowers the log-prob of the first sequence's scored tokens
    assert logits.grad[0, 0, 1] > 0 and logits.grad[0, 1, 2] > 0


def test_klr_is_zero_at_reference_and_matches_hand_kl():
    assert klr_loss(LOGITS, LABELS, LOGITS.clone()).item() == pytest.approx(0.0, abs=1e-7)
    ref = torch.zeros_like(LOGITS)
    # KL(uniform || p) at the 3 scored positions (2 in row 0, 1 in row 1), averaged
    def kl(row):
        logz = math.log(sum(math.exp(v) for v in row))
        return sum((1 / 3) * (math.log(1 / 3) - (v - logz)) for v in row)
    expected = (kl([2, 0, 0]) + kl([0, 1, 0]) + kl([1, 1, 0])) / 3
    assert klr_loss(LOGITS, LABELS, ref).item() == pytest.approx(expected, rel=1e-5)
