"""RMU: representation misdirection (Li et al. 2024, "The WMDP benchmark", arXiv 2403.03218, eq. 1-2): the steered
layer's activations on D_f are pushed toward c * u (u a fixed random unit vector drawn from the run's seed, uniform
in [0, 1)^d then normalized, as the reference code) and kept at the target's on D_r (its own retain term, weight
alpha)."""
from __future__ import annotations

from qru.errors import UnlearnError
from qru.unlearn.methods.base import Method, Param, on_device


def hidden_of(model, batch: dict, layer: int):
    """Hidden state ``layer`` [B, T, d] (0 = embeddings, i = output of decoder layer i)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    return out.hidden_states[layer]


class RMU(Method):
    name = "rmu"
    label = "RMU"
    help = ("RMU steers a middle layer's activations on the forget set toward a random vector and keeps them on the "
            "retain set.")
    source = "Li et al. 2024, arXiv 2403.03218, eq. 1-2"
    params = (Param("rmu_layer", -1, "hidden state steered (default -1 = the middle layer)", short="layer",
                    title="RMU layer", scope="the RMU layer and coefficient", integer=True, minimum=-1),
              Param("rmu_coeff", 6.5, "steering coefficient c (default 6.5)", short="c",
                    title="RMU steering coefficient", scope="the RMU layer and coefficient", positive=True,
                    maximum=1e4))
    own_retain = True

    @classmethod
    def check_model(cls, config, model_config) -> str:
        """The steered hidden state must exist: 0 (embeddings) to num_hidden_layers."""
        n_layers, layer = getattr(model_config, "num_hidden_layers", None), config.param("rmu_layer")
        if isinstance(n_layers, int) and layer > n_layers:
            return f"RMU layer {layer} does not exist: the model's hidden states are 0 (embeddings) to {n_layers}"
        return ""

    def __init__(self, config, target, seed: int = 0):
        import torch

        super().__init__(config, target, seed)
        problem = self.check_model(config, target.config)  # checked before the run is stored too (qru.pipeline)
        if problem:
            raise UnlearnError(problem)
        n_layers, d = target.config.num_hidden_layers, target.config.hidden_size
        layer = self.param("rmu_layer")
        self.layer = n_layers // 2 if layer == -1 else layer
        u = torch.rand(d, generator=torch.Generator().manual_seed(seed))
        self.control = (self.param("rmu_coeff") * u / u.norm()).to(target.device)

    def forget(self, policy, ref, batch):
        from qru.unlearn.losses import rmu_forget_loss

        batch = on_device(batch, ref.device)
        return rmu_forget_loss(hidden_of(policy, batch, self.layer), batch["attention_mask"].float(), self.control)

    def retain(self, policy, ref, batch):
        import torch

        from qru.unlearn.losses import rmu_retain_loss

        batch = on_device(batch, ref.device)
        with torch.no_grad():
            ref_hidden = hidden_of(ref, batch, self.layer)
        return rmu_retain_loss(hidden_of(policy, batch, self.layer), batch["attention_mask"].float(), ref_hidden)
