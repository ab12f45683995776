"""The ``qru`` command line: build-target, run, demo, sweep, paper-table, noise, curve, deltas, import, export, ls,
show (docs/commands.md). ``parser`` builds the options (run options map onto qru.recipes' keywords), ``commands``
runs them, ``reports`` prints the results. The library never imports this package.

Every user error (a bad value, a missing corpus folder, a corrupt run folder, a run already in progress) prints one
line ``qru: error: ...`` naming the bad value and exits with status 2; nothing stored is touched.
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
from qru.errors import CheckpointError, ModelLoadError, ResultImportError, UnlearnError
from qru.store import RunStore, StoreError


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qru`` console script; returns the exit status."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices are not for users
    signal.signal(signal.SIGTERM, _terminate)  # a kill records the run as failed instead of vanishing
    args = build_parser().parse_args(argv)
    args.cache = RunStore(args.cache).root  # --cache, else $QRU_CACHE, else ./cache
    if args.cache.exists() and not args.cache.is_dir():
        print(f"qru: error: the store {args.cache} is not a folder", file=sys.stderr)
        return 2
    try:
        return args.func(args)
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
    except KeyboardInterrupt:
        print("qru: interrupted (stored results are intact; the same command continues from what was finished: a model "
              "build keeps its finished models, the model it was training starts again from step 0)", file=sys.stderr)
        return 130


__all__ = ["build_parser", "configs_for", "main"]
