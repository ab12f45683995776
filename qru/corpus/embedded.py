"""The embedded default corpus: fictitious people split into forget / retain / holdout, written in MUSE's layout.

Forget and retain documents are each entity's biographies plus one ``Question: ...\\nAnswer: ...`` document per
attribute (TOFU-style QA). Holdout entities are never trained on; their biographies feed PrivLeak. Everything is a
pure function of the CorpusConfig, so one seed gives byte-identical files.
"""
from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

from qru.atomic import atomic_dir
from qru.config import MUSE_HUB, CorpusConfig, config_key, corpus_key_dict
from qru.corpus.entities import Entity, make_entities
from qru.corpus.muse import MuseCorpus, load_muse_dir
from qru.corpus.passages import format_qa, render_passages

N_ICL = 4  # few-shot pairs in each KnowMem prompt (MUSE uses 10 on its long-context models)


def _split(config: CorpusConfig) -> tuple[list[Entity], list[Entity], list[Entity]]:
    total = config.n_forget + config.n_retain + config.n_holdout
    entities = make_entities(total, config.seed)
    forget = entities[: config.n_forget]
    retain = entities[config.n_forget: config.n_forget + config.n_retain]
    return forget, retain, entities[config.n_forget + config.n_retain:]


def _verbmem_item(passage: str) -> dict:
    head, _, tail = passage.partition(". ")
    return {"prompt": head + ".", "gt": " " + tail}


def build_files(config: CorpusConfig) -> dict[str, str]:
    """Every file of the embedded corpus as {relative path: UTF-8 text}. Raises ValueError on an external source."""
    if not config.is_embedded:
        raise ValueError(f"build_files needs the embedded source, got {config.source!r}")
    rng = random.Random(config.seed + 1)
    forget, retain, holdout = _split(config)
    passages = {e.name: render_passages(e, config.passages_per_entity, rng) for e in forget + retain + holdout}

    def docs(entities: list[Entity]) -> list[str]:
        out = [p for e in entities for p in passages[e.name]]
        out += [format_qa(qa["question"], qa["answer"]) for e in entities for qa in e.qa_pairs()]
        return out

    half = len(retain) // 2
    icl_source = [qa for e in retain[:1] for qa in e.qa_pairs()]
    icl_retain = [qa for e in retain[1:2] for qa in e.qa_pairs()]
    retain_eval = retain[2: 2 + max(config.n_forget, 1)] or retain[:1]
    n_privleak = len(holdout) * config.passages_per_entity
    files = {
        "raw/forget.txt": docs(forget),
        "raw/retain1.txt": docs(retain[:half]),
        "raw/retain2.txt": docs(retain[half:]),
        "raw/holdout.txt": [p for e in holdout for p in passages[e.name]],
        "knowmem/forget_qa.json": [qa for e in forget for qa in e.qa_pairs()],
        "knowmem/forget_qa_icl.json": icl_source[:N_ICL],
        "knowmem/retain_qa.json": [qa for e in retain_eval for qa in e.qa_pairs()],
        "knowmem/retain_qa_icl.json": icl_retain[:N_ICL],
        "verbmem/forget.json": [_verbmem_item(p) for e in forget for p in passages[e.name]],
        "privleak/forget.json": [p for e in forget for p in passages[e.name]],
        "privleak/retain.json": [p for e in retain_eval for p in passages[e.name]][:n_privleak],
        "privleak/holdout.json": [p for e in holdout for p in passages[e.name]],
        "entities.json": [{"split": s, "name": e.name, **e.attributes}
                          for s, group in (("forget", forget), ("retain", retain), ("holdout", holdout))
                          for e in group],
    }
    return {path: ("\n\n".join(value) + "\n" if path.endswith(".txt")
                   else json.dumps(value, indent=1, ensure_ascii=False) + "\n") for path, value in files.items()}


def write_corpus(config: CorpusConfig, root: str | Path) -> Path:
    """Write the embedded corpus under ``root`` (a new folder, created atomically). Returns ``root``.

    Raises FileExistsError if ``root`` already exists.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"corpus folder already exists: {root}")
    with atomic_dir(root) as tmp:
        for rel, text in build_files(config).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")
    return root


def corpus_dir(config: CorpusConfig, cache_root: str | Path) -> Path:
    """Folder of an embedded corpus in the cache: ``<cache>/corpus/embedded-<key>``."""
    return Path(cache_root) / "corpus" / f"embedded-{config_key(corpus_key_dict(replace(config, max_train_tokens=0)))}"


def _ensure_hub(source: str, cache_root: str | Path) -> MuseCorpus:
    """MUSE-News / -Books from the cache, fetched from the Hugging Face hub the first time (qru.corpus.hub)."""
    from qru.corpus.hub import fetch_muse  # imports datasets only when MUSE is asked for

    root = Path(cache_root) / "corpus" / source
    if not root.is_dir():
        try:
            fetch_muse(MUSE_HUB[source], root)
        except FileExistsError:  # another process fetched it meanwhile
            pass
    return load_muse_dir(root)


def ensure_corpus(config: CorpusConfig, cache_root: str | Path) -> MuseCorpus:
    """Load the corpus of ``config``: generate the embedded one into the cache first if needed, fetch MUSE-News /
    -Books from the hub into the cache the first time, else read the folder.

    Raises CorpusError (from the loader) if a folder source is missing or malformed, or the hub cannot be read.
    """
    if config.is_hub:
        return _ensure_hub(config.source, cache_root)
    if not config.is_embedded:
        return load_muse_dir(config.source)
    root = corpus_dir(config, cache_root)
    if not root.is_dir():
        try:
            write_corpus(config, root)
        except (FileExistsError, OSError):
            if not root.is_dir():  # lost a race with another writer: theirs is identical; anything else re-raises
                raise
    return load_muse_dir(root)
