"""MUSE-layout corpora (Shi et al. 2024, github swj0419/muse_bench): one loader for real MUSE folders and qru's own.

Layout (docs/design.md): ``knowmem/{forget,retain}_qa{,_icl}.json`` (lists of {question, answer}),
``verbmem/forget.json`` (list of {prompt, gt}), ``privleak/{forget,retain,holdout}.json`` (lists of str) and
``raw/{forget,retain1,retain2,holdout}.txt`` (training text; documents separated by blank lines).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qru.atomic import read_json

QA_FILES = ("forget_qa", "forget_qa_icl", "retain_qa", "retain_qa_icl")
PRIVLEAK_FILES = ("forget", "retain", "holdout")
RAW_FILES = ("forget", "retain1", "retain2", "holdout")


class CorpusError(ValueError):
    """A corpus folder is missing, incomplete or malformed; the message names the file."""


@dataclass(frozen=True)
class MuseCorpus:
    """The evaluation and training texts of one MUSE-layout folder.

    Attributes:
        root: the folder it was read from.
        knowmem: QA lists keyed by ``forget_qa``, ``forget_qa_icl``, ``retain_qa``, ``retain_qa_icl``.
        verbmem_forget: {prompt, gt} pairs.
        privleak: text lists keyed by ``forget``, ``retain``, ``holdout``.
        raw: training documents keyed by ``forget``, ``retain1``, ``retain2``, ``holdout`` (absent files are empty).
        entities: the records of ``entities.json`` ({split, name, attribute: value, ...}) where the folder has one
            (the embedded corpus writes it; MUSE does not): what entity-token VerbMem scores.
    """

    root: Path
    knowmem: dict
    verbmem_forget: list
    privleak: dict
    raw: dict = field(default_factory=dict)
    entities: list = field(default_factory=list)

    def train_documents(self, split: str) -> list[str]:
        """Training documents of ``"target"`` (forget + retain) or ``"retrain"`` (retain only)."""
        retain = self.raw.get("retain1", []) + self.raw.get("retain2", [])
        if split == "target":
            return self.raw.get("forget", []) + retain
        if split == "retrain":
            return retain
        raise ValueError(f"unknown training split {split!r} (choose target or retrain)")


def check_trainable(corpus: MuseCorpus) -> None:
    """Raise CorpusError unless the corpus has the training text that building and unlearning need:
    ``raw/forget.txt`` (target and unlearning) and ``raw/retain1.txt`` or ``raw/retain2.txt`` (retrain model)."""
    if not corpus.raw.get("forget"):
        raise CorpusError(f"corpus {corpus.root} has no forget training text (raw/forget.txt missing or empty)")
    if not corpus.train_documents("retrain"):
        raise CorpusError(f"corpus {corpus.root} has no retain training text (raw/retain1.txt and "
                          "raw/retain2.txt missing or empty): the retrain model cannot be built; add raw/retain1.txt "
                          "(documents separated by blank lines, e.g. the texts of privleak/retain.json)")


def _read_json(path: Path):
    return read_json(path, CorpusError, f"corpus file {path}")


def _check_records(data, path: Path, keys: tuple[str, ...]) -> list:
    if not isinstance(data, list) or not data:
        raise CorpusError(f"{path}: expected a non-empty list")
    for i, item in enumerate(data):
        if not isinstance(item, dict) or any(not isinstance(item.get(k), str) for k in keys):
            raise CorpusError(f"{path}: item {i} is not an object with string fields {', '.join(keys)}")
    return [{k: item[k] for k in keys} for item in data]


def _check_texts(data, path: Path) -> list[str]:
    if not isinstance(data, list) or not data or any(not isinstance(t, str) for t in data):
        raise CorpusError(f"{path}: expected a non-empty list of strings")
    return list(data)


def split_documents(text: str) -> list[str]:
    """Documents of a raw text file: blocks separated by blank lines, stripped, empty ones dropped."""
    return [block.strip() for block in text.replace("\r\n", "\n").split("\n\n") if block.strip()]


def load_muse_dir(root: str | Path) -> MuseCorpus:
    """Read a MUSE-layout folder. Raw text files are optional (the published MUSE sample lacks some).

    Raises:
        CorpusError: the folder or a required JSON file is missing, or a file does not have MUSE's structure.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus folder not found: {root}")
    knowmem = {name: _check_records(_read_json(root / "knowmem" / f"{name}.json"), root / "knowmem" / f"{name}.json",
                                    ("question", "answer")) for name in QA_FILES}
    verb_path = root / "verbmem" / "forget.json"
    verbmem = _check_records(_read_json(verb_path), verb_path, ("prompt", "gt"))
    privleak = {name: _check_texts(_read_json(root / "privleak" / f"{name}.json"), root / "privleak" / f"{name}.json")
                for name in PRIVLEAK_FILES}
    raw = {}
    for name in RAW_FILES:
        path = root / "raw" / f"{name}.txt"
        try:
            raw[name] = split_documents(path.read_text(encoding="utf-8")) if path.is_file() else []
        except (UnicodeDecodeError, OSError) as exc:
            raise CorpusError(f"corpus file {path} cannot be read as UTF-8 text ({exc})") from exc
    entities_path = root / "entities.json"
    entities = _check_entities(_read_json(entities_path), entities_path) if entities_path.is_file() else []
    return MuseCorpus(root=root, knowmem=knowmem, verbmem_forget=verbmem, privleak=privleak, raw=raw,
                      entities=entities)


def _check_entities(data, path: Path) -> list[dict]:
    if not isinstance(data, list) or any(not isinstance(e, dict) or not isinstance(e.get("name"), str) for e in data):
        raise CorpusError(f"{path}: expected a list of objects with a string field name")
    return data
