"""Crash-safe file writes: write to a temporary file in the same folder, flush, fsync, then rename over the target.

A rename within one file system is atomic on POSIX, so a reader sees either the old file or the new one, never a
half-written file, whatever kills the writer.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout


_UMASK = os.umask(0)
os.umask(_UMASK)


class LockedError(RuntimeError):
    """Another process holds the lock on the same resource."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary path beside ``path``, then rename it to ``path``.

    ``write`` must create the file it is given. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp (or the writer) made it 0600; give open()'s permissions
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data) -> Path:
    """Atomically write ``data`` as indented UTF-8 JSON (NaN is written as null)."""
    return write_text(path, json.dumps(_nan_to_none(data), indent=1, ensure_ascii=False) + "\n")


def read_json(path: str | Path, error: type[Exception], label: str):
    """Parse a UTF-8 JSON file. Raises ``error`` with ``label`` if the file is missing or not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{label} is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{label} cannot be read as UTF-8 text ({exc})") from exc
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge integers, deep nesting
        raise error(f"{label} is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _nan_to_none(data):
    if isinstance(data, float) and data != data:
        return None
    if isinstance(data, dict):
        return {k: _nan_to_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_nan_to_none(v) for v in data]
    return data


def remove_stale_temps(folder: str | Path) -> list[str]:
    """Delete the temporary files and folders (``.<name>.<random>.tmp``) that :func:`atomic_write` and
    :func:`atomic_dir` left in ``folder`` when their writer was killed. Call it only while holding the lock that
    every writer into ``folder`` holds, so that no live writer's temporary is removed. Returns the names removed."""
    folder, removed = Path(folder), []
    for item in folder.glob(".*.tmp") if folder.is_dir() else []:
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
        removed.append(item.name)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``path`` when the block succeeds.

    Raises FileExistsError if ``path`` appeared meanwhile (the other writer's copy is kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
    try:
        yield tmp
        for item in tmp.rglob("*"):  # libraries' writers (safetensors, save_pretrained) may create 0600 files
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~_UMASK)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def exclusive(lock_path: str | Path, timeout: float = 0, what: str = "resource") -> Iterator[None]:
    """Hold an OS file lock (released by the OS if the process dies). ``timeout`` seconds to wait; -1 waits forever.

    Raises LockedError naming ``what`` if another process holds it.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise LockedError(f"{what} is in use by another process (lock {lock_path})") from exc
    try:
        yield
    finally:
        lock.release()


def is_locked(lock_path: str | Path) -> bool:
    """True if another process holds the lock at ``lock_path`` right now (an OS flock, as FileLock takes on POSIX).

    Opens the file read-only and never creates it, so it works on a read-only store; a missing or unreadable lock
    file counts as not held.
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases a lock we took
    return False
