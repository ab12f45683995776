"""GA: gradient ascent on the forget set, L = -NLL(D_f) (docs/design.md "Unlearning losses"; muse_bench,
open-unlearning)."""
from __future__ import annotations

from qru.unlearn.methods.base import Method, logits_of, on_device


class GA(Method):
    name = "ga"
    label = "GA"
    help = "GA ascends the forget set's loss (unbounded: it can collapse the model)."
    source = "gradient ascent; Jang et al. 2023, as in muse_bench and open-unlearning"

    def forget(self, policy, ref, batch):
        from qru.unlearn.losses import ga_loss

        batch = on_device(batch, ref.device)
        return ga_loss(logits_of(policy, batch), batch["labels"])
