"""Noise controls: random perturbations of the same per-block size as a quantizer's error, instead of quantization.

"The quantized model remembers" has two possible causes (docs/design.md "Calibration"): rounding pulls the unlearned
weights back onto the target's codes, or the forgetting is fragile and any perturbation of that size undoes it. A
noise control tells them apart: it perturbs every quantizable weight W by a random E of the size of the quantization
error Q(W) - W, block by block, and the model is evaluated as the quantized one would be. If the controls move the
metrics as much as quantization does, fragility explains it; if quantization moves them back much further, rounding
back does.

Two kinds, per block of the quantizer (bitsandbytes FP4/NF4: ``blocksize`` consecutive weights, row-major; LLM.int8:
one output row; RTN int-k: ``group_size`` weights along a row, or the whole row for 0, a short last group where the
row does not divide):

- ``permuted``: the block's actual error values Q(W) - W, randomly permuted within the block (the same multiset of
  errors, placed at random);
- ``gaussian``: independent N(0, rms^2) noise, rms = the root mean square of the block's error.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from qru.quant.bnb import quantizable_linears
from qru.quant.spec import NOISE_KINDS as KINDS, QuantSpec, Quantizer


def block_ids(shape: tuple[int, int], spec: QuantSpec) -> torch.Tensor:
    """int64 [out, in]: the index of the quantization block each weight belongs to under ``spec`` (see the module
    docstring). Raises ValueError at 32 bits (no blocks) or for GPTQ (per-model, not per-block rounding)."""
    out_features, in_features = shape
    if spec.bits == 32 or spec.is_gptq:
        raise ValueError(f"{spec.key}: noise controls need a quantizer that rounds block by block")
    if spec.quant_type in ("fp4", "nf4"):
        return (torch.arange(out_features * in_features) // spec.blocksize).reshape(shape)
    if spec.quant_type == "int8":
        return torch.arange(out_features).unsqueeze(1).expand(shape).clone()
    group = spec.group_size or in_features
    per_row = -(-in_features // group)
    col_group = torch.arange(in_features) // group
    return torch.arange(out_features).unsqueeze(1) * per_row + col_group.unsqueeze(0)


def _grouped_order(ids: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Positions (into the flattened tensor) sorted by block id; with ``gen`` in random order within each block."""
    flat = ids.flatten().double()
    if gen is None:
        return torch.argsort(flat, stable=True)
    return torch.argsort(flat + torch.rand(flat.numel(), generator=gen, dtype=torch.float64) * 0.5)


def permuted_error(error: torch.Tensor, ids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``error`` [out, in] with its values randomly permuted within each block of ``ids`` (same shape)."""
    source, target = _grouped_order(ids, gen), _grouped_order(ids, None)
    out = torch.empty_like(error).flatten()
    out[target] = error.flatten()[source]
    return out.reshape(error.shape)


def gaussian_error(error: torch.Tensor, ids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise [out, in] whose standard deviation in each block of ``ids`` is the block's error RMS."""
    flat_ids, sq = ids.flatten(), error.flatten().double() ** 2
    n_blocks = int(flat_ids.max()) + 1
    sums = torch.zeros(n_blocks, dtype=torch.float64).index_add_(0, flat_ids, sq)
    counts = torch.zeros(n_blocks, dtype=torch.float64).index_add_(0, flat_ids, torch.ones_like(sq))
    rms = (sums / counts.clamp(min=1)).sqrt()[flat_ids].float()
    return (torch.randn(error.numel(), generator=gen) * rms).reshape(error.shape)


def perturbation(weight: torch.Tensor, spec: Quantizer, kind: str, gen: torch.Generator) -> torch.Tensor:
    """The noise control's perturbation E [out, in] (float32) of ``weight`` under ``spec`` (a qru.quant.spec.Quantizer:
    a QuantSpec, or a GGUFGrid with blocks of 32 along a row): ``permuted`` or ``gaussian`` (module docstring), over
    the quantizer's blocks (``spec.block_ids``) and its error ``spec.dequantize(W) - W``. Raises ValueError for an
    unknown kind or a quantizer without blocks."""
    if kind not in KINDS:
        raise ValueError(f"unknown noise control {kind!r} (choose from {', '.join(KINDS)})")
    w = weight.detach().float()
    ids = spec.block_ids(tuple(w.shape))
    error = spec.dequantize(w) - w
    return permuted_error(error, ids, gen) if kind == "permuted" else gaussian_error(error, ids, gen)


def noisy_model(model: nn.Module, spec: Quantizer, kind: str, seed: int) -> nn.Module:
    """A copy of ``model`` whose quantizable Linear weights are W + E (:func:`perturbation`), the perturbations
    drawn from ``seed`` in model order; ``model`` is unchanged. A weight the quantizer leaves as it is
    (``spec.quantizes``: a GGUF grid skips rows not divisible into blocks of 32) is left unperturbed too. Raises
    ValueError like :func:`perturbation`."""
    gen = torch.Generator().manual_seed(seed)
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for module in quantizable_linears(noisy).values():
            if not spec.quantizes(tuple(module.weight.shape)):
                continue  # left unquantized by the grid too (qru.quant.gguf.gguf_fake_quantize)
            module.weight.add_(perturbation(module.weight, spec, kind, gen))
    return noisy.eval()


__all__ = ["KINDS", "block_ids", "gaussian_error", "noisy_model", "permuted_error", "perturbation"]
