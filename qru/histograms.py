"""Exact counts of non-negative float32 values on log-spaced bin edges, in a few vectorized torch passes.

``np.histogram`` with uneven edges sorts its input (0.3 s per 10 million values on 2 cores); the weight-delta scan
(qru.deltas) takes four or five such histograms per quantizer and tensor. This module gets the same counts from the
float32 bit patterns instead: for non-negative floats the int32 view orders like the values, so a value's bin is the
number of edge thresholds at or below its bits. A lookup table indexed by the top bits (each entry one coarse bucket
of 2^16 consecutive float32 values) gives the bin of the bucket's lowest value; one comparison with the next threshold
corrects the few buckets that an edge cuts. Each float64 edge e becomes the threshold "smallest float32 >= e", so a
float32 value v counts at or above e exactly when v >= e in float64, as numpy compares.

Values outside the edges are clipped into the end bins (the last edge is inclusive, as numpy's); exact zeros are
counted apart. Works on any device torch computes on.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SHIFT = 16  # coarse bucket = 2^16 float32 values: far narrower than any gap between log-spaced edges


def _f32_at_least(x: float) -> np.float32:
    """The smallest float32 >= x (x a finite float64)."""
    f = np.float32(x)
    return f if float(f) >= x else np.nextafter(f, np.float32(np.inf))


def _f32_at_most(x: float) -> np.float32:
    """The largest float32 <= x."""
    f = np.float32(x)
    return f if float(f) <= x else np.nextafter(f, np.float32(-np.inf))


def _bits(f: np.float32) -> int:
    return int(np.array([f], dtype=np.float32).view(np.int32)[0])


@lru_cache(maxsize=16)
def _tables(edges: tuple[float, ...], device: str) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """(bits of the lowest kept value, bits of the highest, lookup [n_buckets] int64 bin of each coarse bucket's
    lowest value, next [n_bins] int32 threshold bits of the bin above each bin; int32 max for the last), the
    tables on ``device``."""
    lo, hi = _bits(_f32_at_least(edges[0])), _bits(_f32_at_most(edges[-1]))
    thresholds = np.array([_bits(_f32_at_least(e)) for e in edges[1:-1]], dtype=np.int64)
    if edges[0] <= 0 or np.any(np.diff(np.array(edges)) <= 0) or \
            np.any(np.diff(np.concatenate([[lo], thresholds, [hi]])) < 2 ** SHIFT):
        raise ValueError("log_counts needs positive, increasing edges at least 2^16 float32 steps apart")
    starts = lo + (np.arange(((hi - lo) >> SHIFT) + 1, dtype=np.int64) << SHIFT)
    lookup = np.searchsorted(thresholds, starts, side="right").astype(np.int64)
    nxt = np.append(thresholds, np.iinfo(np.int32).max).astype(np.int32)
    return lo, hi, torch.from_numpy(lookup).to(device), torch.from_numpy(nxt).to(device)


_seen: dict[int, tuple[object, tuple[float, ...]]] = {}  # id -> (array or tensor, its values), read once


def _values(table) -> tuple[float, ...]:
    """The values of a constant table (edges or boundaries: numpy array or tensor, never changed in place) as a
    hashable tuple, read once per object: no copy, and no device synchronisation, on every call of a hot loop."""
    known = _seen.get(id(table))
    if known is None or known[0] is not table:
        if len(_seen) >= 64:  # bounded: the tables qru passes are a few module-level constants
            _seen.clear()
        flat = table.detach().cpu().tolist() if isinstance(table, torch.Tensor) else list(table)
        known = _seen[id(table)] = (table, tuple(float(x) for x in flat))
    return known[1]


def log_counts(values: torch.Tensor, edges: np.ndarray) -> tuple[torch.Tensor, int]:
    """Counts of the non-zero ``values`` (float32, >= 0, finite, any shape and device) on ``edges`` (float64
    [n + 1], positive, increasing; e.g. np.logspace), values outside clipped into the end bins, and the number of
    exact zeros. Returns (int64 [n] on ``values``' device, int). Equal to numpy's ``np.histogram`` of the clipped
    non-zero values (tests/test_scan_reference.py). Raises ValueError for edges too close together (< 2^16 float32
    steps) or not positive."""
    lo, hi, lookup, nxt = _tables(_values(edges), str(values.device))
    v = values.detach().reshape(-1)
    if v.dtype != torch.float32:
        v = v.float()
    zeros = v.numel() - int(torch.count_nonzero(v))
    bits = v.view(torch.int32).clamp(lo, hi)  # clipping in bits = clipping in value (non-negative floats)
    idx = lookup.index_select(0, (bits - lo) >> SHIFT)
    idx += bits >= nxt.index_select(0, idx)
    counts = torch.bincount(idx, minlength=len(edges) - 1)
    counts[0] -= zeros  # zeros were clipped into the first bin
    return counts, zeros


def _key(bits: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns (int32) -> int32 keys ordered as the floats are (-0.0 just below +0.0)."""
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@lru_cache(maxsize=32)
def _bucket_tables(boundaries: tuple[float, ...], device: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(lookup [2^16]: for each coarse bucket of keys (key >> 16), the count of boundaries with a key below its
    lowest key; the boundaries' keys followed by int32 max), or None where two boundaries share a coarse bucket."""
    b = np.array([0.0 if x == 0 else x for x in boundaries], dtype=np.float32)  # -0.0 as +0.0 (they compare equal)
    keys = _key(torch.from_numpy(b.view(np.int32).copy())).numpy().astype(np.int64)
    if np.any(np.diff(keys) <= 0) or len(set((keys >> SHIFT).tolist())) < len(keys):
        return None
    starts = (np.arange(2 ** (32 - SHIFT), dtype=np.int64) - 2 ** (31 - SHIFT)) << SHIFT
    lookup = np.searchsorted(keys, starts, side="left").astype(np.int64)  # boundaries with key < the bucket start
    nxt = np.append(keys, np.iinfo(np.int32).max).astype(np.int32)
    return torch.from_numpy(lookup).to(device), torch.from_numpy(nxt).to(device)


def bucketize(values: torch.Tensor, boundaries: torch.Tensor) -> torch.Tensor:
    """``torch.bucketize(values, boundaries)`` (right=False: the number of boundaries strictly below each value;
    int64, ``values``' shape) for float32 values without NaN and a few sorted float32 ``boundaries`` (the levels or
    rounding boundaries of a 4-bit grid), from the values' bit patterns as :func:`log_counts` bins them, 2-3x
    faster than torch's binary search on a CPU. Falls back to torch.bucketize where two boundaries are closer
    than 2^16 float32 steps or the values are not float32."""
    tables = _bucket_tables(_values(boundaries), str(values.device))
    if tables is None or values.dtype != torch.float32:
        return torch.bucketize(values, boundaries)
    lookup, nxt = tables
    key = _key(values.contiguous().view(torch.int32))
    idx = lookup.index_select(0, ((key >> SHIFT) + 2 ** (31 - SHIFT)).reshape(-1))
    idx += key.reshape(-1) > nxt.index_select(0, idx)
    return idx.reshape(values.shape)


__all__ = ["bucketize", "log_counts"]
