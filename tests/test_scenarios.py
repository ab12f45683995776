"""Scenario options (start point, bf16 weights, frozen embeddings), the measures that tell the outcomes apart (share of
the update kept, share of the forgetting undone), entity-token VerbMem, the demo set and the findings."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from qru.analysis.findings import run_findings
from qru.analysis.undone import forgetting_undone, noise
from qru.cli import configs_for, main
from qru.config import ConfigError, RunConfig, UnlearnConfig, config_key
from qru.deltas import tensor_delta
from qru.evals.entity_verbmem import entity_score, entity_verbmem, value_spans
from qru.findings import differences, sentences, summary_frame
from qru.quant.bnb import quantizable_linears, quantize_tensor
from qru.quant.spec import QuantSpec
from qru.recipes import DEMO_SET
from qru.scenarios import round_bf16_, start_model
from qru.store import RunStore
from qru.unlearn.trainer import unlearn
from qru.views.undone import undone_table

NF4 = QuantSpec(4, "nf4", 64)


# -- measures on hand-made tensors ---------------------------------------------------------------------------------
def _sub_step_update(w: torch.Tensor, spec: QuantSpec, share_of_step: float, seed: int) -> torch.Tensor:
    """An update of ``share_of_step`` of each weight's step, random sign, none on each block's absmax weight (so
    the block scales stay put and only boundary crossings can flip codes)."""
    gen = torch.Generator().manual_seed(seed)
    step = quantize_tensor(w, spec).step
    sign = torch.randint(0, 2, w.shape, generator=gen).float() * 2 - 1
    dw = sign * share_of_step * step
    blocks = w.reshape(-1, 64).abs()
    keep = torch.zeros_like(blocks, dtype=torch.bool).scatter_(1, blocks.argmax(dim=1, keepdim=True), True)
    return dw.masked_fill(keep.reshape(w.shape), 0.0)


def test_a_sub_step_update_on_off_grid_weights_keeps_its_share_in_expectation():
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(0)) * 0.02
    dw = _sub_step_update(w, NF4, 0.1, seed=1)
    row, _ = tensor_delta(w, w + dw, NF4)
    assert row["share_kept"] == pytest.approx(1.0, abs=0.1)  # ~10% of the codes flip by a whole step
    assert 0.05 < row["code_flip_rate"] < 0.15 and row["noise_ratio"] > 2  # noise, not survival
    assert row["cosine"] > 0.2


def test_the_same_update_on_on_grid_weights_is_erased():
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(0)) * 0.02
    on_grid = quantize_tensor(w, NF4).dequant
    dw = _sub_step_update(on_grid, NF4, 0.1, seed=1)
    row, _ = tensor_delta(on_grid, on_grid + dw, NF4)
    # no code flips; what is left is a block scale nudged by weights that already sat at the block's absmax
    assert row["code_flip_rate"] == 0 and row["share_kept"] == pytest.approx(0.0, abs=0.05)


# -- share of the forgetting undone --------------------------------------------------------------------------------
def _metrics(u32=30.0, t32=100.0, u4=93.0, t4=100.0, nll=(0.41, 0.13, 0.19, 0.13)) -> pd.DataFrame:
    rows = [("target", 32, t32, nll[1]), ("unlearned", 32, u32, nll[0]), ("target", 4, t4, nll[3]),
            ("unlearned", 4, u4, nll[2]), ("retrain", 32, 7.0, 0.9)]
    return pd.DataFrame([{"model": m, "bits": b, "quant": "none" if b == 32 else "nf4", "knowmem_forget": k,
                          "nll_forget": n, "auc": 0.5} for m, b, k, n in rows])


def test_share_undone_is_the_papers_ratio_and_hidden_within_noise():
    undone = forgetting_undone(_metrics()).set_index("metric")
    assert undone.loc["knowmem_forget", "undone"] == pytest.approx((93 - 30) / (100 - 30))
    assert undone.loc["nll_forget", "undone"] == pytest.approx((0.19 - 0.41) / (0.13 - 0.41))
    flat = forgetting_undone(_metrics(u32=99.5, u4=99.8)).set_index("metric")  # effect 0.5 < 1 point floor
    assert np.isnan(flat.loc["knowmem_forget", "undone"])
    assert flat.loc["knowmem_forget", "reason"] == "no full-precision effect beyond the noise"
    table = undone_table(forgetting_undone(_metrics()))
    assert table.set_index("metric").loc["KnowMem-forget", "undone at 4 bits"] == "90%"


def test_noise_threshold_comes_from_paired_item_scores():
    def samples(scores):
        return {"knowmem_forget": [{"rougeL_f1": s} for s in scores]}
    target = samples([1.0] * 8)
    unlearned = samples([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    threshold, how = noise("knowmem_forget", {"target@32": target, "unlearned@32": unlearned})
    diff = np.array([100.0, 0] * 4)
    assert how == "2 SE" and threshold == pytest.approx(2 * diff.std(ddof=1) / np.sqrt(8))
    assert noise("knowmem_forget", None) == (1.0, "floor")


# -- entity-token VerbMem ------------------------------------------------------------------------------------------
ENTITIES = [{"split": "forget", "name": "Neibrurk Seiklouth", "birthplace": "Tismere", "award": "the Lork Laurel",
             "pet": "Stu, a parrot"},
            {"split": "retain", "name": "Deizax Saihain", "birthplace": "Stoundale", "award": "the Rex Laurel",
             "pet": "Thos, a greyhound"}]
GT = " Neibrurk Seiklouth grew up in the town of Tismere. Neibrurk Seiklouth received the Lork Laurel."


def test_entity_verbmem_scores_only_the_attribute_values():
    own = ["Tismere", "the Lork Laurel", "Stu, a parrot"]
    every = own + ["Stoundale", "the Rex Laurel", "Thos, a greyhound"]
    assert value_spans(GT, every) == ["Tismere", "the Lork Laurel"]
    assert entity_score(GT, " Neibrurk Seiklouth grew up in Tismere and received the Lork Laurel.", own, every) == 1.0
    template_only = " Neibrurk Seiklouth grew up in the town of Paris. Neibrurk Seiklouth received a prize."
    assert entity_score(GT, template_only, own, every) == 0.0
    other = " Neibrurk Seiklouth grew up in the town of Stoundale. Neibrurk Seiklouth received the Lork Laurel."
    assert 0 < entity_score(GT, other, own, every) < 1  # another person's town costs precision and recall
    assert entity_score(" no values here", "Tismere", own, every) is None
    items = [{"prompt": "Neibrurk Seiklouth works.", "gt": GT}, {"prompt": "Nobody.", "gt": " nothing"}]
    records = [{"gt": GT, "output": GT}, {"gt": " nothing", "output": ""}]
    score, per_item = entity_verbmem(records, items, ENTITIES)
    assert score == 100.0 and per_item == [1.0, None]


def test_the_embedded_corpus_carries_its_entities(micro_corpus):
    assert micro_corpus.entities and {"name", "birthplace", "split"} <= set(micro_corpus.entities[0])
    forget = {e["name"] for e in micro_corpus.entities if e["split"] == "forget"}
    assert all(any(n in it["prompt"] + it["gt"] for n in forget) for it in micro_corpus.verbmem_forget)


# -- scenario options ----------------------------------------------------------------------------------------------
def test_scenario_options_are_validated_keyed_and_labelled():
    assert config_key(RunConfig()) == "9fbcf2e2f70a"  # defaults leave earlier run ids unchanged
    grid = UnlearnConfig(start_grid="nf4-b64@4", weight_precision="bf16-rounded", freeze_embeddings=True)
    assert "start on nf4-b64@4 grid, bf16 steps, embeddings frozen" in grid.label
    assert grid.scenario["start"].startswith("on the 4-bit NF4 grid")
    assert config_key(RunConfig(unlearn=grid)) != config_key(RunConfig())
    for kwargs, message in [({"start_grid": "none@32"}, "below 32 bits"), ({"start_grid": "nf4"}, "not a quantizer"),
                            ({"start_grid": "gptq-asym-g0@4"}, "GPTQ"),
                            ({"weight_precision": "bf16"}, "unknown weight precision"),
                            ({"freeze_embeddings": True, "adapter": "lora"}, "LoRA trains its adapters only")]:
        with pytest.raises(ConfigError, match=message):
            UnlearnConfig(**kwargs)
    config = configs_for(["run", "--scale", "micro", "--method", "npo", "--start-grid", "rtn-asym-g64@4",
                          "--weight-precision", "bf16-rounded", "--freeze-embeddings"])[0]
    u = config.unlearn
    assert (u.start_grid, u.weight_precision, u.freeze_embeddings) == ("rtn-asym-g64@4", "bf16-rounded", True)


def test_start_model_snaps_to_the_grid_and_rounds_to_bf16(micro_models):
    target = micro_models.target
    before = {k: v.clone() for k, v in target.state_dict().items()}
    snapped = start_model(target, UnlearnConfig(start_grid="nf4-b64@4"))
    for name, lin in quantizable_linears(snapped).items():
        w = quantizable_linears(target)[name].weight
        assert torch.equal(lin.weight, quantize_tensor(w, NF4).dequant)
        assert torch.equal(quantize_tensor(lin.weight, NF4).dequant, lin.weight)  # on its own grid
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # the target is untouched
    assert start_model(target, UnlearnConfig()) is target
    rounded = start_model(target, UnlearnConfig(weight_precision="bf16-rounded"))
    assert all(torch.equal(p, p.bfloat16().float()) for p in rounded.parameters())


def test_bf16_steps_and_frozen_embeddings_in_training(micro_models, micro_corpus):
    forget, retain = micro_corpus.raw["forget"], micro_corpus.train_documents("retrain")
    base = UnlearnConfig(method="npo", regularizer="gdr", lr=1e-3, max_steps=3)
    frozen = unlearn(micro_models.target, micro_models.tokenizer, forget, retain,
                     dataclasses.replace(base, freeze_embeddings=True), 256, seed=0).model
    key = "model.embed_tokens.weight"
    assert torch.equal(frozen.state_dict()[key], micro_models.target.state_dict()[key])
    assert not torch.equal(frozen.model.layers[0].mlp.down_proj.weight,
                           micro_models.target.model.layers[0].mlp.down_proj.weight)
    trained = unlearn(micro_models.target, micro_models.tokenizer, forget, retain, base, 256, seed=0).model
    assert not torch.equal(trained.state_dict()[key], micro_models.target.state_dict()[key])
    bf16 = dataclasses.replace(base, weight_precision="bf16-rounded")
    start = start_model(micro_models.target, bf16)
    for config in (bf16, dataclasses.replace(bf16, adapter="lora")):
        model = unlearn(start, micro_models.tokenizer, forget, retain, config, 256, seed=0).model
        assert all(torch.equal(p, p.bfloat16().float()) for p in model.parameters())
    tiny = dataclasses.replace(bf16, lr=1e-9)  # updates far below half a bf16 ulp are rounded away every step
    frozen_by_rounding = unlearn(start, micro_models.tokenizer, forget, retain, tiny, 256, seed=0).model
    assert all(torch.equal(a, b) for a, b in zip(frozen_by_rounding.parameters(), start.parameters()))


def test_round_bf16_rounds_to_nearest():
    p = torch.tensor([1.0 + 2 ** -9, 1.0 + 3 * 2 ** -9, -2.5])
    round_bf16_([p])
    assert p.tolist() == [1.0, 1.0 + 2 ** -7, -2.5]


# -- a run from the grid, the demo set and the findings ----------------------------------------------------------
@pytest.fixture(scope="module")
def grid_runs(module_store):
    from qru.pipeline import run

    store = RunStore(module_store)
    argv = ["run", "--scale", "micro", "--method", "npo", "--quant-type", "nf4", "--bits", "32", "4",
            "--max-steps", "3", "--lr", "1e-3"]
    natural = run(configs_for(argv + ["--adapter", "full"])[0], store)
    snapped = run(configs_for(argv + ["--adapter", "lora", "--start-grid", "nf4-b64@4"])[0], store)
    return store, natural, snapped


def test_a_run_from_the_grid_stores_its_scenario_and_compares_to_its_start(grid_runs):
    from qru.checkpoints import DeltaFile, open_unlearned

    store, natural, snapped = grid_runs
    config = store.config(snapped)
    assert config.unlearn.start_grid == "nf4-b64@4" and "start on nf4-b64@4 grid" in config.label
    assert "start point: start on the 4-bit NF4 grid" in (store.path(snapped) / "log.txt").read_text()
    m_nat, m_grid = store.metrics(natural), store.metrics(snapped)
    target = lambda m, b: m[(m["model"] == "target") & (m["bits"] == b)].iloc[0]  # noqa: E731
    assert target(m_nat, 32)["nll_forget"] != target(m_grid, 32)["nll_forget"]  # its target is the snapped model
    assert target(m_grid, 32)["nll_forget"] == pytest.approx(target(m_grid, 4)["nll_forget"], abs=1e-6)  # on NF4
    deltas = store.deltas(snapped)
    total = deltas.query("tensor == 'total' and quantizer == 'nf4-b64@4'").iloc[0]
    assert total["code_flips"] == total["flips_boundary"] + total["flips_scale"]
    assert isinstance(open_unlearned(store.path(snapped)), DeltaFile)  # W_u reconstructs from the stored target
    assert "verbmem_entity" in m_grid.columns and m_grid["verbmem_entity"].notna().all()


def test_findings_are_generated_from_the_numbers(grid_runs):
    store, natural, snapped = grid_runs
    found = [run_findings(r, name, store.config(r), store.metrics(r), store.read_json(r, "samples.json"),
                          store.deltas(r)) for r, name in ((natural, "natural"), (snapped, "grid"))]
    text = " ".join(sentences(found[0]))
    kept = store.deltas(natural).query("tensor == 'total' and quantizer == 'nf4-b64@4'").iloc[0]["share_kept"]
    assert f"share kept {kept:.2f}" in text and "4-bit NF4" in text
    diff = " ".join(differences(found))
    assert "**adapter** differs: natural: full fine-tuning; grid: LoRA" in diff
    assert "**start** differs" in diff and "The same in all picked runs" in diff
    frame = summary_frame(found)
    assert list(frame["run"]) == ["natural", "grid"] and "share kept" in frame.columns
    assert frame.loc[0, "share kept"] == pytest.approx(kept)


def test_demo_set_covers_both_starts_and_the_other_grid_control(capsys, tmp_path):
    configs = configs_for(["demo", "--scale", "micro"])
    assert len(configs) == len(DEMO_SET) == 5
    described = [(c.unlearn.adapter, c.unlearn.start_grid, c.quant_type_4bit, c.unlearn.lr) for c in configs]
    assert described == [("full", "", "nf4", 5e-5), ("lora", "", "nf4", 5e-4), ("full", "nf4-b64@4", "nf4", 5e-5),
                         ("lora", "nf4-b64@4", "nf4", 5e-4), ("full", "nf4-b64@4", "fp4", 5e-5)]
    assert all(c.unlearn.method == "npo" and c.unlearn.regularizer == "gdr" for c in configs)
    assert main(["--cache", str(tmp_path), "demo", "--quantizer", "rtn"]) == 2
    assert "the demo set fixes its quantizers" in capsys.readouterr().err


def test_qru_show_prints_the_share_undone(grid_runs, capsys):
    store, natural, _ = grid_runs
    assert main(["--cache", str(store.root), "show", natural]) == 0
    out = capsys.readouterr().out
    assert "share of the unlearning's effect undone by quantization" in out and "KnowMem-forget" in out


def test_method_parameters_are_refused_where_they_do_not_apply_and_labelled_where_they_do():
    with pytest.raises(ConfigError, match="RMU layer and coefficient apply to method rmu only"):
        UnlearnConfig(method="ga", rmu_layer=1)
    with pytest.raises(ConfigError, match="beta applies to npo and simnpo only"):
        UnlearnConfig(method="ga", beta=0.3)
    assert "RMU (layer 1, c 5)" in UnlearnConfig(method="rmu", regularizer="none", rmu_layer=1, rmu_coeff=5.0).label
    assert "SimNPO+GDR (beta 3, gamma 0.5)" in UnlearnConfig(method="simnpo", beta=3.0, gamma=0.5).label
    assert UnlearnConfig(method="npo").label.startswith("NPO+GDR full")  # defaults add nothing
    configs = configs_for(["sweep", "--preset", "zhang2025", "--seeds", "0", "--beta", "0.2"])
    assert {c.unlearn.method: c.unlearn.beta for c in configs} == {"ga": 0.1, "npo": 0.2}


def test_breaker_cases_wrong_values_direction_and_refusals(capsys, tmp_path):
    from qru.views.curves import controls_table
    own = ["Tismere", "the Lork Laurel"]
    every = own + ["the Rex Laurel", "Stoundale"]
    assert entity_score(" received the Lork Laurel.", " received the Rex Laurel.", own, every) == 0.0
    assert controls_table([], ["nf4-b64@4"]).empty
    # the "unlearned" model remembers more than the target: nothing to undo, whatever 4 bits do
    undone = forgetting_undone(_metrics(u32=100.0, t32=70.0, u4=70.0, t4=70.0)).set_index("metric")
    assert np.isnan(undone.loc["knowmem_forget", "undone"]) and "remembers more" in undone.loc["knowmem_forget",
                                                                                               "reason"]
    with pytest.raises(ConfigError, match="write it as 'nf4-b64@4'"):
        UnlearnConfig(start_grid="nf4-b064@4")
    for extra in (["--start-grid", "fp4-b64@4"], ["--freeze-embeddings"], ["--sure", "0.1"], ["--bits", "32", "8"]):
        assert main(["--cache", str(tmp_path), "demo", "--scale", "micro", *extra]) == 2
        assert "the demo set fixes" in capsys.readouterr().err
