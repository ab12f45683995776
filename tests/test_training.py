"""Training curves: the unlearning losses stored per step, written as TensorBoard events beside each run (read back
equal to train_log.json), drawn on the Training page with full fine-tuning and LoRA on one chart."""
import pytest
from streamlit.testing.v1 import AppTest

from qru import recipes
from qru.atomic import write_json
from qru.pipeline import run
from qru.store import RunStore
from qru.training_events import TAGS, read_events, write_events
from qru.views.training import training_figure, training_frame


@pytest.fixture(scope="module")
def runs(module_store):
    store = RunStore(module_store)
    ids = [run(recipes.run_config(scale="micro", method=m, adapter=a, max_steps=4, bits=[32]), store)
           for m, a in (("ga", "full"), ("npo", "lora"))]
    return store, ids


def test_events_read_back_equal_to_the_training_log(runs):
    store, ids = runs
    for run_id in ids:
        history = store.read_json(run_id, "train_log.json")
        assert len(history) == 4 and all(r["lr"] == store.config(run_id).unlearn.lr for r in history)
        events = read_events(store.path(run_id) / "tensorboard")
        for field, tag in TAGS.items():
            expected = [(r["step"], r[field]) for r in history]
            assert [s for s, _ in events[tag]] == [s for s, _ in expected]
            assert [v for _, v in events[tag]] == pytest.approx([v for _, v in expected], rel=1e-6)  # float32


def test_an_old_log_without_lr_gets_the_constant_rate_and_events_are_not_overwritten(tmp_path):
    history = [{"step": 1, "forget_loss": -1.0, "loss": -0.5}, {"step": 2, "forget_loss": -2.0, "loss": -1.5}]
    write_events(tmp_path, history, lr=1e-4)
    events = read_events(tmp_path / "tensorboard")
    assert events[TAGS["lr"]] == [(1, pytest.approx(1e-4)), (2, pytest.approx(1e-4))]
    assert TAGS["retain_loss"] not in events  # GA without a regularizer has no retain term
    with pytest.raises(FileExistsError):
        write_events(tmp_path, history, lr=1e-4)


def test_a_run_stopped_after_its_events_were_written_resumes(runs):
    """A run cancelled while it was evaluating (its events written, no results yet) finishes when run again."""
    store, ids = runs
    config = store.config(ids[0])
    folder = store.path(ids[0])
    (folder / "metrics.json").unlink()
    (folder / "deltas.parquet").unlink()
    write_json(folder / "status.json", {**store.status(ids[0]), "state": "cancelled"})
    assert (folder / "tensorboard").is_dir() and store.find(config) is None
    assert run(config, store) == ids[0]
    assert (folder / "metrics.json").is_file() and read_events(folder / "tensorboard")


def test_training_frame_and_figure_put_full_and_lora_on_one_chart(runs):
    store, ids = runs
    frame, missing = training_frame(store, {ids[0]: "full", ids[1]: "lora", "import-x": "imported"})
    assert missing == ["imported"] and set(frame["name"]) == {"full", "lora"}
    assert set(frame["term"]) == {"forget term", "retain term", "total loss", "learning rate"}
    fig = training_figure(frame)
    assert len(fig.data) == 2 * 4 and {t.line.dash for t in fig.data} == {"solid", "dash"}


def test_training_page_draws_the_picked_runs(runs):
    store, ids = runs
    at = AppTest.from_string("import sys\nsys.path.insert(0, {root!r})\nimport ui\nui.frame('training')\n".format(
        root=str(__import__("pathlib").Path(__file__).resolve().parents[1])), default_timeout=60)
    at.session_state["store_root"] = str(store.root)
    at.session_state["picked"] = ids
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 1 and any("tensorboard --logdir" in c.value for c in at.code)
