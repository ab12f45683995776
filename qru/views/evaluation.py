"""Sentences about how a run's numbers were computed: its prompt format, what it subsampled and what did not fit the
model (qru.evals.prompts, qru.evals.fit), and whether runs compared side by side used the same prompt format."""
from __future__ import annotations

from pathlib import Path

from qru.config import DeltasConfig, ImportConfig, RunConfig
from qru.evals.fit import cut_sentences
from qru.store import RunStore, StoreError

FORMATS = {"muse": "muse (MUSE's literal prompt strings; special tokens as the model's tokenizer adds them)",
           "healed": "healed (BOS put in front by hand; no space after \"Answer:\")"}


def prompt_format_of(config: RunConfig | DeltasConfig | ImportConfig) -> str | None:
    """The prompt format of a stored config: a run's evaluation setting, an import's declared one; None for a
    checkpoint comparison (no metrics)."""
    if isinstance(config, RunConfig):
        return config.eval.prompt_format
    if isinstance(config, ImportConfig):
        return config.prompt_format
    return None


def fit_of(store: RunStore, run_id: str) -> dict | None:
    """The fit report a run stored in ``plan.json`` (qru.evals.fit.fit_report), or None where it has none (runs
    stored before qru counted what did not fit, imports and comparisons)."""
    if not (Path(store.path(run_id)) / "plan.json").is_file():
        return None
    try:
        plan = store.read_json(run_id, "plan.json")
    except StoreError:
        return None
    return plan.get("fit") if isinstance(plan, dict) and isinstance(plan.get("fit"), dict) else None


def evaluation_lines(store: RunStore, run_id: str) -> list[str]:
    """How the run's metrics were computed: "Prompt format: ..." and one line per evaluation list that was
    subsampled or cut to fit the model (or that this was not recorded). Empty for a comparison. Generated text only
    (no stored strings), as Markdown: option names in backticks."""
    try:
        config = store.config(run_id)
    except StoreError:
        return []
    fmt = prompt_format_of(config)
    if fmt is None:
        return []
    lines = [f"Prompt format: {FORMATS[fmt]}."]
    if isinstance(config, RunConfig):
        fit = fit_of(store, run_id)
        if fit is None:
            lines.append("What did not fit the model was not recorded for this run (stored before qru counted it).")
        else:
            lines += [f"{line}." for line in cut_sentences(fit)] or ["Every evaluation item fit the model."]
    return lines


def mixed_formats(configs: dict[str, RunConfig | DeltasConfig | ImportConfig]) -> str:
    """A warning when the runs ``configs`` (name -> config) were scored in different prompt formats, or evaluated
    on different subsets (``--max-eval-items``) or lengths (``--max-len``), naming which used which; "" when they
    agree."""
    groups: dict[str, list[str]] = {}
    for name, config in configs.items():
        fmt = prompt_format_of(config)
        if fmt is not None:
            groups.setdefault(fmt, []).append(name)
    said = []
    if len(groups) > 1:
        which = "; ".join(f"{fmt}: {', '.join(names)}" for fmt, names in sorted(groups.items()))
        said.append("These runs were scored in different prompt formats, so their VerbMem, KnowMem and PrivLeak are "
                    f"not computed the same way ({which}); docs/measures.md \"Prompt formats\".")
    sizes = {name: (c.eval.max_eval_items, c.model.max_len) for name, c in configs.items() if isinstance(c, RunConfig)}
    if len(set(sizes.values())) > 1:
        which = "; ".join(f"{name}: {'all' if n == 0 else n} items per list, --max-len {m}"
                          for name, (n, m) in sizes.items())
        said.append(f"They were evaluated on different subsets or lengths ({which}).")
    return " ".join(said)
