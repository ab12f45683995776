"""Unlearning losses as free functions over logits (faithful forms, docs/design.md "Unlearning losses").

Shapes: ``logits`` [B, T, V] float32 (position t predicts token t+1), ``labels`` [B, T] int64 with -100 where a token
is not scored (padding). All losses return a scalar tensor to *minimise*.

Sources: GA and GDR follow muse_bench / open-unlearning; NPO is Zhang et al. 2024 ("Negative Preference Optimization",
eq. 3) with summed sequence log-probabilities; KLR is KL(p_target || p_theta) computed on log_softmax outputs, as in
open-unlearning (muse_bench's iterative.py applies kl_div to raw logits, a known deviation). SimNPO is Fan et al. 2024
(arXiv 2410.07163, eq. 4); RMU is Li et al. 2024 (WMDP, arXiv 2403.03218, eq. 1-2), over hidden states [B, T, d].

The *reference forms* (``npo_loss_muse``, ``klr_loss_muse``) reproduce muse_bench's iterative.py deviations so that a
user can see how much published numbers depend on them (docs/design.md "Unlearning losses"); they are named as such and
never used unless a run asks for ``loss_form="muse"``.
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


def simnpo_loss(logits: torch.Tensor, labels: torch.Tensor, beta: float = 2.5, gamma: float = 0.0) -> torch.Tensor:
    """SimNPO: L = -(2/beta) * mean_i log sigmoid(-(beta/|x_i|) * log p_theta(x_i) - gamma).

    Reference-free and length-normalized NPO with reward margin ``gamma``; ``|x_i|`` is the number of scored tokens
    of sequence i. Raises ValueError if beta <= 0.
    """
    if beta <= 0:
        raise ValueError(f"SimNPO beta must be > 0, got {beta}")
    logp, mask = token_logprobs(logits, labels)
    mean_logp = logp.sum(-1) / mask.sum(-1).clamp(min=1)
    return -(2.0 / beta) * F.logsigmoid(-beta * mean_logp - gamma).mean()


def rmu_forget_loss(hidden: torch.Tensor, mask: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """RMU forget term: mean squared distance of the steered layer's activations on D_f from ``control`` = c * u.

    ``hidden`` [B, T, d] float32, ``mask`` [B, T] (1 = real token), ``control`` [d]. The mean runs over real tokens
    and the d features (torch's mse_loss over the unpadded activations, as the reference implementation).
    """
    diff = ((hidden.float() - control) ** 2).mean(-1)
    return (diff * mask).sum() / mask.sum().clamp(min=1)


def rmu_retain_loss(hidden: torch.Tensor, mask: torch.Tensor, ref_hidden: torch.Tensor) -> torch.Tensor:
    """RMU retain term: mean squared distance of the steered layer's activations on D_r from the target's.

    Shapes as :func:`rmu_forget_loss`; ``ref_hidden`` [B, T, d] is the target's, without gradient.
    """
    diff = ((hidden.float() - ref_hidden.detach().float()) ** 2).mean(-1)
    return (diff * mask).sum() / mask.sum().clamp(min=1)


def npo_loss_muse(logits: torch.Tensor, labels: torch.Tensor, ref_logits: torch.Tensor,
                  beta: float = 0.1) -> torch.Tensor:
    """Reference form of NPO from muse_bench's iterative.py (a known deviation from the paper, docs/design.md).

    ``neg_log_ratio = ref_logits - logits`` on the *raw logits*, and ``-(2/beta) * mean log sigmoid(beta *
    neg_log_ratio)`` averaged over every vocabulary entry of every scored position (here: positions that predict a
    scored token; muse_bench's fixed-length chunks have no padding). Raises ValueError if beta <= 0.
    """
    if beta <= 0:
        raise ValueError(f"NPO beta must be > 0, got {beta}")
    logits, shifted = _shift(logits, labels)
    ref = ref_logits[:, :-1, :].detach()
    mask = (shifted != -100).float().unsqueeze(-1)
    per_entry = F.logsigmoid(beta * (ref.float() - logits.float()))
    return -(2.0 / beta) * (per_entry * mask).sum() / (mask.sum() * logits.shape[-1]).clamp(min=1)


def klr_loss_muse(logits: torch.Tensor, labels: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Reference form of KLR from muse_bench's iterative.py: ``kl_div(logits, ref_logits, reduction="batchmean",
    log_target=True)`` on the *raw logits* (a known deviation: raw logits are not log-probabilities).

    That is sum over scored positions and vocabulary of exp(ref) * (ref - logits), divided by the batch size B.
    """
    logits, shifted = _shift(logits, labels)
    ref = ref_logits[:, :-1, :].detach().float()
    mask = (shifted != -100).float().unsqueeze(-1)
    entries = torch.exp(ref) * (ref - logits.float())
    return (entries * mask).sum() / logits.shape[0]


# The regularizers by their docs/design.md names, with whether the reference (target) model's logits are needed. The
# forget terms belong to the methods (qru/unlearn/methods/), which compose the functions above.
REGULARIZERS = {"none": (None, False), "gdr": (gdr_loss, False), "klr": (klr_loss, True)}
