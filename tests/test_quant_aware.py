"""Quantization-aware unlearning (issue 21 item 1, `--quant-aware`): the quantized forward equals the fake-quantized
model's forward exactly, its gradient is the gradient at Q(W) passed straight through (full fine-tuning and LoRA's
chain rule through W0 + scale B A), runs, the mix weight, the option's round trip and refusals."""
import copy

import pytest
import torch
from peft import get_peft_model

from qru.cli import configs_for
from qru.command_line import command
from qru.config import ConfigError
from qru.models import pad_batch, encode_documents
from qru.quant.bnb import quantizable_linears
from qru.quant.spec import quantizer_from_key
from qru.recipes import unlearn_config
from qru.store import run_id_of
from qru.unlearn.losses import nll
from qru.unlearn.quant_aware import quantized_forward
from qru.unlearn.trainer import lora_config, unlearn


def _batch(micro_models, micro_corpus):
    docs = micro_corpus.raw["forget"][:3]
    return pad_batch(encode_documents(micro_models.tokenizer, docs, 64), micro_models.tokenizer.pad_token_id)


def _loss(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits, nll(logits, batch["labels"])


@pytest.mark.parametrize("key", ["nf4-b64@4", "fp4-b64@4", "int8@8", "rtn-asym-g32@3"])
def test_full_forward_and_gradient_are_those_at_q_of_w(micro_models, micro_corpus, key):
    quantizer = quantizer_from_key(key)
    batch = _batch(micro_models, micro_corpus)
    policy = copy.deepcopy(micro_models.target).float()
    fake = quantizer.fake_quantize(policy)
    with quantized_forward(policy, quantizer) as switched:
        logits, loss = _loss(policy, batch)
    assert switched == len(quantizable_linears(policy)) > 0
    fake_logits, fake_loss = _loss(fake, batch)
    assert torch.equal(logits, fake_logits)  # the forward is the fake-quantized model's, bit for bit
    loss.backward(), fake_loss.backward()
    names = quantizable_linears(policy)
    fake_modules = quantizable_linears(fake)
    for name, module in names.items():
        assert torch.equal(module.weight.grad, fake_modules[name].weight.grad), name  # straight through
    for (name, p), (_, q) in zip(policy.named_parameters(), fake.named_parameters()):
        if not any(name.startswith(n + ".") for n in names):  # embeddings, norms: no quantizer in the way
            assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), name
    logits_after, _ = _loss(policy, batch)  # leaving the block gives back the float forward
    assert not torch.equal(logits_after, logits)


def test_lora_forward_is_q_of_the_merged_weight_and_gradients_follow_the_chain_rule(micro_models, micro_corpus):
    quantizer = quantizer_from_key("nf4-b64@4")
    batch = _batch(micro_models, micro_corpus)
    config = unlearn_config("npo", adapter="lora", lora_r=4, lora_alpha=8)
    torch.manual_seed(0)
    policy = get_peft_model(copy.deepcopy(micro_models.target).float(), lora_config(config)).eval()
    with torch.no_grad():  # B starts at zero; give the adapters a real delta
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    merged = copy.deepcopy(policy).merge_and_unload()
    fake = quantizer.fake_quantize(merged)
    for p in fake.parameters():
        p.requires_grad_(True)
    with quantized_forward(policy, quantizer):
        logits, loss = _loss(policy, batch)
    fake_logits, fake_loss = _loss(fake, batch)
    assert torch.equal(logits, fake_logits)
    loss.backward(), fake_loss.backward()
    fake_modules = dict(fake.named_modules())
    checked = 0
    for name, module in policy.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            g = fake_modules[name.removeprefix("base_model.model.")].weight.grad  # dL/dQ(W), straight through
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            s = module.scaling["default"]
            assert torch.allclose(b.grad, s * g @ a.detach().T, rtol=1e-4, atol=1e-7), name
            assert torch.allclose(a.grad, s * b.detach().T @ g, rtol=1e-4, atol=1e-7), name
            checked += 1
    assert checked == len(quantizable_linears(merged))


def test_gguf_leaves_rows_it_cannot_block_in_float(micro_models, micro_corpus):
    quantizer = quantizer_from_key("gguf-q4_0")
    policy = copy.deepcopy(micro_models.target).float()
    expected = sum(quantizer.quantizes(tuple(m.weight.shape)) for m in quantizable_linears(policy).values())
    with quantized_forward(policy, quantizer) as switched:
        logits, _ = _loss(policy, _batch(micro_models, micro_corpus))
    assert switched == expected
    assert torch.equal(logits, _loss(quantizer.fake_quantize(policy), _batch(micro_models, micro_corpus))[0])


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_quant_aware_runs_differ_from_plain_and_log_both_losses(micro_models, micro_corpus, adapter):
    forget, retain = micro_corpus.raw["forget"][:4], micro_corpus.raw["retain1"][:4]
    results = {}
    for qa, mix in (("", 1.0), ("nf4-b64@4", 1.0), ("nf4-b64@4", 0.5)):
        config = unlearn_config("ga", adapter=adapter, lr=1e-3, epochs=1, max_steps=2, quant_aware=qa,
                                quant_aware_mix=mix)
        results[qa, mix] = unlearn(micro_models.target, micro_models.tokenizer, forget, retain, config, 64, seed=0)
    plain, qa, half = results["", 1.0], results["nf4-b64@4", 1.0], results["nf4-b64@4", 0.5]
    first = qa.history[0]
    assert "forget_loss_float" not in first and first["forget_loss"] == first["forget_loss_quantized"]
    assert first["forget_loss"] != pytest.approx(plain.history[0]["forget_loss"], rel=1e-6)  # taken at Q(W)
    h = half.history[0]
    assert h["forget_loss_float"] == pytest.approx(plain.history[0]["forget_loss"], rel=1e-6)
    assert h["forget_loss"] == pytest.approx(0.5 * h["forget_loss_quantized"] + 0.5 * h["forget_loss_float"],
                                             rel=1e-6)
    moved = [(a - b).abs().max() for a, b in zip(qa.model.parameters(), plain.model.parameters())]
    assert max(float(m) for m in moved) > 0
    assert all("forget_loss_quantized" not in r for r in plain.history)


def test_quant_aware_option_round_trip_label_and_refusals():
    argv = ["run", "--scale", "micro", "--method", "npo", "--adapter", "lora", "--quant-aware", "nf4-b64@4",
            "--quant-aware-mix", "0.5"]
    (config,) = configs_for(argv)
    assert config.unlearn.quant_aware == "nf4-b64@4" and config.unlearn.quant_aware_mix == 0.5
    assert "QA nf4-b64@4 mix 0.5" in config.label
    shown = " ".join(command(config))
    assert "--quant-aware nf4-b64@4 --quant-aware-mix 0.5" in shown
    (again,) = configs_for(command(config))
    assert run_id_of(again) == run_id_of(config)
    (plain,) = configs_for(argv[:-4])
    assert run_id_of(plain) != run_id_of(config) and "QA" not in plain.label
    assert "quant-aware" not in " ".join(command(plain))
    assert "trains through nf4-b64@4, but the run is evaluated with int8@8, fp4-b64@4" in config.quant_aware_note
    (matched,) = configs_for(argv + ["--quant-type", "nf4"])
    assert matched.quant_aware_note == "" and plain.quant_aware_note == ""
    for bad, match in ((["--quant-aware", "gptq-asym-g128@4"], "GPTQ"), (["--quant-aware", "none@32"], "below 32"),
                       (["--quant-aware", "nf5"], "not a quantizer key"),
                       (["--quant-aware", "nf4-b64@4", "--quant-aware-mix", "0"], r"\(0, 1\]"),
                       (["--quant-aware", "nf4-b64@4", "--quant-aware-mix", "1.5"], r"\(0, 1\]"),
                       (["--quant-aware-mix", "0.5"], "needs --quant-aware")):
        with pytest.raises(ConfigError, match=match):
            configs_for(["run", "--scale", "micro", *bad])


def test_nested_blocks_and_existing_instance_forwards_are_restored(micro_models):
    quantizer = quantizer_from_key("nf4-b64@4")
    policy = copy.deepcopy(micro_models.target).float()
    first = next(iter(quantizable_linears(policy).values()))
    hook = first.forward  # a bound method, stored as an instance attribute as hooks do
    first.forward = hook
    with quantized_forward(policy, quantizer):
        with quantized_forward(policy, quantizer):
            pass
        assert first.__dict__["forward"] is not hook
    assert first.__dict__["forward"] is hook
    del first.forward
    assert all("forward" not in m.__dict__ for m in quantizable_linears(policy).values())


def test_sam_with_quant_aware_logs_the_parts_at_w(micro_models, micro_corpus):
    forget, retain = micro_corpus.raw["forget"][:4], micro_corpus.raw["retain1"][:4]
    config = unlearn_config("ga", adapter="full", lr=1e-3, epochs=1, max_steps=1, quant_aware="nf4-b64@4",
                            sam_rho=0.05)
    first = unlearn(micro_models.target, micro_models.tokenizer, forget, retain, config, 64, seed=0).history[0]
    assert first["forget_loss"] == first["forget_loss_quantized"] != first["forget_loss_at_sam_point"]
