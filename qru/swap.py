"""Crash-safe replacement of a finished run's folder by its forced re-run (qru.store.RunStore.open_run).

The swap is two renames: ``<id>`` -> ``.old-<id>``, then ``.rerun-<id>`` -> ``<id>``; ``.old-<id>`` is deleted
afterwards. A process killed between the renames leaves no ``<id>`` at all, so every reader of the store first
calls :func:`recover`, which finishes or undoes such a swap: with ``<id>`` missing, a complete re-run (its
status says done) is promoted, otherwise ``.old-<id>`` is put back; with ``<id>`` present, a leftover ``.old-<id>`` is
deleted. A swap still in progress is recognised by its lock (the swapping process holds ``.lock``, which moves into
``.old-<id>`` with the folder) and left alone.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from qru.atomic import is_locked

OLD, RERUN = ".old-", ".rerun-"
FINISHED_FILES = ("metrics.json", "deltas.parquet")  # one of them present: a run's results are complete


def replace_folder(folder: Path, stage: Path) -> None:
    """Put ``stage`` in the place of ``folder`` (two renames; the old folder is deleted afterwards). A kill at any
    point is repaired by :func:`recover`."""
    old = folder.with_name(OLD + folder.name)
    shutil.rmtree(old, ignore_errors=True)
    os.rename(folder, old)
    os.rename(stage, folder)
    shutil.rmtree(old, ignore_errors=True)


def _finished(folder: Path) -> bool:
    """Whether a staged re-run finished: its status.json says done and its config and results are there."""
    try:
        done = json.loads((folder / "status.json").read_text(encoding="utf-8")).get("state") == "done"
    except (OSError, ValueError, AttributeError):
        return False
    return done and (folder / "config.json").is_file() and any((folder / f).is_file() for f in FINISHED_FILES)


def recover(runs: Path) -> list[str]:
    """Finish or undo the swaps a killed process left halfway in the folder ``runs``; returns the run ids repaired.
    Never raises for a swap it cannot repair now (another process may be repairing it)."""
    repaired = []
    if not runs.is_dir():
        return repaired
    for old in runs.glob(OLD + "*"):
        name = old.name[len(OLD):]
        folder, stage = runs / name, runs / (RERUN + name)
        if not old.is_dir() or not name or is_locked(old / ".lock"):
            continue  # a swap in progress: its process still holds the run's lock
        try:
            if folder.exists():
                shutil.rmtree(old)  # the swap finished; only the deletion of the old folder was missed
                continue
            promote = _finished(stage)
            os.rename(stage if promote else old, folder)
            if promote:
                shutil.rmtree(old, ignore_errors=True)
            repaired.append(name)
        except OSError:
            continue
    return repaired
