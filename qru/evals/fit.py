"""What an evaluation covers: the documented subsampling of its lists (``--max-eval-items``) and the report of every
item that had to be cut to fit the model (docs/measures.md "What did not fit").

The lists: ``verbmem`` (forget prompts), ``knowmem_forget`` / ``knowmem_retain`` (questions), ``privleak_forget`` /
``privleak_retain`` / ``privleak_holdout`` (texts scored by Min-K% and NLL). A fit report is, per list,
{items: evaluated, of: items in the corpus, read: tokens fed to the model, cut: items that did not fit, tokens_cut:
tokens dropped in all, icl_pairs_dropped: KnowMem in-context pairs dropped in all, limit: the most tokens an item
may have (a prompt: the context less the generated tokens; a text: the scoring length)}.
"""
from __future__ import annotations

import dataclasses

from transformers import PreTrainedTokenizerBase

from qru.config import EvalConfig
from qru.corpus.muse import MuseCorpus
from qru.evals.generation import prompt_room
from qru.evals.prompts import fit_knowmem, fit_text, fit_verbmem

LISTS = ("verbmem", "knowmem_forget", "knowmem_retain", "privleak_forget", "privleak_retain", "privleak_holdout")
LABELS = {"verbmem": "VerbMem prompts", "knowmem_forget": "KnowMem forget questions",
          "knowmem_retain": "KnowMem retain questions", "privleak_forget": "PrivLeak forget texts",
          "privleak_retain": "PrivLeak retain texts", "privleak_holdout": "PrivLeak holdout texts"}


def subsample(items: list, n: int) -> list:
    """``n`` items evenly spaced over ``items`` (first and spread to the end), all of them if ``n`` is 0 or not
    smaller than the list. Deterministic: the same list and ``n`` give the same items."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[(i * len(items)) // n] for i in range(n)]


def evaluation_corpus(corpus: MuseCorpus, config: EvalConfig) -> MuseCorpus:
    """``corpus`` with each evaluation list subsampled to ``config.max_eval_items`` (ICL pairs and training text
    untouched); the corpus itself where nothing is subsampled."""
    n = config.max_eval_items
    if not n:
        return corpus
    knowmem = {k: (v if k.endswith("_icl") else subsample(v, n)) for k, v in corpus.knowmem.items()}
    return dataclasses.replace(corpus, knowmem=knowmem, verbmem_forget=subsample(corpus.verbmem_forget, n),
                               privleak={k: subsample(v, n) for k, v in corpus.privleak.items()})


def corpus_sizes(corpus: MuseCorpus) -> dict[str, int]:
    """Items of each evaluation list in ``corpus`` (before subsampling)."""
    return {"verbmem": len(corpus.verbmem_forget), "knowmem_forget": len(corpus.knowmem["forget_qa"]),
            "knowmem_retain": len(corpus.knowmem["retain_qa"]),
            **{f"privleak_{k}": len(corpus.privleak[k]) for k in ("forget", "retain", "holdout")}}


def _entry(fitted: list, of: int, limit: int) -> dict:
    return {"items": len(fitted), "of": of, "read": sum(len(f.ids) for f in fitted), "cut": sum(f.cut for f in fitted),
            "tokens_cut": sum(f.dropped for f in fitted), "icl_pairs_dropped": sum(f.pairs_dropped for f in fitted),
            "limit": limit}


def fit_report(tokenizer: PreTrainedTokenizerBase, corpus: MuseCorpus, config: EvalConfig, context: int,
               max_len: int) -> dict[str, dict]:
    """Per evaluation list (LISTS), what :func:`qru.evals.suite.evaluate` will evaluate and cut, computed from the
    tokenizer alone (no model): prompts must leave ``max_new_tokens`` of the ``context`` free (tokens), texts are
    scored on ``max_len`` tokens. Raises ValueError if a generation length leaves no room for a prompt."""
    sizes = corpus_sizes(corpus)
    corpus = evaluation_corpus(corpus, config)
    fmt = config.prompt_format
    vm_limit = prompt_room(context, config.verbmem_max_new_tokens)
    km_limit = prompt_room(context, config.knowmem_max_new_tokens)
    report = {"verbmem": _entry([fit_verbmem(tokenizer, it["prompt"], fmt, vm_limit)
                                 for it in corpus.verbmem_forget], sizes["verbmem"], vm_limit)}
    for split in ("forget", "retain"):
        icl = corpus.knowmem[f"{split}_qa_icl"]
        report[f"knowmem_{split}"] = _entry([fit_knowmem(tokenizer, icl, qa["question"], fmt, km_limit)
                                             for qa in corpus.knowmem[f"{split}_qa"]], sizes[f"knowmem_{split}"],
                                            km_limit)
    for split in ("forget", "retain", "holdout"):
        report[f"privleak_{split}"] = _entry([fit_text(tokenizer, t, fmt, max_len) for t in corpus.privleak[split]],
                                             sizes[f"privleak_{split}"], max_len)
    return report


def cut_sentences(report: dict | None) -> list[str]:
    """One sentence per evaluation list that was cut or subsampled, e.g. "VerbMem prompts: 12 of 100 cut to fit
    the model (1,540 tokens dropped)"; empty for a report with neither (or none: runs stored before it existed)."""
    lines = []
    for name in LISTS:
        entry = (report or {}).get(name)
        if not entry:
            continue
        parts = []
        if entry["items"] < entry["of"]:
            parts.append(f"{entry['items']} of {entry['of']} evaluated (`--max-eval-items`)")
        if entry["cut"]:
            what = [f"{entry['tokens_cut']:,} tokens"] if entry["tokens_cut"] else []
            what += [f"{entry['icl_pairs_dropped']:,} in-context pairs"] if entry["icl_pairs_dropped"] else []
            room = f" ({entry['limit']:,} tokens each)" if entry.get("limit") else ""
            parts.append(f"{entry['cut']} of {entry['items']} cut to fit the model{room}: {' and '.join(what)} "
                         "dropped")
        if parts:
            lines.append(f"{LABELS[name]}: " + "; ".join(parts))
    if any((report or {}).get(n, {}).get("cut") for n in LISTS):
        lines.append("MUSE's code reads every item whole, so numbers over cut items are not comparable with its "
                     "tables; a larger `--max-len` fits more")
    return lines
