"""Start qru CLI jobs as separate processes (for the dashboard: never inside the Streamlit script thread)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def launch_cli(args: list[str], cache: str | Path) -> subprocess.Popen:
    """Start ``python -m qru.cli --cache CACHE ARGS...`` in its own session, output appended to
    ``<cache>/launch.log``; returns the process (it keeps running if the caller exits)."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    log = open(cache / "launch.log", "ab")
    cmd = [sys.executable, "-m", "qru.cli", "--cache", str(cache), *args, "--quiet"]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
