"""Unlearning losses as free functions over logits (faithful forms, design.md "Unlearning losses").

Shapes: ``logits`` [B, T, V] float32 (position t predicts token t+1), ``labels`` [B, T] int64 with -100 where a token
is not scored (padding). All losses return a scalar tensor to *minimise*.

Sources: GA and GDR follow muse_bench / open-unlearning; NPO is Zhang et al. 2024 ("Negative Preference Optimization",
eq. 3) with summed sequence log-probabilities; KLR is KL(p_target || p_theta) computed on log_softmax outputs, as in
open-unlearning (muse_bench's iterative.py applies kl_div to raw logits, a known deviation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return logits[:, :-1, :], labels[:, 1:]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token and a mask of the scored ones.

    Returns ``(logp, mask)``, both [B, T-1] float32; ``logp`` is 0 where ``mask`` is 0.
    """
    logits, labels = _shift(logits, labels)
    mask = (labels != -100).float()
    safe = labels.clamp(min=0)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability log p(x) of each sequence, [B] float32 (NPO's sequence score)."""
    logp, _ = token_logprobs(logits, labels)
    return logp.sum(-1)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token negative log-likelihood over all scored tokens of the batch (a scalar, nats/token)."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum() / mask.sum().clamp(min=1)


def ga_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient ascent on D_f: L = -NLL(D_f)."""
    return -nll(logits, labels)


def npo_loss(logits: torch.Tensor, labels: torch.Tensor, ref_logits: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """NPO: L = -(2/beta) * mean_i log sigmoid(-beta * (log p_theta(x_i) - log p_ref(x_i))).

    ``ref_logits`` are the reference (target) model's logits on the same batch, without gradient.
    Raises ValueError if beta <= 0.
    """
    if beta <= 0:
        raise ValueError(f"NPO beta must be > 0, got {beta}")
    log_ratio = sequence_logprob(logits, labels) - sequence_logprob(ref_logits, labels).detach()
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def gdr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient descent on D_r: L = NLL(D_r)."""
    return nll(logits, labels)


def klr_loss(logits: torch.Tensor, labels: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL regulariser on D_r: mean over scored tokens of KL(p_ref || p_theta), on log_softmax of both logits."""
    logits, shifted = _shift(logits, labels)
    ref = ref_logits[:, :-1, :].detach()
    mask = (shifted != -100).float()
    kl = F.kl_div(torch.log_softmax(logits.float(), -1), torch.log_softmax(ref.float(), -1), log_target=True,
                  reduction="none").sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


# Registries: forget losses and regularizers by their design.md names. ``needs_ref`` says whether the reference
# (target) model's logits must be computed for the batch.
FORGET_LOSSES = {"ga": (ga_loss, False), "npo": (npo_loss, True)}
REGULARIZERS = {"none": (None, False), "gdr": (gdr_loss, False), "klr": (klr_loss, True)}
