"""What determines a run's results: the stages' configs, the bit widths and quantizer, the evaluation settings."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qru.checks import finite as _finite, integers as _integers, require as _require, seed_check as _seed
from qru.config.corpus import CorpusConfig
from qru.config.model import ModelConfig
from qru.config.unlearn import UnlearnConfig
from qru.quant.spec import BIT_WIDTHS, QUANT_TYPES_4BIT, QUANTIZERS, RTN_BITS, RTN_GROUP_SIZES, QuantSpec

# How evaluation prompts are written and tokenized (qru.evals.prompts; docs/measures.md "Prompt formats").
PROMPT_FORMATS = ("muse", "healed")
MAX_EVAL_ITEMS = 10**7  # --max-eval-items: far beyond any evaluation list, refused above


@dataclass(frozen=True)
class EvalConfig:
    """Metric settings (MUSE, docs/design.md "Reference definitions").

    Args:
        verbmem_max_new_tokens: greedy tokens generated per VerbMem prompt (MUSE: 128); the ground truth is cut to
            the same number of tokens.
        knowmem_max_new_tokens: greedy tokens per KnowMem answer (MUSE: 32).
        mink_k: the share K of lowest token log-probs averaged by Min-K% prob (MUSE: 0.4).
        n_probes: forget-set prompts whose generations are stored as probes.
        batch_size: prompts per generation / scoring batch.
        prompt_format: ``"muse"`` (MUSE's literal prompt strings and the tokenizer's own special tokens) or
            ``"healed"`` (BOS by hand, no trailing space after "Answer:"); qru.evals.prompts. Stored runs from
            before the option read as ``"healed"``.
        max_eval_items: evaluate at most this many items of each evaluation list (VerbMem, KnowMem forget/retain,
            PrivLeak forget/retain/holdout), evenly spaced over the list; 0 = all (qru.evals.fit.subsample).
    """

    verbmem_max_new_tokens: int = 128
    knowmem_max_new_tokens: int = 32
    mink_k: float = 0.4
    n_probes: int = 8
    batch_size: int = 16
    prompt_format: str = "healed"
    max_eval_items: int = 0

    def __post_init__(self) -> None:
        _integers(self, ("verbmem_max_new_tokens", "knowmem_max_new_tokens", "n_probes", "batch_size"))
        _integers(self, ("max_eval_items",), minimum=0)
        _require(self.max_eval_items <= MAX_EVAL_ITEMS,
                 f"max_eval_items must be at most {MAX_EVAL_ITEMS:,} (0 = all), got {self.max_eval_items!r}")
        _require(self.prompt_format in PROMPT_FORMATS,
                 f"prompt format must be one of {', '.join(PROMPT_FORMATS)}, got {self.prompt_format!r}")
        _require(_finite(self.mink_k) and 0 < self.mink_k <= 1, f"mink_k must be in (0, 1], got {self.mink_k!r}")


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
        quantizer: ``"gptq"`` (GPTQ int-k calibrated on D_r, qru.quant.gptq), ``"bitsandbytes"`` (LLM.int8 at 8 bits,
            FP4/NF4 at 4, as the papers) or ``"rtn"`` (RTN int-k
            at every bit width below 32, qru.quant.rtn).
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
    def quant_aware_note(self) -> str:
        """A sentence where quantization-aware unlearning trains through a quantizer the run is not evaluated with
        (e.g. ``--quant-aware nf4-b64@4`` with the default FP4 at 4 bits), else ""."""
        key = self.unlearn.quant_aware
        if not key or key in {s.key for s in self.quant_specs()}:
            return ""
        evaluated = ", ".join(s.key for s in self.quant_specs() if s.bits < 32) or "32 bits only"
        return (f"note: quantization-aware unlearning trains through {key}, but the run is evaluated with "
                f"{evaluated}; for the quantizer it was trained for, evaluate with it (e.g. --quant-type nf4)")

    @property
    def label(self) -> str:
        bits = "/".join(str(b) for b in self.bits)
        corpus = Path(self.corpus.source).name if self.corpus.is_folder else self.corpus.source
        model = self.model.label
        quant = f" ({self.quant_type_4bit.upper()})" if 4 in self.bits else ""
        if self.quantizer in ("rtn", "gptq"):
            group = f"g{self.group_size}" if self.group_size else "per-channel"
            quant = f" ({self.quantizer.upper()} {'sym' if self.symmetric else 'asym'} {group})"
        return f"{self.unlearn.label} @ {bits} bit{quant} [{corpus}, {model}{self.data_label}]"

    @property
    def data_label(self) -> str:
        """What the label says of the evaluation and data choices: the prompt format (always on a MUSE corpus, on
        the embedded corpus where it is not ``healed``) and any subsampling; "" otherwise."""
        parts = [f"{self.eval.prompt_format} prompts"] \
            if not self.corpus.is_embedded or self.eval.prompt_format != "healed" else []
        if self.corpus.max_train_tokens:
            parts.append(f"{self.corpus.max_train_tokens:,} train tokens/split")
        if self.eval.max_eval_items:
            parts.append(f"{self.eval.max_eval_items:,} eval items/list")
        return "".join(f", {p}" for p in parts)
