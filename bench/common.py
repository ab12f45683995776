"""Shared set-up of the benchmarks: the cached embedded target (tiny), or the micro one with --micro."""
from __future__ import annotations

import argparse
import time

import torch

from qru.recipes import SCALES
from qru.corpus import ensure_corpus
from qru.models import ensure_models
from qru.store import RunStore


def setup(description: str):
    """Parse --micro/--cache, then load (building if needed) the corpus and models. Returns (args, corpus, pair)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--micro", action="store_true", help="use the micro model (seconds) instead of tiny")
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    corpus_cfg, model_cfg = SCALES["micro" if args.micro else "tiny"]
    cache = RunStore(args.cache).root
    corpus = ensure_corpus(corpus_cfg, cache)
    return args, corpus, ensure_models(corpus, corpus_cfg, model_cfg, cache), model_cfg


def timed(fn, *a, **kw):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - start
