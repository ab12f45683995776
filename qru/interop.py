"""Other tools' MUSE results in the run store, and qru runs in open-unlearning's shape.

Import (``qru import``), per evaluated model and bit width:

- open-unlearning: ``MUSE_EVAL.json`` (github locuslab/open-unlearning, src/evals/base.py): one object per metric,
  ``{"agg_value": float, "value_by_index": {index: {...}}}``; ``forget_verbmem_ROUGE``, ``forget_knowmem_ROUGE`` and
  ``retain_knowmem_ROUGE`` hold ROUGE-L F1 on a 0-1 scale with per-sample ``input``, ``ground_truth``,
  ``generation``, ``rougeL_f1``, ``rougeL_recall``; ``privleak`` is in percent; ``mia_min_k`` holds the Min-K% AUC.
- muse_bench eval.py (github swj0419/muse_bench, also the evaluation code of FailureLLMUnlearning): a model's
  ``temp_dir`` with ``verbmem_f/``, ``knowmem_f/``, ``knowmem_r/`` (each ``agg.json`` with ``mean_rougeL`` on a 0-1
  scale and ``log.json`` with per-sample records) and ``privleak/auc.json`` (``forget_holdout_Min-40%``); or a row of
  its ``out_file`` CSV (columns ``name``, ``verbmem_f``, ``knowmem_f``, ``knowmem_r``, ``privleak``, in percent).

qru's metric names (VerbMem etc. x 100, docs/design.md) are used in the store; per-sample records become ``samples.json``
and probes, so the Metrics and Probes pages show imported results beside qru's own. PrivLeak is taken as the tool
reported it; where a tool stored only the AUC, it is computed against an imported retrain model's AUC, and is missing
(with the reason) without one.

Export (``qru export``): a qru run's unlearned model at each bit width as ``MUSE_EVAL.json`` + ``MUSE_SUMMARY.json``
in open-unlearning's shape, which the importer reads back unchanged.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd

from qru.atomic import atomic_dir, write_json
from qru.config import ConfigError, ImportConfig, parse_import_entry
from qru.errors import ResultImportError
from qru.evals.privleak import privleak as privleak_percent
from qru.evals.probes import build_probes
from qru.provenance import FILE as PROVENANCE, read_provenance
from qru.store import RunStore, run_id_of

OU_FILE = "MUSE_EVAL.json"
OU_ROUGE = {"verbmem": "forget_verbmem_ROUGE", "knowmem_forget": "forget_knowmem_ROUGE",
            "knowmem_retain": "retain_knowmem_ROUGE"}
MUSE_DIRS = {"verbmem": "verbmem_f", "knowmem_forget": "knowmem_f", "knowmem_retain": "knowmem_r"}
MUSE_AUC_KEY = "forget_holdout_Min-40%"
OUTPUT_KEYS = ("generation", "response", "pred", "output")
F1_KEYS = ("rougeL_f1", "rougeL")
NO_REFERENCE = ("the imported results hold the Min-K% AUC but no PrivLeak, and no retrain model was imported at "
                "32 bits to compute it against")
NO_AUC = "the imported results hold neither PrivLeak nor the Min-K% AUC it is computed from"
ZERO_REFERENCE = "the imported retrain model's Min-K% AUC is 0, so PrivLeak (relative to it) is undefined"
IMPORTED_QUANT = "imported"  # the quantizer of an imported row below 32 bits is not known to qru


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultImportError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ResultImportError(f"{path} is not readable JSON ({type(exc).__name__})") from None


def _number(value, where: str, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a float in [low, high]. Raises ResultImportError naming ``where`` otherwise."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))
    except OverflowError:
        ok = False
    if not ok:
        raise ResultImportError(f"{where}: expected a finite number, got {str(value)[:40]!r}")
    if not low <= float(value) <= high:
        raise ResultImportError(f"{where}: {value!r} is outside {low:g}..{high:g}")
    return float(value)


def _text(value, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ResultImportError(f"{where}: expected text, got {type(value).__name__}")
    return value


def _recall(rec: dict, where: str):
    return None if rec.get("rougeL_recall") is None else _number(rec["rougeL_recall"], where, 0.0, 1.0)


def _first(record: dict, keys: tuple[str, ...], where: str):
    for key in keys:
        if key in record:
            return record[key]
    raise ResultImportError(f"{where}: a per-sample record lacks all of {', '.join(keys)}")


def _verbmem_record(rec: dict, where: str) -> dict:
    output = _text(_first(rec, OUTPUT_KEYS, where), where)
    f1 = _number(_first(rec, F1_KEYS, where), where, 0.0, 1.0)
    return {"prompt": _text(rec.get("input", rec.get("prompt")), where),
            "gt": _text(rec.get("ground_truth", rec.get("gt")), where), "output": output, "rougeL_f1": f1,
            "rougeL_recall": _recall(rec, where)}


def _knowmem_record(rec: dict, where: str) -> dict:
    output = _text(_first(rec, OUTPUT_KEYS, where), where)
    f1 = _number(_first(rec, F1_KEYS, where), where, 0.0, 1.0)
    return {"question": _text(rec.get("question", rec.get("input", rec.get("prompt"))), where),
            "answer": _text(rec.get("answer", rec.get("ground_truth", rec.get("gt"))), where),
            "output": output, "rougeL_f1": f1, "rougeL_recall": _recall(rec, where)}


def _records(kind: str, raw, where: str) -> list[dict]:
    items = list(raw.values()) if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not all(isinstance(r, dict) for r in items):
        raise ResultImportError(f"{where}: per-sample records must be a list or an index -> record object")
    make = _verbmem_record if kind == "verbmem" else _knowmem_record
    return [make(r, where) for r in items]


def read_open_unlearning(path: Path) -> dict:
    """One evaluation from open-unlearning's ``MUSE_EVAL.json`` (the file or its folder).

    Returns {"metrics": {verbmem, knowmem_forget, knowmem_retain: x 100; privleak (%) and auc where present},
    "samples": {metric: per-sample records}}. Raises ResultImportError naming the file if it has none of the ROUGE
    metrics or a value is malformed."""
    file = path / OU_FILE if path.is_dir() else path
    data = _read_json(file)
    if not isinstance(data, dict):
        raise ResultImportError(f"{file}: expected an object of metrics")
    metrics, samples = {}, {}
    for name, key in OU_ROUGE.items():
        if isinstance(data.get(key), dict) and "agg_value" in data[key]:
            metrics[name] = 100.0 * _number(data[key]["agg_value"], f"{file} {key}", 0.0, 1.0)
            if "value_by_index" in data[key]:
                samples[name] = _records(name, data[key]["value_by_index"], f"{file} {key}")
    if not metrics:
        raise ResultImportError(f"{file} has none of {', '.join(OU_ROUGE.values())}: not an open-unlearning "
                                "MUSE result")
    if isinstance(data.get("privleak"), dict) and "agg_value" in data["privleak"]:
        metrics["privleak"] = _number(data["privleak"]["agg_value"], f"{file} privleak")
    if isinstance(data.get("mia_min_k"), dict) and "agg_value" in data["mia_min_k"]:
        metrics["auc"] = _number(data["mia_min_k"]["agg_value"], f"{file} mia_min_k", 0.0, 1.0)
    return {"metrics": metrics, "samples": samples}


def read_muse_dir(path: Path) -> dict:
    """One evaluation from muse_bench's ``temp_dir`` of a model (see the module docstring); shape as
    :func:`read_open_unlearning`. Raises ResultImportError naming the folder if it has none of the metric folders."""
    metrics, samples = {}, {}
    for name, sub in MUSE_DIRS.items():
        agg_file = path / sub / "agg.json"
        if not agg_file.is_file():
            continue
        agg = _read_json(agg_file)
        if not isinstance(agg, dict) or "mean_rougeL" not in agg:
            raise ResultImportError(f"{agg_file}: no mean_rougeL")
        metrics[name] = 100.0 * _number(agg["mean_rougeL"], f"{agg_file} mean_rougeL", 0.0, 1.0)
        if (path / sub / "log.json").is_file():
            samples[name] = _records(name, _read_json(path / sub / "log.json"), str(path / sub / "log.json"))
    if not metrics:
        raise ResultImportError(f"{path} has none of {', '.join(f + '/agg.json' for f in MUSE_DIRS.values())}: not a "
                           "muse_bench evaluation folder")
    auc_file = path / "privleak" / "auc.json"
    if auc_file.is_file():
        auc = _read_json(auc_file)
        if isinstance(auc, dict) and MUSE_AUC_KEY in auc:
            metrics["auc"] = _number(auc[MUSE_AUC_KEY], f"{auc_file} {MUSE_AUC_KEY}", 0.0, 1.0)
    return {"metrics": metrics, "samples": samples}


def read_muse_csv(path: Path, row_name: str) -> dict:
    """The row ``row_name`` of muse_bench's ``out_file`` CSV (percent values). Raises ResultImportError naming the file
    and the row if it is missing."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)  # every cell as written: "NA" is a name
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ResultImportError(f"{path} is not a readable CSV ({type(exc).__name__})") from None
    if "name" not in frame.columns:
        raise ResultImportError(f"{path} has no 'name' column: not a muse_bench out_file")
    rows = frame[frame["name"] == row_name]
    if rows.empty:
        names = ", ".join(frame["name"].head(12))
        raise ResultImportError(f"{path} has no row named {row_name!r} (names: {names})")
    if len(rows) > 1:
        raise ResultImportError(f"{path} has {len(rows)} rows named {row_name!r}: the name is ambiguous")
    row = rows.iloc[0]
    columns = {"verbmem": "verbmem_f", "knowmem_forget": "knowmem_f", "knowmem_retain": "knowmem_r",
               "privleak": "privleak"}
    metrics = {name: _csv_number(row[col], f"{path} row {row_name!r} column {col}", name)
               for name, col in columns.items() if col in frame.columns and row[col].strip() != ""}
    if not metrics:
        raise ResultImportError(f"{path} row {row_name!r} has none of {', '.join(columns.values())}")
    return {"metrics": metrics, "samples": {}}


def _csv_number(cell: str, where: str, metric: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise ResultImportError(f"{where}: expected a number, got {cell[:40]!r}") from None
    return _number(value, where, *((-math.inf, math.inf) if metric == "privleak" else (0.0, 100.0)))


def split_location(location: str) -> tuple[Path, str]:
    """(path, CSV row name) of an entry's location: ``file.csv::ROW`` names a row; a path that exists as written
    (even with ``::`` in it) is a path."""
    path_text, sep, row = location.rpartition("::")
    if not sep or Path(location).expanduser().exists() or not path_text.lower().endswith(".csv"):
        return Path(location).expanduser(), ""
    return Path(path_text).expanduser(), row


def read_entry(tool: str, location: str) -> dict:
    """The evaluation at ``location`` (a path, or ``file.csv::row``) as ``tool`` wrote it (``"auto"``: detected).
    Raises ResultImportError."""
    path, row = split_location(location)
    if not path.exists():
        raise ResultImportError(f"{path} not found")
    tool = detect_tool(location) if tool == "auto" else tool
    if tool == "open-unlearning":
        return read_open_unlearning(path)
    if path.suffix.lower() == ".csv":
        if not row:
            raise ResultImportError(f"{path} is a CSV table: name its row as {path}::ROW_NAME")
        return read_muse_csv(path, row)
    return read_muse_dir(path)


def detect_tool(location: str) -> str:
    """``"open-unlearning"`` when ``location`` is or holds MUSE_EVAL.json, else ``"muse"``."""
    path = split_location(location)[0]
    return "open-unlearning" if path.name == OU_FILE or (path / OU_FILE).is_file() else "muse"


def _files_of(location: str) -> list[Path]:
    """The files an entry reads (for the fingerprint): MUSE_EVAL.json, muse_bench's metric files, or the CSV."""
    path = split_location(location)[0]
    if not path.is_dir():
        return [path]
    names = [OU_FILE] + [f"{d}/{f}" for d in MUSE_DIRS.values() for f in ("agg.json", "log.json")]
    return [path / n for n in names + ["privleak/auc.json"] if (path / n).is_file()]


def import_config(entries: list[str], name: str = "", tool: str | None = None,
                  prompt_format: str = "muse") -> ImportConfig:
    """The ImportConfig of ``entries`` (``[<model>@<bits>=]<path>``), paths made absolute, and the fingerprint of
    the files read; ``tool`` None detects each entry's format (``"auto"`` when they differ); ``prompt_format``: how
    the imported numbers were prompted (default muse). Raises ConfigError for a bad entry or name."""
    resolved = []
    for entry in entries:
        model, bits, location = parse_import_entry(entry)
        path, row = split_location(location)
        if not path.exists():
            raise ConfigError(f"imported result not found: {location}")
        resolved.append(f"{model}@{bits}={path.resolve()}" + (f"::{row}" if row else ""))
    detected = {detect_tool(parse_import_entry(e)[2]) for e in resolved}
    tool = tool or (detected.pop() if len(detected) == 1 else "auto")
    digest = hashlib.sha256()
    for entry in resolved:
        for file in _files_of(parse_import_entry(entry)[2]):
            try:
                stat = file.stat()
            except OSError as exc:
                raise ConfigError(f"imported file {file} cannot be read ({exc.strerror or exc})") from None
            digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return ImportConfig(entries=tuple(resolved), tool=tool, fingerprint=digest.hexdigest()[:16], name=name,
                        prompt_format=prompt_format)


def _row(model: str, bits: int, metrics: dict, retrain_auc: float | None) -> dict:
    row = {"model": model, "bits": bits, "quant": "none" if bits == 32 else IMPORTED_QUANT,
           "verbmem": None, "knowmem_forget": None, "knowmem_retain": None, "privleak": None,
           "nll_forget": None, "nll_retain": None, **metrics}
    if row["privleak"] is not None:
        return row
    if "auc" not in metrics:
        row["privleak_missing"] = NO_AUC
    elif retrain_auc is None:
        row["privleak_missing"] = NO_REFERENCE
    elif retrain_auc == 0:
        row["privleak_missing"] = ZERO_REFERENCE
    else:
        row["privleak"] = privleak_percent(metrics["auc"], retrain_auc)
    return row


def _probe_samples(read: dict) -> dict:
    """Samples keyed ``<model>@<bits>`` of the entries with VerbMem records, as many as the first such entry has
    (probes compare the same prompts across models)."""
    with_verbmem = {f"{m}@{b}": ev["samples"] for (m, b), ev in read.items() if ev["samples"].get("verbmem")}
    if not with_verbmem:
        return {}
    count = len(next(iter(with_verbmem.values()))["verbmem"])
    return {k: v for k, v in with_verbmem.items() if len(v["verbmem"]) == count}


def validate(config: ImportConfig) -> None:
    """Read every entry of ``config`` without storing anything. Raises ResultImportError naming the problem."""
    for entry in config.entries:
        read_entry(config.tool, parse_import_entry(entry)[2])


def import_results(config: ImportConfig, store: RunStore) -> str:
    """Read every entry of ``config`` and store it as a finished run (metrics.json, samples.json, probes.json).
    Returns the run id. Raises ResultImportError naming the file of a malformed entry (nothing is stored then)."""
    read = {}
    for entry in config.entries:
        model, bits, location = parse_import_entry(entry)
        read[(model, bits)] = read_entry(config.tool, location)
    retrain_auc = read.get(("retrain", 32), {}).get("metrics", {}).get("auc")
    rows = [_row(model, bits, ev["metrics"], retrain_auc) for (model, bits), ev in read.items()]
    samples = _probe_samples(read)
    with store.open_run(config) as writer:
        writer.set_status("running", stage="importing")
        writer.log(f"imported {len(rows)} evaluation(s) ({config.tool}): " + "; ".join(config.entries))
        dropped = [f"{m}@{b}" for (m, b), ev in read.items()
                   if ev["samples"].get("verbmem") and f"{m}@{b}" not in samples]
        if dropped:
            writer.log("probes leave out " + ", ".join(dropped) + ": their VerbMem items differ in number from the "
                       "first entry's, so the prompts cannot be matched")
        writer.write_json("samples.json", samples)
        writer.write_json("probes.json", build_probes(samples, n_probes=20) if samples else [])
        writer.write_json("metrics.json", rows)
        writer.set_status("done", stage="done", done=1, total=1)
    return run_id_of(config)


def _ou_rouge(records: list[dict], kind: str) -> dict:
    by_index = {}
    for i, rec in enumerate(records):
        source = (rec.get("prompt"), rec.get("gt")) if kind == "verbmem" else (rec.get("question"), rec.get("answer"))
        by_index[str(i)] = {"input": source[0], "ground_truth": source[1], "generation": rec["output"],
                            "rougeL_f1": rec["rougeL_f1"], "rougeL_recall": rec.get("rougeL_recall")}
    return {"agg_value": sum(r["rougeL_f1"] for r in records) / len(records), "value_by_index": by_index}


def muse_eval_json(metrics_row: dict, samples: dict) -> dict:
    """One model's metrics and samples in open-unlearning's MUSE_EVAL.json shape (ROUGE on a 0-1 scale, PrivLeak
    in percent, Min-K% AUC as ``mia_min_k``)."""
    out = {}
    present = lambda name: _finite(metrics_row.get(name))  # noqa: E731
    for name, key in OU_ROUGE.items():
        if samples.get(name):
            out[key] = _ou_rouge(samples[name], "verbmem" if name == "verbmem" else "knowmem")
        if present(name):  # the stored metric itself (a tool's own aggregate may differ from the samples' mean)
            out[key] = {**out.get(key, {}), "agg_value": metrics_row[name] / 100.0}
    if present("privleak"):
        out["privleak"] = {"agg_value": metrics_row["privleak"]}
    if present("auc"):
        out["mia_min_k"] = {"agg_value": metrics_row["auc"]}
    return dict(sorted(out.items()))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def export_run(store: RunStore, run_id: str, dest: str | Path, model: str = "unlearned") -> list[Path]:
    """Write ``<dest>/<model>_<bits>bit/MUSE_EVAL.json`` (+ ``MUSE_SUMMARY.json``) for each bit width of a stored
    run, in open-unlearning's shape. ``dest`` must not exist yet (it is created atomically). Returns the folders.
    Raises StoreError for a missing run and ConfigError if the run has no ``model`` rows, ``dest`` exists or cannot
    be created (a file where a parent folder should be, no permission), naming it."""
    dest = Path(dest)
    if dest.exists():
        raise ConfigError(f"export folder already exists: {dest}")
    if run_id.startswith("deltas-"):
        raise ConfigError(f"{run_id} is a checkpoint comparison (qru deltas): it has weight deltas, no metrics to "
                          "export")
    frame = store.metrics(run_id)
    samples = store.read_json(run_id, "samples.json") if (store.path(run_id) / "samples.json").is_file() else {}
    rows = frame[frame["model"] == model]
    if rows.empty:
        raise ConfigError(f"run {run_id} has no {model!r} rows (models: {', '.join(frame['model'].unique())})")
    blocker = next((p for p in dest.parents if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"cannot create the export folder {dest}: {blocker} is not a folder")
    folders = []
    try:
        with atomic_dir(dest) as tmp:
            for _, row in rows.iterrows():
                data = muse_eval_json(row.to_dict(), samples.get(f"{model}@{int(row['bits'])}", {}))
                folder = tmp / f"{model}_{int(row['bits'])}bit"
                folder.mkdir()
                write_json(folder / OU_FILE, data)
                write_json(folder / "MUSE_SUMMARY.json", {k: v["agg_value"] for k, v in data.items()})
                folders.append(dest / folder.name)
            write_json(tmp / PROVENANCE, read_provenance(store.path(run_id)) or {"note": "not recorded: the run was "
                                                                                      "stored before qru recorded it"})
    except OSError as exc:  # no permission, disk full, or dest made meanwhile
        raise ConfigError(f"cannot write the export folder {dest}: {exc.strerror or exc}") from None
    return folders
