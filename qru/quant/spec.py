"""Quantizer settings: the constants, :class:`QuantSpec` (qru's own fake-quantizers: bitsandbytes FP4/NF4 and
LLM.int8, RTN int-k, GPTQ), :class:`GGUFGrid` (llama.cpp's GGUF 4-bit formats) and the :class:`Quantizer` interface
both of them have, so that the noise controls and the bit-width curve (qru.controls) take either.

Light on purpose: torch and the quantizer code are imported only inside the methods that quantize, so qru.config (which
validates runs against these constants) stays quick to import. Bad values raise ConfigError (qru.checks), except an
unknown GGUF grid (ValueError).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from qru.checks import ConfigError, integers, require

if TYPE_CHECKING:
    import torch
    from torch import nn

BIT_WIDTHS = (32, 8, 4)  # bitsandbytes: none, LLM.int8, 4-bit FP4/NF4
QUANT_TYPES_4BIT = ("fp4", "nf4")
QUANTIZERS = ("bitsandbytes", "rtn", "gptq")  # the quantizer family of a run
RTN_BITS = (8, 7, 6, 5, 4, 3, 2)
RTN_TYPES = ("rtn-asym", "rtn-sym")  # RTN int-k: min/max with zero point, or absmax
GPTQ_TYPES = ("gptq-asym", "gptq-sym")  # GPTQ int-k (qru.quant.gptq, calibrated on D_r): zero point, or symmetric
RTN_GROUP_SIZES = (0, 32, 64, 128)  # 0 = per output channel (the whole row)
BLOCKSIZES = (64, 128, 256, 512, 1024, 2048, 4096)
NOISE_KINDS = ("permuted", "gaussian")  # noise controls (qru.quant.noise)


@dataclass(frozen=True)
class QuantSpec:
    """One post-training quantization setting (docs/design.md "Terms").

    Args:
        bits: 32 (no quantization); 8 or 4 for bitsandbytes; 2..8 for RTN int-k.
        quant_type: ``"none"`` for 32; bitsandbytes ``"int8"`` (LLM.int8 weights, per-row absmax, 8 bits) or
            ``"fp4"`` / ``"nf4"`` (4-bit absmax blocks); ``"rtn-asym"`` (min/max with a zero point) or ``"rtn-sym"``
            (absmax) round-to-nearest int-k per group (qru.quant.rtn); ``"gptq-asym"`` / ``"gptq-sym"``: GPTQ int-k
            per group, calibrated on the retain set (qru.quant.gptq; in runs only, as it needs the model's
            activations).
        blocksize: weights per absmax block for bitsandbytes 4-bit (its default 64); unused otherwise.
        group_size: weights per RTN group along a row (32, 64, 128, or 0 = the whole row, per channel); unused
            otherwise.
    """

    bits: int = 32
    quant_type: str = "none"
    blocksize: int = 64
    group_size: int = 128

    def __post_init__(self) -> None:
        integers(self, ("bits", "blocksize", "group_size"), minimum=0)
        require(self.bits in BIT_WIDTHS + RTN_BITS,
                f"bit width must be one of {sorted(set(BIT_WIDTHS + RTN_BITS))}, got {self.bits!r}")
        grids = RTN_TYPES + GPTQ_TYPES
        allowed = {32: ("none",), 8: ("int8",) + grids, 4: QUANT_TYPES_4BIT + grids}.get(self.bits, grids)
        require(self.quant_type in allowed,
                f"quant type {self.quant_type!r} does not fit {self.bits} bits (allowed: {', '.join(allowed)})")
        require(self.blocksize in BLOCKSIZES, f"blocksize must be a power of two in 64..4096, got {self.blocksize!r}")
        require(self.group_size in RTN_GROUP_SIZES,
                f"group size must be one of {RTN_GROUP_SIZES} (0 = per channel), got {self.group_size!r}")

    @property
    def is_rtn(self) -> bool:
        return self.quant_type in RTN_TYPES

    @property
    def is_gptq(self) -> bool:
        return self.quant_type in GPTQ_TYPES

    @property
    def is_gguf(self) -> bool:
        """False: llama.cpp's GGUF formats are :class:`GGUFGrid` (the other kind of :class:`Quantizer`)."""
        return False

    @property
    def label(self) -> str:
        if self.is_rtn or self.is_gptq:
            group = f"g{self.group_size}" if self.group_size else "per-channel"
            name, _, kind = self.quant_type.partition("-")
            return f"{self.bits}-bit {name.upper()} {kind} {group}"
        return {32: "32-bit", 8: "8-bit int8"}.get(self.bits, f"4-bit {self.quant_type.upper()}")

    @property
    def key(self) -> str:
        """A short unique name, e.g. ``fp4-b64@4``, ``int8@8``, ``rtn-asym-g128@3``, ``none@32``."""
        if self.is_rtn or self.is_gptq:
            return f"{self.quant_type}-g{self.group_size}@{self.bits}"
        if self.quant_type in QUANT_TYPES_4BIT:
            return f"{self.quant_type}-b{self.blocksize}@{self.bits}"
        return f"{self.quant_type}@{self.bits}"

    @classmethod
    def for_bits(cls, bits: int, quant_type_4bit: str = "fp4", blocksize: int = 64) -> "QuantSpec":
        """The bitsandbytes QuantSpec of a bit width, with ``quant_type_4bit`` used for 4 bits."""
        quant_type = {32: "none", 8: "int8"}.get(bits, quant_type_4bit)
        return cls(bits=bits, quant_type=quant_type, blocksize=blocksize)

    @classmethod
    def from_key(cls, key: str) -> "QuantSpec":
        """The inverse of :attr:`key`. Raises ConfigError for a malformed key."""
        name, sep, bits = str(key).partition("@")
        digits = lambda t: t.isascii() and t.isdigit()  # noqa: E731 (int() also reads other scripts' digits)
        require(sep == "@" and digits(bits), f"not a quantizer key: {key!r} (e.g. fp4-b64@4, rtn-asym-g128@3)")
        kind, _, size = name.rpartition("-")
        if kind in RTN_TYPES + GPTQ_TYPES and size[:1] == "g" and digits(size[1:]):
            return cls(int(bits), kind, group_size=int(size[1:]))
        if kind in QUANT_TYPES_4BIT and size[:1] == "b" and digits(size[1:]):
            return cls(int(bits), kind, blocksize=int(size[1:]))
        require(name in ("none", "int8"), f"not a quantizer key: {key!r} (e.g. fp4-b64@4, rtn-asym-g128@3)")
        return cls(int(bits), name)

    def quantizes(self, shape: tuple[int, int]) -> bool:
        """True: qru's quantizers take every quantizable Linear weight, whatever its ``shape`` [out, in]."""
        return True

    def dequantize(self, weight: "torch.Tensor") -> "torch.Tensor":
        """Q(W) of one weight [out, in], float32 (qru.quant.bnb.quantize_tensor; the weight itself at 32 bits).
        Raises ValueError for GPTQ, whose grid needs calibration text (qru.quant.gptq.gptq_quantize)."""
        from qru.quant.bnb import quantize_tensor
        _per_weight(self)
        return quantize_tensor(weight, self, detail=False).dequant

    def block_ids(self, shape: tuple[int, int]) -> "torch.Tensor":
        """int64 [out, in]: the rounding block of each weight (qru.quant.noise.block_ids). Raises ValueError at 32
        bits or for GPTQ."""
        from qru.quant.noise import block_ids
        return block_ids(shape, self)

    def fake_quantize(self, model: "nn.Module") -> "nn.Module":
        """A float32 copy of ``model`` with its quantizable Linear weights replaced by Q(W) (qru.quant.bnb
        .fake_quantize; ``model`` itself at 32 bits). Raises ValueError for GPTQ."""
        from qru.quant.bnb import fake_quantize
        _per_weight(self)
        return fake_quantize(model, self)


def analysis_grid(blocksize: int = 64) -> list[QuantSpec]:
    """Every quantizer qru analyses a weight update under, so that a page can switch between them without
    recomputation: bitsandbytes FP4 and NF4 (absmax block ``blocksize``) at 4 bits, LLM.int8 at 8 bits, and RTN
    int-k asymmetric and symmetric, per channel and with groups of 32, 64 and 128, at 8..2 bits (59 in all)."""
    specs = [QuantSpec(4, "fp4", blocksize), QuantSpec(4, "nf4", blocksize), QuantSpec(8, "int8")]
    specs += [QuantSpec(bits, kind, group_size=g) for kind in RTN_TYPES for g in RTN_GROUP_SIZES for bits in RTN_BITS]
    return specs


def _per_weight(spec: QuantSpec) -> None:
    if spec.is_gptq:
        raise ValueError(f"{spec.key}: GPTQ's grid needs calibration text (qru.quant.gptq.gptq_quantize)")


QUANTIZER_SETS = {
    "all": "32 bits, FP4 and NF4 (block 64), LLM.int8 and RTN int-k 2..8 bits, sym/asym, per channel and g32/64/128",
    "bnb": "32 bits and the bitsandbytes quantizers the papers use: FP4, NF4 (block 64), LLM.int8",
    "4bit": "32 bits, FP4, NF4 and RTN int4 asym/sym with every group size",
}


def quantizer_set(names: list[str]) -> list[QuantSpec]:
    """The quantizers named by ``names``: set names of QUANTIZER_SETS and/or quantizer keys (QuantSpec.key, e.g.
    ``fp4-b64@4``, ``rtn-asym-g128@3``), in order, without repeats; 32 bits always first.
    Raises ConfigError naming an unknown name."""
    grid = analysis_grid()
    sets = {"all": grid, "bnb": [s for s in grid if not s.is_rtn], "4bit": [s for s in grid if s.bits == 4]}
    specs = [QuantSpec()]
    for name in names:
        if name in sets:
            specs += sets[name]
            continue
        try:
            spec = QuantSpec.from_key(name)
            require(not spec.is_gptq, f"{name}: GPTQ needs the model's activations on calibration text, so it is "
                                      f"analysed in runs (qru run --quantizer gptq), not between two checkpoints")
            specs.append(spec)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; or one of the sets {', '.join(QUANTIZER_SETS)}") from None
    return list({s.key: s for s in specs}.values())  # first occurrence order


GGUF_GRIDS = {"gguf-q4_1": ("Q4_1", "GGUF Q4_1"), "gguf-q4_0": ("Q4_0", "GGUF Q4_0")}  # key: (ggml type, label)


@dataclass(frozen=True)
class GGUFGrid:
    """A GGUF 4-bit format as a quantizer of the curve (qru.controls): ``key`` is a key of GGUF_GRIDS. It has the
    fields the curve reads from a QuantSpec (bits, key, label, quant_type, is_gptq, is_rtn, is_gguf); Linear layers
    whose input size is not a multiple of 32 stay unquantized (llama.cpp would store them otherwise). The round trip
    itself is qru.quant.gguf (the ``gguf`` package's reference quantizer)."""

    key: str
    bits: int = 4
    is_gptq: bool = False
    is_rtn: bool = False
    is_gguf: bool = True

    def __post_init__(self) -> None:
        if self.key not in GGUF_GRIDS:
            raise ValueError(f"unknown GGUF grid {self.key!r} (choose from {', '.join(GGUF_GRIDS)})")

    @property
    def quant_type(self) -> str:
        return self.key

    @property
    def label(self) -> str:
        return GGUF_GRIDS[self.key][1]

    def quantizes(self, shape: tuple[int, int]) -> bool:
        """Whether a Linear weight of ``shape`` [out, in] is quantized: its rows divide into GGUF blocks of 32."""
        return shape[1] % 32 == 0

    def dequantize(self, weight: "torch.Tensor") -> "torch.Tensor":
        """Q(W) of one weight [out, in] (in a multiple of 32), float32 (qru.quant.gguf.gguf_roundtrip)."""
        from qru.quant.gguf import gguf_roundtrip
        return gguf_roundtrip(weight, self.key)[0]

    def block_ids(self, shape: tuple[int, int]) -> "torch.Tensor":
        """int64 [out, in]: the GGUF block (32 consecutive weights of a row) of each weight."""
        from qru.quant.gguf import gguf_blocks
        return gguf_blocks(shape)

    def fake_quantize(self, model: "nn.Module") -> "nn.Module":
        """A float32 copy of ``model`` with every quantizable Linear weight it :meth:`quantizes` replaced by its GGUF
        round trip Q(W) (qru.quant.gguf.gguf_fake_quantize)."""
        from qru.quant.gguf import gguf_fake_quantize
        return gguf_fake_quantize(model, self.key)


@runtime_checkable
class Quantizer(Protocol):
    """What the noise controls (qru.quant.noise) and the bit-width curve (qru.controls) need of a quantizer, met by
    :class:`QuantSpec` and :class:`GGUFGrid` alike: tell them apart by ``is_gguf`` (never by type checks or getattr),
    and quantize through the methods rather than by branching on the kind.

    Attributes:
        key: a short unique name (``fp4-b64@4``, ``rtn-asym-g128@3``, ``gguf-q4_1``); :func:`quantizer_from_key`
            inverts it.
        label: the name in words (``4-bit FP4``, ``GGUF Q4_1``).
        bits: the bit width (32 = no quantization).
        quant_type: the format (``fp4``, ``int8``, ``rtn-asym``, ``gguf-q4_1``, ...).
        is_rtn, is_gptq, is_gguf: the family.
    """

    @property
    def key(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def bits(self) -> int: ...

    @property
    def quant_type(self) -> str: ...

    @property
    def is_rtn(self) -> bool: ...

    @property
    def is_gptq(self) -> bool: ...

    @property
    def is_gguf(self) -> bool: ...

    def quantizes(self, shape: tuple[int, int]) -> bool:
        """Whether a quantizable Linear weight of ``shape`` [out, in] is quantized at all (else left as it is)."""
        ...

    def dequantize(self, weight: "torch.Tensor") -> "torch.Tensor":
        """Q(W) of one weight [out, in], float32."""
        ...

    def block_ids(self, shape: tuple[int, int]) -> "torch.Tensor":
        """int64 [out, in]: the index of the block (one scale) each weight is rounded in."""
        ...

    def fake_quantize(self, model: "nn.Module") -> "nn.Module":
        """A copy of ``model`` whose quantized Linear weights are Q(W); ``model`` is unchanged."""
        ...


def quantizer_from_key(key: str) -> QuantSpec | GGUFGrid:
    """The quantizer named by ``key``: a :class:`GGUFGrid` for a key of GGUF_GRIDS, else ``QuantSpec.from_key``.
    Raises ConfigError for a malformed key."""
    if key in GGUF_GRIDS:
        return GGUFGrid(key)
    try:
        return QuantSpec.from_key(key)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; or a GGUF grid ({', '.join(GGUF_GRIDS)})") from None


__all__ = ["BIT_WIDTHS", "BLOCKSIZES", "GGUF_GRIDS", "GPTQ_TYPES", "GGUFGrid", "NOISE_KINDS", "QUANTIZERS",
           "QUANTIZER_SETS", "QUANT_TYPES_4BIT", "QuantSpec", "Quantizer", "RTN_BITS", "RTN_GROUP_SIZES", "RTN_TYPES",
           "analysis_grid", "quantizer_from_key", "quantizer_set"]
