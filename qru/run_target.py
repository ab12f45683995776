"""Which target a qru run's stored update applies to (``qru deltas TARGET RUN`` or ``TARGET RUN/adapter``).

A run's LoRA ``adapter/`` and its ``unlearned_delta.safetensors`` (dW) are updates of the run's own target model: added
to any other checkpoint of the same shapes they would give a comparison of nothing real. :func:`check_run_target`
refuses a TARGET that is not the run's target (other weight names or shapes, or other values of a few weights).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from qru.checkpoints import DELTA_FILE, Checkpoint, DeltaFile, LoraAdapter, model_order
from qru.errors import CheckpointError


def _run_of(unlearned: Checkpoint | LoraAdapter) -> tuple[Path, object] | None:
    """(run folder, RunConfig) where the unlearned side is stored in a qru run (a LoraAdapter or DeltaFile whose
    parent folder holds a run's config.json), else None."""
    if not isinstance(unlearned, (LoraAdapter, DeltaFile)) or not (unlearned.path.parent / "config.json").is_file():
        return None
    from qru.config import RunConfig, stored_config_from_dict

    try:
        config = stored_config_from_dict(json.loads((unlearned.path.parent / "config.json").read_text("utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # e.g. a model's config.json: not a run
        return None
    return (unlearned.path.parent, config) if isinstance(config, RunConfig) else None


def _run_target(folder: Path, config) -> Checkpoint:
    """The target checkpoint of the qru run in ``folder``: its model cache's ``target/`` (embedded, packaged), or
    the Hugging Face folder / cached hub snapshot it used. Raises CheckpointError where it is not found."""
    source = config.model.source
    if not config.model.is_hf:
        from qru.models import models_dir

        path = models_dir(config.corpus, config.model, folder.parent.parent) / "target"
    elif Path(source).expanduser().is_dir():
        path = Path(source).expanduser()
    else:
        try:
            from huggingface_hub import snapshot_download
            path = Path(snapshot_download(source, local_files_only=True))
        except Exception:  # noqa: BLE001 (not cached, or not a hub id)
            path = Path(source)
    if not path.exists():
        raise CheckpointError(f"cannot check that TARGET is the target of run {folder.name}: its target {path} is not "
                              "found here")
    return Checkpoint(path)


def weights_digest(checkpoint: Checkpoint, names: list[str]) -> str:
    """sha256 of the values (as float32) of the first, middle and last of ``names``: tells two models apart."""
    digest = hashlib.sha256()
    for name in dict.fromkeys((names[0], names[len(names) // 2], names[-1])):
        digest.update(name.encode() + checkpoint.tensor(name).numpy().tobytes())
    return digest.hexdigest()


def check_run_target(target: Checkpoint, unlearned: Checkpoint | LoraAdapter, names: list[str]) -> None:
    """Where the unlearned side is a qru run's adapter or dW, raise CheckpointError unless ``target`` (whose
    quantizable weights are ``names``, in model order) is that run's own target: the same weight names and shapes,
    and the same values of a few weights (:func:`weights_digest`). An adapter from a snapped start is refused."""
    found = _run_of(unlearned)
    if found is None:
        return
    folder, config = found
    if isinstance(unlearned, LoraAdapter) and unlearned.path.name != "adapter":
        raise CheckpointError(f"the adapter {unlearned.path} of run {folder.name} applies to the run's start of "
                              f"unlearning, which is not stored: give the run folder {folder} (its {DELTA_FILE})")
    own = _run_target(folder, config)
    if own.path == target.path:
        return
    theirs = sorted(own.quantizable(), key=model_order)
    if [(n, target.shape(n)) for n in names] != [(n, own.shape(n)) for n in theirs] or \
            weights_digest(target, names) != weights_digest(own, theirs):
        raise CheckpointError(f"{target.path} is not the target of run {folder.name}, whose {unlearned.path.name} "
                              f"applies to {own.path} (their weights differ): give that target as TARGET")


__all__ = ["check_run_target", "weights_digest"]
