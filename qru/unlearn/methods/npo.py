"""NPO: negative preference optimization, L = -(2/beta) mean log sigmoid(-beta (log p_theta(x) - log p_ref(x))),
summed sequence log-probabilities, the target as reference (Zhang et al. 2024, arXiv 2404.05868, eq. 3;
docs/design.md "Unlearning losses"). ``loss_form="muse"`` uses muse_bench's raw-logit form instead."""
from __future__ import annotations

from qru.unlearn.methods.base import Method, Param, logits_of, on_device, ref_logits_of


class NPO(Method):
    name = "npo"
    label = "NPO"
    help = "NPO pushes the forget set's likelihood below the target's, bounded (beta 0.1)."
    source = "Zhang et al. 2024, arXiv 2404.05868, eq. 3"
    params = (Param("beta", 0.1, "inverse temperature beta (Zhang et al. 2024: 0.1)", short="beta", positive=True,
                    maximum=1e3),)
    muse_form = True

    def forget(self, policy, ref, batch):
        from qru.unlearn.losses import npo_loss, npo_loss_muse

        batch = on_device(batch, ref.device)
        fn = npo_loss_muse if self.config.loss_form == "muse" else npo_loss
        return fn(logits_of(policy, batch), batch["labels"], ref_logits_of(ref, batch), beta=self.param("beta"))
