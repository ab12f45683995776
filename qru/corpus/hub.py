"""MUSE from the Hugging Face hub (muse-bench/MUSE-News, muse-bench/MUSE-Books), fetched once with ``datasets`` and
written into the cache in MUSE's folder layout, so that the one folder loader (qru.corpus.muse) reads it.

Hub layout (the datasets' cards): subsets ``knowmem`` (splits forget_qa, forget_qa_icl, retain_qa, retain_qa_icl;
columns question, answer), ``verbmem`` (split forget; prompt, gt), ``privleak`` (forget, retain, holdout; text) and
``raw`` (forget, retain1, retain2, holdout; text, one document a row).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from qru.atomic import atomic_dir
from qru.corpus.muse import PRIVLEAK_FILES, QA_FILES, RAW_FILES, CorpusError, load_muse_dir

SUBSETS = {"knowmem": QA_FILES, "verbmem": ("forget",), "privleak": PRIVLEAK_FILES, "raw": RAW_FILES}
COLUMNS = {"knowmem": ("question", "answer"), "verbmem": ("prompt", "gt")}


def _rows(load_dataset: Callable, repo_id: str, subset: str, split: str) -> list:
    data = load_dataset(repo_id, subset, split=split)
    if subset in COLUMNS:
        missing = [c for c in COLUMNS[subset] if c not in data.column_names]
        if missing:
            raise CorpusError(f"{repo_id} {subset}/{split} lacks the column(s) {', '.join(missing)}")
        return [{c: row[c] for c in COLUMNS[subset]} for row in data]
    if "text" not in data.column_names:
        raise CorpusError(f"{repo_id} {subset}/{split} lacks the column text")
    return [row["text"] for row in data]


def muse_files(repo_id: str, load_dataset: Callable | None = None) -> dict[str, str]:
    """Every file of a MUSE-layout folder, as {relative path: UTF-8 text}, read from ``repo_id`` with
    ``datasets.load_dataset(repo_id, subset, split=...)`` (a hub id, or a local copy of the hub repository).

    ``raw`` splits missing on the hub are left out (the folder loader treats them as empty). Raises CorpusError
    naming the dataset when it cannot be read (hub unreachable and not cached, or another layout)."""
    if load_dataset is None:
        import datasets

        from qru.hub import hub_reachable
        if not Path(repo_id).exists() and not hub_reachable():
            raise CorpusError(f"cannot fetch {repo_id}: the Hugging Face hub cannot be reached. Without the hub, "
                              "give a MUSE-layout folder with --corpus PATH")
        datasets.disable_progress_bars()
        load_dataset = datasets.load_dataset
    files = {}
    for subset, splits in SUBSETS.items():
        for split in splits:
            try:
                rows = _rows(load_dataset, repo_id, subset, split)
            except CorpusError:
                raise
            except Exception as exc:  # noqa: BLE001 (datasets raises many types: connection, not found, schema)
                if subset == "raw" and "split" in str(exc).lower():
                    continue
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise CorpusError(f"cannot read {repo_id} ({subset}/{split}) with datasets: {first}. Without the "
                                  "hub, give a MUSE-layout folder with --corpus PATH") from None
            if subset == "raw":
                files[f"raw/{split}.txt"] = "\n\n".join(t.strip() for t in rows if t.strip()) + "\n"
            else:
                name = f"{subset}/{split}.json"
                files[name] = json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    return files


def fetch_muse(repo_id: str, dest: str | Path, load_dataset: Callable | None = None) -> Path:
    """Write MUSE ``repo_id`` into the new folder ``dest`` (atomically: a failed fetch leaves nothing) and check that
    it loads. Returns ``dest``. Raises CorpusError as :func:`muse_files`, FileExistsError if ``dest`` exists."""
    dest = Path(dest)
    files = muse_files(repo_id, load_dataset)
    with atomic_dir(dest) as tmp:
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")
        load_muse_dir(tmp)
    return dest
