"""Sweeps: the papers' experiments as named presets of ordinary runs, repeated over seeds, resumable after a kill.

A sweep is a list of RunConfigs. Each is computed by :func:`qru.pipeline.run` and stored as an ordinary run; a finished
run is found in the store and not redone, so running the same sweep again after a kill continues where it stopped.
The sweep itself is recorded in ``<store>/sweeps/<preset>-<key>.json`` (preset, seeds, run ids in order) so the
dashboard can show its overall progress and lay its runs out as the papers' tables.

Presets (docs/design.md "Defaults from the papers"):
- ``zhang2025``: Zhang et al. 2025 (arXiv 2410.16454), Table 2: GA, GA+GDR, GA+KLR, NPO, NPO+GDR, NPO+KLR with full
  fine-tuning at lr 1e-5, 5 epochs, evaluated at 32/8/4 bits.
- ``lora2026``: arXiv 2602.13151: the same six methods with LoRA r 32, alpha 32, lr 1e-4, 5 epochs, merged before
  quantization.
- ``lr-scan``: NPO+GDR with full fine-tuning at lr 1e-6, 1e-5, 1e-4, 1e-3 and LoRA at 1e-5, 1e-4, 1e-3: where updates
  start to survive 4-bit.
- ``fixes``: the proposed fixes side by side (docs/experiments.md "The fixes preset"): GA+GDR and NPO+GDR with full
  fine-tuning, LoRA, quantization-aware full and LoRA (NF4), and SAM (full), from the natural start and from the
  target snapped to NF4, quantized with NF4; each run is then attacked by relearning (qru.relearn, its defaults).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qru.atomic import write_json
from qru.config import ConfigError, RunConfig, config_key
from qru.store import RunStore, run_id_of

SWEEPS = "sweeps"
# The fixes preset (docs/experiments.md "The fixes preset"): the demo set's calibrated rates and NF4 grid; SAM's
# rho 1 is about 15% of the norm of NF4's rounding error over the tiny model's quantized weights (6.7).
FIX_GRID = "nf4-b64@4"
FIX_LR = {"full": 5e-5, "lora": 5e-4}
FIXES = (("full", ()), ("lora", ()), ("full", (("quant_aware", FIX_GRID),)), ("lora", (("quant_aware", FIX_GRID),)),
         ("full", (("sam_rho", 1.0),)))
PAPER_METHODS = (("ga", "none"), ("ga", "gdr"), ("ga", "klr"), ("npo", "none"), ("npo", "gdr"), ("npo", "klr"))


@dataclass(frozen=True)
class Preset:
    """A named sweep: ``(method, regularizer, adapter, lr)`` combinations, all at ``epochs`` and LoRA r/alpha 32; a
    combination may carry a fifth element, further unlearning choices of qru.recipes.unlearn_config as ``(name,
    value)`` pairs (e.g. ``(("sam_rho", 1.0),)``). ``choices``: run choices every run takes unless the sweep's
    command sets them (e.g. ``(("quant_type", "nf4"),)``); ``relearn``: attack every finished run by relearning."""

    name: str
    description: str
    combos: tuple[tuple, ...]
    epochs: int = 5
    rows: str = "method"  # how the paper-table view lays it out: one row per method, or per learning rate
    choices: tuple = ()
    relearn: bool = False


PRESETS = {
    "zhang2025": Preset("zhang2025", "Zhang et al. 2025: GA, GA+GDR, GA+KLR, NPO, NPO+GDR, NPO+KLR, full "
                        "fine-tuning at lr 1e-5, 5 epochs", tuple((m, r, "full", 1e-5) for m, r in PAPER_METHODS)),
    "lora2026": Preset("lora2026", "arXiv 2602.13151: the same six methods with LoRA r 32, alpha 32, lr 1e-4, "
                       "5 epochs, merged before quantizing", tuple((m, r, "lora", 1e-4) for m, r in PAPER_METHODS)),
    "lr-scan": Preset("lr-scan", "NPO+GDR: full fine-tuning at lr 1e-6..1e-3, LoRA at lr 1e-5..1e-3",
                      tuple(("npo", "gdr", "full", lr) for lr in (1e-6, 1e-5, 1e-4, 1e-3)) +
                      tuple(("npo", "gdr", "lora", lr) for lr in (1e-5, 1e-4, 1e-3)), rows="lr"),
    "fixes": Preset("fixes", "the fixes side by side: GA+GDR and NPO+GDR with full fine-tuning (lr 5e-5), LoRA "
                    "(5e-4), quantization-aware full and LoRA (NF4) and SAM (full, rho 1), from the natural and the "
                    "NF4-snapped start, quantized with NF4; each run then attacked by relearning",
                    tuple((m, "gdr", adapter, FIX_LR[adapter], (*extra, *start))
                          for m in ("ga", "npo") for start in ((), (("start_grid", FIX_GRID),))
                          for adapter, extra in FIXES), choices=(("quant_type", "nf4"),), relearn=True),
}


def preset(name: str) -> Preset:
    """The preset called ``name``. Raises ConfigError naming it and the choices if there is none."""
    if name not in PRESETS:
        raise ConfigError(f"unknown sweep preset {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


def record_path(store: RunStore, name: str, configs: list[RunConfig]) -> Path:
    """``<store>/sweeps/<preset>-<key>.json``, the key hashing the sweep's run ids in order."""
    return store.root / SWEEPS / f"{name}-{config_key([run_id_of(c) for c in configs])}.json"


def record(store: RunStore, name: str, configs: list[RunConfig], seeds: tuple[int, ...]) -> Path:
    """Write (atomically) or keep the sweep's record; return its path."""
    path = record_path(store, name, configs)
    if not path.is_file():
        write_json(path, {"preset": name, "seeds": list(seeds), "run_ids": [run_id_of(c) for c in configs],
                          "labels": [c.label for c in configs], "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return path


@dataclass
class SweepInfo:
    """A recorded sweep: its file's stem (id), preset, seeds and run ids, and how many of those runs are finished."""

    sweep_id: str
    preset: str
    seeds: list[int]
    run_ids: list[str]
    done: int
    failed: int

    @property
    def label(self) -> str:
        return (f"{self.sweep_id} ({len(self.run_ids)} runs, seeds {', '.join(map(str, self.seeds))}): "
                f"{self.done}/{len(self.run_ids)} done" + (f", {self.failed} failed" if self.failed else ""))


def _state(store: RunStore, run_id: str) -> str:
    try:
        return store.status(run_id).get("state", "")
    except Exception:  # noqa: BLE001 (a missing or unreadable run counts as not finished)
        return ""


def list_sweeps(store: RunStore) -> list[SweepInfo]:
    """The recorded sweeps of ``store``, newest first; unreadable records are skipped."""
    folder = store.root / SWEEPS
    infos = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) \
            if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            states = [_state(store, r) for r in data["run_ids"]]
            infos.append(SweepInfo(path.stem, str(data["preset"]), list(data["seeds"]), list(data["run_ids"]),
                                   states.count("done"), states.count("failed")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return infos


def combine(infos: list[SweepInfo]) -> tuple[list[str], str, list[int]]:
    """Several recorded sweeps read as one table (for example zhang2025's full fine-tuning beside lora2026's LoRA):
    their run ids in order without repeats, the paper-table row kind (``"lr"`` if every sweep is laid out by
    learning rate, else ``"method"``) and the union of their seeds. Raises ConfigError if ``infos`` is empty."""
    if not infos:
        raise ConfigError("pick at least one sweep")
    run_ids = list(dict.fromkeys(r for info in infos for r in info.run_ids))
    rows = "lr" if all(PRESETS.get(i.preset, Preset("", "", ())).rows == "lr" for i in infos) else "method"
    return run_ids, rows, sorted({s for info in infos for s in info.seeds})


def run_sweep(name: str, configs: list[RunConfig], seeds: tuple[int, ...], store: RunStore,
              progress: Callable | None = None, announce: Callable[[int, int, RunConfig, bool], None] | None = None,
              relearn=None) -> tuple[list[str], list[tuple[RunConfig, BaseException]]]:
    """Compute every run of a sweep that the store does not have finished, in order; return (run ids, failures).

    A run that fails is recorded as failed in the store (its error in its log) and the sweep goes on with the next;
    KeyboardInterrupt stops the sweep (finished runs stay; the next call resumes). ``announce(i, n, config, found)``
    is called before each run. With ``relearn`` (a qru.config.RelearnConfig) every finished run is then attacked by
    relearning (qru.relearn.compute_relearn; a stored attack is read, not redone); a failed attack is a failure of
    its run.
    """
    from qru.pipeline import run

    record(store, name, configs, seeds)
    ids, failures = [], []
    for i, config in enumerate(configs):
        found = store.find(config) is not None
        if announce:
            announce(i, len(configs), config, found)
        try:
            ids.append(run(config, store, progress))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 (one failed run must not stop a long sweep)
            failures.append((config, exc))
    if relearn is not None:
        _relearn_all(store, ids, [c for c in configs if run_id_of(c) in ids], relearn, progress, failures)
    return ids, failures


def _relearn_all(store: RunStore, ids: list[str], configs: list[RunConfig], relearn, progress, failures) -> None:
    from qru.relearn import compute_relearn, record_path

    for i, (run_id, config) in enumerate(zip(ids, configs)):
        if progress and not record_path(store, run_id, relearn).is_file():
            progress("relearning attack", i, len(ids), f"{config.label} seed {config.seed}")
        try:
            compute_relearn(store, run_id, relearn)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 (one failed attack must not stop the others)
            failures.append((config, exc))


__all__ = ["PRESETS", "Preset", "SweepInfo", "combine", "list_sweeps", "preset", "record", "run_sweep"]
