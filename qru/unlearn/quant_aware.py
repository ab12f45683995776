"""Quantization-aware unlearning: the forward pass through fake-quantized weights Q(W), gradients passed straight
through to the float weights (docs/design.md "Quantization-aware unlearning").

As quantization-aware training does (Bengio et al. 2013, arXiv 1308.3432, the straight-through estimator; torchao's
QAT ``FakeQuantizer``), every quantizable Linear layer (all but ``lm_head``, the ones PTQ quantizes:
qru.quant.bnb.quantizable_linears) computes ``x @ Q(W)^T + b`` with Q the chosen quantizer's fake-quant round trip
(the same :meth:`dequantize` the evaluation uses), and the backward pass treats Q as the identity: the gradient with
respect to W is the gradient with respect to Q(W). Under LoRA (peft) the quantized weight is the merged one,
Q(W0 + scale B A) (what PTQ quantizes after ``merge_and_unload``), and the gradient reaches A and B through
W0 + scale B A; LoRA's dropout, which acts on the adapters' input and has no merged form, is not applied in the
quantized pass.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from qru.quant.bnb import quantizable_linears


class _StraightThrough(torch.autograd.Function):
    """Q(W) forward (exactly the quantizer's own dequantized values), identity backward."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, quantizer) -> torch.Tensor:  # noqa: ARG004 (autograd's signature)
        return quantizer.dequantize(weight.detach()).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ARG004
        return grad, None


def straight_through(weight: torch.Tensor, quantizer) -> torch.Tensor:
    """Q(``weight``) with the straight-through gradient: the value is ``quantizer.dequantize(weight)`` exactly (same
    dtype as ``weight``, shape [out, in]) and d Q / d W is taken as the identity. ``quantizer`` is a QuantSpec or
    GGUFGrid below 32 bits; raises ValueError where its dequantize does (GPTQ, a GGUF row length not a multiple of
    32)."""
    return _StraightThrough.apply(weight, quantizer)


def _linear_forward(module: nn.Linear, quantizer) -> Callable:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, straight_through(module.weight, quantizer), module.bias)
    return forward


def _lora_forward(module, quantizer) -> Callable:
    """peft lora.Linear: x @ Q(W0 + sum of the active adapters' scale B A)^T + b."""
    base = module.base_layer

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # noqa: ARG001 (peft passes adapter names)
        weight = base.weight
        for name in module.active_adapters:
            if name in module.lora_A:
                weight = weight + module.get_delta_weight(name)
        return F.linear(x.to(weight.dtype), straight_through(weight, quantizer), base.bias)
    return forward


def _quantized_modules(model: nn.Module, quantizer) -> list[tuple[nn.Module, str]]:
    """The modules whose forward the quantized pass replaces, with their kind: peft LoRA layers ("lora"), and the
    other quantizable Linear layers outside any LoRA layer ("linear"); only those whose weight shape the quantizer
    takes (:meth:`quantizes`)."""
    from peft.tuners.lora import LoraLayer

    lora = {name: mod for name, mod in model.named_modules() if isinstance(mod, LoraLayer)}
    inside = tuple(name + "." for name in lora)
    plain = [(mod, "linear") for name, mod in quantizable_linears(model).items() if not name.startswith(inside)]
    return [(mod, kind) for mod, kind in [(mod, "lora") for mod in lora.values()] + plain
            if quantizer.quantizes(tuple((mod.base_layer.weight if kind == "lora" else mod.weight).shape))]


@contextmanager
def quantized_forward(model: nn.Module, quantizer) -> Iterator[int]:
    """Within the block, ``model``'s quantizable Linear layers (and peft LoRA layers) compute with Q(W) and pass
    gradients straight through (module docstring). Yields how many layers were switched; every layer's own forward is
    restored on leaving, also after an error. Layers whose shape the quantizer does not take
    (:meth:`quantizes`, e.g. GGUF rows not a multiple of 32) stay in float, as PTQ leaves them."""
    switched = []  # (module, the instance forward it had before, if any: a hook's, or an outer block's)
    try:
        for module, kind in _quantized_modules(model, quantizer):
            switched.append((module, module.__dict__.get("forward")))
            module.forward = (_lora_forward if kind == "lora" else _linear_forward)(module, quantizer)
        yield len(switched)
    finally:
        for module, before in reversed(switched):
            if before is None:
                del module.forward  # the instance attribute: the class's forward is back
            else:
                module.forward = before


def quantized_layers(model: nn.Module, quantizer) -> int:
    """How many of ``model``'s layers :func:`quantized_forward` would switch to Q(W) (0: the quantizer takes none
    of its Linear weights, e.g. a GGUF grid where no input size is a multiple of 32)."""
    return len(_quantized_modules(model, quantizer))


def mixed_loss(compute: Callable[[], torch.Tensor], model: nn.Module, quantizer, mix: float
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """``mix`` x the loss at Q(W) + (1 - mix) x the loss at W, ``compute()`` giving a scalar loss of ``model``'s
    current forward; with ``quantizer`` None just ``compute()``. Returns the loss (differentiable) and its parts as
    floats: ``{"at_quantized": ..., "at_float": ...}`` (the latter only where 0 < mix < 1 needs it)."""
    if quantizer is None:
        return compute(), {}
    with quantized_forward(model, quantizer):
        at_q = compute()
    parts = {"at_quantized": at_q.item()}
    if mix >= 1:
        return at_q, parts
    at_w = compute()
    parts["at_float"] = at_w.item()
    return mix * at_q + (1 - mix) * at_w, parts


__all__ = ["mixed_loss", "quantized_forward", "quantized_layers", "straight_through"]
