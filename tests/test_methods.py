"""SimNPO, RMU, SURE and the reference (muse_bench) loss forms: hand-computed values and their effect in training."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from qru.config import ConfigError, UnlearnConfig
from qru.unlearn.losses import (klr_loss, klr_loss_muse, npo_loss, npo_loss_muse, rmu_forget_loss, rmu_retain_loss,
                                simnpo_loss)
from qru.unlearn.trainer import unlearn


def _logits(*rows):
    """[1, T, V] logits from T rows of V values."""
    return torch.tensor([list(rows)], dtype=torch.float32)


def test_simnpo_matches_hand_computation():
    # T=3: positions 0, 1 predict tokens 1, 2 (labels [_, 0, 1]); V=2
    logits = _logits([0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0])
    labels = torch.tensor([[-100, 0, 1]])
    # log p(token 0 | pos 0) = log 1/2; log p(token 1 | pos 1) = log 1/4
    mean_logp = (math.log(0.5) + math.log(0.25)) / 2
    beta, gamma = 2.5, 0.3
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(-(-beta * mean_logp - gamma))))
    assert simnpo_loss(logits, labels, beta, gamma).item() == pytest.approx(expected, rel=1e-6)


def test_simnpo_is_length_normalized_and_reference_free():
    logits = _logits([0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    short, long = torch.tensor([[-100, 0, -100, -100]]), torch.tensor([[-100, 0, 1, 0]])
    assert simnpo_loss(logits, short).item() == pytest.approx(simnpo_loss(logits, long).item(), rel=1e-6)


def test_npo_reference_form_averages_logsigmoid_over_raw_logits():
    logits = _logits([1.0, -2.0], [0.5, 0.0])
    ref = _logits([0.0, 1.0], [2.0, -1.0])
    labels = torch.tensor([[-100, 1]])
    beta = 0.1
    # only position 0 predicts a scored token: its 2 vocabulary entries
    entries = [(0.0 - 1.0), (1.0 - -2.0)]
    expected = -(2 / beta) * sum(math.log(1 / (1 + math.exp(-beta * e))) for e in entries) / 2
    assert npo_loss_muse(logits, labels, ref, beta).item() == pytest.approx(expected, rel=1e-6)
    assert npo_loss_muse(logits, labels, ref, beta).item() != pytest.approx(npo_loss(logits, labels, ref, beta).item())


def test_klr_reference_form_is_kl_div_on_raw_logits():
    logits = _logits([1.0, -2.0], [0.5, 0.0])
    ref = _logits([0.0, 1.0], [2.0, -1.0])
    labels = torch.tensor([[-100, 1]])
    expected = sum(math.exp(r) * (r - q) for r, q in zip([0.0, 1.0], [1.0, -2.0]))  # batch of 1, position 0 only
    assert klr_loss_muse(logits, labels, ref).item() == pytest.approx(expected, rel=1e-6)
    faithful = F.kl_div(torch.log_softmax(logits[0, 0], -1), torch.log_softmax(ref[0, 0], -1), log_target=True,
                        reduction="sum").item()
    assert klr_loss(logits, labels, ref).item() == pytest.approx(faithful, rel=1e-6)
    assert klr_loss(logits, labels, ref).item() != pytest.approx(expected)  # raw logits are not log-probabilities
    assert klr_loss(logits, labels, logits).item() == pytest.approx(0.0, abs=1e-7)
    assert klr_loss_muse(logits, labels, logits + 5.0).item() != pytest.approx(0.0)  # shifting logits changes it


def test_rmu_terms_are_masked_mean_squared_distances():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third position is padding
    control = torch.tensor([1.0, 0.0])
    assert rmu_forget_loss(hidden, mask, control).item() == pytest.approx(((0 + 4) / 2 + (4 + 16) / 2) / 2)
    assert rmu_retain_loss(hidden, mask, hidden.clone()).item() == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "rmu", "regularizer": "gdr"}, "own retain term"),
    ({"sure_share": 0.1, "adapter": "lora"}, "full fine-tuning only"),
    ({"sure_share": 1.0}, "SURE share"),
    ({"gamma": 1.0}, "simnpo only"),
    ({"loss_form": "muse", "method": "ga", "regularizer": "gdr"}, "NPO and KLR only"),
    ({"loss_form": "raw"}, "unknown loss form"),
    ({"method": "rmu", "regularizer": "none", "rmu_layer": -2}, "RMU layer"),
])
def test_method_options_are_validated(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        UnlearnConfig(**kwargs)


def _changed_rows(before: dict, after: dict) -> dict[str, torch.Tensor]:
    rows = {}
    for name, w in before.items():
        diff = (after[name] != w)
        rows[name] = diff.reshape(w.shape[0], -1).any(dim=1) if w.dim() > 1 else diff
    return rows


def test_sure_updates_only_the_salient_rows(micro_models, micro_corpus):
    forget, retain = micro_corpus.raw["forget"], micro_corpus.train_documents("retrain")
    config = UnlearnConfig(method="npo", regularizer="gdr", lr=1e-3, epochs=2, sure_share=0.1)
    result = unlearn(micro_models.target, micro_models.tokenizer, forget, retain, config, 256, seed=0)
    before = {k: v for k, v in micro_models.target.state_dict().items()}
    changed = _changed_rows(before, result.model.state_dict())
    n_changed = sum(int(c.sum()) for c in changed.values())
    n_rows = sum(c.numel() for c in changed.values())
    assert 0 < n_changed <= math.ceil(0.1 * n_rows) + 1  # at most the mask's share; masked rows bit-identical
    plain = unlearn(micro_models.target, micro_models.tokenizer, forget, retain,
                    UnlearnConfig(method="npo", regularizer="gdr", lr=1e-3, epochs=2), 256, seed=0)
    assert sum(int(c.sum()) for c in _changed_rows(before, plain.model.state_dict()).values()) > 3 * n_changed


def test_rmu_leaves_layers_above_the_steered_one_unchanged(micro_models, micro_corpus):
    forget, retain = micro_corpus.raw["forget"], micro_corpus.train_documents("retrain")
    config = UnlearnConfig(method="rmu", regularizer="none", lr=1e-3, epochs=2, rmu_layer=1)
    result = unlearn(micro_models.target, micro_models.tokenizer, forget, retain, config, 256, seed=0)
    before, after = micro_models.target.state_dict(), result.model.state_dict()
    assert not torch.equal(before["model.layers.0.mlp.down_proj.weight"], after["model.layers.0.mlp.down_proj.weight"])
    assert torch.equal(before["model.layers.1.mlp.down_proj.weight"], after["model.layers.1.mlp.down_proj.weight"])
    assert result.history[-1]["forget_loss"] < result.history[0]["forget_loss"]


def test_simnpo_raises_the_forget_loss(micro_models, micro_corpus):
    from qru.unlearn.trainer import forget_nll
    forget, retain = micro_corpus.raw["forget"], micro_corpus.train_documents("retrain")
    config = UnlearnConfig(method="simnpo", regularizer="gdr", lr=1e-3, epochs=3, beta=2.5)
    result = unlearn(micro_models.target, micro_models.tokenizer, forget, retain, config, 256, seed=0)
    tok = micro_models.tokenizer
    assert forget_nll(result.model, tok, forget, 256) > forget_nll(micro_models.target, tok, forget, 256) + 0.2


def test_rmu_layer_beyond_the_model_is_refused(micro_models, micro_corpus):
    from qru.errors import UnlearnError
    config = UnlearnConfig(method="rmu", regularizer="none", rmu_layer=9)
    with pytest.raises(UnlearnError, match="RMU layer 9"):
        unlearn(micro_models.target, micro_models.tokenizer, micro_corpus.raw["forget"],
                micro_corpus.train_documents("retrain"), config, 256)


def test_a_diverging_loss_stops_the_run_with_one_clear_error(micro_models, micro_corpus):
    from qru.errors import UnlearnError
    config = UnlearnConfig(method="simnpo", regularizer="none", beta=1e-300, max_steps=2)  # 2/beta overflows
    with pytest.raises(UnlearnError, match="non-finite .* at step 1"):
        unlearn(micro_models.target, micro_models.tokenizer, micro_corpus.raw["forget"],
                micro_corpus.train_documents("retrain"), config, 256)
