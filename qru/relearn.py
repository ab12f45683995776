"""The relearning attack (``qru relearn``): a few fine-tuning steps bring forgotten knowledge back, or do not.

For a finished run, the unlearned model is rebuilt from the store (qru.controls.load_run_models) and fine-tuned with
AdamW at a constant learning rate on next-token NLL (the loss the target was trained with, qru.unlearn.losses.nll)
on either

- ``forget``: the *relearn slice*, forget documents the evaluated items are not taken from. On a corpus with
  entities (the embedded one) a seeded share of the forget entities is drawn; their documents (those that name
  only them) are the slice, and the forget-side evaluation (VerbMem, KnowMem-forget, PrivLeak and NLL on the
  forget texts) keeps only the items that name one of the other entities. On a corpus without entities (MUSE) the
  slice is the forget documents that no forget evaluation item is taken from (by text: no VerbMem prompt, PrivLeak
  text or KnowMem question in it), and the evaluation is unchanged; or
- ``retain``: retain documents, the control (fine-tuning as such, on text unrelated to the forget set).

Then the target (the start of unlearning), the unlearned model and the relearned model are evaluated on that same
held-out evaluation at 32 bits and at each of the run's bit widths (fake-quant, qru.quant), plus the retrain model at
32 bits for PrivLeak's reference AUC, so that the share undone by relearning and the share undone by quantization are
measured on the same items with the same noise gate (qru.analysis.undone). The attack is reproducible from its seed
(the slice, the batch order and torch's seed) and never changes the stored run: its record is one JSON file,
``<run>/relearn/<key>.json`` (key: the RelearnConfig's hash), written atomically under a lock.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Callable

import torch

from qru.atomic import exclusive, write_json
from qru.config import RelearnConfig, config_key, to_dict
from qru.controls import load_run_models, unlearned_weights
from qru.corpus import MuseCorpus
from qru.errors import UnlearnError
from qru.evals.fit import evaluation_corpus
from qru.evals.privleak import privleak
from qru.evals.suite import evaluate
from qru.models import encode_chunks, pad_batch
from qru.quant.spec import QuantSpec
from qru.store import RunStore, StoreError
from qru.unlearn.losses import nll

RELEARN = "relearn"
PREFIX = 80  # characters of an evaluation text that identify the document it was taken from


def _names(entities: list, split: str) -> list[str]:
    return [e["name"] for e in entities if e.get("split") == split and e.get("name")]


def _mentions(text: str, names: list[str]) -> bool:
    return any(name in text for name in names)


def relearn_split(corpus: MuseCorpus, config: RelearnConfig) -> tuple[list[str], MuseCorpus, dict]:
    """The relearn slice, the held-out evaluation corpus and a summary of the split (module docstring).

    Returns (documents to fine-tune on, a copy of ``corpus`` whose forget-side evaluation items exclude the slice,
    {"relearn_entities", "evaluated_entities", "documents", "verbmem", "knowmem_forget", "privleak_forget"}).
    Raises UnlearnError where there is nothing to relearn on: fewer than two forget entities, or on a corpus without
    entities no forget document that the evaluation leaves out (then relearn on retain text)."""
    names = _names(corpus.entities, "forget")
    if names:
        if len(names) < 2:
            raise UnlearnError("the relearning attack needs at least two forget entities: one to relearn, one to test")
        order = names[:]
        random.Random(config.seed).shuffle(order)
        k = min(max(1, round(config.share * len(order))), len(order) - 1)
        slice_names, held = sorted(order[:k]), sorted(order[k:])
        slice_docs = [d for d in corpus.raw.get("forget", []) if _mentions(d, slice_names) and not _mentions(d, held)]
        corpus = dataclasses.replace(
            corpus, verbmem_forget=[i for i in corpus.verbmem_forget if _mentions(i["prompt"] + i["gt"], held)],
            knowmem={**corpus.knowmem, "forget_qa": [q for q in corpus.knowmem["forget_qa"]
                                                     if _mentions(q["question"] + " " + q["answer"], held)]},
            privleak={**corpus.privleak, "forget": [t for t in corpus.privleak["forget"] if _mentions(t, held)]})
    else:
        slice_names, held = [], []
        used = [i["prompt"][:PREFIX] for i in corpus.verbmem_forget] + [t[:PREFIX] for t in corpus.privleak["forget"]]
        used += [q["question"] for q in corpus.knowmem["forget_qa"]]  # a QA document states a KnowMem answer
        slice_docs = [d for d in corpus.raw.get("forget", []) if not any(u and u in d for u in used)
                      and not any(d[:PREFIX] in t for t in corpus.privleak["forget"])]
    if config.data == "forget" and not slice_docs:
        raise UnlearnError("every forget document is used by the evaluation: there is no relearn slice to fine-tune "
                           "on; relearn on retain text (--data retain) as the control")
    docs = slice_docs if config.data == "forget" else corpus.train_documents("retrain")
    summary = {"relearn_entities": slice_names, "evaluated_entities": held, "documents": len(docs),
               "verbmem": len(corpus.verbmem_forget), "knowmem_forget": len(corpus.knowmem["forget_qa"]),
               "privleak_forget": len(corpus.privleak["forget"])}
    return docs, corpus, summary


def relearn_model(model: torch.nn.Module, tokenizer, docs: list[str], config: RelearnConfig, max_len: int,
                  progress: Callable[[int, int, float], None] | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """A fine-tuned copy of ``model`` (``model`` unchanged): ``config.steps`` AdamW steps (constant lr, no weight
    decay) on the mean token NLL of batches of ``docs`` (max-length windows, qru.models.encode_chunks), batches drawn
    in a seeded order, all parameters trained. Returns (model in eval mode, [{"step", "loss"}] per step).
    Raises UnlearnError for no documents or a non-finite loss."""
    if not docs:
        raise UnlearnError("no documents to relearn on")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    chunks = encode_chunks(tokenizer, docs, max_len)
    policy = copy.deepcopy(model).train()
    params = list(policy.parameters())
    for p in params:
        p.requires_grad_(True)
    device = params[0].device
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    history, order = [], []
    for step in range(config.steps):
        if len(order) < config.batch_size:
            order += torch.randperm(len(chunks), generator=gen).tolist()
        idx, order = order[:config.batch_size], order[config.batch_size:]
        batch = {k: v.to(device) for k, v in pad_batch([chunks[i] for i in idx], tokenizer.pad_token_id).items()}
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = nll(logits, batch["labels"])
        if not torch.isfinite(loss):
            raise UnlearnError(f"the relearning loss became non-finite ({loss.item()}) at step {step + 1}")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        history.append({"step": step + 1, "loss": loss.item()})
        if progress:
            progress(step + 1, config.steps, loss.item())
    return policy.eval(), history


def record_path(store: RunStore, run_id: str, config: RelearnConfig) -> Path:
    """``<run>/relearn/<key>.json``, key the hash of ``config``."""
    return store.path(run_id) / RELEARN / f"{config_key(to_dict(config))}.json"


def read_relearns(store: RunStore, run_id: str) -> list[dict]:
    """Every relearning record of a run, oldest first ([] if none); unreadable files are skipped."""
    folder = store.path(run_id) / RELEARN
    paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return [r for r in map(stored_record, paths) if r is not None]


def compute_relearn(store: RunStore, run_id: str, config: RelearnConfig, force: bool = False,
                    progress: Callable[[str, int, int, str], None] | None = None) -> dict:
    """The relearning record of run ``run_id`` under ``config``: read from the store, or computed and stored
    (module docstring). Record: {"run_id", "config", "split", "history", "rows": [{model, bits, quant, metrics...,
    privleak}], "samples": {"target@32", "unlearned@32": per-item scores on the held-out items, for the noise
    gate}, "seconds", "created"}. Raises StoreError (not a finished qru run, damaged weights), UnlearnError (nothing
    to relearn on, divergence) and LockedError (another process relearns the same config of this run)."""
    progress = progress or (lambda *a: None)
    path = record_path(store, run_id, config)
    if not force and (stored := stored_record(path)):
        return stored
    stored_run_check(store, run_id)
    unlearned_weights(store.path(run_id))  # a damaged run fails before the lock file is made
    with exclusive(path.with_suffix(".lock"), what=f"run {run_id} (its relearning attack)"):
        if not force and (stored := stored_record(path)):  # written by another process while this one waited
            return stored
        start = time.time()
        models = load_run_models(store, run_id)
        cfg = models.config
        docs, held_out, summary = relearn_split(models.corpus, config)
        evaluated = evaluation_corpus(held_out, cfg.eval)  # the counts of what is evaluated (--max-eval-items)
        summary.update(verbmem=len(evaluated.verbmem_forget), knowmem_forget=len(evaluated.knowmem["forget_qa"]),
                       privleak_forget=len(evaluated.privleak["forget"]),
                       not_evaluated_bits=sorted({s.bits for s in cfg.quant_specs() if s.is_gptq}, reverse=True))
        relearned, history = relearn_model(models.unlearned, models.pair.tokenizer, docs, config, cfg.model.max_len,
                                           lambda i, n, loss: progress("relearning", i, n, f"loss {loss:.3f}"))
        record = {"run_id": run_id, "config": to_dict(config), "split": summary, "history": history,
                  **_evaluations(models, held_out, relearned, progress)}
        record.update(seconds=round(time.time() - start, 1), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(path, record)
    return record


SPLIT_FIELDS = {"relearn_entities": list, "evaluated_entities": list, "documents": int, "verbmem": int,
                "knowmem_forget": int, "privleak_forget": int}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def valid_record(record) -> bool:
    """Whether ``record`` has the shape :func:`compute_relearn` writes: a valid config, a split with its counts,
    rows of {model: str, bits: int, metric: number or None ...}, a history list and a number of seconds."""
    try:
        RelearnConfig(**record["config"])
    except (KeyError, TypeError, ValueError):
        return False
    split, rows = record.get("split"), record.get("rows")
    return (isinstance(split, dict) and all(isinstance(split.get(k), t) for k, t in SPLIT_FIELDS.items())
            and isinstance(rows, list) and bool(rows)
            and all(isinstance(r, dict) and isinstance(r.get("model"), str) and isinstance(r.get("bits"), int)
                    and not isinstance(r.get("bits"), bool) for r in rows)
            and isinstance(record.get("history"), list) and _number(record.get("seconds", 0))
            and (record.get("samples") is None or isinstance(record.get("samples"), dict)))


def stored_record(path: Path) -> dict | None:
    """The record at ``path``, or None where there is none or it is damaged (:func:`valid_record`; it is then
    computed again, and readers leave it out)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and valid_record(record) else None


def _evaluations(models, corpus: MuseCorpus, relearned: torch.nn.Module, progress) -> dict:
    """rows and 32-bit samples of target, unlearned and relearned at each of the run's bit widths on ``corpus``."""
    cfg = models.config

    def run_eval(model: torch.nn.Module) -> dict:
        return evaluate(model, models.pair.tokenizer, corpus, cfg.eval, cfg.model.max_len)

    auc_retrain = run_eval(models.pair.retrain)["metrics"]["auc"] if models.pair.retrain is not None else None
    sources = {"target": models.start, "unlearned": models.unlearned, "relearned": relearned}
    rows, samples, specs = [], {}, [s for s in cfg.quant_specs() if not s.is_gptq] or [QuantSpec()]
    for i, spec in enumerate(specs):
        progress("evaluating", i, len(specs), spec.label)
        for name, model in sources.items():
            ev = run_eval(spec.fake_quantize(model))
            metrics = dict(ev["metrics"])
            metrics["privleak"] = privleak(metrics["auc"], auc_retrain) if auc_retrain else None
            rows.append({"model": name, "bits": spec.bits, "quant": spec.quant_type, **metrics})
            if spec.bits == 32 and name != "relearned":
                samples[f"{name}@32"] = ev["samples"]
    progress("evaluating", len(specs), len(specs), "done")
    return {"rows": rows, "samples": samples, "auc_retrain": auc_retrain}


def stored_run_check(store: RunStore, run_id: str) -> None:
    """Raise StoreError unless ``run_id`` is a finished qru run of ``store`` (what ``qru relearn`` checks before it
    queues)."""
    from qru.config import RunConfig

    if not isinstance(store.config(run_id), RunConfig):
        raise StoreError(f"{run_id} is not a qru run: the relearning attack needs its models")
    if store.status(run_id).get("state") != "done":
        raise StoreError(f"run {run_id} is not finished")


__all__ = ["RELEARN", "compute_relearn", "read_relearns", "record_path", "relearn_model", "relearn_split",
           "stored_record", "stored_run_check", "valid_record"]
