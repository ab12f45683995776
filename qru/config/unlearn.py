"""The unlearning stage: method (from the registry in qru/unlearn/methods/), regularizer, adapter, recipe and
scenario options."""
from __future__ import annotations

from dataclasses import dataclass

from qru.checks import ConfigError, finite as _finite, require as _require
from qru.config.model import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_LR, bounded as _bounded
from qru.quant.spec import QuantSpec

LOSS_FORMS = ("faithful", "muse")  # docs/design.md "Unlearning losses": faithful forms, or muse_bench's raw-logit forms
REGULARIZERS = ("none", "gdr", "klr")
ADAPTERS = ("full", "lora")
WEIGHT_PRECISIONS = ("fp32", "bf16-rounded")  # weights during unlearning (UnlearnConfig.weight_precision)
# Sane ranges of the recipe (docs/commands.md "Ranges"; lr, epochs and batch size as the model recipe's,
# qru.config.model); a method's own parameters carry theirs (qru.unlearn.methods.base.Param.maximum).
MAX_STEPS, MAX_ALPHA, MAX_LORA_R, MAX_LORA_ALPHA = 10_000_000, 1e6, 4096, 65536


@dataclass(frozen=True)
class UnlearnConfig:
    """An unlearning method and its training recipe.

    Args:
        method: the unlearning method, a key of the registry qru.unlearn.methods.METHODS (``"ga"``, ``"npo"``,
            ``"simnpo"``, ``"rmu"``, ...); its unit holds its loss, parameters, label and help.
        regularizer: ``"none"``, ``"gdr"`` (gradient descent on D_r) or ``"klr"`` (KL to the target on D_r).
        alpha: weight of the regularizer.
        beta: NPO / SimNPO inverse temperature (a method parameter; stored as a field for the ids of earlier runs,
            like gamma, rmu_layer and rmu_coeff; 0.1 where the method has no beta).
        adapter: ``"full"`` fine-tuning or ``"lora"`` (peft; merged with merge_and_unload before quantizing).
        lora_r: LoRA rank r.
        lora_alpha: LoRA scaling numerator (scale = lora_alpha / lora_r).
        lora_dropout: dropout on the LoRA branch's input.
        lr: constant AdamW learning rate.
        epochs: passes over the forget set.
        batch_size: forget documents per step (and as many retain documents for the regularizer).
        max_steps: stop after this many optimizer steps (0 = no cap).
        loss_form: ``"faithful"`` (docs/design.md "Unlearning losses") or ``"muse"``: muse_bench's iterative.py forms,
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
        start_grid: the scenario's *start point* (docs/design.md "Calibration"): ``""`` = the fp32 target as trained, or a
            quantizer key (QuantSpec.key below 32 bits, not GPTQ, e.g. ``nf4-b64@4``): the target's quantizable
            weights are replaced by their dequantized values on that quantizer's grid before unlearning ("a model
            distributed in 4-bit"); that snapped model is then also the NPO/KLR reference and the run's target.
        weight_precision: ``"fp32"``, or ``"bf16-rounded"``: the start's weights rounded to bfloat16, and every
            trained weight rounded to bfloat16 after every optimizer step (LoRA: the adapters after every step and the
            merged weights once), computed in fp32 (bf16 arithmetic on a CPU is ~16x slower), to test whether per-step
            rounding erases small updates.
        freeze_embeddings: full fine-tuning only: keep the (tied) input/output embeddings fixed. Embeddings are never
            quantized, so when trained they can carry part of the unlearning past PTQ. LoRA never trains them.
        sam_rho: sharpness-aware unlearning (SAM, Foret et al. 2021, arXiv 2010.01412; for unlearning Fan et al.
            2025, arXiv 2502.05374): each step's gradient is taken at W + rho g / ||g||, g the forget term's gradient
            at W over the trained parameters (all weights, or LoRA's adapters); 0 = off. In [0, 10].
        quant_aware: quantization-aware unlearning (qru.unlearn.quant_aware): a quantizer key below 32 bits that
            rounds weight by weight (e.g. ``nf4-b64@4``, ``rtn-asym-g128@4``, a GGUF grid); the loss is computed
            with the quantizable weights fake-quantized, Q(W) (LoRA: Q(W0 + scale B A)), and its gradient passed
            straight through to W. "" = off.
        quant_aware_mix: the weight of the loss at Q(W) in ``mix x L(Q(W)) + (1 - mix) x L(W)``, in (0, 1]; 1 (the
            default) = the loss at Q(W) only. Must be 1 without ``quant_aware``.
        params: the parameters of methods added after the four above, as sorted ``(name, value)`` pairs (JSON: a
            list of pairs); a parameter left out takes its method's default (:meth:`param`).
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
    sam_rho: float = 0.0
    quant_aware: str = ""
    quant_aware_mix: float = 1.0
    params: tuple = ()

    def __post_init__(self) -> None:
        from qru.unlearn.methods import METHODS  # here, not at import: the registry's units import torch

        _require(self.method in METHODS, f"unknown method {self.method!r} (choose from {', '.join(METHODS)})")
        _require(self.regularizer in REGULARIZERS,
                 f"unknown regularizer {self.regularizer!r} (choose from {', '.join(REGULARIZERS)})")
        _require(self.adapter in ADAPTERS, f"unknown adapter {self.adapter!r} (choose from {', '.join(ADAPTERS)})")
        _bounded("lr", self.lr, 0, MAX_LR, open_low=True)
        _bounded("alpha", self.alpha, 0, MAX_ALPHA)
        for name, high in (("lora_r", MAX_LORA_R), ("lora_alpha", MAX_LORA_ALPHA), ("epochs", MAX_EPOCHS),
                           ("batch_size", MAX_BATCH_SIZE)):
            _bounded(name, getattr(self, name), 1, high, integer=True)
        _bounded("max_steps", self.max_steps, 0, MAX_STEPS, integer=True)
        _require(_finite(self.lora_dropout) and 0 <= self.lora_dropout < 1,
                 f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        self._check_methods()
        self._check_scenario()
        self._check_quant_aware()

    def _check_quant_aware(self) -> None:
        """The quantization-aware quantizer (a key below 32 bits that rounds weight by weight) and its mix weight."""
        from qru.quant.spec import QuantSpec, quantizer_from_key

        _require(isinstance(self.quant_aware, str), f"quant_aware must be a quantizer key or '', got {self.quant_aware!r}")
        _require(_finite(self.quant_aware_mix) and 0 < self.quant_aware_mix <= 1,
                 f"quant-aware mix must be in (0, 1] (the weight of the loss at Q(W)), got {self.quant_aware_mix!r}")
        if not self.quant_aware:
            _require(self.quant_aware_mix == 1, "--quant-aware-mix needs --quant-aware QUANTIZER")
            return
        try:
            quantizer = quantizer_from_key(self.quant_aware)
        except ConfigError as exc:
            raise ConfigError(f"quant-aware quantizer {self.quant_aware!r}: {exc}") from None
        if isinstance(quantizer, QuantSpec):
            _require(quantizer.key == self.quant_aware,
                     f"quant-aware quantizer {self.quant_aware!r}: write it as {quantizer.key!r}")
            _require(quantizer.bits < 32 and not quantizer.is_gptq,
                     f"quant-aware quantizer {self.quant_aware!r}: pick a quantizer below 32 bits that rounds weight "
                     "by weight (FP4/NF4, int8, RTN, a GGUF grid); GPTQ's grid depends on calibration text")

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
        """The method's parameters (qru.unlearn.methods), its retain term, loss form and SURE share."""
        from qru.unlearn.methods import METHODS, all_params

        cls = METHODS[self.method]
        _require(isinstance(self.params, (tuple, list)) and all(isinstance(p, (tuple, list)) and len(p) == 2
                                                                 and isinstance(p[0], str) for p in self.params),
                 f"params must be (name, value) pairs, got {self.params!r}")
        object.__setattr__(self, "params", tuple(sorted((str(k), v) for k, v in self.params)))
        own, legacy = {p.name: p for p in cls.params}, _legacy_params()
        for name, param in all_params().items():
            if name in legacy and name not in own and getattr(self, name) != legacy[name]:
                owners = [m for m, c in METHODS.items() if any(p.name == name for p in c.params)]
                _require(False, param.refusal(owners, self.method))
        for name, value in self.params:
            _require(name not in legacy, f"{name} is a field of its own, not an entry of params")
            _require(name in own, f"{self.method} has no parameter {name!r}"
                     + (f" (its parameters: {', '.join(own)})" if own else ""))
        for param in own.values():
            problem = param.check(self.param(param.name))
            _require(not problem, problem)
        _require(self.loss_form in LOSS_FORMS,
                 f"unknown loss form {self.loss_form!r} (choose from {', '.join(LOSS_FORMS)})")
        muse = [c.label for c in METHODS.values() if c.muse_form]
        _require(self.loss_form == "faithful" or cls.muse_form or self.regularizer == "klr",
                 f"loss_form 'muse' changes {' and '.join(muse + ['KLR'])} only; {self.method} with regularizer "
                 f"{self.regularizer} has neither")
        _require(_finite(self.sure_share) and 0 <= self.sure_share < 1,
                 f"SURE share must be in [0, 1) (0 = no saliency mask), got {self.sure_share!r}")
        _require(_finite(self.sam_rho) and 0 <= self.sam_rho <= 10,
                 f"SAM rho must be in [0, 10] (0 = off), got {self.sam_rho!r}")
        _require(self.sure_share == 0 or self.adapter == "full",
                 "SURE's saliency mask selects rows of the full weights: it applies to full fine-tuning only")
        _require(not cls.own_retain or self.regularizer == "none",
                 f"{cls.label} has its own retain term (weight alpha): use regularizer none")

    def param(self, name: str):
        """The value of method parameter ``name``: its field (beta, gamma, rmu_layer, rmu_coeff), else its entry in
        ``params``, else the method's default. Raises KeyError for a parameter the method does not have."""
        from qru.unlearn.methods import METHODS

        if name in _legacy_params():
            return getattr(self, name)
        given = dict(self.params)
        if name in given:
            return given[name]
        for p in METHODS[self.method].params:
            if p.name == name:
                return p.default
        raise KeyError(f"{self.method} has no parameter {name!r}")

    @property
    def label(self) -> str:
        from qru.unlearn.methods import METHODS

        name = METHODS[self.method].label
        name += "" if self.regularizer == "none" else "+" + self.regularizer.upper()
        name += _method_params(self)
        if self.sure_share:
            name += f" SURE {self.sure_share:g}"
        if self.sam_rho:
            name += f" SAM rho {self.sam_rho:g}"
        if self.quant_aware:
            mix = f" mix {self.quant_aware_mix:g}" if self.quant_aware_mix != 1 else ""
            name += f" QA {self.quant_aware}{mix}"
        if self.loss_form != "faithful":
            name += f" ({self.loss_form} loss forms)"
        adapter = "full" if self.adapter == "full" else f"LoRA r{self.lora_r}"
        cap = f" max {self.max_steps} steps" if self.max_steps else ""
        scenario = f" [{self.scenario_label}]" if self.scenario_label else ""
        return f"{name} {adapter} lr {self.lr:g} x{self.epochs} ep{cap}{scenario}"


def _method_params(config: "UnlearnConfig") -> str:
    """The method parameters that differ from their defaults, for labels: `` (beta 0.2)``, `` (layer 1, c 5)``."""
    from qru.unlearn.methods import METHODS

    parts = [f"{p.short or p.name} {config.param(p.name):g}" for p in METHODS[config.method].params
             if config.param(p.name) != p.default]
    return f" ({', '.join(parts)})" if parts else ""


def _legacy_params() -> dict:
    """The method parameters stored as fields of UnlearnConfig, with their field defaults."""
    return {"beta": 0.1, "gamma": 0.0, "rmu_layer": -1, "rmu_coeff": 6.5}
