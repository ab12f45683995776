"""What every unlearning method is: a :class:`Method` subclass with its name, label, help, source, parameters
(:class:`Param`) and its forget term; the regularizer (GDR / KLR) is shared. One file per method in this package,
registered by one line in ``qru/unlearn/methods/__init__.py`` (docs/extending.md).

Heavy imports (torch, the losses) happen inside the methods' functions, so that the registry loads without torch
(``qru --help`` stays fast). A method sees the run's :class:`qru.config.UnlearnConfig` (``config``), the target model (the reference of NPO and
KLR, docs/design.md "Unlearning losses") and the run's seed. Batches are dicts of ``input_ids``, ``attention_mask``
and ``labels`` ([B, T] int64; labels -100 where not scored); losses are scalar float32 tensors to *minimise*.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # torch is imported where a loss is computed, so that the command line starts without it
    import torch


@dataclass(frozen=True)
class Param:
    """One hyper-parameter of a method.

    Args:
        name: the field of UnlearnConfig that holds it where one exists (``beta``, ``gamma``, ``rmu_layer``,
            ``rmu_coeff``: kept for the ids of stored runs), else its key in ``UnlearnConfig.params``; also the
            command-line option (``--rmu-layer``) and the keyword of ``qru.recipes.run_config``.
        default: the method's default value.
        help: one line for ``--help`` and the Run page.
        short: its name in run labels (``beta 0.2``, ``layer 1``, ``c 5``).
        title: its name in error messages (default: ``name``), e.g. ``RMU layer``.
        scope: where several parameters of one method are refused together, the phrase naming them (``the RMU
            layer and coefficient``); default: the title.
        integer: an integer parameter (else a float).
        minimum: the smallest allowed value (inclusive), None for none.
        positive: the value must be > 0.
        maximum: the largest allowed value (inclusive), None for none: a sane bound, so that a typo (``--beta 1e9``)
            is refused before a run is stored instead of diverging in it.
    """

    name: str
    default: float
    help: str
    short: str = ""
    title: str = ""
    scope: str = ""
    integer: bool = False
    minimum: float | None = None
    positive: bool = False
    maximum: float | None = None

    @property
    def range(self) -> str:
        """The allowed values in interval notation: ``(0, 1000]``, ``[-1, inf)``, ``(-inf, inf)``."""
        low = "(0" if self.positive else f"[{self.minimum:g}" if self.minimum is not None else "(-inf"
        return f"{low}, {self.maximum:g}]" if self.maximum is not None else f"{low}, inf)"

    def check(self, value: Any) -> str:
        """"" if ``value`` is allowed, else the reason (naming the parameter, the value and, for a parameter with a
        maximum, the allowed range)."""
        import math

        title = self.title or self.name
        if self.integer and not (isinstance(value, int) and not isinstance(value, bool)):
            return f"{title} must be an integer, got {value!r}"
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"{title} must be a finite number, got {value!r}"
        if self.maximum is not None and (value > self.maximum or (self.positive and value <= 0)
                                         or (self.minimum is not None and value < self.minimum)):
            return f"{title} must be {'an integer' if self.integer else 'a number'} in {self.range}, got {value!r}"
        if self.positive and value <= 0:
            return f"{title} must be a finite number > 0, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"{title} must be >= {self.minimum:g}, got {value!r}"
        return ""

    def refusal(self, owners: list[str], method: str) -> str:
        """Why this parameter is refused for ``method`` (it belongs to ``owners``)."""
        if self.scope:
            return f"{self.scope} apply to method {' and '.join(owners)} only, not {method}"
        return f"{self.title or self.name} applies to {' and '.join(owners)} only, not {method}"


def on_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def logits_of(model, batch: dict) -> torch.Tensor:
    """The model's logits [B, T, V] on ``batch`` (already on its device)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def ref_logits_of(ref, batch: dict) -> torch.Tensor:
    """The reference (target) model's logits [B, T, V], without gradient."""
    import torch

    with torch.no_grad():
        return logits_of(ref, batch)


class Method:
    """Base of the unlearning methods. Subclasses set the class attributes and implement :meth:`forget`.

    Class attributes:
        name: the registry key and ``--method`` value (lower case, e.g. ``"npo"``).
        label: the name in run labels and tables (``"NPO"``).
        help: one sentence for the Run page and ``--help``.
        source: the paper / reference implementation it follows.
        params: its hyper-parameters (:class:`Param`), defaults included.
        own_retain: it has a retain term of its own (RMU), so the regularizer must be ``none``.
        muse_form: ``loss_form="muse"`` (muse_bench's reference form) changes its forget term.

    A method that cannot run on every model says so in :meth:`check_model`, which the pipeline calls with the
    model's config before the run is stored.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    help: ClassVar[str] = ""
    source: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    own_retain: ClassVar[bool] = False
    muse_form: ClassVar[bool] = False

    def __init__(self, config, target, seed: int = 0):
        """``config``: the run's UnlearnConfig; ``target``: the starting model (reference); ``seed``: the run's seed.
        Subclasses that need set-up (RMU's control vector) do it here and raise qru.errors.UnlearnError for a
        model they cannot run on (:meth:`check_model` says so before the run is stored)."""
        self.config = config

    @classmethod
    def check_model(cls, config, model_config) -> str:
        """"" if the method can run on the model, else the reason (one line). ``config``: the run's UnlearnConfig;
        ``model_config``: the target's transformers config (``num_hidden_layers``, ``hidden_size``, ...), read
        before anything is stored or loaded (qru.pipeline.model_config). Default: every model will do."""
        return ""

    def param(self, name: str):
        """The run's value of parameter ``name`` (UnlearnConfig.param)."""
        return self.config.param(name)

    def forget(self, policy, ref, batch: dict) -> torch.Tensor:
        """The forget term on a batch of D_f (scalar, to minimise)."""
        raise NotImplementedError

    @property
    def has_retain(self) -> bool:
        """Whether a retain term is added (own retain term, or a regularizer other than none)."""
        return self.own_retain or self.config.regularizer != "none"

    def retain(self, policy, ref, batch: dict) -> torch.Tensor:
        """The retain term on a batch of D_r: the regularizer (GDR or KLR; muse_bench's KLR form with
        ``loss_form="muse"``). Methods with ``own_retain`` override it."""
        from qru.unlearn.losses import REGULARIZERS, klr_loss_muse

        fn, needs_ref = (klr_loss_muse, True) if self.config.regularizer == "klr" and \
            self.config.loss_form == "muse" else REGULARIZERS[self.config.regularizer]
        batch = on_device(batch, ref.device)
        logits = logits_of(policy, batch)
        return fn(logits, batch["labels"], ref_logits_of(ref, batch)) if needs_ref else fn(logits, batch["labels"])
