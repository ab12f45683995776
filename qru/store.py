"""The run store: one folder per run under ``<root>/runs/<run_id>/``.

run_id = ``<method>-<regularizer>-<adapter>-<key>`` where key hashes the full RunConfig, so the same config is found
instead of recomputed. Files of a run:

- ``config.json``   the RunConfig
- ``status.json``   state (queued / running / done / failed / cancelled), stage, progress, message, error, pid, times
- ``metrics.json``  one row per (model, bit width): target, retrain, unlearned x 32/8/4
- ``samples.json``  per-sample scores and generations behind every metric row
- ``deltas.parquet``  per-tensor delta statistics at each bit width; ``deltas_hist.npz`` their pre-binned histograms
- ``probes.json``   forget-set prompts with every model's greedy continuation and its ROUGE-L
- ``train_log.json``  per-step unlearning losses; ``log.txt`` a human-readable log
- ``unlearned_delta.safetensors`` (full fine-tuning: W_u - W_t) or ``adapter/`` (LoRA adapter, peft format)

Every file is written atomically (temporary file + rename). ``.lock`` is an OS lock held by the process running the
run: a second process is refused, and a run whose status says running while nobody holds the lock was interrupted.
No pickle anywhere (JSON, Parquet, NPZ without object arrays, safetensors).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from qru.atomic import (LockedError, atomic_write, exclusive, is_locked, read_json, remove_stale_temps, write_json,
                        write_text)
from qru.config import (ConfigError, DeltasConfig, ImportConfig, RunConfig, config_key, stored_config_from_dict,
                        to_dict)
# the column constants are imported from here too (by the views and the command line's reports)
from qru.store_columns import DELTA_COLUMNS, METRIC_COLUMNS, SUMMARY_COLUMNS, probe_problem as _probe_problem
from qru.errors import JobCancelled
from qru.swap import FINISHED_FILES, recover, replace_folder

DEFAULT_ROOT = Path("cache")
STATES = ("queued", "running", "done", "failed", "cancelled")
# FINISHED_FILES (qru.swap): a run folder holding one of them has finished results, which a re-run must not touch
# until it succeeds: a run writes metrics.json last, a checkpoint comparison (qru deltas) writes only deltas files.


class StoreError(ValueError):
    """A run is missing or its folder is corrupt; the message names the run and the file."""


def run_id_of(config: RunConfig | DeltasConfig) -> str:
    """The store id of a config: ``<method>-<regularizer>-<adapter>-<12 hex digits of its key>`` for a run,
    ``deltas-<key>`` for a checkpoint comparison."""
    if isinstance(config, DeltasConfig):
        return f"deltas-{config_key(config)}"
    if isinstance(config, ImportConfig):
        return f"import-{config_key(config)}"
    u = config.unlearn
    return f"{u.method}-{u.regularizer}-{u.adapter}-{config_key(config)}"


@dataclass
class RunInfo:
    """One row of the run list."""

    run_id: str
    label: str
    state: str
    stage: str
    progress: float
    updated: str
    error: str


class RunStore:
    """Runs under ``<root>/runs``; ``root`` defaults to ``./cache`` (or $QRU_CACHE)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get("QRU_CACHE") or DEFAULT_ROOT)
        self.runs = self.root / "runs"

    def path(self, run_id: str) -> Path:
        """Folder of a run. Raises StoreError for ids that are not plain folder names."""
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise StoreError(f"not a run id: {run_id!r}")
        return self.runs / run_id

    def ids(self) -> list[str]:
        """All run ids, newest status first (after repairing a swap a killed re-run left halfway: qru.swap)."""
        if not self.runs.is_dir():
            return []
        recover(self.runs)
        dirs = [p for p in self.runs.iterdir() if p.is_dir() and not p.name.startswith(".") and _utf8(p.name)]
        return [p.name for p in sorted(dirs, key=lambda p: _mtime(p / "status.json"), reverse=True)]

    # -- reading -------------------------------------------------------------------------------------------------
    def read_json(self, run_id: str, name: str):
        """A JSON file of a run. Raises StoreError if the run or file is missing or not valid JSON."""
        if not self.path(run_id).is_dir() and run_id not in recover(self.runs):
            raise StoreError(f"no run {run_id!r} in {self.runs}")
        return read_json(self.path(run_id) / name, StoreError, f"run {run_id}: {name}")

    def config(self, run_id: str) -> RunConfig | DeltasConfig:
        """The RunConfig of a run (DeltasConfig of a checkpoint comparison). Raises StoreError if config.json is
        missing, corrupt or invalid."""
        try:
            return stored_config_from_dict(self.read_json(run_id, "config.json"))
        except (ConfigError, ValueError, TypeError) as exc:
            raise StoreError(f"run {run_id}: config.json is invalid ({exc})") from exc

    def rerun_path(self, run_id: str) -> Path:
        """Where a forced re-run of a finished run is computed until it replaces the run (see :meth:`open_run`)."""
        return self.runs / f".rerun-{self.path(run_id).name}"

    def status(self, run_id: str) -> dict:
        """status.json, with a queued/running run whose process is gone reported as failed (interrupted).

        While a forced re-run of a finished run is in progress, its live status is returned; once it failed or was
        killed, the finished run's status is returned with ``rerun_error`` and ``rerun_updated`` added."""
        rerun = self.rerun_path(run_id) / "status.json"
        if rerun.is_file():
            try:
                live = read_json(rerun, StoreError, f"re-run of {run_id}: status.json")
            except StoreError as exc:  # a damaged re-run never hides the finished run
                live = {"state": "failed", "error": str(exc)}
            if is_locked(self.path(run_id) / ".lock") and isinstance(live, dict) and live.get("state") in STATES:
                return self._checked_status(run_id, live)
            status = self._checked_status(run_id, self.read_json(run_id, "status.json"))
            if isinstance(live, dict) and live.get("state") != "done":
                status = {**status, "rerun_error": str(live.get("error") or "interrupted"),
                          "rerun_updated": str(live.get("updated", "")), "rerun_pid": live.get("pid")}
            return status
        return self._checked_status(run_id, self.read_json(run_id, "status.json"))

    def _checked_status(self, run_id: str, status) -> dict:
        if not isinstance(status, dict) or status.get("state") not in STATES:
            raise StoreError(f"run {run_id}: status.json has no valid state")
        for key, kind in (("done", int), ("total", int), ("stage", str), ("message", str), ("error", str)):
            if key in status and not isinstance(status[key], kind):
                raise StoreError(f"run {run_id}: status.json field {key} is not {kind.__name__}: {status[key]!r}")
        if status["state"] in ("queued", "running") and not is_locked(self.path(run_id) / ".lock"):
            if status["state"] == "running" or time.time() - _mtime(self.path(run_id) / "status.json") > 60:
                status = {**status, "state": "failed",
                          "error": f"interrupted: process {status.get('pid')} stopped without finishing"}
        return status

    def metrics(self, run_id: str) -> pd.DataFrame:
        """The metric table: one row per (model, bits). Raises StoreError if missing or corrupt."""
        rows = self.read_json(run_id, "metrics.json")
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise StoreError(f"run {run_id}: metrics.json is not a non-empty list of metric rows")
        frame = pd.DataFrame(rows)
        _check_columns(frame, METRIC_COLUMNS, run_id, "metrics.json")
        bits = frame["bits"]
        if bits.isna().any() or not (bits == bits.round()).all() or not frame["model"].map(type).eq(str).all():
            raise StoreError(f"run {run_id}: metrics.json has a row without a model name or integer bit width")
        frame["bits"] = bits.astype(int)
        return frame

    def deltas(self, run_id: str) -> pd.DataFrame:
        """Per-tensor delta statistics, one row per (quantizer, tensor) with ``quantizer`` = QuantSpec.key (runs
        stored before the quantizer grid get it from their bit width). Raises StoreError if missing or unreadable."""
        path = self.path(run_id) / "deltas.parquet"
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise StoreError(f"run {run_id}: deltas.parquet is missing or corrupt ({exc})") from exc
        _check_columns(frame, DELTA_COLUMNS, run_id, "deltas.parquet")
        if "quantizer" not in frame.columns:
            keys = self._bits_keys(run_id)
            frame["quantizer"] = [keys.get(int(b), f"?@{b}") for b in frame["bits"]]
        return frame

    def _bits_keys(self, run_id: str) -> dict[int, str]:
        """Bit width -> quantizer key of a run stored before the quantizer grid (one quantizer per bit width)."""
        config = self.config(run_id)
        return {s.bits: s.key for s in config.quant_specs()}

    def histograms(self, run_id: str) -> dict[str, np.ndarray]:
        """Pre-binned histograms: ``abs_edges``, ``rel_edges``, and count arrays ``abs`` (|dW|), ``rel_<q>``
        (|dW|/Δ), ``dq_<q>`` (|Q(W_u) - Q(W_t)|, on abs_edges), ``bnd_<q>`` and ``bndrel_<q>`` (the target weights'
        distance to the nearest rounding boundary, on abs_edges and in steps on rel_edges) for each quantizer key q
        (QuantSpec.key), whose rows follow the ``tensors`` array (the last one is ``total``). Runs stored before a
        view existed lack it; those stored with ``<view>_<bits>`` keys get them renamed to quantizer keys."""
        path = self.path(run_id) / "deltas_hist.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:
            raise StoreError(f"run {run_id}: deltas_hist.npz is missing or corrupt ({exc})") from exc
        missing = [k for k in ("abs_edges", "rel_edges", "tensors", "abs") if k not in arrays]
        if missing:
            raise StoreError(f"run {run_id}: deltas_hist.npz lacks {', '.join(missing)}")
        for key in ("abs_edges", "rel_edges"):
            edges = arrays[key]
            if edges.ndim != 1 or len(edges) < 2 or not (np.all(edges > 0) and np.all(np.diff(edges) > 0)):
                raise StoreError(f"run {run_id}: deltas_hist.npz {key} are not increasing positive bin edges")
        n = len(arrays["tensors"])
        edges_of = {"abs": "abs_edges", "dq": "abs_edges", "bnd": "abs_edges", "rel": "rel_edges",
                    "bndrel": "rel_edges"}  # histogram key prefix -> its bin edges
        bad = [k for k, v in arrays.items() if k.split("_")[0] in edges_of and not k.endswith("edges")
               and (v.ndim != 2 or v.shape[0] != n or v.shape[1] != len(arrays[edges_of[k.split("_")[0]]]) - 1)]
        if bad:
            raise StoreError(f"run {run_id}: deltas_hist.npz has arrays of the wrong shape: {', '.join(bad)}")
        old = [k for k in arrays if k.rpartition("_")[2].isdigit()]  # <view>_<bits>, before the quantizer grid
        if old:
            keys = self._bits_keys(run_id)
            for k in old:
                view, _, bits = k.rpartition("_")
                arrays[f"{view}_{keys.get(int(bits), '?@' + bits)}"] = arrays.pop(k)
        return arrays

    def probes(self, run_id: str) -> list[dict]:
        """probes.json: a list of {prompt, gt, outputs: {"<model>@<bits>": {output, rougeL_f1, leaked_spans}}}.
        Raises StoreError naming the first malformed entry."""
        probes = self.read_json(run_id, "probes.json")
        if not isinstance(probes, list):
            raise StoreError(f"run {run_id}: probes.json is not a list")
        for i, probe in enumerate(probes):
            problem = _probe_problem(probe)
            if problem:
                raise StoreError(f"run {run_id}: probes.json entry {i}: {problem}")
        return probes

    def info(self, run_id: str) -> RunInfo:
        """The run-list row of a run; a corrupt run is listed as failed with the reason."""
        try:
            label = self.config(run_id).label
            status = self.status(run_id)
        except StoreError as exc:
            return RunInfo(run_id, "?", "failed", "", 0.0, "", str(exc))
        total = status.get("total") or 0
        progress = 1.0 if status["state"] == "done" else (status.get("done", 0) / total if total else 0.0)
        error = status.get("error") or (f"the last re-run failed: {status['rerun_error']}"
                                        if status.get("rerun_error") else "")
        return RunInfo(run_id, label, status["state"], status.get("stage", ""), progress,
                       status.get("updated", ""), error)

    def list(self) -> list[RunInfo]:
        """:meth:`info` of every run."""
        return [self.info(r) for r in self.ids()]

    def find(self, config: RunConfig | DeltasConfig) -> str | None:
        """The id of a finished run with exactly this config, or None."""
        run_id = run_id_of(config)
        try:
            return run_id if self.status(run_id)["state"] == "done" else None
        except StoreError:
            return None

    # -- writing -------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def open_run(self, config: RunConfig | DeltasConfig) -> Iterator["RunWriter"]:
        """Lock the run of ``config`` for writing (creating its folder and config.json) for the block's duration.

        A finished run (FINISHED_FILES present) is not overwritten in place: the new attempt is written to
        :meth:`rerun_path` and replaces the run only when the block ends without an error, so a failed or killed
        re-run leaves the finished results as they were. Raises LockedError if another process runs the config, and
        OSError where the folder, its lock or config.json cannot be written (a full disk, a read-only store): a folder
        created here is then removed, so the run is not listed.
        """
        run_id = run_id_of(config)
        folder = self.path(run_id)
        recover(self.runs)  # a swap left halfway: its finished run must not be taken for a new one
        created = _new_folder(folder)
        finished = False
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(exclusive(folder / ".lock", timeout=0, what=f"run {run_id}"))
                remove_stale_temps(folder)  # left by a killed writer (every writer of the run holds this lock)
                finished = any((folder / name).is_file() for name in FINISHED_FILES)
                stage = self.rerun_path(run_id)
                shutil.rmtree(stage, ignore_errors=True)  # a stale re-run (of a run now gone, where none is finished)
                if finished:
                    stage.mkdir()
                write_json((stage if finished else folder) / "config.json", to_dict(config))
            except OSError:
                shutil.rmtree(self.rerun_path(run_id), ignore_errors=True)
                if created:
                    _remove_bare(folder)  # under the lock where it was taken: no other writer is in it
                raise
            yield RunWriter(run_id, stage if finished else folder)
            if finished:
                replace_folder(folder, stage)


class RunWriter:
    """Atomic writers for the files of one locked run."""

    def __init__(self, run_id: str, folder: Path):
        self.run_id, self.folder = run_id, folder
        self._status: dict = {}

    def set_status(self, state: str, stage: str = "", done: int = 0, total: int = 0, message: str = "",
                   error: str = "") -> None:
        """Write status.json (state must be one of STATES)."""
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._status = {**self._status, "state": state, "stage": stage, "done": done, "total": total,
                        "message": message, "error": error, "pid": os.getpid(), "updated": now}
        self._status.setdefault("started", now)
        if state in ("done", "failed", "cancelled"):
            self._status["finished"] = now
        write_json(self.folder / "status.json", self._status)

    def write_json(self, name: str, data) -> None:
        write_json(self.folder / name, data)

    def write_parquet(self, name: str, frame: pd.DataFrame) -> None:
        atomic_write(self.folder / name, lambda p: frame.to_parquet(p, index=False))

    def write_npz(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        def _save(path: Path) -> None:
            with open(path, "wb") as handle:
                np.savez_compressed(handle, **arrays)
        atomic_write(self.folder / name, _save)

    def write_deltas(self, frame: pd.DataFrame, arrays: dict[str, np.ndarray]) -> None:
        """deltas_hist.npz, then deltas.parquet (one of FINISHED_FILES: written last), from
        :func:`qru.deltas.deltas_files`."""
        self.write_npz("deltas_hist.npz", arrays)
        self.write_parquet("deltas.parquet", frame)

    def log(self, line: str) -> None:
        """Append a time-stamped line to log.txt (rewritten atomically)."""
        path = self.folder / "log.txt"
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        write_text(path, old + f"{time.strftime('%H:%M:%S')} {line}\n")

    def fail(self, exc: BaseException) -> None:
        """Record a failure: status failed with the error, the traceback in log.txt; a job stopped by ``qru cancel``
        (qru.errors.JobCancelled) is recorded as cancelled, with the stage it stopped at."""
        if isinstance(exc, JobCancelled):
            self.log(f"cancelled at stage {self._status.get('stage', '')!r}")
            self.set_status("cancelled", stage=self._status.get("stage", ""), done=self._status.get("done", 0),
                            total=self._status.get("total", 0), error="cancelled (qru cancel); the same command "
                                                                      "resumes from what was cached")
            return
        self.log("".join(traceback.format_exception(exc)).rstrip())
        self.set_status("failed", stage=self._status.get("stage", ""), done=self._status.get("done", 0),
                        total=self._status.get("total", 0), error=f"{type(exc).__name__}: {exc}")


def _check_columns(frame: pd.DataFrame, columns: dict, run_id: str, name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise StoreError(f"run {run_id}: {name} lacks column(s) {', '.join(missing)}")
    for c, numeric in columns.items():  # all-null columns (e.g. PrivLeak without a reference) read as objects
        if numeric and frame[c].isna().all():
            frame[c] = frame[c].astype(float)
    bad = [c for c, numeric in columns.items() if numeric and not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise StoreError(f"run {run_id}: {name} has non-numeric values in {', '.join(bad)}")


def _new_folder(folder: Path) -> bool:
    """Create ``folder`` (and its parents); True if this call created it, False if it was there."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        return False
    return True


def _remove_bare(folder: Path) -> None:
    """Remove a run folder that holds nothing but its lock file (a run that could not write its config.json)."""
    with contextlib.suppress(OSError):
        if {p.name for p in folder.iterdir()} <= {".lock"}:
            (folder / ".lock").unlink(missing_ok=True)
            folder.rmdir()


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # an undecodable folder name; not one of ours
        return False
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


__all__ = ["DEFAULT_ROOT", "LockedError", "METRIC_COLUMNS", "RunInfo", "RunStore", "RunWriter", "StoreError",
           "SUMMARY_COLUMNS", "run_id_of"]
