"""Sharpness-aware unlearning (issue 21 item 2, `--sam-rho`): SAM's perturbation on a hand-made quadratic, the
gradient taken there, the exact return to W, and runs with full fine-tuning and LoRA."""
import pytest
import torch

from qru.cli import configs_for
from qru.command_line import command
from qru.config import ConfigError
from qru.recipes import unlearn_config
from qru.store import run_id_of
from qru.unlearn.trainer import sam_perturb, sam_restore, unlearn


def test_sam_moves_along_the_normalised_gradient_and_returns_exactly():
    """L(w) = 0.5 sum a_i w_i^2 over two parameters: g = a w, e = rho g / ||g||; the gradient at w + e is
    a (w + e); sam_restore gives back w bit for bit."""
    a1, a2 = torch.tensor([1.0, 4.0]), torch.tensor([[2.0, 0.5]])
    w1 = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    w2 = torch.nn.Parameter(torch.tensor([[1.0, -2.0]]))
    start = (w1.detach().clone(), w2.detach().clone())

    def loss():
        return 0.5 * ((a1 * w1 ** 2).sum() + (a2 * w2 ** 2).sum())
    loss().backward()
    g1, g2 = a1 * start[0], a2 * start[1]
    norm = torch.sqrt((g1 ** 2).sum() + (g2 ** 2).sum())
    saved = sam_perturb([w1, w2], 0.05)
    assert torch.allclose(w1, start[0] + 0.05 * g1 / norm) and torch.allclose(w2, start[1] + 0.05 * g2 / norm)
    assert torch.allclose(torch.sqrt(((w1 - start[0]) ** 2).sum() + ((w2 - start[1]) ** 2).sum()),
                          torch.tensor(0.05))  # the step has length rho
    w1.grad, w2.grad = None, None
    loss().backward()
    perturbed = (w1.detach().clone(), w2.detach().clone())
    sam_restore([w1, w2], saved)
    assert torch.equal(w1, start[0]) and torch.equal(w2, start[1])
    assert torch.allclose(w1.grad, a1 * perturbed[0]) and torch.allclose(w2.grad, a2 * perturbed[1])


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_sam_unlearning_runs_and_differs_from_plain_unlearning(micro_models, micro_corpus, adapter):
    forget, retain = micro_corpus.raw["forget"][:4], micro_corpus.raw["retain1"][:4]
    results = {}
    for rho in (0.0, 0.05):
        config = unlearn_config("npo", adapter=adapter, lr=1e-3, epochs=1, max_steps=2, sam_rho=rho)
        results[rho] = unlearn(micro_models.target, micro_models.tokenizer, forget, retain, config, 64, seed=0)
    assert len(results[0.05].history) == 2 and results[0.05].history[0]["forget_loss"] == \
        pytest.approx(results[0.0].history[0]["forget_loss"], rel=1e-6)  # the first step's loss is taken at W
    moved = [(a - b).abs().max() for a, b in zip(results[0.05].model.parameters(), results[0.0].model.parameters())]
    assert max(float(m) for m in moved) > 0  # the step's gradient came from W + e


def test_sam_option_round_trip_label_and_refusals():
    (config,) = configs_for(["run", "--scale", "micro", "--method", "npo", "--adapter", "lora", "--sam-rho", "0.05"])
    assert config.unlearn.sam_rho == 0.05 and "SAM rho 0.05" in config.label
    assert "--sam-rho 0.05" in " ".join(command(config))
    (again,) = configs_for(command(config))
    assert run_id_of(again) == run_id_of(config)
    (plain,) = configs_for(["run", "--scale", "micro", "--method", "npo", "--adapter", "lora"])
    assert run_id_of(plain) != run_id_of(config) and "sam_rho" not in str(plain.unlearn.label)
    for bad in ("-1", "11", "nan"):
        with pytest.raises(ConfigError, match="SAM rho"):
            configs_for(["run", "--scale", "micro", "--sam-rho", bad])
