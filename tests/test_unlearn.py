import pytest
import torch

from qru.config import UnlearnConfig
from qru.unlearn.trainer import UnlearnError, forget_nll, total_steps, unlearn


def _docs(corpus):
    return corpus.raw["forget"], corpus.train_documents("retrain")


@pytest.mark.parametrize("method, regularizer", [("ga", "gdr"), ("npo", "klr")])
def test_full_fine_tuning_raises_forget_nll_and_leaves_target_alone(micro_models, micro_corpus, method, regularizer):
    forget, retain = _docs(micro_corpus)
    target = micro_models.target
    before = {k: v.clone() for k, v in target.state_dict().items()}
    cfg = UnlearnConfig(method=method, regularizer=regularizer, adapter="full", lr=1e-3, epochs=2, batch_size=4)
    result = unlearn(target, micro_models.tokenizer, forget, retain, cfg, max_len=256, seed=0)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    assert len(result.history) == total_steps(len(forget), cfg) and result.adapter_state is None
    tok = micro_models.tokenizer
    assert forget_nll(result.model, tok, forget, 256) > forget_nll(target, tok, forget, 256) + 0.05


def test_lora_is_merged_and_touches_only_linear_weights(micro_models, micro_corpus):
    forget, retain = _docs(micro_corpus)
    cfg = UnlearnConfig(method="npo", regularizer="gdr", adapter="lora", lora_r=4, lora_alpha=8, lr=3e-3, epochs=1)
    result = unlearn(micro_models.target, micro_models.tokenizer, forget, retain, cfg, max_len=256, seed=0)
    assert result.adapter_state and all("lora_" in k for k in result.adapter_state)
    assert type(result.model).__name__ == "LlamaForCausalLM"  # peft wrapper is gone after merge_and_unload
    t, u = micro_models.target.state_dict(), result.model.state_dict()
    assert set(t) == set(u)
    assert torch.equal(t["model.embed_tokens.weight"], u["model.embed_tokens.weight"])
    assert not torch.equal(t["model.layers.0.mlp.down_proj.weight"], u["model.layers.0.mlp.down_proj.weight"])


def test_same_seed_same_result(micro_models, micro_corpus):
    forget, retain = _docs(micro_corpus)
    cfg = UnlearnConfig(method="ga", regularizer="none", lr=1e-3, epochs=1, batch_size=4)
    a = unlearn(micro_models.target, micro_models.tokenizer, forget, retain, cfg, 256, seed=3)
    b = unlearn(micro_models.target, micro_models.tokenizer, forget, retain, cfg, 256, seed=3)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_missing_data_is_a_clear_error(micro_models):
    with pytest.raises(UnlearnError, match="forget"):
        unlearn(micro_models.target, micro_models.tokenizer, [], ["x"], UnlearnConfig(), 256)
    with pytest.raises(UnlearnError, match="gdr"):
        unlearn(micro_models.target, micro_models.tokenizer, ["x"], [], UnlearnConfig(regularizer="gdr"), 256)
