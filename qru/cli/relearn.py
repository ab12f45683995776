"""``qru relearn RUN_ID``: the relearning attack on a stored run (qru.relearn), its parser and its command."""
from __future__ import annotations

RELEARN_DESCRIPTION = (
    "Fine-tune a finished run's unlearned model for a few steps on a slice of the forget set that the evaluation "
    "does not use (--data forget; on the embedded corpus: the documents of a seeded share of the forget entities, "
    "the others' items evaluated) or on retain text (--data retain, the control), then evaluate the target, the "
    "unlearned and the relearned model on those held-out items at 32 bits and the run's bit widths, and print the "
    "share of the forgetting undone by relearning beside the share undone by quantization, with the same noise "
    "gate. Stored in the run's folder (relearn/<key>.json); the run itself is never changed. Reproducible from "
    "--seed; a stored attack is printed, not recomputed (--force recomputes).")


def add_relearn(sub, positive_float, seed_type) -> None:
    """The ``relearn`` subcommand."""
    from qru.config import RELEARN_DATA, RelearnConfig

    d = RelearnConfig()
    p = sub.add_parser("relearn", help="relearning attack: fine-tune a stored run's unlearned model a few steps on "
                                       "held-out forget text (or retain text) and measure what comes back",
                       description=RELEARN_DESCRIPTION)
    p.add_argument("run_id", help="a run id (or its unique beginning)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"fine-tuning steps (default {d.steps})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"AdamW learning rate (default {d.lr:g})")
    p.add_argument("--data", choices=RELEARN_DATA, default=d.data,
                   help="forget: the relearn slice of the forget set (default); retain: retain text, the control")
    p.add_argument("--share", type=float, default=d.share,
                   help=f"share of the forget entities relearned on, in (0, 1) (default {d.share:g})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"documents per step (default {d.batch_size})")
    p.add_argument("--seed", type=seed_type, default=d.seed, help="seed of the split and batch order (default 0)")
    p.add_argument("--force", action="store_true", help="recompute a stored attack")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_relearn)


def relearn_config(args):
    """The RelearnConfig of the parsed arguments. Raises ConfigError naming a bad value."""
    from qru.config import RelearnConfig

    return RelearnConfig(steps=args.steps, lr=args.lr, data=args.data, share=float(args.share), seed=args.seed,
                         batch_size=args.batch_size)


def relearn_target(store, text: str) -> str:
    """The finished qru run ``text`` names (an id or its unique beginning). Raises StoreError otherwise."""
    from qru.cli.commands import _resolve_run_id
    from qru.relearn import stored_run_check

    run_id = _resolve_run_id(store, text)
    stored_run_check(store, run_id)
    return run_id


def cmd_relearn(args) -> int:
    from qru.analysis.relearning import relearning_undone
    from qru.cli.reports import progress_printer
    from qru.relearn import compute_relearn
    from qru.store import RunStore
    from qru.views.undone import THRESHOLD_TEXT, relearning_caption, relearning_table

    store = RunStore(args.cache)
    config = relearn_config(args)
    run_id = relearn_target(store, args.run_id)
    record = compute_relearn(store, run_id, config, force=args.force, progress=progress_printer(args.quiet))
    print(f"run {run_id}: {store.config(run_id).label}")
    print(f"relearning attack: {relearning_caption(record)}")
    print(relearning_table(relearning_undone(record)).to_string(index=False))
    print(THRESHOLD_TEXT)
    return 0


__all__ = ["RELEARN_DESCRIPTION", "add_relearn", "cmd_relearn", "relearn_config", "relearn_target"]
