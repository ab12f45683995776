"""The store's job queue (qru.queue): a second heavy command waits for the first and says so, its place shows in
`qru queue`, `qru ls` and the dashboard's job progress, a waiting or running job can be cancelled (its run recorded
as cancelled, the same command resuming from the cache), and the slot setting is checked."""
import os
import subprocess
import sys
import time

import pytest

from qru import queue
from qru.checks import ConfigError
from qru.cli import main
from qru.jobs import Job, _start_tick, job_progress
from qru.store import RunStore, StoreError

DEAD_PID = 2 ** 22 + 13
MICRO_RUN = ["run", "--scale", "micro", "--method", "ga", "--regularizer", "gdr", "--adapter", "full", "--lr", "1e-3",
             "--bits", "32", "--quiet"]


def _qru(root, *argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qru.cli", "--cache", str(root), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _until(check, seconds=90, what="condition"):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def checkpoints(micro_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("queue-ckpt")
    micro_models.target.save_pretrained(root / "target", safe_serialization=True)
    micro_models.retrain.save_pretrained(root / "other", safe_serialization=True)
    return root


def test_a_second_job_waits_for_the_slot_and_says_so(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("QRU_SLOTS", raising=False)
    queue.set_slots(tmp_path, 1)
    argv = ["deltas", str(checkpoints / "target"), str(checkpoints / "other"), "--quantizers", "int8@8", "--quiet"]
    with queue.slot(tmp_path, "the test holding the slot"):
        proc = _qru(tmp_path, *argv)
        place, ahead = _until(lambda: queue.place(tmp_path, proc.pid), what="the job to queue")
        assert place == 0 and [t.title for t in ahead] == ["the test holding the slot"]
        assert main(["--cache", str(tmp_path), "queue"]) == 0
        out = capsys.readouterr().out
        assert "1 slot(s)" in out and "running" in out and "waiting  #1" in out and "deltas" in out
        job = Job("j1", "deltas job", argv, [], proc.pid, time.time(), _start_tick(proc.pid))
        progress = job_progress(RunStore(tmp_path), job)
        assert progress.state == "queued" and "1 job(s) ahead" in progress.stage
        time.sleep(1.0)
        assert proc.poll() is None  # still waiting: it has not computed beside the slot's holder
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "waiting in the queue: 1 job(s) ahead; running: the test holding the slot" in err
    assert "run deltas-" in out and queue.tickets(tmp_path) == []


def test_a_waiting_job_is_cancelled_by_its_pid(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("QRU_SLOTS", raising=False)
    queue.set_slots(tmp_path, 1)
    with queue.slot(tmp_path, "holder"):
        proc = _qru(tmp_path, "deltas", str(checkpoints / "target"), str(checkpoints / "other"), "--quantizers",
                    "int8@8")
        _until(lambda: queue.place(tmp_path, proc.pid), what="the job to queue")
        assert main(["--cache", str(tmp_path), "cancel", str(proc.pid)]) == 0
        assert f"(pid {proc.pid}) to stop" in capsys.readouterr().out
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "qru: cancelled" in err
    assert queue.tickets(tmp_path) == [] and RunStore(tmp_path).ids() == []
    assert main(["--cache", str(tmp_path), "cancel", "all"]) == 0
    assert "no job is running or waiting" in capsys.readouterr().out
    assert main(["--cache", str(tmp_path), "cancel", "nosuchrun"]) == 2
    assert "nothing running or waiting matches 'nosuchrun'" in capsys.readouterr().err


def test_bad_values_are_refused_at_once_and_a_waiting_run_is_cancelled_by_its_run_id(micro_models, micro_cache,
                                                                                     store_copy, capsys):
    """A typo never waits behind another job; a queued run can be cancelled by its run id, which `qru queue`
    shows, and it says that nothing was computed."""
    root = store_copy(micro_cache, ("models", "corpus"))
    queue.set_slots(root, 1)
    with queue.slot(root, "holder"):
        start = time.time()
        for bad in (["run", "--scale", "micro", "--lr", "5"], ["deltas", "a", "b", "--device", "tpu"],
                    ["deltas", "a", "b", "--quantizers", "nf5"]):
            assert main(["--cache", str(root), *bad]) == 2
            err = capsys.readouterr().err
            assert err.startswith("qru: error: ") and "waiting" not in err, err
        assert time.time() - start < 30
        proc = _qru(root, *MICRO_RUN, "--seed", "7")
        _until(lambda: queue.place(root, proc.pid), what="the run to queue")
        (ticket,) = [t for t in queue.tickets(root) if t.pid == proc.pid]
        (run_id,) = ticket.run_ids
        assert main(["--cache", str(root), "queue"]) == 0 and run_id in capsys.readouterr().out
        assert main(["--cache", str(root), "cancel", run_id[:14]]) == 0
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "qru: cancelled while waiting in the queue: nothing was computed" in err
    assert "model build" not in err and run_id not in RunStore(root).ids()


def test_a_running_run_is_cancelled_and_the_same_command_resumes(micro_models, micro_cache, store_copy, tmp_path):
    root = store_copy(micro_cache, ("models", "corpus"))
    proc = _qru(root, *MICRO_RUN)
    store = RunStore(root)
    def unlearning():
        for run_id in store.ids():
            try:
                status = store.status(run_id)
            except StoreError:  # its folder exists, its status is not written yet
                continue
            if status["state"] == "running" and status.get("stage", "").startswith("unlearning"):
                return run_id
        return None

    run_id = _until(unlearning, seconds=240, what="the run to start unlearning")
    assert queue.cancel(store, run_id[:12]) == [f"asked the job computing {run_id} (pid {proc.pid}) to stop"]
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "qru: cancelled" in err
    status = store.status(run_id)
    assert status["state"] == "cancelled" and "resumes" in status["error"]
    assert not (store.path(run_id) / "metrics.json").exists()  # nothing half-written is taken for a result
    assert main(["--cache", str(root), *MICRO_RUN]) == 0
    assert store.status(run_id)["state"] == "done"


def test_dead_tickets_are_dropped_and_nested_commands_take_no_second_slot(tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    dead = queue.Ticket("t-1-1", DEAD_PID, 0, "gone", "running", 0, 0.0, 0.0)
    (folder / "t-1-1.json").write_text(__import__("json").dumps(dead.__dict__))
    assert queue.tickets(tmp_path) == [] and not (folder / "t-1-1.json").exists()
    with queue.slot(tmp_path, "outer") as threads:
        assert threads >= 1
        with queue.slot(tmp_path, "inner"):
            assert [t.title for t in queue.tickets(tmp_path)] == ["outer"]
    assert queue.tickets(tmp_path) == []


def test_slot_setting_defaults_and_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv("QRU_SLOTS", raising=False)
    assert queue.default_slots(2) == 1 and queue.default_slots(16) == 4 and queue.default_slots(1) == 1
    assert queue.slots(tmp_path) == queue.default_slots()
    assert queue.set_slots(tmp_path, "3") == 3 and queue.slots(tmp_path) == 3
    assert queue.threads_per_job(tmp_path) == max(1, queue.cores() // 3)
    for bad in (0, "x", 300, "1.5", -1):
        with pytest.raises(ConfigError, match="job slots"):
            queue.set_slots(tmp_path, bad)
    monkeypatch.setenv("QRU_SLOTS", "2")
    assert queue.slots(tmp_path) == 2
    monkeypatch.setenv("QRU_SLOTS", "many")
    with pytest.raises(ConfigError, match="QRU_SLOTS"):
        queue.slots(tmp_path)
    (tmp_path / "queue" / "settings.json").write_text('{"slots": 0}')
    monkeypatch.delenv("QRU_SLOTS")
    with pytest.raises(ConfigError, match="settings.json"):
        queue.slots(tmp_path)


def test_the_dashboard_shows_a_queued_job_with_its_place_and_cancels_it(checkpoints, tmp_path, monkeypatch):
    """The Run page's job panel: a dashboard job waiting for the slot reads "queued" with the job ahead, and its
    Cancel button stops it."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from qru.atomic import write_json
    from qru.views.text import displayed

    monkeypatch.delenv("QRU_SLOTS", raising=False)
    queue.set_slots(tmp_path, 1)
    root = Path(__file__).resolve().parents[1]
    with queue.slot(tmp_path, "the test holding the slot"):
        proc = _qru(tmp_path, "deltas", str(checkpoints / "target"), str(checkpoints / "other"), "--quantizers",
                    "int8@8", "--quiet")
        _until(lambda: queue.place(tmp_path, proc.pid), what="the job to queue")
        job = Job("20260101-000000-abc123", "checkpoint deltas", ["deltas"], [], proc.pid, time.time(),
                  _start_tick(proc.pid))
        write_json(tmp_path / "jobs" / f"{job.job_id}.json", job.__dict__)
        (tmp_path / "jobs" / f"{job.job_id}.log").write_text("")
        at = AppTest.from_string(f"import sys\nsys.path.insert(0, {str(root)!r})\nimport ui\nui.frame('run')\n",
                                 default_timeout=60)
        at.session_state["store_root"] = str(tmp_path)
        at.run()
        assert not at.exception, at.exception
        (line,) = [displayed(i.value) for i in at.info if "checkpoint deltas" in i.value]
        assert "queued" in line and "1 job(s) ahead" in line and "the test holding the slot" in line
        at.button(key=f"cancel-{job.job_id}").click().run()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "qru: cancelled" in err
    (tmp_path / "jobs" / f"{job.job_id}.log").write_text(err)  # where a dashboard job's output goes
    assert job_progress(RunStore(tmp_path), job).state == "cancelled"


def test_damaged_tickets_and_odd_slot_values_never_block_the_store(tmp_path, capsys, monkeypatch):
    """A ticket with wrong field types (for a live pid) or unreadable JSON is removed, not a traceback; a slot
    value with repeated dashes is one error line; stale cancel marks are cleared."""
    monkeypatch.delenv("QRU_SLOTS", raising=False)
    folder = tmp_path / "queue"
    folder.mkdir()
    live = {"ticket": "t-1", "pid": os.getpid(), "pid_start": _start_tick(os.getpid()), "title": "x",
            "state": "waiting", "slot": -1, "created": 1.0, "started": 0.0}
    for i, bad in enumerate(({**live, "pid": str(os.getpid())}, {**live, "started": "x"}, {**live, "run_ids": [1]})):
        (folder / f"t-{i}.json").write_text(__import__("json").dumps(bad))
    (folder / "t-9.json").write_text("{not json")
    (folder / f"cancel-{DEAD_PID}-5").touch()
    assert queue.tickets(tmp_path) == [] and sorted(p.name for p in folder.iterdir()) == []
    assert main(["--cache", str(tmp_path), "queue", "--slots=--1"]) == 2
    assert "whole number 1..256" in capsys.readouterr().err
    monkeypatch.setenv("QRU_SLOTS", "--5")
    assert main(["--cache", str(tmp_path), "queue"]) == 2
    assert capsys.readouterr().err.startswith("qru: error: QRU_SLOTS")


def test_a_stored_result_and_a_bad_run_id_do_not_wait_for_the_slot(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("QRU_SLOTS", raising=False)
    queue.set_slots(tmp_path, 1)
    argv = ["--cache", str(tmp_path), "deltas", str(checkpoints / "target"), str(checkpoints / "other"),
            "--quantizers", "int8@8", "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    with queue.slot(tmp_path, "holder"):
        child = _qru(tmp_path, *argv[2:])
        out, err = child.communicate(timeout=90)  # found in the store: printed at once, no waiting
        assert child.returncode == 0 and "waiting" not in err and "run deltas-" in out
        child = _qru(tmp_path, "curve", "nosuchrun")
        out, err = child.communicate(timeout=90)
        assert child.returncode == 2 and "waiting" not in err and "nosuchrun" in err
        monkeypatch.setenv("RANK", "1")  # a non-main rank of a multi-process launch: rank 0 holds the launch's slot
        child = _qru(tmp_path, *argv[2:-2], "rtn-sym-g0@8", "--quiet")
        out, err = child.communicate(timeout=90)
        assert child.returncode == 0 and "waiting" not in err
