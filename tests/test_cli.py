import json
import subprocess
import sys

import pytest

from qru.cli import main
from qru.config import RunConfig
from qru.store import RunStore, run_id_of


def _run(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        code = main(list(argv))
        raise SystemExit(code)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.mark.parametrize("argv, needle", [
    (["run", "--method", "sgd"], "'sgd'"),
    (["run", "--bits", "32", "5"], "5"),
    (["run", "--lr", "-0.1"], "-0.1"),
    (["run", "--lr", "abc"], "abc"),
    (["run", "--lr", "inf"], "inf"),
    (["run", "--alpha", "inf"], "alpha"),
    (["run", "--corpus", "/nonexistent/muse"], "/nonexistent/muse"),
    (["run", "--epochs", "0"], "epochs"),
    (["show", "no-such-run"], "no-such-run"),
])
def test_bad_arguments_give_one_line_naming_the_value(tmp_path, capsys, argv, needle):
    code, out, err = _run(capsys, "--cache", str(tmp_path), *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qru: error:") and needle in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "models").exists()


def test_corrupt_run_folder_is_reported_and_left_alone(tmp_path, capsys):
    store = RunStore(tmp_path)
    with store.open_run(RunConfig()) as writer:
        writer.set_status("done")
    run_id = run_id_of(RunConfig())
    (store.path(run_id) / "config.json").write_text("{oops")
    code, _, err = _run(capsys, "--cache", str(tmp_path), "show", run_id)
    assert code == 2 and "config.json" in err and run_id in err
    assert (store.path(run_id) / "config.json").read_text() == "{oops"
    code, out, _ = _run(capsys, "--cache", str(tmp_path), "ls")
    assert code == 0 and run_id in out and "failed" in out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "qru.cli", "--help"], capture_output=True, text=True, check=True)
    assert "build-target" in out.stdout and "show" in out.stdout


def test_malformed_corpus_folder_is_refused_before_the_store(tmp_path, capsys):
    folder = tmp_path / "not-muse"
    (folder / "knowmem").mkdir(parents=True)
    code, _, err = _run(capsys, "--cache", str(tmp_path / "store"), "run", "--corpus", str(folder))
    assert code == 2 and "forget_qa.json" in err
    assert not (tmp_path / "store" / "runs").exists()


def test_terminated_run_is_marked_failed_and_reruns(micro_cache, micro_models):
    import os
    import signal
    import time
    argv = ["--cache", str(micro_cache), "run", "--scale", "micro", "--method", "ga", "--regularizer", "none",
            "--adapter", "full", "--lr", "1e-3", "--epochs", "30", "--seed", "77", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "qru.cli", *argv], stderr=subprocess.PIPE, text=True)
    store = RunStore(micro_cache)
    deadline = time.time() + 300
    run_id = None
    while time.time() < deadline and proc.poll() is None:
        ids = [r for r in store.ids() if r.startswith("ga-none-full-")]
        if ids and (store.path(ids[0]) / "status.json").is_file():
            run_id = ids[0]
            break
        time.sleep(0.05)
    assert run_id, "the run never started"
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    status = store.status(run_id)
    if proc.returncode == 0:  # it finished before the signal arrived; nothing to check
        pytest.skip("run finished before SIGTERM")
    assert proc.returncode == 130 and "interrupted" in err
    assert status["state"] == "failed" and "signal" in status["error"]
    assert main(argv) == 0 and store.status(run_id)["state"] == "done"


def test_corpus_without_retain_text_is_refused_before_the_store(tmp_path, capsys):
    from test_corpus import _write_muse
    folder = _write_muse(tmp_path / "muse")  # has raw/forget.txt only
    code, _, err = _run(capsys, "--cache", str(tmp_path / "store"), "run", "--corpus", str(folder))
    assert code == 2 and "retain training text" in err
    assert not (tmp_path / "store" / "runs").exists() and not (tmp_path / "store" / "models").exists()


def test_cache_that_is_a_file_and_huge_seed_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = _run(capsys, "--cache", str(tmp_path / "file"), "ls")
    assert code == 2 and "not a folder" in err
    code, _, err = _run(capsys, "--cache", str(tmp_path), "run", "--seed", str(10**23))
    assert code == 2 and "seed" in err and not (tmp_path / "runs").exists()


def test_progress_printer_survives_a_closed_stderr(monkeypatch):
    from qru.cli.reports import progress_printer as _progress_printer

    class Closed:
        def write(self, _):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(sys, "stderr", Closed())
    show = _progress_printer(False)
    show("unlearning", 1, 10, "")  # must not raise
    show("evaluating", 2, 10, "")


def test_cli_module_does_not_import_torch():
    code = "import sys, qru.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # `qru ls` and `--help` stay fast


def test_a_run_says_its_size_and_time_first_and_show_names_its_prompts(module_store, capsys):
    code, out, err = _run(capsys, "--cache", str(module_store), "run", "--scale", "micro", "--method", "ga",
                          "--prompt-format", "muse", "--max-eval-items", "2", "--max-steps", "2", "--bits", "32")
    assert code == 0
    plan = [line for line in err.splitlines() if "] plan " in line]
    first_training = next(i for i, line in enumerate(err.splitlines()) if "unlearning" in line)
    assert err.splitlines().index(plan[0]) < first_training  # said before anything is trained
    assert any("whole run: about" in line for line in plan) and any("unlearning:" in line for line in plan)
    assert any("VerbMem prompts: 2 of 6 evaluated (`--max-eval-items`)" in line for line in plan)
    assert "Prompt format: muse" in out and "muse prompts, 2 eval items/list]" in out
    run_id = out.split("run ", 1)[1].split(":")[0]
    code, shown, _ = _run(capsys, "--cache", str(module_store), "show", run_id)
    assert "Prompt format: muse" in shown and "VerbMem prompts: 2 of 6 evaluated" in shown


def test_a_context_too_short_for_the_generation_is_refused_before_the_store(tmp_path, capsys):
    code, _, err = _run(capsys, "--cache", str(tmp_path), "run", "--scale", "micro", "--max-len", "100")
    assert code == 2 and "leaves no room for a prompt" in err and "--max-len" in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_an_interrupt_says_what_continues_and_what_restarts(monkeypatch, capsys, tmp_path):
    import qru.cli.commands as commands

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(commands, "cmd_ls", interrupted)
    code, _, err = _run(capsys, "--cache", str(tmp_path), "ls")
    assert code == 130 and "starts again from step 0" in err and "keeps its finished models" in err
