"""Choosing a quantizer on a page: the stored quantizer keys (QuantSpec.key) of some runs, grouped into families,
bit widths and block / group sizes, so that widgets can offer exactly what the runs hold."""
from __future__ import annotations

from dataclasses import dataclass

from qru.quant.spec import QuantSpec

FAMILIES = {
    "fp4": "FP4 — bitsandbytes 4-bit float, absmax per block (the papers' default)",
    "nf4": "NF4 — bitsandbytes 4-bit normal float, absmax per block",
    "int8": "LLM.int8 — bitsandbytes 8-bit, absmax per output row",
    "rtn-asym": "RTN int-k, asymmetric — min/max per group with a zero point",
    "rtn-sym": "RTN int-k, symmetric — absmax per group",
    "gptq-asym": "GPTQ int-k, asymmetric — calibrated on the retain set, scale and zero point per group",
    "gptq-sym": "GPTQ int-k, symmetric — calibrated on the retain set, scale per group",
    "none": "none — 32-bit float (no step to compare with)",
}


@dataclass(frozen=True)
class Choice:
    """A quantizer key split for widgets: ``family`` (a FAMILIES key), ``bits`` and ``size`` (RTN group size, 0 =
    per channel; bitsandbytes 4-bit block size; 0 otherwise)."""

    family: str
    bits: int
    size: int

    @classmethod
    def of(cls, key: str) -> "Choice":
        """Split a key. Raises ConfigError (a ValueError) for a malformed one."""
        spec = QuantSpec.from_key(key)
        grouped = spec.is_rtn or spec.is_gptq
        size = spec.group_size if grouped else spec.blocksize if spec.quant_type in ("fp4", "nf4") else 0
        return cls(spec.quant_type, spec.bits, size)


def available(keys) -> dict[str, dict[int, dict[int, str]]]:
    """family -> bits -> size -> key for the well-formed ``keys`` (others are skipped), families in FAMILIES order,
    bits from high to low, sizes ascending."""
    found: dict[str, dict[int, dict[int, str]]] = {}
    for key in sorted(set(keys)):
        try:
            c = Choice.of(key)
        except ValueError:
            continue
        found.setdefault(c.family, {}).setdefault(c.bits, {})[c.size] = key
    return {f: {b: dict(sorted(found[f][b].items())) for b in sorted(found[f], reverse=True)}
            for f in FAMILIES if f in found}


def size_label(family: str, size: int) -> str:
    """How a block / group size reads in a widget."""
    if family.startswith(("rtn", "gptq")):
        return "per channel (whole row)" if size == 0 else f"groups of {size}"
    return f"blocks of {size}" if size else "per row"


def default_key(keys, preferred: list[str]) -> str | None:
    """The first of ``preferred`` among the well-formed ``keys``, else the quantized key nearest to 4 bits, else
    any well-formed key, else None."""
    valid = [k for k in dict.fromkeys(keys) if choice_of(k)]
    for key in preferred:
        if key in valid:
            return key
    quantized = sorted((k for k in valid if not k.endswith("@32")), key=lambda k: abs(Choice.of(k).bits - 4))
    return (quantized or valid or [None])[0]


def choice_of(key) -> Choice | None:
    """:meth:`Choice.of`, or None for a malformed key."""
    try:
        return Choice.of(key)
    except ValueError:
        return None


__all__ = ["FAMILIES", "Choice", "available", "choice_of", "default_key", "size_label"]
