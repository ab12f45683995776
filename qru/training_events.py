"""TensorBoard event files of a run's unlearning losses, written beside its ``train_log.json`` (``<run>/tensorboard/``)
so that ``tensorboard --logdir <store>/runs`` shows every run's curves. Written with torch.utils.tensorboard
(SummaryWriter, needs the ``tensorboard`` package) and read back with tensorboard's EventAccumulator."""
from __future__ import annotations

from pathlib import Path

from qru.atomic import atomic_dir

FOLDER = "tensorboard"
# train_log.json field -> TensorBoard tag
TAGS = {"forget_loss": "unlearning/forget_term", "retain_loss": "unlearning/retain_term", "loss": "unlearning/total",
        "lr": "unlearning/learning_rate"}


def write_events(run_folder: str | Path, history: list[dict], lr: float | None = None, replace: bool = False) -> Path:
    """Write ``history`` (train_log.json records: step, forget_loss, retain_loss, loss, lr) as scalars under TAGS
    into ``<run_folder>/tensorboard/`` (built under a temporary name, then renamed; FileExistsError if it exists,
    unless ``replace``: the events of an earlier, unfinished attempt of the same run, which the pipeline rewrites);
    ``lr`` fills records that lack one (runs stored before qru logged it: the schedule is constant). Returns the
    folder. Raises OSError if it cannot be written."""
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    dest = Path(run_folder) / FOLDER
    if dest.exists() and replace:
        shutil.rmtree(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists: a run's events are written once")
    with atomic_dir(dest) as tmp:
        writer = SummaryWriter(log_dir=str(tmp))
        for record in history:
            for field, tag in TAGS.items():
                value = record.get(field, lr if field == "lr" else None)
                if value is not None:
                    writer.add_scalar(tag, float(value), int(record["step"]))
        writer.close()
    return dest


def read_events(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of an event folder: tag -> [(step, value), ...] in step order (float32, as TensorBoard stores)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
