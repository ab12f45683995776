"""Stored entries that are not qru runs: comparisons of two checkpoints (``qru deltas``) and other tools' results
(``qru import``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qru.checks import ConfigError, require as _require
from qru.quant.spec import RTN_BITS, QuantSpec


@dataclass(frozen=True)
class DeltasConfig:
    """A comparison of two checkpoints made outside the pipeline (``qru deltas A B``): weight deltas only, no
    metrics. Its key is its identity in the run store, like a RunConfig's.

    Args:
        target: absolute path of the target checkpoint: a folder of safetensors shards (Hugging Face layout) or one
            ``.safetensors`` file.
        unlearned: absolute path of the unlearned checkpoint in the same forms, or of a peft LoRA adapter folder
            (``adapter_config.json`` + ``adapter_model.safetensors``), merged into the target tensor by tensor.
        fingerprint: hash of the names, sizes and modification times of the files read, so that a checkpoint
            changed in place gets a new id.
        quantizers: keys (QuantSpec.key) of the quantizers analysed, e.g. ``("fp4-b64@4", "rtn-asym-g128@3")``.
        kind: always ``"deltas"`` (tells a stored comparison from a run).
    """

    target: str
    unlearned: str
    fingerprint: str
    quantizers: tuple[str, ...]
    kind: str = "deltas"

    def __post_init__(self) -> None:
        _require(self.kind == "deltas", f"kind must be 'deltas', got {self.kind!r}")
        for name in ("target", "unlearned", "fingerprint"):
            _require(isinstance(getattr(self, name), str) and getattr(self, name) != "",
                     f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        keys = tuple(self.quantizers)
        _require(len(keys) > 0, "at least one quantizer is needed")
        for key in keys:
            QuantSpec.from_key(key)  # raises ConfigError naming a bad key
        _require(len(set(keys)) == len(keys), f"quantizers repeat: {keys}")
        object.__setattr__(self, "quantizers", keys)

    def quant_specs(self) -> list[QuantSpec]:
        """The QuantSpec of every analysed quantizer, in the stored order."""
        return [QuantSpec.from_key(k) for k in self.quantizers]

    @property
    def label(self) -> str:
        """``checkpoint deltas <parent>/<target> -> <parent>/<unlearned>`` (the full paths are the fields)."""
        short = lambda p: "/".join(Path(p).parts[-2:])  # noqa: E731
        return f"checkpoint deltas {short(self.target)} -> {short(self.unlearned)}"


IMPORT_TOOLS = ("open-unlearning", "muse")
IMPORT_MODELS = ("target", "retrain", "unlearned")
MAX_NAME = 200  # characters of an import's name (a label on the dashboard)


@dataclass(frozen=True)
class ImportConfig:
    """Results of another tool (open-unlearning's MUSE_EVAL.json, muse_bench / FailureLLMUnlearning evaluation
    folders or CSV tables) imported into the run store (``qru import``). Its key is its identity, like a run's.

    Args:
        entries: one ``"<model>@<bits>=<absolute path>"`` per imported evaluation, model one of target / retrain /
            unlearned, e.g. ``("unlearned@32=/saves/npo/evals", "unlearned@4=/saves/npo_4bit/evals")``; a CSV row
            is named after ``::`` (``unlearned@4=/out.csv::npo_klr_4bit``).
        tool: ``"open-unlearning"`` or ``"muse"`` (muse_bench's eval.py output, which FailureLLMUnlearning keeps),
            or ``"auto"``: entries of both formats, each read as detected.
        fingerprint: hash of the names, sizes and modification times of the files read.
        name: a label chosen by the user (may be empty; at most 200 characters of printable text).
        kind: always ``"import"``.
        prompt_format: how the imported numbers' prompts were written (qru.evals.prompts): ``"muse"`` (the
            default: results of MUSE's code and tools that follow it) or ``"healed"``.
    """

    entries: tuple[str, ...]
    tool: str
    fingerprint: str
    name: str = ""
    kind: str = "import"
    prompt_format: str = "muse"

    def __post_init__(self) -> None:
        _require(self.kind == "import", f"kind must be 'import', got {self.kind!r}")
        _require(self.tool in IMPORT_TOOLS + ("auto",),
                 f"tool must be one of {', '.join(IMPORT_TOOLS)} or auto, got {self.tool!r}")
        _require(isinstance(self.name, str), f"name must be text, got {type(self.name).__name__}")
        _require(len(self.name) <= MAX_NAME, f"name must be at most {MAX_NAME} characters, got {len(self.name)} "
                                             f"({self.name[:40]!r}...)")
        _require(self.name.isprintable(), f"name must be printable text on one line, got {self.name!r}")
        _require(self.prompt_format in ("muse", "healed"),
                 f"prompt format must be muse or healed, got {self.prompt_format!r}")
        _require(isinstance(self.fingerprint, str) and self.fingerprint != "", "fingerprint must be a non-empty string")
        entries = tuple(self.entries)
        _require(len(entries) > 0, "at least one imported evaluation is needed")
        keys = [parse_import_entry(e)[:2] for e in entries]
        _require(len(set(keys)) == len(keys), f"an imported model and bit width repeat: {entries}")
        object.__setattr__(self, "entries", entries)

    @property
    def label(self) -> str:
        """``imported <tool>: <name or first path>``."""
        first = Path(parse_import_entry(self.entries[0])[2].split("::")[0])
        where = self.name or "/".join(first.parts[-2:])
        rows = ", ".join(f"{m}@{b}" for m, b, _ in map(parse_import_entry, self.entries))
        tool = "results of both formats" if self.tool == "auto" else self.tool
        return f"imported {tool}: {where} ({rows}; {self.prompt_format} prompts)"


def parse_import_entry(entry: str) -> tuple[str, int, str]:
    """``"<model>@<bits>=<path>"`` as (model, bits, path); a bare path means ``unlearned@32``.
    Raises ConfigError naming the entry if the model or bit width is unknown or the path is empty."""
    if not isinstance(entry, str):
        raise ConfigError(f"not an import entry: {entry!r}")
    head, sep, path = entry.partition("=")
    if not sep or "@" not in head or "/" in head:
        _require(entry.strip() != "", "an import entry is empty: give a path")
        return "unlearned", 32, entry
    model, _, bits = head.partition("@")
    _require(model in IMPORT_MODELS, f"imported model must be one of {', '.join(IMPORT_MODELS)}, got {model!r} "
                                     f"in {entry!r}")
    _require(bits.isascii() and bits.isdigit() and int(bits) in (32,) + RTN_BITS,
             f"imported bit width must be 32 or 2..8, got {bits!r} in {entry!r}")
    _require(path != "", f"no path in {entry!r}")
    return model, int(bits), path
