"""Where qru computes: the GPU when CUDA is present (this process's local rank under ``accelerate launch``), else
the CPU, and which precisions each allows (bf16 compute only on CUDA: on a CPU it is ~16x slower than fp32)."""
from __future__ import annotations

import os

import torch

from qru.config import ConfigError


def compute_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available (rank 0 outside a distributed launch), else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0))
    return torch.device("cpu")


def scan_device(name: str) -> torch.device:
    """The device of ``qru deltas --device NAME``: ``auto`` = :func:`compute_device`, ``cpu``, ``cuda`` or
    ``cuda:N``. Raises ConfigError for another name or a CUDA device this machine does not have."""
    text = str(name).strip().lower()
    if text == "auto":
        return compute_device()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and not (kind == "cuda" and index.isascii() and index.isdigit())):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if kind == "cuda" and not (torch.cuda.is_available() and int(index or 0) < torch.cuda.device_count()):
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
                          + ("" if torch.cuda.is_available() else " (torch sees no CUDA)") + "; use --device cpu")
    return torch.device(text)


def default_precision() -> str:
    """``"bf16"`` on a CUDA GPU that supports it, else ``"fp32"`` (the CLI's ``--precision auto``)."""
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def check_precision(precision: str) -> None:
    """Raise ConfigError if ``precision`` cannot be computed here: bf16 needs a CUDA GPU with bf16 support."""
    if precision == "bf16" and default_precision() != "bf16":
        raise ConfigError("precision bf16 needs a CUDA GPU with bf16 support; on this machine qru computes in fp32 "
                          "(bf16 arithmetic on a CPU is ~16x slower)")
