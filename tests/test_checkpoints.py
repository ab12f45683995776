"""`qru deltas`: checkpoints streamed tensor by tensor give exactly the in-memory analysis, and bad input is named."""
import copy
import shutil
import json

import numpy as np
import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

from qru.checkpoints import Checkpoint, LoraAdapter, open_unlearned, quantizable_name, stream_pairs
from qru.cli import main
from qru.compare import compare, deltas_config
from qru.deltas import scan, weight_pairs
from qru.errors import CheckpointError
from qru.quant.spec import QuantSpec, quantizer_set
from qru.store import RunStore

SPECS = ["fp4-b64@4", "int8@8", "rtn-asym-g32@3", "rtn-sym-g0@8"]


def _unlearned(model, scale=1e-3, seed=0):
    """A copy of ``model`` with every Linear weight moved by Gaussian noise (a stand-in unlearning update)."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in other.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    return other


@pytest.fixture(scope="module")
def checkpoints(micro_models, tmp_path_factory):
    """The micro target saved in two shards and an unlearned copy saved as one file, plus both models."""
    root = tmp_path_factory.mktemp("ckpt")
    target = micro_models.target
    unlearned = _unlearned(target)
    target.save_pretrained(root / "target", max_shard_size="100KB", safe_serialization=True)
    unlearned.save_pretrained(root / "unlearned", safe_serialization=True)
    return root, target, unlearned


def _in_memory(target, unlearned, keys):
    return scan(weight_pairs(target, unlearned), [QuantSpec.from_key(k) for k in keys])


def _same(stored: pd.DataFrame, hists: dict, rows: list[dict], mem_hists: dict) -> None:
    frame = pd.DataFrame(rows)
    assert list(stored["tensor"]) == list(frame["tensor"]) and list(stored["quantizer"]) == list(frame["quantizer"])
    for col in ("code_flips", "flips_boundary", "flips_scale", "numel", "zero_delta"):
        assert stored[col].tolist() == frame[col].tolist(), col
    for col in ("share_kept", "below_half_step", "median_step", "dw_sq", "dot"):
        np.testing.assert_allclose(stored[col].to_numpy(float), frame[col].to_numpy(float), rtol=1e-12, err_msg=col)
    for key, counts in mem_hists.items():
        assert np.array_equal(hists[key], counts), key


def test_sharded_checkpoints_stream_to_the_in_memory_result(checkpoints, tmp_path):
    root, target, unlearned = checkpoints
    assert len(Checkpoint(root / "target").files) > 1  # really sharded, read through the index
    store = RunStore(tmp_path)
    config = deltas_config(root / "target", root / "unlearned", quantizer_set(SPECS))
    run_id = compare(config, store)
    assert run_id.startswith("deltas-") and store.status(run_id)["state"] == "done"
    rows, hists = _in_memory(target, unlearned, ["none@32", *SPECS])
    _same(store.deltas(run_id), store.histograms(run_id), rows, hists)
    assert store.config(run_id) == config and "/target -> " in store.config(run_id).label
    assert compare(config, store) == run_id  # found, not recomputed


def test_lora_adapter_is_merged_like_peft(micro_models, tmp_path):
    target = micro_models.target
    target.save_pretrained(tmp_path / "base", safe_serialization=True)
    peft_model = get_peft_model(copy.deepcopy(target), LoraConfig(r=4, lora_alpha=8, target_modules=[
        "q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    adapter = LoraAdapter(tmp_path / "adapter")
    assert len(adapter.targets()) == 3 * micro_models.target.config.num_hidden_layers
    streamed = list(stream_pairs(Checkpoint(tmp_path / "base"), adapter))
    memory = list(weight_pairs(target, merged))
    assert [n for n, _, _ in streamed] == [n for n, _, _ in memory]
    for (name, wt, wu), (_, mt, mu) in zip(streamed, memory):
        assert torch.equal(wt, mt), name
        torch.testing.assert_close(wu, mu, rtol=0, atol=1e-6)
        assert torch.equal(wu, wt) == ("k_proj" in name or "o_proj" in name or "gate" in name or "up_proj" in name)


def test_qru_deltas_cli_stores_a_run_the_pages_can_read(checkpoints, tmp_path, capsys):
    root, _, _ = checkpoints
    argv = ["--cache", str(tmp_path), "deltas", str(root / "target"), str(root / "unlearned"), "--quantizers", "bnb",
            "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fp4-b64@4" in out and "share_kept" in out
    store = RunStore(tmp_path)
    (run_id,) = store.ids()
    assert set(store.deltas(run_id)["quantizer"]) == {"none@32", "fp4-b64@4", "nf4-b64@4", "int8@8"}
    assert main(["--cache", str(tmp_path), "show", run_id[:10]]) == 0
    assert "checkpoint deltas" in capsys.readouterr().out
    assert main(["--cache", str(tmp_path), "ls"]) == 0 and run_id in capsys.readouterr().out


def test_a_rewritten_checkpoint_gets_a_new_id(checkpoints, tmp_path):
    root, target, _ = checkpoints
    path = tmp_path / "u.safetensors"
    save_file({"model.layers.0.mlp.up_proj.weight": torch.zeros(4, 8)}, str(path))
    base = tmp_path / "t.safetensors"
    save_file({"model.layers.0.mlp.up_proj.weight": torch.ones(4, 8)}, str(base))
    first = deltas_config(base, path, quantizer_set(["int8@8"]))
    save_file({"model.layers.0.mlp.up_proj.weight": torch.full((4, 8), 2.0)}, str(path))
    assert deltas_config(base, path, quantizer_set(["int8@8"])).fingerprint != first.fingerprint


def test_bf16_checkpoints_are_widened_and_lm_head_and_embeddings_skipped(tmp_path):
    w = torch.randn(8, 64)
    save_file({"model.embed_tokens.weight": torch.randn(10, 8), "lm_head.weight": torch.randn(10, 8),
               "model.layers.0.self_attn.q_proj.weight": w.bfloat16(), "model.norm.weight": torch.ones(8)},
              str(tmp_path / "model.safetensors"))
    ckpt = Checkpoint(tmp_path)
    assert ckpt.quantizable() == ["model.layers.0.self_attn.q_proj.weight"]
    t = ckpt.tensor("model.layers.0.self_attn.q_proj.weight")
    assert t.dtype == torch.float32 and torch.equal(t, w.bfloat16().float())
    assert not quantizable_name("model.layers.0.mlp.up_proj.bias", 1) and quantizable_name("h.0.mlp.c_fc.weight", 2)


@pytest.mark.parametrize("case, needle", [
    ("missing", "not found"), ("empty", "no .safetensors"), ("corrupt", "not a readable safetensors"),
    ("shape", "has shape"), ("names", "different Linear weights"), ("adapter-unknown", "which"),
    ("dora", "DoRA"), ("bad-index", "not a safetensors index")])
def test_mismatched_or_broken_checkpoints_are_named_and_nothing_is_stored(tmp_path, capsys, case, needle):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    save_file({"m.layers.0.q_proj.weight": torch.zeros(4, 8)}, str(a / "model.safetensors"))
    if case == "missing":
        b = tmp_path / "nowhere"
    elif case == "corrupt":
        (b / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    elif case == "shape":
        save_file({"m.layers.0.q_proj.weight": torch.zeros(4, 16)}, str(b / "model.safetensors"))
    elif case == "names":
        save_file({"m.layers.0.k_proj.weight": torch.zeros(4, 8)}, str(b / "model.safetensors"))
    elif case in ("adapter-unknown", "dora"):
        (b / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2,
                                                           "use_dora": case == "dora"}))
        save_file({"base_model.model.m.layers.0.v_proj.lora_A.weight": torch.zeros(2, 8),
                   "base_model.model.m.layers.0.v_proj.lora_B.weight": torch.zeros(4, 2)},
                  str(b / "adapter_model.safetensors"))
    elif case == "bad-index":
        save_file({"m.layers.0.q_proj.weight": torch.zeros(4, 8)}, str(b / "model.safetensors"))
        (b / "model.safetensors.index.json").write_text("[1, 2]")
    code = main(["--cache", str(tmp_path / "store"), "deltas", str(a), str(b), "--quantizers", "int8@8"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("qru: error:") and needle in err and "Traceback" not in err
    assert RunStore(tmp_path / "store").ids() == []


def test_bad_quantizer_names_are_refused(checkpoints, tmp_path, capsys):
    root, _, _ = checkpoints
    code = main(["--cache", str(tmp_path), "deltas", str(root / "target"), str(root / "unlearned"),
                 "--quantizers", "fp5@4"])
    err = capsys.readouterr().err
    assert code == 2 and "fp5@4" in err
    with pytest.raises(CheckpointError):
        list(stream_pairs(Checkpoint(root / "target"), Checkpoint(tmp_path / "missing")))


def test_a_full_fine_tuning_run_folder_adds_its_delta_and_an_adapter_first_is_refused(checkpoints, tmp_path, capsys):
    root, target, unlearned = checkpoints
    run = tmp_path / "runs" / "ga-gdr-full-x"
    run.mkdir(parents=True)
    delta = {f"{n}.weight": (wu - wt).contiguous() for n, wt, wu in weight_pairs(target, unlearned)}
    save_file(delta, str(run / "unlearned_delta.safetensors"))  # as a qru full fine-tuning run stores dW
    streamed = list(stream_pairs(Checkpoint(root / "target"), open_unlearned(run)))
    for (name, wt, wu), (_, mt, mu) in zip(streamed, weight_pairs(target, unlearned)):
        torch.testing.assert_close(wu, mu, rtol=0, atol=1e-7)  # W_t + dW, not dW
    code = main(["--cache", str(tmp_path / "store"), "deltas", str(run), str(root / "target")])
    err = capsys.readouterr().err
    assert code == 2 and "second argument" in err


def test_identical_checkpoints_read_as_no_update(checkpoints, tmp_path):
    from qru.views.flip_analysis import explain

    root, _, _ = checkpoints
    store = RunStore(tmp_path)
    run_id = compare(deltas_config(root / "target", root / "target", quantizer_set(["int8@8"])), store)
    total = store.deltas(run_id).set_index(["quantizer", "tensor"]).loc[("int8@8", "total")]
    assert total["code_flips"] == 0 and "identical" in explain(total, "8-bit int8")


def test_diverged_quantized_or_empty_tensors_and_odd_adapters(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    w = torch.randn(4, 8)
    save_file({"m.layers.0.q_proj.weight": w, "m.layers.0.k_proj.weight": torch.zeros(0, 8)}, str(a))
    save_file({"m.layers.0.q_proj.weight": w.clone().index_put_((torch.tensor([0]), torch.tensor([0])),
                                                                torch.tensor(float("nan"))),
               "m.layers.0.k_proj.weight": torch.zeros(0, 8)}, str(b))
    assert Checkpoint(a).quantizable() == ["m.layers.0.q_proj.weight"]  # the empty weight is left out
    with pytest.raises(CheckpointError, match="NaN"):
        list(stream_pairs(Checkpoint(a), Checkpoint(b)))
    save_file({"m.layers.0.q_proj.weight": torch.zeros(4, 8, dtype=torch.int8)}, str(b))
    with pytest.raises(CheckpointError, match="I8"):
        stream_pairs(Checkpoint(a), Checkpoint(b))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    save_file({"base_model.model.m.layers.0.q_proj.lora_A.weight": torch.ones(2, 8),
               "base_model.model.m.layers.0.q_proj.lora_B.weight": torch.ones(4, 2),
               "base_model.model.lm_head.lora_A.weight": torch.ones(2, 8),  # an adapted head: never compared
               "base_model.model.lm_head.lora_B.weight": torch.ones(5, 2)}, str(adapter / "adapter_model.safetensors"))
    ((name, wt, wu),) = list(stream_pairs(Checkpoint(a), LoraAdapter(adapter)))
    assert torch.allclose(wu - wt, torch.full((4, 8), 2 * 2.0))  # B A = 2 everywhere, scaling 4 / 2


def test_modules_to_save_replace_their_weight_as_peft_merges(micro_models, tmp_path):
    target = micro_models.target
    target.save_pretrained(tmp_path / "base", safe_serialization=True)
    peft_model = get_peft_model(copy.deepcopy(target), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"],
                                                                  modules_to_save=["o_proj"],
                                                                  init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "modules_to_save" in name:
                p.add_(0.01)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    streamed = dict((n, wu) for n, _, wu in stream_pairs(Checkpoint(tmp_path / "base"),
                                                          LoraAdapter(tmp_path / "adapter")))
    for name, _, mu in weight_pairs(target, merged):
        torch.testing.assert_close(streamed[name], mu, rtol=0, atol=1e-6)


def test_a_checkpoint_changed_during_the_scan_fails_the_run(checkpoints, tmp_path):
    import os

    root, _, _ = checkpoints
    other = tmp_path / "u"
    shutil.copytree(root / "unlearned", other)
    store = RunStore(tmp_path / "store")
    config = deltas_config(root / "target", other, quantizer_set(["int8@8"]))

    def touch(stage, done, total, message):
        if done == 1:
            os.utime(next(other.glob("*.safetensors")), ns=(1, 1))
    with pytest.raises(CheckpointError, match="changed during the scan"):
        compare(config, store, progress=touch)
    assert store.status(store.ids()[0])["state"] == "failed"


def test_quantizer_keys_with_other_scripts_digits_are_refused(capsys, tmp_path):
    from qru.config import ConfigError

    for key in ("fp4-b64@²", "fp4-b64@٤", "rtn-asym-g١٢٨@4"):
        with pytest.raises(ConfigError):
            QuantSpec.from_key(key)
    assert main(["--cache", str(tmp_path), "deltas", "a", "b", "--quantizers", "fp4-b64@²"]) == 2


def _one_line_error(capsys, code):
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("qru: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_pickle_weights_are_refused_with_how_to_convert(checkpoints, tmp_path, capsys):
    root, _, _ = checkpoints
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({"model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 8)}, pickled / "pytorch_model.bin")
    adapter = tmp_path / "binadapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    torch.save({}, adapter / "adapter_model.bin")
    cache = tmp_path / "store"
    for a, b, named in ((pickled, root / "unlearned", "pickled"), (root / "target", pickled, "pickled"),
                        (pickled / "pytorch_model.bin", root / "unlearned", "pytorch_model.bin"),
                        (root / "target", adapter, "binadapter")):
        err = _one_line_error(capsys, main(["--cache", str(cache), "deltas", str(a), str(b), "--quantizers", "int8@8"]))
        assert named in err and "pickle" in err and "save_pretrained" in err and "safe_serialization=True" in err
    assert RunStore(cache).ids() == []


def test_an_adapter_on_another_base_is_refused_before_anything_is_stored(tmp_path, capsys):
    a, adapter = tmp_path / "a", tmp_path / "adapter"
    a.mkdir()
    adapter.mkdir()
    save_file({"m.layers.0.q_proj.weight": torch.zeros(4, 8), "m.layers.0.v_proj.weight": torch.zeros(4, 8)},
              str(a / "model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    save_file({"base_model.model.m.layers.0.q_proj.lora_A.weight": torch.ones(2, 8),
               "base_model.model.m.layers.0.q_proj.lora_B.weight": torch.ones(4, 2),
               "base_model.model.m.layers.0.v_proj.lora_A.weight": torch.ones(2, 16),  # a base with 16 inputs
               "base_model.model.m.layers.0.v_proj.lora_B.weight": torch.ones(4, 2)},
              str(adapter / "adapter_model.safetensors"))
    cache = tmp_path / "store"
    err = _one_line_error(capsys, main(["--cache", str(cache), "deltas", str(a), str(adapter), "--quantizers",
                                        "int8@8"]))
    assert "m.layers.0.v_proj.weight" in err and "(4, 16)" in err and "(4, 8)" in err
    assert RunStore(cache).ids() == []


def test_an_adapter_stored_in_a_run_needs_that_runs_own_target(checkpoints, micro_cache, store_copy, tmp_path,
                                                                 capsys):
    from qru.cli import configs_for
    from qru.config import to_dict
    from qru.models import models_dir

    root, target, _ = checkpoints
    store_root = store_copy(micro_cache, ("models",), name="run-store")
    config = configs_for(["run", "--scale", "micro", "--method", "npo", "--adapter", "lora"])[0]
    own = models_dir(config.corpus, config.model, store_root) / "target"
    assert own.is_dir()
    run = store_root / "runs" / "npo-gdr-lora-x"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(to_dict(config)))
    peft_model = get_peft_model(copy.deepcopy(target), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"],
                                                                  init_lora_weights=False))
    peft_model.save_pretrained(run / "adapter")
    cache = tmp_path / "store"
    for unlearned in (run / "adapter", run):  # same shapes, other values: not the run's target
        err = _one_line_error(capsys, main(["--cache", str(cache), "deltas", str(root / "unlearned"), str(unlearned),
                                            "--quantizers", "int8@8"]))
        assert "npo-gdr-lora-x" in err and "not the target" in err and str(root / "unlearned") in err
    assert RunStore(cache).ids() == []
    # the run's target, wherever it is saved (here re-saved in shards elsewhere), is accepted
    for base in (own, root / "target"):
        assert main(["--cache", str(cache), "deltas", str(base), str(run / "adapter"), "--quantizers", "int8@8",
                     "--quiet"]) == 0
    capsys.readouterr()
    (run / "adapter").rename(run / "adapter-on-start")  # a LoRA from a snapped start: its base is not stored
    err = _one_line_error(capsys, main(["--cache", str(cache), "deltas", str(own), str(run / "adapter-on-start"),
                                        "--quantizers", "int8@8"]))
    assert "give the run folder" in err


def test_a_diverged_checkpoint_is_refused_and_leaves_no_run(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    w = torch.randn(4, 8)
    save_file({"m.layers.0.q_proj.weight": w, "m.layers.1.q_proj.weight": w.clone()}, str(a / "model.safetensors"))
    for bad in (float("nan"), float("inf")):
        broken = w.clone()
        broken[1, 2] = bad
        save_file({"m.layers.0.q_proj.weight": w, "m.layers.1.q_proj.weight": broken}, str(b / "model.safetensors"))
        cache = tmp_path / f"store-{bad}"
        err = _one_line_error(capsys, main(["--cache", str(cache), "deltas", str(a), str(b), "--quantizers",
                                            "int8@8", "--quiet"]))
        assert "m.layers.1.q_proj.weight" in err and "NaN or infinite" in err
        assert RunStore(cache).ids() == [] and main(["--cache", str(cache), "ls"]) == 0
        assert "no runs" in capsys.readouterr().out


def test_checkpoints_given_after_quantizers_are_read_as_checkpoints(checkpoints, tmp_path, capsys):
    from qru.cli import configs_for

    root, _, _ = checkpoints
    t, u, cache = str(root / "target"), str(root / "unlearned"), str(tmp_path / "store")
    (config,) = configs_for(["deltas", "--quantizers", "bnb", t, u])
    assert (config.target, config.unlearned) == (t, u) and "int8@8" in config.quantizers
    assert main(["--cache", cache, "deltas", "--quantizers", "int8@8", t, u, "--quiet"]) == 0
    for argv in (["deltas", t, "--quantizers", "int8@8", u], ["deltas", "--quantizers", "int8@8", "--", t, u],
                 ["deltas", t, u, "--quantizers", "int8@8"]):
        assert main(["--cache", cache, argv[0], "--quiet", *argv[1:]]) == 0
        assert "found in the store" in capsys.readouterr().err
    (run_id,) = RunStore(cache).ids()
    assert set(RunStore(cache).deltas(run_id)["quantizer"]) == {"none@32", "int8@8"}
    err = _one_line_error(capsys, main(["--cache", cache, "deltas", t, u, "--quantizers", "int8@8", t]))
    assert "put the checkpoints before --quantizers or after --" in err and t in err


def test_deltas_device_option_and_job_file(checkpoints, tmp_path, capsys):
    """--device cpu computes as auto does here; a device this machine lacks or an unknown name is refused by name;
    --device may stand beside --config (it is not part of the comparison)."""
    from qru.jobs import write_job_file

    root, _, _ = checkpoints
    base = ["--cache", str(tmp_path), "deltas", str(root / "target"), str(root / "unlearned"), "--quantizers",
            "int8@8", "--quiet"]
    assert main(base + ["--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(base + ["--device", "tpu"]) == 2 and "'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(base + ["--device", "cuda:0", "--force"]) == 2
        assert "--device cpu" in capsys.readouterr().err
    job = tmp_path / "job.json"
    write_job_file(job, "deltas", [deltas_config(root / "target", root / "unlearned", quantizer_set(["int8@8"]))])
    assert main(["--cache", str(tmp_path), "deltas", "--config", str(job), "--device", "cpu", "--quiet"]) == 0


def test_checkpoints_are_streamed_as_stored(tmp_path):
    """bf16 and fp16 tensors reach the scan in their stored type (widened there, a row chunk at a time)."""
    w = torch.randn(8, 64)
    for name, dtype in (("t", torch.bfloat16), ("u", torch.float16)):
        (tmp_path / name).mkdir()
        save_file({"model.layers.0.mlp.up_proj.weight": w.to(dtype)}, str(tmp_path / name / "model.safetensors"))
    ((_, wt, wu),) = list(stream_pairs(Checkpoint(tmp_path / "t"), Checkpoint(tmp_path / "u")))
    assert wt.dtype == torch.bfloat16 and wu.dtype == torch.float16
    rows, _ = scan(stream_pairs(Checkpoint(tmp_path / "t"), Checkpoint(tmp_path / "u")), [QuantSpec(8, "int8")])
    assert rows[0]["max_abs_delta"] == float((w.half().float() - w.bfloat16().float()).abs().max())
