"""The chunked, vectorized delta scan (qru.deltas) gives the old whole-tensor analysis (tests/delta_reference.py)
exactly: counts and histograms equal, float64 sums equal to rounding, for every quantizer of the analysis grid, on
the micro models and on awkward shapes, with chunks cut small, and on bf16 weights read as stored."""
import numpy as np
import pytest
import torch

import qru.deltas as deltas
from qru.deltas import ABS_EDGES, REL_EDGES, row_chunks, scan, weight_pairs
from qru.histograms import log_counts
from qru.quant.spec import QuantSpec, analysis_grid
import delta_reference as reference
from test_checkpoints import _unlearned as _moved

COUNTS = ("numel", "zero_delta", "code_flips", "flips_boundary", "flips_scale", "max_abs_delta", "median_step",
          "below_half_step", "code_flip_rate")
SUMS = ("mean_abs_delta", "dw_sq", "dq_sq", "dot", "share_kept", "cosine", "noise_ratio")


def _same(row, hists, ref_row, ref_hists, where=""):
    for key in COUNTS:
        assert row[key] == ref_row[key] or (np.isnan(row[key]) and np.isnan(ref_row[key])), (where, key)
    for key in SUMS:
        np.testing.assert_allclose(row[key], ref_row[key], rtol=1e-12, atol=1e-300, err_msg=f"{where} {key}")
    for view, counts in ref_hists.items():
        assert (counts is None) == (hists[view] is None), (where, view)
        if counts is not None:
            assert np.array_equal(hists[view], counts), (where, view)


def _compare(pairs, specs):
    rows, hists = scan(pairs, specs)
    names = [r["tensor"] for r in rows if r["quantizer"] == specs[0].key and r["tensor"] != "total"]
    for spec in specs:
        mine = [r for r in rows if r["quantizer"] == spec.key]
        for i, (name, wt, wu) in enumerate(pairs):
            ref_row, ref_hists = reference.tensor_delta(wt, wu, spec)
            views = {"abs": hists["abs"][i], **{v: (hists[f"{v}_{spec.key}"][i] if spec.bits < 32 else None)
                                               for v in ("rel", "dq", "bnd", "bndrel")}}
            _same(mine[i], views, ref_row, ref_hists, f"{spec.key} {name}")
    return names


def test_scan_equals_the_whole_tensor_reference_under_every_quantizer(micro_models, monkeypatch):
    """All 59 quantizers and 32 bits, with chunks of ~1000 weights (many per tensor) and with the default."""
    target = micro_models.target
    pairs = list(weight_pairs(target, _moved(target, 1e-3)))
    specs = [QuantSpec()] + analysis_grid()
    assert len(specs) == 60
    _compare(pairs, specs)
    monkeypatch.setattr(deltas, "CHUNK_WEIGHTS", 1000)
    assert len(row_chunks(tuple(pairs[0][1].shape))) > 1
    _compare(pairs, specs)


@pytest.mark.parametrize("shape", [(37, 50), (3, 70), (130, 64), (1, 1)])
def test_awkward_shapes_keep_blocks_whole(shape, monkeypatch):
    """Rows that do not divide into 4-bit blocks (blocks run across rows), a partial last block, tiny chunks,
    exact zeros in the update and a weight that does not move at all."""
    monkeypatch.setattr(deltas, "CHUNK_WEIGHTS", 100)
    gen = torch.Generator().manual_seed(1)
    wt = torch.randn(shape, generator=gen) * 0.02
    wu = wt + torch.randn(shape, generator=gen) * 1e-3 * (torch.rand(shape, generator=gen) > 0.3)
    specs = [QuantSpec(), QuantSpec(4, "fp4"), QuantSpec(4, "nf4", 128), QuantSpec(8, "int8"),
             QuantSpec(3, "rtn-asym", group_size=32), QuantSpec(2, "rtn-sym", group_size=0)]
    _compare([("layers.0.w", wt, wu), ("layers.1.w", wt, wt.clone())], specs)
    for spec in specs[1:3]:
        for rows in row_chunks(shape, spec)[:-1]:
            assert (rows.stop - rows.start) * shape[1] % spec.blocksize == 0


def test_bf16_weights_are_read_as_stored_and_widened_by_chunk(micro_models):
    """A bf16 pair scanned as stored gives the reference of the same values widened to float32."""
    target = micro_models.target
    pairs = [(n, wt.detach().bfloat16(), wu.detach().bfloat16())
             for n, wt, wu in weight_pairs(target, _moved(target, 1e-2))]
    rows, hists = scan(pairs, [QuantSpec(4, "nf4")])
    for i, (name, wt, wu) in enumerate(pairs):
        ref_row, ref_hists = reference.tensor_delta(wt.float(), wu.float(), QuantSpec(4, "nf4"))
        _same(rows[i], {"abs": hists["abs"][i], **{v: hists[f"{v}_nf4-b64@4"][i] for v in
                                                   ("rel", "dq", "bnd", "bndrel")}}, ref_row, ref_hists, name)


@pytest.mark.parametrize("edges", [ABS_EDGES, REL_EDGES], ids=["abs", "rel"])
def test_log_counts_equal_numpy_at_every_edge(edges):
    """Values at, just below and just above every edge (as float32), far outside, denormal, zero and -0."""
    near = []
    for e in edges:
        f = np.float32(e)
        near += [f, np.nextafter(f, np.float32(0)), np.nextafter(f, np.float32(np.inf))]
    gen = torch.Generator().manual_seed(0)
    v = torch.cat([torch.tensor(np.array(near, dtype=np.float32)), 10 ** (torch.rand(100_000, generator=gen) * 14 - 12),
                   torch.tensor([0.0, -0.0, 1e30, 1e-40, 3e-45])])
    counts, zeros = log_counts(v, edges)
    ref, ref_zeros = reference.log_histogram(v, edges)
    assert np.array_equal(counts.numpy(), ref) and zeros == ref_zeros == 2
    assert int(counts.sum()) + zeros == v.numel()  # nothing falls out: clipped values land in the end bins


def test_log_counts_refuses_edges_it_cannot_split_exactly():
    with pytest.raises(ValueError, match="edges"):
        log_counts(torch.ones(3), np.array([1.0, 1.0 + 1e-7, 2.0]))
    with pytest.raises(ValueError, match="edges"):
        log_counts(torch.ones(3), np.array([-1.0, 1.0, 2.0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scan_on_cuda_equals_cpu(micro_models):
    """On a GPU the scan gives the CPU's numbers (bitsandbytes' CUDA kernels quantize there)."""
    target = micro_models.target
    pairs = list(weight_pairs(target, _moved(target, 1e-3)))
    specs = [QuantSpec()] + analysis_grid()
    cpu_rows, cpu_hists = scan(pairs, specs)
    gpu_rows, gpu_hists = scan(pairs, specs, device="cuda")
    for a, b in zip(cpu_rows, gpu_rows):
        for key in COUNTS:
            assert a[key] == b[key] or (np.isnan(a[key]) and np.isnan(b[key])), (a["quantizer"], a["tensor"], key)
    for key, counts in cpu_hists.items():
        assert np.array_equal(counts, gpu_hists[key]), key
