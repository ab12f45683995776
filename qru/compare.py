"""``qru deltas A B``: the weight-delta analysis of two checkpoints, streamed, stored in the run store like a run.

A is the target checkpoint, B the unlearned one or a peft LoRA adapter trained on A (qru.checkpoints). The result is
a run folder ``deltas-<key>`` holding config.json (a DeltasConfig), status.json, log.txt, deltas.parquet and
deltas_hist.npz in the same form as a run's, so the Weight-deltas page shows it; it has no metrics or probes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from qru.checkpoints import Checkpoint, fingerprint, open_unlearned, stream_pairs
from qru.config import ConfigError, DeltasConfig, QuantSpec
from qru.deltas import analysis_grid, deltas_files, scan
from qru.store import RunStore, run_id_of

Progress = Callable[[str, int, int, str], None]
QUANTIZER_SETS = {
    "all": "32 bits, FP4 and NF4 (block 64), LLM.int8 and RTN int-k 2..8 bits, sym/asym, per channel and g32/64/128",
    "bnb": "32 bits and the bitsandbytes quantizers the papers use: FP4, NF4 (block 64), LLM.int8",
    "4bit": "32 bits, FP4, NF4 and RTN int4 asym/sym with every group size",
}


def quantizer_set(names: list[str]) -> list[QuantSpec]:
    """The quantizers named by ``names``: set names of QUANTIZER_SETS and/or quantizer keys (QuantSpec.key, e.g.
    ``fp4-b64@4``, ``rtn-asym-g128@3``), in order, without repeats; 32 bits always first.
    Raises ConfigError naming an unknown name."""
    grid = analysis_grid()
    specs = [QuantSpec()]
    for name in names:
        if name == "all":
            specs += grid
        elif name == "bnb":
            specs += [s for s in grid if not s.is_rtn]
        elif name == "4bit":
            specs += [s for s in grid if s.bits == 4]
        else:
            try:
                specs.append(QuantSpec.from_key(name))
            except ConfigError as exc:
                raise ConfigError(f"{exc}; or one of the sets {', '.join(QUANTIZER_SETS)}") from None
    seen: dict[str, QuantSpec] = {}
    for spec in specs:
        seen.setdefault(spec.key, spec)
    return list(seen.values())


def deltas_config(target: str | Path, unlearned: str | Path, specs: list[QuantSpec]) -> DeltasConfig:
    """The DeltasConfig of comparing ``target`` with ``unlearned`` (headers are read, not tensors).
    Raises CheckpointError for an unreadable checkpoint or adapter."""
    base, other = Checkpoint(target), open_unlearned(unlearned)
    return DeltasConfig(target=str(base.path), unlearned=str(other.path),
                        fingerprint=fingerprint(base.files + other.files), quantizers=tuple(s.key for s in specs))


def compare(config: DeltasConfig, store: RunStore | None = None, progress: Progress | None = None,
            force: bool = False) -> str:
    """Scan the two checkpoints of ``config`` tensor by tensor under its quantizers and store the result; return
    the run id. A finished comparison of the same config (same files, unchanged) is reused unless ``force``.

    Raises CheckpointError where the checkpoints do not match (nothing is stored then), LockedError if another
    process computes the same comparison; an error during the scan is recorded in the run's status and re-raised.
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
        writer.log(f"{writer.run_id}: {config.label} ({n} tensors, {len(specs)} quantizers)")
        try:
            def step(i: int, name: str) -> None:
                stage = f"scanning {n} tensors under {len(specs)} quantizers"
                writer.set_status("running", stage=stage, done=i, total=n, message=name)
                progress(stage, i, n, name)
            rows, hists = scan(pairs, specs, progress=step)
            frame, arrays = deltas_files(rows, hists)
            writer.write_npz("deltas_hist.npz", arrays)
            writer.write_parquet("deltas.parquet", frame)  # last: with it the comparison is complete
        except BaseException as exc:
            writer.fail(exc)
            raise
        writer.set_status("done", stage="done", done=n, total=n)
        writer.log("done")
    return writer.run_id


__all__ = ["QUANTIZER_SETS", "compare", "deltas_config", "quantizer_set"]
