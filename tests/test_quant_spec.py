"""The quantizer interface of qru.quant.spec: QuantSpec and GGUFGrid behind one Quantizer, found by key."""
import subprocess
import sys

import pytest
import torch

from qru.checks import ConfigError
from qru.quant import fake_quantize
from qru.quant.gguf import gguf_blocks, gguf_fake_quantize, gguf_roundtrip
from qru.quant.noise import block_ids
from qru.quant.spec import GGUF_GRIDS, GGUFGrid, QuantSpec, Quantizer, analysis_grid, quantizer_from_key


def test_every_quantizer_is_found_by_its_key_and_has_the_interface():
    quantizers = [QuantSpec(), QuantSpec(4, "gptq-sym", group_size=0)] + analysis_grid() + \
        [GGUFGrid(k) for k in GGUF_GRIDS]
    for q in quantizers:
        assert quantizer_from_key(q.key) == q and isinstance(q, Quantizer)
        assert q.is_gguf == isinstance(q, GGUFGrid)
    with pytest.raises(ConfigError, match="gguf-q4_1"):
        quantizer_from_key("gguf-q2_k")


def test_the_methods_match_the_quantizers_own_functions():
    torch.manual_seed(0)
    w = torch.randn(6, 64)
    model = torch.nn.Sequential(torch.nn.Linear(64, 6), torch.nn.Linear(6, 3))  # 6 inputs: no GGUF block of 32
    for spec in (QuantSpec(4, "nf4"), QuantSpec(3, "rtn-asym", group_size=32)):
        assert spec.quantizes((3, 6)) and torch.equal(spec.block_ids((6, 64)), block_ids((6, 64), spec))
        assert torch.equal(spec.fake_quantize(model)[0].weight, fake_quantize(model, spec)[0].weight)
    grid = GGUFGrid("gguf-q4_1")
    assert grid.quantizes((6, 64)) and not grid.quantizes((3, 6))
    assert torch.equal(grid.dequantize(w), gguf_roundtrip(w, grid.key)[0])
    assert torch.equal(grid.block_ids((6, 64)), gguf_blocks((6, 64)))
    assert torch.equal(grid.fake_quantize(model)[0].weight, gguf_fake_quantize(model, grid.key)[0].weight)
    with pytest.raises(ValueError, match="calibration"):
        QuantSpec(4, "gptq-asym").dequantize(w)


def test_the_quantizer_settings_load_neither_torch_nor_bitsandbytes():
    code = "import sys, qru.quant.spec; print('torch' in sys.modules or 'bitsandbytes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
