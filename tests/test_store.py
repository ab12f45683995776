import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from qru.atomic import LockedError, write_json
from qru.config import RunConfig, UnlearnConfig
from qru.store import RunStore, StoreError, run_id_of


def test_run_id_is_readable_and_deterministic():
    cfg = RunConfig(unlearn=UnlearnConfig(method="npo", regularizer="klr", adapter="lora"))
    assert run_id_of(cfg).startswith("npo-klr-lora-") and run_id_of(cfg) == run_id_of(RunConfig(unlearn=cfg.unlearn))


def test_atomic_write_keeps_old_file_when_writer_dies(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"v": 1})

    class Boom:
        def __repr__(self):
            raise RuntimeError("killed mid-write")
    with pytest.raises(Exception):
        write_json(path, {"v": Boom()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left behind


HOLDER = """
import sys, time
from qru.config import RunConfig
from qru.store import RunStore
with RunStore(sys.argv[1]).open_run(RunConfig()) as writer:
    writer.set_status("running", stage="holding")
    print("ready", flush=True)
    time.sleep(120)
"""


def test_second_process_is_refused_and_stale_run_reported(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        store = RunStore(tmp_path)
        with pytest.raises(LockedError, match=run_id_of(RunConfig())):
            with store.open_run(RunConfig()):
                pass
        assert store.status(run_id_of(RunConfig()))["state"] == "running"
    finally:
        proc.kill()  # dies without finishing: the OS releases the lock
        proc.wait()
    status = RunStore(tmp_path).status(run_id_of(RunConfig()))
    assert status["state"] == "failed" and "interrupted" in status["error"]


def test_corrupt_and_missing_runs_raise_store_error(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(StoreError, match="no run"):
        store.config("ga-gdr-full-000")
    with store.open_run(RunConfig()) as writer:
        writer.set_status("done")
    run_id = run_id_of(RunConfig())
    (store.path(run_id) / "config.json").write_text("{broken")
    with pytest.raises(StoreError, match="config.json"):
        store.config(run_id)
    assert store.info(run_id).state == "failed"
    with pytest.raises(StoreError, match="metrics.json"):
        store.metrics(run_id)
    with pytest.raises(StoreError, match="not a run id"):
        store.path("../etc")


def test_failure_is_recorded_with_traceback(tmp_path):
    store = RunStore(tmp_path)
    with store.open_run(RunConfig()) as writer:
        writer.set_status("running", stage="unlearning", done=3, total=10)
        try:
            raise ValueError("loss is NaN")
        except ValueError as exc:
            writer.fail(exc)
    run_id = run_id_of(RunConfig())
    status = store.status(run_id)
    assert status["state"] == "failed" and status["error"] == "ValueError: loss is NaN" and status["done"] == 3
    assert "Traceback" in (store.path(run_id) / "log.txt").read_text()


@pytest.mark.parametrize("name, content, needle", [
    ("status.json", {"state": "failed", "total": "abc"}, "total"),
    ("status.json", {"state": "done", "error": 5}, "error"),
    ("config.json", {"bits": 4}, "bits"),
])
def test_wrong_types_in_run_files_list_that_run_as_failed(tmp_path, name, content, needle):
    store = RunStore(tmp_path)
    with store.open_run(RunConfig()) as writer:
        writer.set_status("done")
    with store.open_run(RunConfig(seed=1)) as writer:
        writer.set_status("done")
    run_id = run_id_of(RunConfig())
    write_json(store.path(run_id) / name, content)
    infos = {i.run_id: i for i in store.list()}
    assert infos[run_id].state == "failed" and needle in infos[run_id].error
    assert infos[run_id_of(RunConfig(seed=1))].state == "done"


@pytest.mark.parametrize("rows, needle", [([], "non-empty"), ([{"model": "x"}], "lacks"),
                                           ([{"model": "t", "bits": "x", "quant": "none", "verbmem": "a",
                                              "knowmem_forget": 1, "knowmem_retain": 1, "privleak": None,
                                              "nll_forget": 1, "nll_retain": 1}], "non-numeric"),
                                          ([{"model": "t", "bits": 4, "quant": "fp4", "verbmem": 1,
                                             "knowmem_forget": 1, "knowmem_retain": 1, "privleak": "high",
                                             "nll_forget": 1, "nll_retain": 1}], "privleak"),
                                          ([{"model": "t", "bits": None, "quant": "fp4", "verbmem": 1,
                                             "knowmem_forget": 1, "knowmem_retain": 1, "privleak": 1,
                                             "nll_forget": 1, "nll_retain": 1},
                                            {"model": "t", "bits": 4, "quant": "fp4", "verbmem": 1,
                                             "knowmem_forget": 1, "knowmem_retain": 1, "privleak": 1,
                                             "nll_forget": 1, "nll_retain": 1}], "integer bit width")])
def test_malformed_metric_tables_raise_store_error(tmp_path, rows, needle):
    store = RunStore(tmp_path)
    with store.open_run(RunConfig()) as writer:
        writer.write_json("metrics.json", rows)
        writer.write_parquet("deltas.parquet", __import__("pandas").DataFrame({"a": [1]}))
    with pytest.raises(StoreError, match=needle):
        store.metrics(run_id_of(RunConfig()))
    with pytest.raises(StoreError, match="tensor"):
        store.deltas(run_id_of(RunConfig()))


def test_stored_files_follow_the_umask(tmp_path):
    import os
    write_json(tmp_path / "f.json", {})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_is_locked_never_creates_the_lock_file(tmp_path):
    from qru.atomic import exclusive, is_locked
    lock = tmp_path / ".lock"
    assert not is_locked(lock) and not lock.exists()
    with exclusive(lock):
        assert lock.exists()
    lock.chmod(0o444)
    assert not is_locked(lock)


def test_read_json_turns_pathological_files_into_store_errors(tmp_path):
    from qru.atomic import read_json
    (tmp_path / "deep.json").write_text("[" * 200000 + "]" * 200000)
    (tmp_path / "big.json").write_text("[" + "9" * 5000 + "]")
    for name in ("deep.json", "big.json"):
        with pytest.raises(StoreError, match=name):
            read_json(tmp_path / name, StoreError, name)


def test_histograms_with_missing_keys_or_wrong_shapes_are_refused(tmp_path):
    import numpy as np

    store = RunStore(tmp_path)
    with store.open_run(RunConfig()) as writer:  # bits 32/8/4, FP4 block 64
        folder = writer.folder
    edges = {"abs_edges": np.logspace(-10, 0, 101), "rel_edges": np.logspace(-6, 2, 81),
             "tensors": np.array(["a", "total"])}
    np.savez(folder / "deltas_hist.npz", **edges)
    with pytest.raises(StoreError, match="lacks abs"):
        store.histograms(folder.name)
    np.savez(folder / "deltas_hist.npz", **edges, abs=np.zeros((2, 100)), rel_4=np.zeros((3, 80)))
    with pytest.raises(StoreError, match="rel_4"):
        store.histograms(folder.name)
    np.savez(folder / "deltas_hist.npz", **edges, abs=np.zeros((2, 100)), rel_4=np.zeros((2, 80)),
             dq_4=np.zeros((2, 100)), bnd_8=np.zeros((2, 100)))  # stored before the quantizer grid: renamed
    assert set(store.histograms(folder.name)) == {"abs_edges", "rel_edges", "tensors", "abs", "rel_fp4-b64@4",
                                                  "dq_fp4-b64@4", "bnd_int8@8"}


@pytest.mark.parametrize("probes, needle", [({"a": 1}, "not a list"), (["text"], "entry 0"),
                                            ([{"prompt": "p", "gt": "g", "outputs": {"target": {}}}], "model>@<bits"),
                                            ([{"prompt": "p", "gt": "g", "outputs": {"target@²": {}}}], "model>@<bits"),
                                            ([{"prompt": "p", "gt": None, "outputs": {}}], "text"),
                                            ([{"prompt": "p", "gt": "g", "outputs": {"target@32": {
                                                "output": "o", "rougeL_f1": None}}}], "ROUGE-L"),
                                            ([{"prompt": "p", "gt": "g", "outputs": {"target@32": {
                                                "output": "o", "rougeL_f1": 1.0, "leaked_spans": [[1]]}}}], "spans")])
def test_malformed_probes_raise_store_error(tmp_path, probes, needle):
    store = RunStore(tmp_path)
    with store.open_run(RunConfig()) as writer:
        writer.write_json("probes.json", probes)
    with pytest.raises(StoreError, match=needle):
        store.probes(run_id_of(RunConfig()))


def test_a_failed_forced_rerun_keeps_the_finished_run(tmp_path):
    store = RunStore(tmp_path)
    run_id = run_id_of(RunConfig())
    with store.open_run(RunConfig()) as writer:
        writer.write_json("metrics.json", [{"old": 1}])
        writer.set_status("done")
    with pytest.raises(RuntimeError):
        with store.open_run(RunConfig()) as writer:
            writer.set_status("running", stage="unlearning")
            assert store.status(run_id)["stage"] == "unlearning"  # the live re-run is what status shows
            writer.write_json("metrics.json", [{"new": 1}])
            writer.fail(RuntimeError("killed"))
            raise RuntimeError("killed")
    status = store.status(run_id)
    assert status["state"] == "done" and "killed" in status["rerun_error"] and status["rerun_pid"] == os.getpid()
    assert store.read_json(run_id, "metrics.json") == [{"old": 1}]
    with store.open_run(RunConfig()) as writer:  # a re-run that finishes replaces the run
        writer.write_json("metrics.json", [{"new": 2}])
        writer.set_status("done")
    assert store.read_json(run_id, "metrics.json") == [{"new": 2}] and "rerun_error" not in store.status(run_id)
    assert store.ids() == [run_id]


SWAPPER = """
import os, shutil, signal, sys
import qru.swap as swap
from qru.config import RunConfig
from qru.store import RunStore
steps, kill_at = [0], int(sys.argv[2])
def step(fn):
    def wrapped(*args, **kwargs):
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        steps[0] += 1
        return fn(*args, **kwargs)
    return wrapped
swap.os.rename, swap.shutil.rmtree = step(os.rename), step(shutil.rmtree)
with RunStore(sys.argv[1]).open_run(RunConfig()) as writer:
    writer.write_json("metrics.json", [{"new": 1}])
    writer.set_status("done")
"""


@pytest.mark.parametrize("kill_at", range(6))
def test_a_rerun_killed_at_any_step_of_its_swap_leaves_a_finished_run(tmp_path, kill_at):
    """Staging clears .rerun (step 0); the swap is rmtree(.old), rename(run -> .old), rename(.rerun -> run),
    rmtree(.old) (steps 1-4): killed before each (and not at all, kill_at 5), the run is listed, finished, and holds
    the old or the new results, never neither."""
    store = RunStore(tmp_path)
    run_id = run_id_of(RunConfig())
    with store.open_run(RunConfig()) as writer:
        writer.write_json("metrics.json", [{"old": 1}])
        writer.set_status("done")
    proc = subprocess.run([sys.executable, "-c", SWAPPER, str(tmp_path), str(kill_at)], capture_output=True)
    assert proc.returncode == (-9 if kill_at < 5 else 0), proc.stderr.decode()[-500:]
    fresh = RunStore(tmp_path)
    assert fresh.ids() == [run_id] and fresh.status(run_id)["state"] == "done"
    expected = [{"old": 1}] if kill_at < 3 else [{"new": 1}]  # killed before the re-run was complete: the old
    assert fresh.read_json(run_id, "metrics.json") == expected
    assert not list(fresh.runs.glob(".old-*"))
    with fresh.open_run(RunConfig()) as writer:  # running it again starts from a finished run, not from nothing
        assert writer.folder.name.startswith(".rerun-")
        writer.set_status("done")


def test_a_run_whose_old_folder_is_the_only_copy_is_restored_by_show(tmp_path):
    store = RunStore(tmp_path)
    run_id = run_id_of(RunConfig())
    with store.open_run(RunConfig()) as writer:
        writer.write_json("metrics.json", [{"old": 1}])
        writer.set_status("done")
    os.rename(store.path(run_id), store.runs / f".old-{run_id}")  # killed after the first rename, no re-run left
    assert RunStore(tmp_path).read_json(run_id, "metrics.json") == [{"old": 1}]
    info = RunStore(tmp_path).info(run_id)
    assert info.state == "done" and info.error == ""


def test_ls_says_the_last_rerun_failed(tmp_path):
    store = RunStore(tmp_path)
    run_id = run_id_of(RunConfig())
    with store.open_run(RunConfig()) as writer:
        writer.write_json("metrics.json", [{"old": 1}])
        writer.set_status("done")
    with pytest.raises(RuntimeError):
        with store.open_run(RunConfig()) as writer:
            writer.fail(RuntimeError("out of memory"))
            raise RuntimeError("out of memory")
    info = store.info(run_id)
    assert info.state == "done" and "the last re-run failed" in info.error and "out of memory" in info.error


def test_a_killed_writer_s_temporaries_are_removed_when_the_run_is_next_opened(tmp_path):
    store = RunStore(tmp_path)
    run_id = run_id_of(RunConfig())
    folder = store.path(run_id)
    folder.mkdir(parents=True)
    (folder / ".status.json.k3j2.tmp").write_text("{")
    (folder / ".deltas.parquet.x9.tmp").write_bytes(b"PAR1")
    (folder / ".adapter.a1.tmp").mkdir()
    (folder / ".adapter.a1.tmp" / "weights").write_bytes(b"0")
    with store.open_run(RunConfig()) as writer:
        writer.set_status("done")
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [".lock"]


def _disk_full(path, write):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_a_run_that_cannot_write_its_config_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr("qru.atomic.atomic_write", _disk_full)
    store = RunStore(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        with store.open_run(RunConfig()):
            pass
    assert store.ids() == [] and store.list() == []
    monkeypatch.undo()
    with store.open_run(RunConfig()) as writer:  # the store works once there is room again
        writer.set_status("done")
    assert store.ids() == [run_id_of(RunConfig())]


def test_a_failed_config_write_never_removes_a_folder_it_did_not_create(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    with store.open_run(RunConfig()) as writer:
        writer.set_status("failed", error="an earlier attempt")
    monkeypatch.setattr("qru.atomic.atomic_write", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        with store.open_run(RunConfig()):
            pass
    monkeypatch.undo()
    assert store.ids() == [run_id_of(RunConfig())] and store.status(run_id_of(RunConfig()))["state"] == "failed"



def test_a_damaged_rerun_neither_hides_nor_replaces_the_finished_run(tmp_path):
    store = RunStore(tmp_path)
    run_id = run_id_of(RunConfig())
    with store.open_run(RunConfig()) as writer:
        writer.write_json("metrics.json", [{"old": 1}])
        writer.set_status("done")
    stage = store.rerun_path(run_id)
    stage.mkdir()
    (stage / "status.json").write_text("garbage")
    info = store.info(run_id)
    assert info.state == "done" and "re-run" in info.error
    shutil.rmtree(stage)
    stage.mkdir()
    (stage / "status.json").write_text('{"state": "done"}')  # says done, but holds no config or results
    os.rename(store.path(run_id), store.runs / f".old-{run_id}")
    assert RunStore(tmp_path).read_json(run_id, "metrics.json") == [{"old": 1}]  # the old run is put back
