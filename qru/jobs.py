"""Background jobs: ``qru`` CLI commands started as separate processes (the dashboard never computes in its own
script thread), and their progress read back from the run store.

A job computes configs built by qru.recipes: :func:`launch` serializes them into ``<store>/jobs/<job_id>.config.json``
and starts ``qru <command> --config FILE`` (run, sweep, deltas or import), so a config travels one way: built once,
serialized, computed; nothing parses a command line again. Analyses of a finished run (``qru curve`` / ``qru noise``)
start from their arguments (:func:`launch_analysis`). Launching writes ``<store>/jobs/<job_id>.json`` (the command,
its process id and the run ids it will compute, known in advance from the config keys) and sends its output to
``<store>/jobs/<job_id>.log``. Its progress is read from the status files of
its runs, so any page, tab or browser refresh sees the same state.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from qru.atomic import LockedError, read_json, write_json
from qru.config import (ConfigError, DeltasConfig, ImportConfig, RunConfig, run_config_from_dict,
                        stored_config_from_dict, to_dict)
from qru.store import RunStore, StoreError, run_id_of

JOBS = "jobs"


@dataclass(frozen=True)
class Job:
    """A launched CLI command: ``argv`` (after ``qru --cache STORE``), the runs it computes, its process id, the
    process's start tick (``/proc/<pid>/stat`` field 22, so a reused pid is not taken for it; 0 where unknown) and
    the start time (seconds since the epoch)."""

    job_id: str
    title: str
    argv: list[str]
    run_ids: list[str]
    pid: int
    started: float
    pid_start: int = 0

    def __post_init__(self) -> None:
        ok = (isinstance(self.job_id, str) and isinstance(self.title, str)
              and all(isinstance(a, str) for a in self.argv) and isinstance(self.argv, list)
              and isinstance(self.run_ids, list) and all(isinstance(r, str) for r in self.run_ids)
              and type(self.pid) is int and 0 < self.pid < 2 ** 31 and type(self.pid_start) is int
              and isinstance(self.started, (int, float)) and 0 <= self.started < 1e11)
        if not ok:
            raise TypeError(f"not a job record: {self.__dict__!r}"[:200])


@dataclass(frozen=True)
class JobProgress:
    """What a job is doing: ``state`` queued / running / done / failed / cancelled; ``fraction`` of the whole job in [0, 1]; ``stage``
    a readable line ("run 2/4 NPO+GDR full ...: unlearning 40/140"); ``error`` and ``log_tail`` when it failed."""

    state: str
    fraction: float
    stage: str
    runs_done: int
    error: str = ""
    log_tail: str = ""


COMMANDS = ("run", "sweep", "deltas", "import")


def write_job_file(path: Path, command: str, configs: list, sweep: str = "", seeds: tuple[int, ...] = ()) -> None:
    """Serialize ``configs`` (RunConfigs; one DeltasConfig or ImportConfig) for ``qru COMMAND --config PATH``."""
    write_json(path, {"command": command, "configs": [to_dict(c) for c in configs], "sweep": sweep,
                      "seeds": list(seeds)})


def read_job_file(path: str | Path, command: str):
    """The configs of a job file for ``command``: a list of RunConfigs (run), ``{"configs", "sweep", "seeds"}``
    (sweep), one DeltasConfig (deltas) or ImportConfig (import). Raises ConfigError naming the file if it cannot be
    read, is for another command or holds a bad config."""
    try:
        data = read_json(Path(path), ConfigError, str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read the job file {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or data.get("command") != command or not isinstance(data.get("configs"), list):
        raise ConfigError(f"{path} is not a job file of `qru {command}`")
    try:
        if command in ("run", "sweep"):
            configs = [run_config_from_dict(c) for c in data["configs"]]
            if not configs:
                raise ConfigError("it holds no run")
            return configs if command == "run" else _sweep_job(data, configs)
        if len(data["configs"]) != 1:
            raise ConfigError(f"it must hold one {command} config, not {len(data['configs'])}")
        (config,) = [stored_config_from_dict(c) for c in data["configs"]]
        if not isinstance(config, DeltasConfig if command == "deltas" else ImportConfig):
            raise ConfigError(f"it holds no {command} config")
        return config
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"job file {path}: {exc}") from None


def _sweep_job(data: dict, configs: list) -> dict:
    """The sweep part of a job file: a known preset and distinct seeds (integers in [0, 2^32)), as in the CLI."""
    from qru.sweeps import preset

    seeds = data.get("seeds")
    preset(data.get("sweep") if isinstance(data.get("sweep"), str) else repr(data.get("sweep")))  # ConfigError
    if not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds) or not all(
            type(s) is int and 0 <= s < 2 ** 32 for s in seeds):
        raise ConfigError(f"seeds must be distinct integers in [0, 2^32), got {seeds!r}"[:200])
    return {"configs": configs, "sweep": data["sweep"], "seeds": seeds}


def launch(store: RunStore, command: str, configs: list, title: str, force: bool = False, sweep: str = "",
           seeds: tuple[int, ...] = ()) -> Job:
    """Start ``python -m qru --cache STORE COMMAND --config FILE`` in its own session and record it as a job.

    ``command``: run (``configs`` RunConfigs, e.g. one run or the demo set), sweep (its RunConfigs, ``sweep`` the
    preset and ``seeds``), deltas (one DeltasConfig) or import (one ImportConfig), as built by qru.recipes; ``force``
    recomputes stored runs. Raises LockedError if a running job computes any of these runs, ConfigError for an
    unknown command. Returns the Job; the process keeps running if the caller exits."""
    if command not in COMMANDS:
        raise ConfigError(f"unknown job command {command!r} (choose from {', '.join(COMMANDS)})")
    run_ids = [run_id_of(c) for c in configs]
    busy = running_job(store, run_ids)
    if busy:
        raise LockedError(f"these runs are already being computed by the job {busy.title!r} started at "
                          f"{time.strftime('%H:%M:%S', time.localtime(busy.started))}")
    job_id, folder = _new_job_id(store)
    path = folder / f"{job_id}.config.json"
    write_job_file(path, command, configs, sweep, seeds)
    return _start(store, job_id, [command, "--config", str(path)] + (["--force"] if force else []), title, run_ids)


def launch_analysis(store: RunStore, argv: list[str], title: str) -> Job:
    """Start ``qru curve RUN ...``, ``qru noise RUN ...`` or ``qru relearn RUN ...`` (``argv`` after ``qru --cache
    STORE``) as a job. Raises ConfigError unless the command is one of those on a finished run of the store."""
    if argv[:1] not in (["curve"], ["noise"], ["relearn"]):
        raise ConfigError(f"not an analysis command: {argv[:1]!r} (curve, noise or relearn)")
    _analysis_runs(store, argv)
    job_id, _ = _new_job_id(store)
    return _start(store, job_id, list(argv), title, [])


def _new_job_id(store: RunStore) -> tuple[str, Path]:
    folder = store.root / JOBS
    folder.mkdir(parents=True, exist_ok=True)
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], folder


def _start(store: RunStore, job_id: str, argv: list[str], title: str, run_ids: list[str]) -> Job:
    folder = store.root / JOBS
    with open(folder / f"{job_id}.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "qru", "--cache", str(store.root), *argv],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it when it ends (no zombie that looks alive)
    job = Job(job_id, title, list(argv), run_ids, proc.pid, time.time(), _start_tick(proc.pid))
    write_json(folder / f"{job_id}.json", job.__dict__)
    return job


def _analysis_runs(store: RunStore, argv: list[str]) -> list[str]:
    """A ``curve`` / ``noise`` job analyses a finished run and computes none: it has no runs of its own (its
    progress is its process and log). Raises ConfigError if the run named is not a finished run of the store."""
    run_id = argv[1] if len(argv) > 1 else ""
    try:
        state = store.status(run_id).get("state")
    except StoreError as exc:
        raise ConfigError(str(exc)) from exc
    if state != "done":
        raise ConfigError(f"run {run_id} is not finished ({state})")
    return []


def list_jobs(store: RunStore) -> list[Job]:
    """Every recorded job, newest first; unreadable records are skipped."""
    folder = store.root / JOBS
    jobs = []
    for path in sorted(folder.glob("*[0-9a-f].json"), reverse=True) if folder.is_dir() else []:
        try:
            jobs.append(Job(**read_json(path, StoreError, str(path))))
        except (StoreError, TypeError):
            continue
    return jobs


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 first), or None where unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_tick(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else 0


def running_jobs(store: RunStore) -> list[Job]:
    """The store's jobs that are running or waiting in the queue now, newest first."""
    return [job for job in list_jobs(store) if job_progress(store, job).state in ("running", "queued")]


def running_job(store: RunStore, run_ids: list[str], running: list[Job] | None = None) -> Job | None:
    """The running job that computes any of ``run_ids`` (so that the same run is not launched twice), or None.
    ``running``: :func:`running_jobs` if the caller already has it."""
    for job in running_jobs(store) if running is None else running:
        if set(job.run_ids) & set(run_ids):
            return job
    return None


def is_alive(pid: int, start_tick: int = 0) -> bool:
    """Whether process ``pid`` exists, is not a zombie and (where ``start_tick`` is known) is the same process
    that was started then, not a later one that reused the pid (Linux /proc; elsewhere: it exists)."""
    if not 0 < pid < 2 ** 31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    if fields is None:
        return True
    if fields[0] == "Z":
        return False
    if start_tick:
        return _start_tick(pid) == start_tick
    try:  # a record without its start tick: at least the process must be a qru command
        return b"qru" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def job_progress(store: RunStore, job: Job) -> JobProgress:
    """The job's state, read from its runs' status files, its process and the store's queue (qru.queue): queued
    (waiting for a slot; ``stage`` says how many jobs are ahead), running, done, failed or cancelled."""
    from qru.queue import place, waiting_line

    alive = is_alive(job.pid, job.pid_start)
    where = place(store.root, job.pid) if alive else None
    if where is not None:
        return JobProgress("queued", 0.0, waiting_line(where[1]) if where[1] else "waiting for a slot", 0)
    if not job.run_ids:  # an analysis job (qru curve / noise): its process and its log tell
        tail = log_tail(store, job)
        errors = [line for line in tail.splitlines() if line.startswith("qru: ")]
        if not alive and errors and errors[-1].startswith("qru: cancelled"):
            return JobProgress("cancelled", 0.0, "cancelled", 0, errors[-1], tail)
        if alive:
            lines = [line for line in tail.splitlines() if line.strip()]
            return JobProgress("running", 0.0, lines[-1][-120:] if lines else "starting", 0)
        if errors:
            return JobProgress("failed", 0.0, "stopped", 0, errors[-1], tail)
        return JobProgress("done", 1.0, "finished", 0)
    done, current = 0, None
    for i, run_id in enumerate(job.run_ids):
        try:
            status = store.status(run_id)
        except StoreError:  # not started yet
            status = None
        if status and status.get("rerun_error") and status.get("rerun_pid") == job.pid:
            return JobProgress("failed", done / len(job.run_ids), f"run {i + 1}/{len(job.run_ids)}: re-run", done,
                               f"the re-run failed ({status['rerun_error']}); the earlier results are kept",
                               log_tail(store, job, run_id, rerun=True))
        if status and _older_than(status, job) and ("--force" in job.argv or (alive and status["state"] == "failed")):
            status = None  # an earlier attempt's result, which this job is redoing (or, forced, replacing)
        if status and status["state"] == "done":
            done += 1
        elif status and status["state"] == "cancelled":
            return JobProgress("cancelled", done / len(job.run_ids), _stage_line(store, job, i, status), done,
                               status.get("error", ""), log_tail(store, job, run_id))
        elif status and status["state"] == "failed":
            return JobProgress("failed", done / len(job.run_ids), _stage_line(store, job, i, status), done,
                               status.get("error", ""), log_tail(store, job, run_id))
        elif current is None:
            current = (i, status)
    if done == len(job.run_ids):
        return JobProgress("done", 1.0, "finished", done)
    if not alive:
        tail = log_tail(store, job)
        errors = [line for line in tail.splitlines() if line.startswith("qru: ")]
        if errors and errors[-1].startswith("qru: cancelled"):  # cancelled while waiting: no run was started
            return JobProgress("cancelled", done / len(job.run_ids), "cancelled", done, errors[-1], tail)
        return JobProgress("failed", done / len(job.run_ids), "stopped", done,
                           errors[-1] if errors else "the job's process ended before its runs finished", tail)
    i, status = current
    within = _stage_fraction(status)
    return JobProgress("running", (done + within) / len(job.run_ids), _stage_line(store, job, i, status), done)


def _older_than(status: dict, job: Job) -> bool:
    """Whether the status was last written before the job started."""
    try:
        return time.mktime(time.strptime(status.get("updated", ""), "%Y-%m-%dT%H:%M:%S")) < int(job.started)
    except ValueError:
        return False


def _stage_fraction(status: dict | None) -> float:
    if not status or not status.get("total"):
        return 0.0
    return min(1.0, status.get("done", 0) / status["total"]) * 0.99


def _stage_line(store: RunStore, job: Job, i: int, status: dict | None) -> str:
    head = f"run {i + 1}/{len(job.run_ids)}"
    try:
        config = store.config(job.run_ids[i])
        head += f" {config.unlearn.label if isinstance(config, RunConfig) else config.label}"
    except StoreError:
        pass
    if not status:
        return f"{head}: starting"
    count = f" {status.get('done', 0)}/{status['total']}" if status.get("total") else ""
    message = f" ({status['message']})" if status.get("message") else ""
    return f"{head}: {status.get('stage', '')}{count}{message}"


def log_tail(store: RunStore, job: Job, run_id: str | None = None, lines: int = 25, rerun: bool = False) -> str:
    """The last ``lines`` lines of the run's log.txt (when ``run_id`` is given and has one; that of its forced
    re-run with ``rerun``), else of the job's output log."""
    run_log = (store.rerun_path(run_id) if rerun else store.path(run_id)) / "log.txt" if run_id else None
    paths = ([run_log] if run_log else []) + [store.root / JOBS / f"{job.job_id}.log"]
    for path in paths:
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            return "\n".join(text.rstrip().splitlines()[-lines:])
    return ""


__all__ = ["Job", "JobProgress", "is_alive", "job_progress", "launch", "launch_analysis", "list_jobs", "log_tail",
           "read_job_file", "running_job", "running_jobs", "write_job_file"]
