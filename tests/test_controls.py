"""Noise controls (permuted per-block error, Gaussian with the block's error RMS), rebuilt run models, and a small
metric-vs-bit-width curve on the micro configuration."""
from __future__ import annotations

import pytest
import torch

from qru.cli import configs_for, main
from qru.controls import compute_controls, curve_specs, grid_position, load_run_models, read_controls
from qru.deltas import scan, weight_pairs
from qru.quant.bnb import quantize_tensor
from qru.quant.noise import block_ids, gaussian_error, noisy_model, permuted_error, perturbation
from qru.quant.spec import QuantSpec
from qru.store import RunStore
from qru.analysis.verdicts import curve_frame, undone_by_control, verdict
from qru.views.curves import curve_figure, grid_sentence, sentence

SPECS = [QuantSpec(4, "fp4", 64), QuantSpec(8, "int8"), QuantSpec(3, "rtn-asym", group_size=32),
         QuantSpec(4, "rtn-sym", group_size=0)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_permuted_error_is_the_blocks_own_error_multiset(spec):
    w = torch.randn(12, 100, generator=torch.Generator().manual_seed(0))  # 100: RTN g32 ends in a short group
    error = quantize_tensor(w, spec).dequant - w
    ids = block_ids(tuple(w.shape), spec)
    permuted = permuted_error(error, ids, torch.Generator().manual_seed(1))
    assert not torch.equal(permuted, error)
    for block in ids.unique():
        mask = ids == block
        assert torch.equal(torch.sort(permuted[mask]).values, torch.sort(error[mask]).values)
    sizes = torch.bincount(ids.flatten())
    expected = {"fp4": 64, "int8": 100, "rtn-asym": 32, "rtn-sym": 100}[spec.quant_type]
    assert int(sizes.max()) == expected


def test_gaussian_noise_has_the_blocks_error_rms():
    spec = QuantSpec(4, "rtn-sym", group_size=0)  # one block per row of 8192 weights
    w = torch.randn(6, 8192, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 7).unsqueeze(1)
    error = quantize_tensor(w, spec).dequant - w
    noise = gaussian_error(error, block_ids(tuple(w.shape), spec), torch.Generator().manual_seed(2))
    rms_error, rms_noise = error.pow(2).mean(1).sqrt(), noise.pow(2).mean(1).sqrt()
    assert torch.allclose(rms_noise, rms_error, rtol=0.05)
    assert abs(float(noise.mean())) < 0.05 * float(rms_error.mean())
    with pytest.raises(ValueError, match="unknown noise control"):
        perturbation(w, spec, "uniform", torch.Generator())
    with pytest.raises(ValueError, match="block by block"):
        block_ids((2, 2), QuantSpec())


def test_grid_position_tells_snapped_from_natural_weights(micro_models):
    from qru.quant.bnb import fake_quantize
    spec = QuantSpec(4, "nf4", 64)
    natural = grid_position(micro_models.target, spec)
    snapped = grid_position(fake_quantize(micro_models.target, spec), spec)
    assert snapped["share_on_grid"] == 1.0 and snapped["mean_offset_steps"] < 1e-6
    assert natural["share_on_grid"] < 0.1 and 0.15 < natural["mean_offset_steps"] < 0.35
    text = grid_sentence([{"control": "grid", "bits": 4, "label": "4-bit NF4", **snapped}])
    assert "sit on the grid of 4-bit NF4" in text


def test_gguf_q4_1_grid_position_of_hand_made_weights():
    """Weights built as d q + m per block of 32 (a dequantized Q4_1 file) sit on the Q4_1 grid; moved by a tenth of
    a step they sit near it; random weights sit spread inside their bins."""
    from qru.quant.gguf import gguf_grid_position, gguf_roundtrip
    from qru.analysis.grid import grid_reading
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (64, 128), generator=g).float()
    codes[:, ::32], codes[:, 1::32] = 0, 15  # every block spans its full range, as a Q4_1 file's blocks do
    d = (torch.rand(64 * 4, 1, generator=g) * 0.01 + 0.001).half().float()
    m = (-8 * d).half().float()
    on = (codes.reshape(-1, 32) * d + m).reshape(64, 128)
    dequant, step = gguf_roundtrip(on, "gguf-q4_1")
    assert torch.allclose(dequant, on, atol=1e-6) and torch.allclose(step, d.expand(-1, 32).reshape(64, 128))
    model = torch.nn.Sequential(torch.nn.Linear(128, 64, bias=False))
    positions = {}
    for name, weights in (("on", on), ("near", on + 0.1 * step * (torch.rand(64, 128, generator=g) - 0.5)),
                          ("spread", torch.randn(64, 128, generator=g) * 0.02)):
        with torch.no_grad():
            model[0].weight.copy_(weights)
        positions[name] = gguf_grid_position(model, "gguf-q4_1")
        assert positions[name]["measured"] == 64 * 128
    assert positions["on"]["share_on_grid"] > 0.99 and positions["on"]["mean_offset_steps"] < 1e-3
    assert positions["near"]["mean_offset_steps"] < 0.05 and positions["spread"]["mean_offset_steps"] > 0.2
    assert [grid_reading(positions[k]) for k in ("on", "near", "spread")] == ["on", "near", "not on"]
    with pytest.raises(ValueError, match="blocks of 32"):
        gguf_roundtrip(torch.zeros(4, 48), "gguf-q4_1")


def test_gguf_grid_as_a_curve_quantizer_and_its_noise():
    """A GGUF format quantizes (and perturbs) in blocks of 32 along a row: Q(W) of weights on its grid is W, the
    permuted control has each block's own error multiset, and rows not divisible by 32 are left alone."""
    from qru.quant.gguf import gguf_fake_quantize, gguf_roundtrip
    from qru.quant.spec import GGUFGrid
    g = torch.Generator().manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(64, 8, bias=False), torch.nn.Linear(8, 40, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(8, 64, generator=g))
    spec = GGUFGrid("gguf-q4_1")
    assert (spec.bits, spec.label.startswith("GGUF Q4_1"), spec.is_gptq) == (4, True, False)
    quantized = gguf_fake_quantize(model, "gguf-q4_1")
    assert torch.equal(quantized[1].weight, model[1].weight)  # in = 8: not a multiple of 32, unquantized
    assert torch.allclose(gguf_fake_quantize(quantized, "gguf-q4_1")[0].weight, quantized[0].weight, atol=1e-6)
    w = model[0].weight.detach()
    error = gguf_roundtrip(w, "gguf-q4_1")[0] - w
    noise = perturbation(w, spec, "permuted", torch.Generator().manual_seed(1))
    for block in range(w.numel() // 32):
        flat = slice(32 * block, 32 * block + 32)
        assert torch.equal(torch.sort(noise.flatten()[flat]).values, torch.sort(error.flatten()[flat]).values)
    noisy = noisy_model(model, spec, "gaussian", 0)
    assert torch.equal(noisy[1].weight, model[1].weight) and not torch.equal(noisy[0].weight, model[0].weight)
    with pytest.raises(ValueError, match="unknown GGUF grid"):
        GGUFGrid("gguf-q2_k")


def test_grid_sentence_reads_target_and_source_rows():
    row = {"control": "grid", "bits": 4}
    rows = [{**row, "model": "target", "label": "GGUF Q4_1", "share_on_grid": 0.3, "mean_offset_steps": 0.1},
            {**row, "model": "target", "label": "4-bit FP4", "share_on_grid": 0.02, "mean_offset_steps": 0.25},
            {**row, "model": "source", "label": "GGUF Q4_1", "share_on_grid": 1.0, "mean_offset_steps": 0.0}]
    text = grid_sentence(rows)
    assert "sit near the grid of GGUF Q4_1; spread inside their bins under 4-bit FP4" in text
    assert "Its pretrained source, before fine-tuning into the target: GGUF Q4_1: 100.0%" in text
    assert text.endswith("sit on the grid of GGUF Q4_1.")


@pytest.fixture(scope="module")
def curve_run(module_store):
    from qru.pipeline import run
    store = RunStore(module_store)
    argv = ["run", "--scale", "micro", "--method", "npo", "--bits", "32", "4", "--max-steps", "3", "--lr", "1e-3"]
    return store, run(configs_for(argv + ["--adapter", "full"])[0], store), \
        run(configs_for(argv + ["--adapter", "lora", "--start-grid", "nf4-b64@4"])[0], store)


def test_run_models_are_rebuilt_exactly_from_the_store(curve_run):
    store, full, lora = curve_run
    for run_id in (full, lora):
        models = load_run_models(store, run_id)
        key = models.config.quant_specs()[-1].key
        rows, _ = scan(weight_pairs(models.start, models.unlearned), [QuantSpec.from_key(key)])
        stored = store.deltas(run_id).query(f"tensor == 'total' and quantizer == '{key}'").iloc[0]
        assert rows[-1]["share_kept"] == pytest.approx(stored["share_kept"], rel=1e-6)
        assert rows[-1]["code_flips"] == stored["code_flips"]


def test_a_small_curve_with_its_noise_band_and_sentence(curve_run, monkeypatch, capsys):
    store, full, _ = curve_run
    config = store.config(full)
    assert [s.key for s in curve_specs(config, (8, 4, 2))] == ["rtn-asym-g64@8", "rtn-asym-g64@4", "rtn-asym-g64@2",
                                                               "int8@8", "fp4-b64@4", "nf4-b64@4", "gguf-q4_1",
                                                               "gguf-q4_0"]
    specs = curve_specs(config, (2,))
    rows = compute_controls(store, full, specs, ("permuted",), (0,))
    assert len(rows) == 2 + len(specs) * (1 + 3 + 2)  # GGUF grids; per spec: grid, 3 quantized, 2 noisy models
    gguf = {r["quantizer"]: r for r in rows if r["quantizer"].startswith("gguf")}
    assert set(gguf) == {"gguf-q4_1", "gguf-q4_0"} and all(r["model"] == "target" for r in gguf.values())
    assert gguf["gguf-q4_1"]["share_on_grid"] < 0.1  # a target trained in fp32 is not on a 4-bit grid
    import qru.controls
    monkeypatch.setattr(qru.controls, "_compute", lambda *a: pytest.fail("recomputed a stored control"))
    assert compute_controls(store, full, specs, ("permuted",), (0,)) == rows == read_controls(store, full)
    frame, metrics = curve_frame(rows), store.metrics(full)
    undone = undone_by_control(frame, metrics, "nll_forget")
    assert set(undone["control"]) == {"quantized", "permuted"}
    v = verdict(undone, "rtn-asym-g64@2")
    assert v["verdict"] in ("nothing undone", "fragility", "rounding back") or \
        (v["verdict"] == "not measured" and v["reason"])  # 2 bits may wreck the target: then no share, with why
    text = sentence("run", undone, "nll_forget")
    assert text.startswith("**run**, NLL forget:")
    fig = curve_figure({"run": (frame, metrics)}, "nll_forget")
    assert any("noise band" in t.name for t in fig.data)
    monkeypatch.undo()
    # the run's own quantizer: the quantized rows are read from its metrics.json, only the 2 noisy models evaluated
    calls = []
    real = qru.controls.evaluate
    monkeypatch.setattr(qru.controls, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = compute_controls(store, full, [QuantSpec(4, "fp4", 64)], ("permuted",), (0,))
    assert len(calls) == 2
    for model in ("target", "retrain", "unlearned"):
        row = next(r for r in rows if r["quantizer"] == "fp4-b64@4" and r["model"] == model
                   and r["control"] == "quantized")
        stored = metrics[(metrics["model"] == model) & (metrics["bits"] == 4)].iloc[0]
        assert row["nll_forget"] == stored["nll_forget"] and row["knowmem_forget"] == stored["knowmem_forget"]
    monkeypatch.undo()
    from qru.quant.spec import GGUFGrid
    rows = compute_controls(store, full, [GGUFGrid("gguf-q4_1")], ("permuted",), (0,))
    keys = [(r["model"], r["quantizer"], r["control"], r.get("seed")) for r in rows]
    assert len(keys) == len(set(keys))  # the GGUF grid row measured once, not again as the quantizer's grid row
    assert {r["model"] for r in rows if r["quantizer"] == "gguf-q4_1" and r["control"] == "quantized"} == \
        {"target", "retrain", "unlearned"}
    assert main(["--cache", str(store.root), "curve", full, "--bits", "2", "--kinds", "permuted",
                 "--noise-seeds", "0"]) == 0
    captured = capsys.readouterr()
    assert "NLL forget" in captured.out and "undone by quantization" in captured.out


def test_verdict_reads_hand_made_numbers():
    import pandas as pd
    undone = pd.DataFrame([{"quantizer": "q", "bits": 4, "label": "q", "control": c, "seed": s, "value": 0, "undone": u}
                           for c, s, u in (("quantized", None, 0.9), ("permuted", 0, 0.05), ("gaussian", 0, 0.1))])
    assert verdict(undone, "q")["verdict"] == "rounding back"
    undone.loc[undone["control"] != "quantized", "undone"] = 0.8
    assert verdict(undone, "q")["verdict"] == "fragility"
    undone.loc[undone["control"] == "quantized", "undone"] = 0.1
    assert verdict(undone, "q")["verdict"] == "nothing undone"


def _hand_curve(target: dict, unlearned: dict, noisy: dict):
    """controls rows and a metrics frame for KnowMem-forget: target / unlearned value per RTN bit width, the
    unlearned model under permuted noise per bit width (the target's noisy value = its quantized one)."""
    import pandas as pd
    rows = []
    for bits in target:
        key = f"rtn-asym-g64@{bits}"
        for model, value in (("target", target[bits]), ("unlearned", unlearned[bits])):
            rows.append({"model": model, "quantizer": key, "bits": bits, "label": f"RTN {bits}", "control": "quantized",
                         "seed": None, "knowmem_forget": value})
        rows += [{"model": "target", "quantizer": key, "bits": bits, "label": f"RTN {bits}", "control": "permuted",
                  "seed": 0, "knowmem_forget": target[bits]},
                 {"model": "unlearned", "quantizer": key, "bits": bits, "label": f"RTN {bits}", "control": "permuted",
                  "seed": 0, "knowmem_forget": noisy[bits]}]
    metrics = pd.DataFrame([{"model": "target", "bits": 32, "knowmem_forget": 90.0},
                            {"model": "unlearned", "bits": 32, "knowmem_forget": 10.0}])
    return curve_frame(rows), metrics


def test_curve_reads_rounding_back_before_the_target_changes_and_hides_noise():
    from qru.views.curves import onset_sentence
    # rounding back: at 4 bits the unlearned model is back at 80 while noise of that size leaves it at 12; the target
    # itself changes beyond the 1-point floor only at 2 bits
    frame, metrics = _hand_curve({8: 90, 4: 90.5, 2: 60}, {8: 10.5, 4: 80, 2: 55}, {8: 10, 4: 12, 2: 50})
    undone = undone_by_control(frame, metrics, "knowmem_forget")
    assert undone.attrs["noise"] == 1.0  # no samples: the floor
    v = verdict(undone, "rtn-asym-g64@4")
    assert v["quantized"] == pytest.approx(70 / 80.5) and v["verdict"] == "rounding back"
    assert verdict(undone, "rtn-asym-g64@2")["verdict"] == "fragility"  # noise undid 40/50, quantization 45/50
    text = onset_sentence(frame, metrics, undone, "knowmem_forget")
    assert "beyond the noise (1) at 2 bits" in text and "from 4 bits down, before that point" in text
    # a 32-bit effect within the noise: no share is stated, and the sentence says why
    metrics.loc[metrics["model"] == "unlearned", "knowmem_forget"] = 89.5
    undone = undone_by_control(frame, metrics, "knowmem_forget")
    assert undone["undone"].isna().all() and verdict(undone, "rtn-asym-g64@4")["verdict"] == "not measured"
    assert "no full-precision effect beyond the noise" in sentence("r", undone, "knowmem_forget")


def test_noisy_model_leaves_the_model_and_is_seeded(micro_models):
    spec = QuantSpec(4, "fp4", 64)
    a = noisy_model(micro_models.target, spec, "permuted", 0)
    b = noisy_model(micro_models.target, spec, "permuted", 0)
    c = noisy_model(micro_models.target, spec, "permuted", 1)
    w = lambda m: m.model.layers[0].mlp.down_proj.weight  # noqa: E731
    assert torch.equal(w(a), w(b)) and not torch.equal(w(a), w(c)) and not torch.equal(w(a), w(micro_models.target))


def test_share_undone_needs_the_perturbed_target_to_remember_more():
    """Both models wrecked (the quantized target remembers less than the unlearned model at 32 bits): nothing came
    back, so no share, whatever the ratio says."""
    from qru.analysis.undone import share_undone
    share, reason = share_undone("knowmem_forget", 50, 10, 0, 0, 2)
    assert share != share and "no longer remembers more" in reason
    share, reason = share_undone("nll_forget", 0.718, 1.176, 1.409, 1.640, 0.05)  # NLL: lower = remembers
    assert share != share and "no longer remembers more" in reason
    assert share_undone("knowmem_forget", 50, 10, 40, 30, 2) == (pytest.approx(20 / 30), "")
    assert share_undone("knowmem_retain", 50, 10, 5, 8, 2)[0] == pytest.approx(-2 / -5)  # utility: either way


@pytest.mark.parametrize("text", ["{}", "null", "[1]", "[{}]", '[{"model": "target"}]', '{"a": 1}'])
def test_a_damaged_controls_file_is_a_store_error(tmp_path, text):
    from qru.store import StoreError
    store = RunStore(tmp_path)
    store.path("r").mkdir(parents=True)
    (store.path("r") / "controls.json").write_text(text)
    with pytest.raises(StoreError, match="controls.json"):
        read_controls(store, "r")


def test_noise_seeds_are_checked_and_repeats_computed_once(tmp_path, capsys):
    with pytest.raises(ValueError, match="noise seed"):
        compute_controls(RunStore(tmp_path), "r", [QuantSpec(4, "fp4", 64)], ("permuted",), (2 ** 64,))
    with pytest.raises(SystemExit):
        main(["--cache", str(tmp_path), "noise", "r", "--seeds", str(2 ** 64)])
    assert "noise seed must be in 0..2**63-1" in capsys.readouterr().err
    from qru.controls import _todo
    assert len(_todo(QuantSpec(4, "fp4", 64), ("permuted", "permuted"), (0, 0), True, set())) == 1 + 3 + 2


def test_two_rtn_group_sizes_are_drawn_apart_and_the_shares_table_agrees():
    import pandas as pd
    from qru.analysis.verdicts import rtn_families
    from qru.views.curves import onset_sentence, verdict_table
    rows = []
    for group, value in ((64, 80.0), (32, 30.0)):
        for bits in (4, 2):
            key = f"rtn-asym-g{group}@{bits}"
            for model, v in (("target", 90.0), ("unlearned", value)):
                rows.append({"model": model, "quantizer": key, "bits": bits, "label": f"{bits}-bit RTN asym g{group}",
                             "control": "quantized", "seed": None, "knowmem_forget": v})
            rows += [{"model": m, "quantizer": key, "bits": bits, "label": f"{bits}-bit RTN asym g{group}",
                      "control": "permuted", "seed": 0, "knowmem_forget": v}
                     for m, v in (("target", 10.5), ("unlearned", 12.0))]  # noise wrecks the target: no share
    frame = curve_frame(rows)
    metrics = pd.DataFrame([{"model": "target", "bits": 32, "knowmem_forget": 90.0},
                            {"model": "unlearned", "bits": 32, "knowmem_forget": 10.0}])
    assert set(rtn_families(frame)) == {"rtn-asym-g64", "rtn-asym-g32"}
    fig = curve_figure({"run": (frame, metrics)}, "knowmem_forget")
    names = [t.name for t in fig.data]
    assert "run: unlearned (rtn-asym-g64)" in names and "run: unlearned (rtn-asym-g32)" in names
    assert all(len(t.x) == 3 for t in fig.data if t.name.startswith("run: target ("))  # 4, 2 and 32 bits
    undone = undone_by_control(frame, metrics, "knowmem_forget")
    table = verdict_table({"knowmem_forget": undone})
    g64 = table[table["quantizer"] == "4-bit RTN asym g64"].iloc[0]
    assert g64["undone by quantization"] == "88%" and g64["undone by noise (mean)"] == "—"
    assert g64["verdict"].startswith("not measured (quantization undid part")
    assert "RTN changes the target's KnowMem-forget by no more than the noise (1) down to 2 bits" in \
        onset_sentence(frame, metrics, undone, "knowmem_forget")


def test_target_sentence_names_quantizers_that_round_the_target_back():
    from qru.views.curves import target_sentence
    # rounding back on the target: quantized 90 -> 40, noise 90 -> 88 (KnowMem-forget, 1-point floor)
    frame, metrics = _hand_curve({4: 40.0}, {4: 12.0}, {4: 11.0})
    frame.loc[(frame["model"] == "target") & (frame["control"] == "permuted"), "knowmem_forget"] = 88.0
    undone = undone_by_control(frame, metrics, "knowmem_forget")
    text = target_sentence(frame, metrics, undone, "knowmem_forget")
    assert "RTN 4 moves it from 90 to 40, noise of the same size to 88" in text
    frame.loc[(frame["model"] == "target") & (frame["control"] == "permuted"), "knowmem_forget"] = 45.0
    assert target_sentence(frame, metrics, undone, "knowmem_forget") == ""  # noise does as much: not rounding


def test_truncated_unlearned_weights_are_one_line_errors_without_a_lock(curve_run, store_copy, capsys):
    import shutil

    store, full, lora = curve_run
    root = store_copy(store.root, ("runs", "models", "corpus"), name="truncated")
    for run_id in (full, lora):  # what the tests above computed: this one starts from no controls
        for name in ("controls.json", ".controls.lock"):
            (root / "runs" / run_id / name).unlink(missing_ok=True)
    delta = root / "runs" / full / "unlearned_delta.safetensors"
    delta.write_bytes(delta.read_bytes()[: delta.stat().st_size // 2])
    adapter_run = root / "runs" / lora  # made a LoRA run on the stored target: its adapter is what is loaded
    (adapter_run / "unlearned_delta.safetensors").unlink()
    shutil.rmtree(adapter_run / "adapter", ignore_errors=True)
    (adapter_run / "adapter-on-start").rename(adapter_run / "adapter")
    weights = adapter_run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    for run_id, damaged in ((full, delta), (lora, weights)):
        for argv in (["curve", run_id, "--bits", "2", "--kinds", "permuted", "--noise-seeds", "0"],
                     ["noise", run_id, "--kinds", "permuted", "--seeds", "0"]):
            assert main(["--cache", str(root), *argv]) == 2
            err = capsys.readouterr().err
            assert err.startswith("qru: error:") and err.count("\n") == 1 and str(damaged) in err, err
            assert not (root / "runs" / run_id / ".controls.lock").exists()
            assert not (root / "runs" / run_id / "controls.json").exists()
