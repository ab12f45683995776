"""The GPU path, where CUDA is present: bitsandbytes' real quantized loading (BitsAndBytesConfig, as the papers
evaluate) against qru's fake-quant, and a run in bf16 on the GPU. Skipped, with the reason, on machines without
CUDA; the CPU side of the same code (fake-quant == bitsandbytes Linear4bit) is pinned in test_quant.py."""
import pytest
import torch

from qru.config import ConfigError
from qru.devices import check_precision, compute_device, default_precision
from qru.quant.bnb import fake_quantize
from qru.quant.load import bnb_config, quantized_copy
from qru.quant.spec import QuantSpec

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bitsandbytes' quantized loading)")


def test_bnb_configs_follow_the_papers():
    four = bnb_config(QuantSpec(4, "fp4"), torch.float32)
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "fp4" and not four.bnb_4bit_use_double_quant
    eight = bnb_config(QuantSpec(8, "int8"), torch.float32)
    assert eight.load_in_8bit and eight.llm_int8_threshold == 6.0
    with pytest.raises(ValueError, match="no setting"):
        bnb_config(QuantSpec(4, "nf4", blocksize=128), torch.float32)
    with pytest.raises(ValueError, match="no setting"):
        bnb_config(QuantSpec(3, "rtn-asym"), torch.float32)


def test_cpu_defaults_and_refusals():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only behaviour")
    assert compute_device().type == "cpu" and default_precision() == "fp32"
    with pytest.raises(ConfigError, match="bf16 needs a CUDA GPU"):
        check_precision("bf16")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        quantized_copy(torch.nn.Linear(2, 2), QuantSpec(4, "fp4"))


@cuda
@pytest.mark.parametrize("spec", [QuantSpec(4, "fp4"), QuantSpec(4, "nf4"), QuantSpec(8, "int8")])
def test_quantized_loading_matches_fake_quant(micro_models, spec):
    model = micro_models.target.to("cuda")
    real = quantized_copy(model, spec)
    fake = fake_quantize(model, spec)
    ids = torch.randint(0, model.config.vocab_size, (4, 48), device="cuda")
    with torch.no_grad():
        diff = (real(ids).logits.float() - fake(ids).logits.float()).abs().max().item()
    # 4-bit: the same codes and scales (fake-quant == Linear4bit is exact on the CPU); int8 differs where LLM.int8
    # keeps outlier features in 16 bits, so only closeness is asserted there
    assert diff < (1e-2 if spec.bits == 4 else 0.5), diff


@cuda
def test_run_on_gpu_in_bf16(micro_models, tmp_path):
    from qru.cli import main
    from qru.store import RunStore

    assert main(["--cache", str(tmp_path), "run", "--scale", "micro", "--method", "npo", "--adapter", "lora",
                 "--max-steps", "2", "--bits", "32", "4", "--precision", "bf16", "--quant-load", "--quiet"]) == 0
    store = RunStore(tmp_path)
    (run_id,) = store.ids()
    assert store.config(run_id).model.precision == "bf16" and store.config(run_id).quant_load
    assert "cuda" in (store.path(run_id) / "log.txt").read_text()
