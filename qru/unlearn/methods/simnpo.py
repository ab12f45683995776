"""SimNPO: reference-free, length-normalized NPO with a reward margin gamma,
L = -(2/beta) mean log sigmoid(-(beta/|x|) log p_theta(x) - gamma) (Fan et al. 2024, arXiv 2410.07163, eq. 4)."""
from __future__ import annotations

from qru.unlearn.methods.base import Method, Param, logits_of, on_device


class SimNPO(Method):
    name = "simnpo"
    label = "SimNPO"
    help = "SimNPO is NPO without the reference model, length-normalized (beta 2.5)."
    source = "Fan et al. 2024, arXiv 2410.07163, eq. 4"
    # beta works on per-token log-probabilities here, so it is larger than NPO's (Fan et al. tune it per benchmark)
    params = (Param("beta", 2.5, "inverse temperature beta (per-token log-probabilities; default 2.5)",
                    short="beta", positive=True, maximum=1e3),
              Param("gamma", 0.0, "reward margin gamma (default 0)", short="gamma",
                    title="gamma (the SimNPO margin)", minimum=-1e3, maximum=1e3))

    def forget(self, policy, ref, batch):
        from qru.unlearn.losses import simnpo_loss

        batch = on_device(batch, ref.device)
        return simnpo_loss(logits_of(policy, batch), batch["labels"], beta=self.param("beta"),
                           gamma=self.param("gamma"))
