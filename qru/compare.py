"""``qru deltas A B``: the weight-delta analysis of two checkpoints, streamed, stored in the run store like a run.

A is the target checkpoint, B the unlearned one or a peft LoRA adapter trained on A (qru.checkpoints). The result is
a run folder ``deltas-<key>`` holding config.json (a DeltasConfig), status.json, log.txt, deltas.parquet and
deltas_hist.npz in the same form as a run's, so the Weight-deltas page shows it; it has no metrics or probes.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch

from qru.checkpoints import (Checkpoint, UnusableCheckpointError, fingerprint, open_target, open_unlearned,
                             stream_pairs)
from qru.config import DeltasConfig
from qru.deltas import deltas_files, scan
from qru.errors import CheckpointError
from qru.provenance import FILE as PROVENANCE, provenance
from qru.quant.spec import QuantSpec
from qru.store import RunStore, run_id_of

Progress = Callable[[str, int, int, str], None]


def deltas_config(target: str | Path, unlearned: str | Path, specs: list[QuantSpec]) -> DeltasConfig:
    """The DeltasConfig of comparing ``target`` with ``unlearned`` (headers are read, not tensors).
    Raises CheckpointError for an unreadable checkpoint or adapter."""
    base, other = open_target(target), open_unlearned(unlearned)
    return DeltasConfig(target=str(base.path), unlearned=str(other.path),
                        fingerprint=fingerprint(base.files + other.files), quantizers=tuple(s.key for s in specs))


def compare(config: DeltasConfig, store: RunStore | None = None, progress: Progress | None = None,
            force: bool = False, device: str | torch.device = "cpu") -> str:
    """Scan the two checkpoints of ``config`` tensor by tensor under its quantizers and store the result; return
    the run id. A finished comparison of the same config (same files, unchanged) is reused unless ``force``.
    ``device``: where the scan computes (qru.devices.scan_device; the result does not depend on it: tests).

    Raises CheckpointError where the checkpoints do not match or a weight holds NaN or infinity (found as the scan
    reads it; nothing is stored then: the run's folder is removed) or a file changed during the scan, LockedError if
    another process computes the same comparison; another error during the scan is recorded in the run's status and
    re-raised.
    """
    store = store or RunStore()
    progress = progress or (lambda *a: None)
    if not force and store.find(config):
        return run_id_of(config)
    base, other = Checkpoint(config.target), open_unlearned(config.unlearned)
    pairs = stream_pairs(base, other)
    n = len(base.quantizable())
    specs = config.quant_specs()
    with store.open_run(config) as writer:
        writer.set_status("running", stage="starting")
        writer.write_json(PROVENANCE, provenance(specs, device=str(device)))
        quantized = sum(s.bits < 32 for s in specs)
        writer.log(f"{writer.run_id}: {config.target} -> {config.unlearned} ({n} tensors, {quantized} quantizers, "
                   f"on {device})")
        try:
            def step(i: int, name: str) -> None:
                stage = f"scanning {n} tensors under {quantized} quantizers"
                writer.set_status("running", stage=stage, done=i, total=n, message=name)
                progress(stage, i, n, name)
            rows, hists = scan(pairs, specs, progress=step, device=device)
            if fingerprint(base.files + other.files) != config.fingerprint:
                raise CheckpointError("a checkpoint file changed during the scan (its size or modification time): "
                                      "the result would mix two versions; run it again")
            writer.write_deltas(*deltas_files(rows, hists))
        except UnusableCheckpointError:
            shutil.rmtree(writer.folder, ignore_errors=True)  # bad input, not a failed run: leave nothing stored
            raise
        except BaseException as exc:
            writer.fail(exc)
            raise
        writer.set_status("done", stage="done", done=n, total=n)
        writer.log("done")
    return writer.run_id


__all__ = ["compare", "deltas_config"]
