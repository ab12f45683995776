"""GPTQ through llm-compressor: weights on its grid, steps from its scales, refused where it cannot run, a whole run."""
from __future__ import annotations

import pytest
import torch

from qru.cli import configs_for
from qru.config import ConfigError
from qru.quant.bnb import quantizable_linears, quantize_tensor
from qru.quant.gptq import gptq_quantize
from qru.quant.spec import QuantSpec, quantizer_set


@pytest.fixture(scope="module")
def gptq_result(micro_models, micro_corpus):
    spec = QuantSpec(4, "gptq-asym", group_size=32)
    before = {k: v.clone() for k, v in micro_models.target.state_dict().items()}
    model, tensors = gptq_quantize(micro_models.target, micro_models.tokenizer,
                                   micro_corpus.train_documents("retrain"), spec, 256)
    return spec, before, model, tensors


def test_gptq_weights_sit_on_their_grid_and_the_input_is_unchanged(gptq_result, micro_models):
    spec, before, model, tensors = gptq_result
    after = micro_models.target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the target itself is untouched
    assert set(tensors) == set(quantizable_linears(micro_models.target))
    for name, q in tensors.items():
        assert torch.equal(model.get_submodule(name).weight, q.dequant)
        assert q.codes.min() >= -8 and q.codes.max() <= 7 and (q.step > 0).all()
        # dequant = (code - zero point) * step, per group of 32 inputs
        zero = (q.dequant / q.step - q.codes).round()
        assert torch.allclose((q.codes + zero) * q.step, q.dequant, atol=1e-5)
        assert torch.equal(q.grid_codes(q.dequant), q.codes)
        assert (q.boundary >= 0).all() and (q.boundary <= q.step / 2 + 1e-6).all()


def test_gptq_is_calibrated_not_round_to_nearest(gptq_result, micro_models):
    spec, before, model, tensors = gptq_result
    name = next(iter(tensors))
    rtn = quantize_tensor(before[name + ".weight"], QuantSpec(4, "rtn-asym", group_size=32))
    assert not torch.equal(rtn.dequant, tensors[name].dequant)  # GPTQ moved weights to compensate rounding errors


def test_gptq_group_size_must_divide_every_layer(micro_models, micro_corpus):
    with pytest.raises(ValueError, match="group size 128 does not divide"):
        gptq_quantize(micro_models.target, micro_models.tokenizer, micro_corpus.train_documents("retrain"),
                      QuantSpec(4, "gptq-sym", group_size=128), 256)


def test_gptq_is_refused_between_checkpoints():
    with pytest.raises(ConfigError, match="GPTQ needs the model's activations"):
        quantizer_set(["gptq-asym-g0@4"])


def test_gptq_cli_defaults_and_a_whole_run(micro_cache, micro_models):
    from qru.pipeline import run
    from qru.store import RunStore

    config = configs_for(["run", "--scale", "micro", "--method", "npo", "--quantizer", "gptq", "--bits", "32", "4",
                          "--max-steps", "3", "--lr", "1e-3"])[0]
    assert config.quant_specs()[1].key == "gptq-asym-g0@4" and "GPTQ asym per-channel" in config.label
    store = RunStore(micro_cache)
    run_id = run(config, store)
    metrics = store.metrics(run_id)
    assert set(metrics["quant"]) == {"none", "gptq-asym"}
    total = store.deltas(run_id).query("tensor == 'total' and quantizer == 'gptq-asym-g0@4'").iloc[0]
    assert 0 < total["code_flip_rate"] < 1 and -1 < total["share_kept"] < 2 and total["median_step"] > 0
    with pytest.raises(ConfigError, match="--group-size and --symmetric apply"):
        configs_for(["run", "--scale", "micro", "--group-size", "32"])
