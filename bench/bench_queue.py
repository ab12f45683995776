"""Benchmark of the job queue: two demo-size jobs started together against the same two run one after the other.

Each job is ``qru run`` of one NPO+GDR run on the embedded default (``--scale tiny``, as the demo set's runs), all
bit widths, in a fresh process as the dashboard starts them. The models are built first (not timed). Then, with
other seeds so that nothing is reused from the store:

- one after the other: job A, then job B (the time a user waits for both without the queue, done by hand);
- together: A and B started at the same moment; the store's queue (qru.queue) runs them one at a time on 2 cores.

Prints the total time together over the total one after the other (target <= 1.1). With ``--unqueued`` it also
starts two jobs together with QRU_SLOTS=2 (both compute at once, as before the queue) to show what that costs.
Run: ``.venv/bin/python bench/bench_queue.py [--scale tiny] [--store DIR] [--unqueued]``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def job(store: str, scale: str, seed: int, slots: int | None = None) -> subprocess.Popen:
    env = {**os.environ, **({"QRU_SLOTS": str(slots)} if slots else {})}
    return subprocess.Popen([sys.executable, "-m", "qru.cli", "--cache", store, "run", "--scale", scale, "--method",
                             "npo", "--regularizer", "gdr", "--adapter", "full", "--seed", str(seed), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def wait(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a job failed:\n{err[-2000:]}")


def timed(starts) -> float:
    begin = time.perf_counter()
    for group in starts:
        wait([start() for start in group])
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default="tiny", help="the runs' scale (tiny: the demo set's; micro: seconds)")
    parser.add_argument("--store", default=None, help="run store (default: a temporary one; give ./cache to reuse "
                                                      "its built models)")
    parser.add_argument("--unqueued", action="store_true", help="also two jobs at once without the queue")
    args = parser.parse_args()
    store = args.store or tempfile.mkdtemp(prefix="qru-bench-queue-")
    print(f"store {store}; building the {args.scale} models once (not timed) ...", flush=True)
    subprocess.run([sys.executable, "-m", "qru.cli", "--cache", store, "build-target", "--scale", args.scale],
                   check=True, stdout=subprocess.DEVNULL)
    base = 1000 + int(time.time()) % 1000 * 10  # seeds no earlier bench run in this store used
    one_by_one = timed([[lambda: job(store, args.scale, base)], [lambda: job(store, args.scale, base + 1)]])
    print(f"one after the other: {one_by_one:7.1f} s", flush=True)
    together = timed([[lambda: job(store, args.scale, base + 2), lambda: job(store, args.scale, base + 3)]])
    print(f"together (queued):   {together:7.1f} s   ratio {together / one_by_one:.2f} (target <= 1.1)", flush=True)
    if args.unqueued:
        both = timed([[lambda: job(store, args.scale, base + 4, 2), lambda: job(store, args.scale, base + 5, 2)]])
        print(f"together, unqueued:  {both:7.1f} s   ratio {both / one_by_one:.2f} (QRU_SLOTS=2: both compute at "
              f"once)", flush=True)


if __name__ == "__main__":
    main()
