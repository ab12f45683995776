"""The ``qru`` command line: build-target, run, demo, sweep, paper-table, noise, curve, relearn, deltas, import,
export, ls, show, queue, cancel (docs/commands.md). ``parser`` builds the options (run options map onto qru.recipes'
keywords), ``commands`` runs them, ``reports`` prints the results; ``relearn`` is its own module. The library never
imports this package.

Every user error (a bad value, a missing corpus folder, a corrupt run folder, a run already in progress) prints one
line ``qru: error: ...`` naming the bad value and exits with status 2; nothing stored is touched. The heavy commands
(qru.queue.HEAVY) wait for a slot of the store's job queue first, saying so.
"""
from __future__ import annotations

import os
import signal
import sys
import warnings

from qru.atomic import LockedError
from qru.cli.parser import build_parser, configs_for
from qru.config import ConfigError
from qru.corpus.muse import CorpusError
from qru.errors import CheckpointError, JobCancelled, ModelLoadError, ResultImportError, UnlearnError
from qru.store import RunStore, StoreError

_store: list = []  # the store of the command being run (where `qru cancel` leaves its mark)


def _terminate(signum, frame) -> None:
    from qru.queue import cancel_requested

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM (two cancels) must not break the clean-up
    if _store and cancel_requested(_store[-1]):
        raise JobCancelled("cancelled by qru cancel")
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def _configs(args, argv: list[str]) -> tuple[list, list[str]]:
    """Check a heavy command's values before it queues (a typo must not wait behind hours of work); return the
    configs it will compute where they are known in advance (run, demo, sweep, deltas) and the run ids a cancel can
    name (those, or the analysed run of curve / noise). Raises the command's own one-line errors (ConfigError,
    CheckpointError, ...)."""
    from qru.store import run_id_of

    if args.command == "deltas":
        from qru.devices import scan_device
        scan_device(args.device)
    if args.command == "relearn":
        from qru.cli.relearn import relearn_config, relearn_target
        relearn_config(args)
        return [], [relearn_target(RunStore(args.cache), args.run_id)]
    if args.command in ("noise", "curve"):
        from qru.cli.commands import _qru_run
        return [], [_qru_run(RunStore(args.cache), args.run_id, "noise controls" if args.command == "noise" else
                             "curves")[0]]
    if args.command not in ("run", "demo", "sweep", "deltas"):
        return [], []
    if getattr(args, "config", None):
        from qru.jobs import read_job_file
        found = read_job_file(args.config, args.command)
        configs = found["configs"] if isinstance(found, dict) else found if isinstance(found, list) else [found]
    else:
        configs = configs_for(argv)
    return configs, [run_id_of(c) for c in configs]


def _run(args, argv: list[str]) -> int:
    """The command, inside a slot of the store's job queue if it is a heavy one."""
    from qru.queue import HEAVY, LeftQueue, slot

    if args.command not in HEAVY or int(os.environ.get("RANK", "0") or 0) > 0:
        return args.func(args)  # under a multi-process launch only rank 0 queues: one launch, one slot
    configs, run_ids = _configs(args, argv)
    store = RunStore(args.cache)
    if args.command in ("run", "deltas") and configs and not getattr(args, "force", False) and \
            all(store.find(c) for c in configs):
        return args.func(args)  # stored already: the command only prints it
    if args.command == "relearn" and not args.force:
        from qru.cli.relearn import relearn_config
        from qru.relearn import record_path, stored_record
        if stored_record(record_path(store, run_ids[0], relearn_config(args))) is not None:
            return args.func(args)

    def note(line: str) -> None:  # said even with --quiet: a waiting job must not look hung
        print(f"qru: {line} (Ctrl-C leaves the queue; `qru queue` shows it)", file=sys.stderr, flush=True)

    try:
        with slot(args.cache, "qru " + " ".join(argv), note, run_ids):
            return args.func(args)
    except LeftQueue as exc:
        print(f"qru: {exc}", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qru`` console script; returns the exit status."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices are not for users
    signal.signal(signal.SIGTERM, _terminate)  # a kill records the run as failed instead of vanishing
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.cache = RunStore(args.cache).root  # --cache, else $QRU_CACHE, else ./cache
    _store[:] = [args.cache]
    if args.cache.exists() and not args.cache.is_dir():
        print(f"qru: error: the store {args.cache} is not a folder", file=sys.stderr)
        return 2
    try:
        return _run(args, argv)
    except (ConfigError, CorpusError, StoreError, LockedError, UnlearnError, CheckpointError, ModelLoadError,
            ResultImportError) as exc:
        print(f"qru: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a store or corpus the user cannot read or write
        print(f"qru: error: {exc}", file=sys.stderr)
        return 2
    except JobCancelled:
        print("qru: cancelled (qru cancel); stored results are intact and the same command continues from what was "
              "finished", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("qru: interrupted (stored results are intact; the same command continues from what was finished: a model "
              "build keeps its finished models, the model it was training starts again from step 0)", file=sys.stderr)
        return 130


__all__ = ["build_parser", "configs_for", "main"]
