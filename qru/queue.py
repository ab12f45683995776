"""One queue per run store for the heavy qru commands, so that jobs share the machine instead of fighting for it.

On a 2-core CPU two torch processes at once each run ~20x slower, not 2x (their threads oversubscribe the cores). So
every heavy command (HEAVY: run, demo, sweep, deltas, build-target, noise, curve, relearn), from the dashboard or a shell,
takes a slot of the store's queue before it computes and gives it back when it ends (or dies: the slot is an OS file
lock). ``slots`` jobs run at once (default :func:`default_slots`: one per 4 cores, at least one; ``qru queue --slots
N`` or the environment variable QRU_SLOTS changes it), each with ``cores // slots`` torch threads; the others wait in
order of arrival and say so. A waiting or running job can be cancelled (:func:`cancel`, ``qru cancel``): its process
gets SIGTERM with a cancel mark, stops, and its run is recorded as cancelled; what was cached stays, so the same
command resumes from it.

Files under ``<store>/queue/``: ``<ticket>.json`` per job (pid, its start tick, title, command, state waiting or
running, slot), ``slot-<i>.lock`` (held by the running jobs), ``settings.json`` (``{"slots": N}``) and
``cancel-<pid>-<tick>`` marks.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from qru.atomic import read_json, write_json
from qru.checks import ConfigError

QUEUE = "queue"
HEAVY = ("run", "demo", "sweep", "deltas", "build-target", "noise", "curve", "relearn")
POLL_SECONDS = 0.5
MAX_SLOTS = 256
_held: list[str] = []  # this process's ticket while it holds a slot (a nested command takes none)


class LeftQueue(KeyboardInterrupt):
    """A job stopped (Ctrl-C, a kill or ``qru cancel``) while it was still waiting: nothing was computed."""


@dataclass(frozen=True)
class Ticket:
    """One job in the queue: ``ticket`` (its file's name: arrival time and pid, so names sort in arrival order),
    ``pid`` and ``pid_start`` (the process and its start tick), ``title`` (the command line), ``state`` waiting or
    running, ``slot`` (-1 while waiting), ``created`` and ``started`` (seconds since the epoch; 0 while waiting),
    ``run_ids`` (the runs it computes, where known in advance)."""

    ticket: str
    pid: int
    pid_start: int
    title: str
    state: str
    slot: int
    created: float
    started: float
    run_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ok = (isinstance(self.ticket, str) and type(self.pid) is int and 0 < self.pid < 2 ** 31
              and type(self.pid_start) is int and isinstance(self.title, str) and self.state in ("waiting", "running")
              and type(self.slot) is int and all(type(t) in (int, float) and 0 <= t < 1e11
                                                  for t in (self.created, self.started))
              and all(isinstance(r, str) for r in self.run_ids))
        if not ok:
            raise TypeError(f"not a queue ticket: {self.__dict__!r}"[:200])


def cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_slots(n_cores: int | None = None) -> int:
    """Heavy jobs at once by default: one per 4 cores, at least one (one on a 2-core laptop)."""
    return max(1, (n_cores or cores()) // 4)


def _folder(store_root: Path) -> Path:
    return Path(store_root) / QUEUE


def _check_slots(value, where: str) -> int:
    text = value.strip() if isinstance(value, str) else value
    whole = type(value) is int or (isinstance(text, str) and re.fullmatch(r"-?[0-9]+", text) is not None)
    if not whole:
        raise ConfigError(f"{where}: the number of job slots must be a whole number 1..{MAX_SLOTS}, got {value!r}")
    number = int(text)
    if not 1 <= number <= MAX_SLOTS:
        raise ConfigError(f"{where}: the number of job slots must be 1..{MAX_SLOTS}, got {number}")
    return number


def slots(store_root: Path) -> int:
    """How many heavy jobs run at once: $QRU_SLOTS, else the store's setting, else :func:`default_slots`.
    Raises ConfigError for a bad value (naming it and where it came from)."""
    if os.environ.get("QRU_SLOTS", "").strip():
        return _check_slots(os.environ["QRU_SLOTS"], "QRU_SLOTS")
    path = _folder(store_root) / "settings.json"
    if path.is_file():
        data = read_json(path, ConfigError, str(path))
        if isinstance(data, dict) and "slots" in data:
            return _check_slots(data["slots"], str(path))
    return default_slots()


def set_slots(store_root: Path, number) -> int:
    """Store the number of job slots (1..MAX_SLOTS); returns it. Raises ConfigError for another value."""
    number = _check_slots(number, "--slots")
    write_json(_folder(store_root) / "settings.json", {"slots": number})
    return number


def threads_per_job(store_root: Path) -> int:
    """Torch threads of a running job: its share of the cores, or $OMP_NUM_THREADS where that is set lower."""
    share = max(1, cores() // slots(store_root))
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    return min(share, int(omp)) if omp.isascii() and omp.isdigit() and int(omp) >= 1 else share


def _alive(pid: int, tick: int) -> bool:
    from qru.jobs import is_alive
    return is_alive(pid, tick)


def _tick(pid: int) -> int:
    from qru.jobs import _start_tick
    return _start_tick(pid)


def tickets(store_root: Path) -> list[Ticket]:
    """The jobs in the queue, running first, then waiting in order of arrival. Tickets of processes that are gone
    (killed without cleaning up) are removed."""
    out, folder = [], _folder(store_root)
    for path in sorted(folder.glob("t-*.json")):
        try:  # tickets are written atomically: one that cannot be read is damaged, not half-written
            data = read_json(path, ValueError, str(path))
            ticket = Ticket(**{**data, "run_ids": tuple(data.get("run_ids", ()))})
        except (ValueError, TypeError, AttributeError):
            ticket = None
        if ticket is not None and _alive(ticket.pid, ticket.pid_start):
            out.append(ticket)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    for mark in folder.glob("cancel-*"):  # marks of processes that are gone
        pid, _, tick = mark.name[len("cancel-"):].partition("-")
        if not (pid.isdigit() and tick.isdigit() and _alive(int(pid), int(tick))):
            with contextlib.suppress(OSError):
                mark.unlink()
    return sorted(out, key=lambda t: (t.state != "running", t.ticket))


def place(store_root: Path, pid: int) -> tuple[int, list[Ticket]] | None:
    """Where process ``pid`` waits: (0-based place among the waiting jobs, the jobs ahead of it: running and
    waiting), or None if it does not wait."""
    queue = tickets(store_root)
    waiting = [t for t in queue if t.state == "waiting"]
    for i, ticket in enumerate(waiting):
        if ticket.pid == pid:
            return i, [t for t in queue if t.state == "running"] + waiting[:i]
    return None


def _write(path: Path, ticket: Ticket) -> None:
    write_json(path, ticket.__dict__)


def _try_slot(folder: Path, n: int) -> tuple[int, int] | None:
    """(slot, open descriptor holding its lock) of the first free slot, or None."""
    for i in range(n):
        fd = os.open(folder / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return i, fd
        except BlockingIOError:
            os.close(fd)
    return None


def waiting_line(ahead: list[Ticket]) -> str:
    """A sentence for a waiting job: how many jobs are ahead and which one runs."""
    running = [t for t in ahead if t.state == "running"]
    first = running[0] if running else ahead[0]
    return (f"waiting in the queue: {len(ahead)} job(s) ahead; {'running' if running else 'next'}: {first.title} "
            f"(pid {first.pid})")


@contextlib.contextmanager
def slot(store_root: Path, title: str, notify: Callable[[str], None] | None = None,
         run_ids: list[str] | tuple[str, ...] = ()) -> Iterator[int]:
    """Wait for a slot of the store's queue and hold it for the block; yields the torch threads the job should
    use (set here with torch.set_num_threads). ``notify(line)`` is called when the job starts waiting and when
    its place changes; ``run_ids`` (the runs the job computes) let ``qru cancel RUN_ID`` find it while it waits.
    Nested use in a process that holds a slot takes none. The ticket is removed and the slot freed when the block
    ends, however it ends (and by the OS if the process dies). Raises LeftQueue if the wait is interrupted (Ctrl-C,
    SIGTERM, ``qru cancel``)."""
    import torch

    if _held:
        yield torch.get_num_threads()
        return
    folder = _folder(store_root)
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    name = f"t-{time.time_ns():020d}-{pid}"
    path = folder / f"{name}.json"
    ticket = Ticket(name, pid, _tick(pid), title[:300], "waiting", -1, time.time(), 0.0, tuple(run_ids))
    fd, said = None, None
    try:
        _write(path, ticket)
        try:
            while fd is None:
                n = slots(store_root)
                where = place(store_root, pid)
                busy = sum(t.state == "running" for t in (where[1] if where else []))
                if where is None or where[0] < n - busy:  # only as many of the first waiters as slots are free
                    got = _try_slot(folder, n)
                    if got is not None:
                        number, fd = got
                        break
                if where is not None and where[1] and notify and waiting_line(where[1]) != said:
                    said = waiting_line(where[1])
                    notify(said)
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt as exc:
            how = "cancelled" if type(exc).__name__ == "JobCancelled" else "stopped"
            raise LeftQueue(f"{how} while waiting in the queue: nothing was computed") from None
        threads = threads_per_job(store_root)
        torch.set_num_threads(threads)
        _write(path, Ticket(name, pid, ticket.pid_start, ticket.title, "running", number, ticket.created,
                            time.time(), ticket.run_ids))
        _held.append(name)
        yield threads
    finally:
        if _held and _held[-1] == name:
            _held.pop()
        if fd is not None:
            os.close(fd)  # releases the slot's lock
        with contextlib.suppress(OSError):
            path.unlink()


def _mark(store_root: Path, pid: int, tick: int) -> Path:
    return _folder(store_root) / f"cancel-{pid}-{tick}"


def cancel_requested(store_root: Path) -> bool:
    """Whether ``qru cancel`` asked this process to stop (the mark is removed once read)."""
    mark = _mark(store_root, os.getpid(), _tick(os.getpid()))
    if mark.exists():
        with contextlib.suppress(OSError):
            mark.unlink()
        return True
    return False


def cancel_process(store_root: Path, pid: int, tick: int) -> bool:
    """Ask the qru process ``pid`` (started at ``tick``) to stop: a cancel mark, then SIGTERM. Returns False if
    that process is gone."""
    if not _alive(pid, tick):
        return False
    _folder(store_root).mkdir(parents=True, exist_ok=True)
    _mark(store_root, pid, tick).touch()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def cancel(store, target: str) -> list[str]:
    """Cancel the jobs that ``target`` names in ``store`` (a RunStore): a dashboard job id, a run id or its unique
    beginning (the process computing that run), a process id, or ``all`` (every job in the queue). Returns one line
    per job asked to stop. Raises ConfigError if nothing running or waiting matches (naming ``target``)."""
    from qru.jobs import list_jobs, running_jobs
    from qru.store import StoreError

    text = str(target).strip()
    found: dict[int, tuple[int, str]] = {}  # pid -> (start tick, what)
    queue = tickets(store.root)
    if text == "all":
        found = {t.pid: (t.pid_start, t.title) for t in queue}
        found.update({j.pid: (j.pid_start, j.title) for j in running_jobs(store)})
    elif text.isascii() and text.isdigit():
        found = {t.pid: (t.pid_start, t.title) for t in queue if t.pid == int(text)}
    if not found and text != "all":
        found = {j.pid: (j.pid_start, j.title) for j in list_jobs(store) if j.job_id == text}
    if not found and text != "all":
        queued = {r for t in queue for r in t.run_ids}
        exact = [r for r in queued | set(store.ids()) if r == text]
        ids = exact or sorted(r for r in queued | set(store.ids()) if text and r.startswith(text))
        if len(ids) == 1:  # a job in the queue (waiting or running) that computes this run
            found = {t.pid: (t.pid_start, f"the job computing {ids[0]}") for t in queue if ids[0] in t.run_ids}
    if not found and text != "all":
        if len(ids) > 1:
            raise ConfigError(f"{text!r} matches {len(ids)} runs: {', '.join(ids[:5])}")
        for run_id in ids:
            try:
                status = store.status(run_id)
            except StoreError:  # its folder is being created: no process computes it yet
                continue
            pid = status.get("pid")
            if status["state"] in ("queued", "running") and type(pid) is int:
                found[pid] = (_tick(pid), f"run {run_id}")
    done = [f"asked {what} (pid {pid}) to stop" for pid, (tick, what) in found.items()
            if cancel_process(store.root, pid, tick)]
    if not done and text == "all":
        return ["no job is running or waiting"]
    if not done:
        raise ConfigError(f"nothing running or waiting matches {text!r} (give a run id, a job id, a process id from "
                          f"`qru queue`, or all)")
    return done


def describe(store_root: Path) -> list[str]:
    """The queue in lines: its slots and threads, then each running and waiting job (none: one line)."""
    queue = tickets(store_root)
    n = slots(store_root)
    head = f"job queue of {store_root}: {n} slot(s), {threads_per_job(store_root)} torch thread(s) per job"
    lines = [head + ("" if queue else "; no job running or waiting")]
    waiting = 0
    for t in queue:
        if t.state == "running":
            since = time.strftime("%H:%M:%S", time.localtime(t.started))
            lines.append(f"  running  (slot {t.slot}, since {since}, pid {t.pid}): {t.title}")
        else:
            waiting += 1
            lines.append(f"  waiting  #{waiting} (pid {t.pid}): {t.title}")
        if t.run_ids:
            lines.append("           runs: " + ", ".join(t.run_ids[:4]) + (" ..." if len(t.run_ids) > 4 else ""))
    return lines


__all__ = ["HEAVY", "LeftQueue", "Ticket", "cancel", "cancel_process", "cancel_requested", "cores", "default_slots", "describe", "place", "set_slots",
           "slot", "slots", "threads_per_job", "tickets", "waiting_line"]
