"""Job progress read back from run status files, on hand-made store folders (no model needed)."""
import os
import time

import pytest

from qru.atomic import exclusive, write_json
from qru.jobs import Job, _start_tick, is_alive, job_progress, list_jobs, log_tail
from qru.store import RunStore

DEAD_PID = 2 ** 22 + 11  # above the default pid_max: never a live process


def _status(store, run_id, state, **fields):
    folder = store.path(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "status.json", {"state": state, "stage": "", "done": 0, "total": 0, "pid": 1,
                                        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields})


def _job(store, run_ids, pid, started=None, log=""):
    job = Job("20260101-000000-aaaaaa", "t", ["run"], run_ids, pid, time.time() if started is None else started,
              _start_tick(pid) if pid == os.getpid() else 0)
    (store.root / "jobs").mkdir(parents=True, exist_ok=True)
    write_json(store.root / "jobs" / f"{job.job_id}.json", job.__dict__)
    (store.root / "jobs" / f"{job.job_id}.log").write_text(log)
    return job


def test_done_when_every_run_is_done(tmp_path):
    store = RunStore(tmp_path)
    for r in ("a", "b"):
        _status(store, r, "done")
    p = job_progress(store, _job(store, ["a", "b"], DEAD_PID))
    assert (p.state, p.fraction, p.runs_done) == ("done", 1.0, 2)


def test_a_dead_process_with_unfinished_runs_is_failed_with_its_log(tmp_path):
    store = RunStore(tmp_path)
    _status(store, "a", "done")
    job = _job(store, ["a", "b"], DEAD_PID, log="qru: error: no such corpus folder '/x'\n")
    p = job_progress(store, job)
    assert p.state == "failed" and p.fraction == 0.5 and "no such corpus" in p.log_tail
    assert list_jobs(store) == [job]


def test_a_failed_run_reports_its_error_and_run_log(tmp_path):
    store = RunStore(tmp_path)
    _status(store, "a", "failed", error="ValueError: boom")
    (store.path("a") / "log.txt").write_text("x\nTraceback: last line\n")
    p = job_progress(store, _job(store, ["a"], DEAD_PID))
    assert p.state == "failed" and p.error == "ValueError: boom" and p.log_tail.endswith("Traceback: last line")


def test_running_progress_counts_finished_runs_and_the_current_stage(tmp_path):
    store = RunStore(tmp_path)
    _status(store, "a", "done")
    _status(store, "b", "running", stage="unlearning", done=50, total=100, message="step 50/100")
    with exclusive(store.path("b") / ".lock", timeout=0, what="b"):
        p = job_progress(store, _job(store, ["a", "b", "c"], os.getpid()))
    assert p.state == "running" and p.runs_done == 1
    assert p.fraction == pytest.approx((1 + 0.5 * 0.99) / 3)
    assert p.stage == "run 2/3: unlearning 50/100 (step 50/100)"


def test_an_earlier_failure_of_a_run_the_job_redoes_is_not_its_failure(tmp_path):
    store = RunStore(tmp_path)
    _status(store, "a", "failed", error="old", updated="2020-01-01T00:00:00")
    p = job_progress(store, _job(store, ["a"], os.getpid()))
    assert p.state == "running" and p.stage == "run 1/1: starting"


def test_liveness_and_log_tail(tmp_path):
    assert is_alive(os.getpid(), _start_tick(os.getpid())) and not is_alive(DEAD_PID)
    assert not is_alive(os.getpid(), _start_tick(os.getpid()) + 1)  # the pid now belongs to another process
    assert not is_alive(1)  # a record without a start tick: pid 1 is alive but not a qru command
    store = RunStore(tmp_path)
    job = _job(store, [], DEAD_PID, log="\n".join(str(i) for i in range(100)))
    assert log_tail(store, job, lines=3) == "97\n98\n99"
    (store.root / "jobs" / "broken.json").write_text("{not json")
    assert [j.job_id for j in list_jobs(store)] == [job.job_id]  # unreadable records are skipped


def test_a_forced_job_is_not_done_with_the_result_it_is_replacing(tmp_path):
    store = RunStore(tmp_path)
    _status(store, "a", "done", updated="2020-01-01T00:00:00")
    job = _job(store, ["a"], os.getpid())
    forced = Job(job.job_id, job.title, ["run", "--force"], job.run_ids, job.pid, job.started, job.pid_start)
    assert job_progress(store, job).state == "done"  # a plain job: the stored run is its result
    assert job_progress(store, forced).state == "running"
    dead = Job(job.job_id, job.title, ["run", "--force"], job.run_ids, DEAD_PID, job.started)
    assert job_progress(store, dead).state == "failed"  # ended without replacing it (e.g. refused by the lock)


def test_a_failed_rerun_is_reported_only_by_the_job_that_ran_it(tmp_path):
    store = RunStore(tmp_path)
    _status(store, "a", "done", updated="2020-01-01T00:00:00")
    folder = store.rerun_path("a")
    folder.mkdir(parents=True)
    write_json(folder / "status.json", {"state": "failed", "error": "KeyboardInterrupt", "pid": 4242,
                                        "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    mine = Job("j1", "t", ["run", "--force"], ["a"], 4242, time.time() - 5)
    other = Job("j0", "t", ["run"], ["a"], DEAD_PID, time.time() - 5)
    assert job_progress(store, mine).state == "failed" and "earlier results are kept" in job_progress(store, mine).error
    assert job_progress(store, other).state == "done"
