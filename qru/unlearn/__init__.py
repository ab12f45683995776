"""Unlearning: loss functions (ga, npo, gdr, klr), the training loop, LoRA via peft."""
from qru.unlearn.losses import FORGET_LOSSES, REGULARIZERS
from qru.unlearn.trainer import UnlearnError, UnlearnResult, unlearn

__all__ = ["FORGET_LOSSES", "REGULARIZERS", "UnlearnError", "UnlearnResult", "unlearn"]
