"""Validation helpers shared by the config dataclasses (qru.config) and the quantizer specs (qru.quant.spec).

Every check raises :class:`ConfigError` with a message naming the bad value, so a bad CLI argument or a corrupt stored
config never reaches training code. This module imports nothing from qru, so any module can use it without a cycle.
"""
from __future__ import annotations

import math


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the value."""


def require(cond: bool, message: str) -> None:
    """Raise ConfigError(``message``) unless ``cond``."""
    if not cond:
        raise ConfigError(message)


def finite(value) -> bool:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integers(config, names: tuple[str, ...], minimum: int = 1) -> None:
    """Raise ConfigError unless every field ``names`` of ``config`` is an integer (not a bool) >= ``minimum``."""
    for name in names:
        value = getattr(config, name)
        require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
                f"{name} must be an integer >= {minimum}, got {value!r}")


def seed_check(name: str, value) -> None:
    """Raise ConfigError unless ``value`` is an integer seed in [0, 2^32)."""
    require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32,
            f"{name} must be an integer in [0, 2^32), got {value!r}")


def positive(name: str, value: float) -> None:
    """Raise ConfigError unless ``value`` is a finite number > 0."""
    require(finite(value) and value > 0, f"{name} must be a finite number > 0, got {value!r}")


__all__ = ["ConfigError", "finite", "integers", "positive", "require", "seed_check"]
