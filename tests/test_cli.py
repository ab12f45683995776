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
