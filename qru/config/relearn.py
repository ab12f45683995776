"""The relearning attack on a stored run (qru.relearn): what is fine-tuned on, for how long, and how it is split."""
from __future__ import annotations

from dataclasses import dataclass

from qru.checks import require as _require, seed_check
from qru.config.model import MAX_BATCH_SIZE, MAX_LR, bounded as _bounded

RELEARN_DATA = ("forget", "retain")
MAX_RELEARN_STEPS = 100_000


@dataclass(frozen=True)
class RelearnConfig:
    """A relearning attack (docs/experiments.md "Relearning attack"): fine-tune a run's unlearned model with AdamW at
    a constant learning rate on next-token NLL, then evaluate it on the evaluation items the fine-tuning text does
    not cover.

    Attributes:
        steps: optimizer steps (each one batch of ``batch_size`` documents), in [1, 100000].
        lr: AdamW learning rate, in (0, MAX_LR].
        data: ``forget``: documents of a share of the forget set (the *relearn slice*) chosen so that the evaluated
            items are not among them; ``retain``: retain documents (the control: fine-tuning on unrelated text).
        share: the share of the forget set's entities whose documents form the relearn slice (embedded corpus), in
            (0, 1); the other entities' items are the ones evaluated. On a corpus without entities the relearn
            slice is the forget documents no evaluation item is taken from, and ``share`` is not used.
        seed: seed of the entity split and of the batch order, in [0, 2^32).
        batch_size: documents per step, in [1, MAX_BATCH_SIZE].
    """

    steps: int = 10
    lr: float = 1e-4
    data: str = "forget"
    share: float = 0.5
    seed: int = 0
    batch_size: int = 4

    def __post_init__(self) -> None:
        _bounded("relearn steps", self.steps, 1, MAX_RELEARN_STEPS, integer=True)
        _bounded("relearn lr", self.lr, 0, MAX_LR, open_low=True)
        _require(self.data in RELEARN_DATA,
                 f"unknown relearn data {self.data!r} (choose from {', '.join(RELEARN_DATA)})")
        _require(isinstance(self.share, float) and 0 < self.share < 1,
                 f"relearn share must be a number in (0, 1), got {self.share!r}")
        seed_check("relearn seed", self.seed)
        _bounded("relearn batch size", self.batch_size, 1, MAX_BATCH_SIZE, integer=True)

    @property
    def label(self) -> str:
        """``relearn on forget slice, 10 steps lr 0.0001 seed 0``."""
        text = "forget slice" if self.data == "forget" else "retain text (control)"
        share = f" share {self.share:g}" if self.share != 0.5 else ""
        batch = f" batch {self.batch_size}" if self.batch_size != 4 else ""
        return f"relearn on {text}, {self.steps} steps lr {self.lr:g}{batch}{share} seed {self.seed}"


__all__ = ["MAX_RELEARN_STEPS", "RELEARN_DATA", "RelearnConfig"]
