"""Unlearning: loss functions (losses.py), one unit per method (methods/), the training loop with LoRA via peft
(trainer.py). Import the parts directly (``from qru.unlearn.trainer import unlearn``): this package imports nothing
itself, so that qru.config can read the method registry without loading the trainer."""
