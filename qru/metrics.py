"""Every metric of a stored metrics.json, declared once: its column, display name, unit, the set it is measured on,
which way means "remembers more", the noise floor, the decimals shown, and where it appears.

Tables, the share undone, the noise-control verdicts, the findings, the curves, the paper table and the store's
validation read these facts from here (:data:`METRICS`, :func:`metric` and the helpers below) instead of keeping
their own copies.

``direction`` is +1 where a higher value means the model remembers more of the metric's set (ROUGE-L scores), -1
where a lower value does (NLL; PrivLeak and its AUC, more negative = more memorized). For the forget-set metrics
that is the direction in which forgotten knowledge "comes back"; retain-set and holdout metrics measure utility or a
reference, where a change either way is only a change. ``floor`` is the smallest change counted as one (the tables'
"came back" threshold and the lower bound of the share-undone noise, qru.analysis.undone): 1 point of a x100 score
or of PrivLeak, 0.01 nats/token of NLL.

The weight-analysis columns the paper table also offers (``share_kept``, ``code_flip_rate``: qru.deltas, stored in
deltas.parquet) are not metrics here: they describe the weight update under a quantizer, not a model's behaviour on
a set, so they have no set, no direction of remembering and no noise floor; their labels are
:data:`WEIGHT_COLUMNS` below.
"""
from __future__ import annotations

from dataclasses import dataclass

ROUGE = "ROUGE-L F1 x100"
NATS = "nats/token"
PERCENT = "%"
AUC = "AUC (0..1)"
SETS = ("forget", "retain", "holdout")


@dataclass(frozen=True)
class Metric:
    """One metric column of metrics.json (and controls.json)."""

    name: str  # column key
    label: str  # display name in tables, figures and sentences
    unit: str
    set: str  # the data it is measured on: "forget", "retain" or "holdout"
    direction: int  # +1: higher = remembers more; -1: lower = remembers more
    floor: float  # noise floor: the smallest change counted (metric units)
    digits: int  # decimals in the metric tables (per run, changes, comparison)
    paper_digits: int  # decimals of a ``mean [95% CI]`` cell of the paper table
    headline: bool  # one of the metrics the verdicts of Findings are read from
    description: str  # one sentence, with the source of the definition
    shown: bool = True  # a column of the metric tables (and of the share undone, the sweep tables)
    curve: bool = False  # offered on the Curves page
    papers: bool = False  # reported by the papers qru compares with (qru.reference): printed in sweep tables
    required: bool = True  # every stored metrics.json has it (qru.store checks); else only where it can be measured

    def __post_init__(self) -> None:
        if self.set not in SETS or self.direction not in (1, -1) or not self.floor > 0:
            raise ValueError(f"metric {self.name!r}: set must be one of {SETS}, direction +1 or -1, floor > 0")

    @property
    def comes_back(self) -> int:
        """The direction of remembering for a forget-set metric (a change that way = forgetting undone), 0 for
        retain / holdout metrics (a change either way is only a change)."""
        return self.direction if self.set == "forget" else 0


_DECLARED = (
    Metric("knowmem_forget", "KnowMem-forget", ROUGE, "forget", +1, 1.0, 2, 1, True,
           "Mean ROUGE-L F1 x100 of greedy answers to the forget set's QA pairs (MUSE metrics/knowmem.py; "
           "qru.evals.knowmem).", curve=True, papers=True),
    Metric("nll_forget", "NLL forget", NATS, "forget", -1, 0.01, 3, 3, True,
           "Token-weighted mean negative log-likelihood of the forget texts (qru.evals.privleak.mean_nll).",
           curve=True),
    Metric("verbmem_entity", "VerbMem (entity tokens)", ROUGE, "forget", +1, 1.0, 2, 1, True,
           "VerbMem scored on the attribute values of each continuation only, ROUGE-L F1 x100 against the item's own "
           "values (qru's variant for the embedded corpus, qru.evals.entity_verbmem; needs entities.json).",
           curve=True, required=False),
    Metric("verbmem", "VerbMem", ROUGE, "forget", +1, 1.0, 2, 1, False,
           "Mean ROUGE-L F1 x100 of greedy continuations of forget-set prompts against the ground truth (MUSE "
           "metrics/verbmem.py; qru.evals.verbmem).", papers=True),
    Metric("privleak", "PrivLeak", PERCENT, "forget", -1, 1.0, 2, 1, False,
           "(AUC_model - AUC_retrain) / AUC_retrain x 100 of the Min-40% membership attack, forget vs holdout texts: "
           "0 ideal, negative = still memorized (MUSE, Shi et al. 2024; qru.evals.privleak).", curve=True,
           papers=True),
    Metric("knowmem_retain", "KnowMem-retain (utility)", ROUGE, "retain", +1, 1.0, 2, 1, False,
           "Mean ROUGE-L F1 x100 of greedy answers to the retain set's QA pairs, MUSE's utility (MUSE "
           "metrics/knowmem.py; qru.evals.knowmem).", curve=True, papers=True),
    Metric("nll_retain", "NLL retain", NATS, "retain", -1, 0.01, 3, 3, False,
           "Token-weighted mean negative log-likelihood of the retain texts (qru.evals.privleak.mean_nll)."),
    Metric("nll_holdout", "NLL holdout", NATS, "holdout", -1, 0.01, 3, 3, False,
           "Token-weighted mean negative log-likelihood of the holdout texts, never trained on "
           "(qru.evals.privleak.mean_nll).", shown=False, required=False),
    Metric("auc", "Min-40% AUC", AUC, "forget", -1, 0.01, 3, 3, False,
           "AUC of the Min-40% prob membership score, forget vs holdout texts, from which PrivLeak is computed "
           "(Shi et al. 2023; qru.evals.privleak.mia_auc).", shown=False, required=False),
)
# In display order: the headline metrics first (KnowMem-forget and forget NLL move first on the embedded corpus,
# entity-token VerbMem next; VerbMem over whole continuations moves late there: shared templates).
METRICS: dict[str, Metric] = {m.name: m for m in _DECLARED}


class UnknownMetric(KeyError):
    """A metric name that is not in :data:`METRICS` (a KeyError, so ``except KeyError`` still catches it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# The weight-update columns (deltas.parquet totals, qru.deltas) that the paper table also offers, with their labels:
# not metrics (no set, no direction of remembering, no noise floor), but named here beside them.
WEIGHT_COLUMNS = {"share_kept": "Share of the update kept by quantization", "code_flip_rate": "Code-flip rate"}


def metric(name: str) -> Metric:
    """The Metric named ``name``. Raises UnknownMetric (a KeyError) naming the known metrics otherwise."""
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise UnknownMetric(f"unknown metric {name!r} (known: {', '.join(METRICS)})") from None


def label(name: str) -> str:
    """The display name of a metric; any other column (e.g. a weight statistic) keeps its own name."""
    return METRICS[name].label if name in METRICS else name


def table_columns() -> list[str]:
    """The metric columns of the metric tables, in display order."""
    return [m.name for m in METRICS.values() if m.shown]


def labels() -> dict[str, str]:
    """{column: display name} of :func:`table_columns`."""
    return {m.name: m.label for m in METRICS.values() if m.shown}


def forget_columns() -> list[str]:
    """The table columns measured on the forget set: those whose change can mean forgotten knowledge came back."""
    return [m.name for m in METRICS.values() if m.shown and m.comes_back]


def headline(every_corpus: bool = False) -> list[str]:
    """The headline metrics (the verdicts of Findings use them); ``every_corpus``: only those every corpus has (not
    entity-token VerbMem, which needs the corpus's entities)."""
    return [m.name for m in METRICS.values() if m.headline and (m.required or not every_corpus)]


def curve_metrics() -> list[str]:
    """The metrics offered on the Curves page, in display order."""
    return [m.name for m in METRICS.values() if m.curve]


def sweep_metrics() -> list[str]:
    """The metrics a sweep's paper tables print by default: the headline ones and those the papers report."""
    return [m.name for m in METRICS.values() if m.shown and (m.headline or m.papers)]


def required_columns() -> list[str]:
    """The metric columns every stored metrics.json must have, numeric."""
    return [m.name for m in METRICS.values() if m.required]


__all__ = ["METRICS", "WEIGHT_COLUMNS", "Metric", "UnknownMetric", "curve_metrics", "forget_columns", "headline", "label", "labels",
           "metric", "required_columns", "sweep_metrics", "table_columns"]
