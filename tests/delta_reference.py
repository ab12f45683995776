"""The weight-delta analysis as qru computed it before the chunked scan (one whole tensor at a time, numpy
histograms), kept as the reference that tests/test_scan_reference.py compares the scan with. Frozen on purpose: do
not reuse it in qru. One change from the old code: a value clipped into the first bin is counted there (the old
histogram clipped in float32 and compared in float64, so a clipped |dW|/Δ below 1e-6 fell out of the histogram)."""
import numpy as np
import torch

from qru.deltas import ABS_EDGES, REL_EDGES, ratios
from qru.quant.bnb import quantize_tensor


def log_histogram(values, edges):
    v = values.detach().flatten().double().cpu().numpy()
    nonzero = v[v != 0]
    np.clip(nonzero, edges[0], edges[-1], out=nonzero)
    return np.histogram(nonzero, bins=edges)[0].astype(np.int64), int(v.size - nonzero.size)


def _sums(dw, dq):
    dw64, dq64 = dw.flatten().double(), dq.flatten().double()
    return {"dw_sq": float(torch.dot(dw64, dw64)), "dq_sq": float(torch.dot(dq64, dq64)),
            "dot": float(torch.dot(dw64, dq64))}


def tensor_delta(w_target, w_unlearned, spec):
    """(row, hists) of one weight pair, as the old qru.deltas.tensor_delta gave them."""
    dw = w_unlearned.float() - w_target.float()
    size = dw.abs()
    abs_counts, zeros = log_histogram(size, ABS_EDGES)
    row = {"numel": dw.numel(), "zero_delta": zeros, "mean_abs_delta": float(size.double().mean()),
           "max_abs_delta": float(size.max())}
    if spec.bits == 32:
        row.update({"median_step": float("nan"), "below_half_step": float("nan"), "code_flips": 0,
                    "code_flip_rate": float("nan"), "flips_boundary": 0, "flips_scale": 0, **_sums(dw, dw)})
        row.update(ratios(row))
        return row, {"abs": abs_counts, "rel": None, "dq": None, "bnd": None, "bndrel": None}
    wt, wu = w_target.float(), w_unlearned.float()
    qt, qu = quantize_tensor(wt, spec), quantize_tensor(wu, spec, detail=False)
    flipped = qt.codes != qu.codes
    dq = qu.dequant - qt.dequant
    crossed = qt.grid_codes(wu) != qt.codes
    flips = int(flipped.sum())
    row.update({"code_flips": flips, "code_flip_rate": flips / dw.numel(),
                "flips_boundary": int((flipped & crossed).sum()), "flips_scale": int((flipped & ~crossed).sum()),
                **_sums(dw, dq)})
    step = qt.step.clamp(min=1e-30)
    rel = dw.abs() / step
    row.update({"median_step": float(qt.step.median()), "below_half_step": float((rel < 0.5).double().mean())})
    hists = {"abs": abs_counts, "dq": log_histogram(dq.abs(), ABS_EDGES)[0], "rel": log_histogram(rel, REL_EDGES)[0],
             "bnd": log_histogram(qt.boundary, ABS_EDGES)[0],
             "bndrel": log_histogram(qt.boundary / step, REL_EDGES)[0]}
    row.update(ratios(row))
    return row, hists
