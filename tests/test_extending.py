"""docs/extending.md, followed as a contributor would: its example method file plus its one registry line make a
method that trains and appears in the command line, the Run page and the tables, with no other edit."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from qru import recipes
from qru.cli import configs_for, main
from qru.command_line import command
from qru.store import RunStore
from qru.unlearn.methods import METHODS, REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def _method_blocks() -> tuple[str, str]:
    """The method section's two code blocks: the method file and the registry line."""
    text = (ROOT / "docs" / "extending.md").read_text()
    section = text.split("## A new unlearning method", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the method section shows the file and the registry line"
    return blocks[0], blocks[1]


@pytest.fixture
def clipga(tmp_path, monkeypatch):
    """The documented example installed as a throwaway module (the new file) plus its registry line."""
    source, line = _method_blocks()
    package = tmp_path / "throwaway_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "clipga.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    name, path = re.fullmatch(r'\s*"(\w+)": "([\w.]+:\w+)",\s*', line).groups()
    monkeypatch.setitem(REGISTRY, name, path.replace("qru.unlearn.methods.", "throwaway_methods."))
    yield name
    sys.modules.pop("throwaway_methods.clipga", None)


def test_the_documented_method_appears_in_the_cli_and_its_command(clipga, capsys):
    assert METHODS[clipga].label == "ClipGA" and clipga in list(METHODS)
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "clipga" in help_text and "--clip CLIP" in help_text and "forget NLL ceiling" in help_text
    (config,) = configs_for(["run", "--method", "clipga", "--clip", "3", "--scale", "micro"])
    assert config.unlearn.params == (("clip", 3.0),) and config.unlearn.param("clip") == 3.0
    assert config.unlearn.label.startswith("ClipGA+GDR (clip 3) full")
    assert "--method clipga" in " ".join(command(config)) and configs_for(command(config)) == [config]
    with pytest.raises(Exception, match="clip applies to clipga only, not npo"):
        configs_for(["run", "--method", "npo", "--clip", "3"])
    with pytest.raises(Exception, match="--clip: must be a finite number > 0, got -1"):
        configs_for(["run", "--method", "clipga", "--clip", "-1"])
    with pytest.raises(Exception, match="clip must be a finite number > 0, got -1"):
        recipes.run_config(method="clipga", params={"clip": -1.0})


def test_the_documented_method_trains_and_fills_the_tables(clipga, module_store, capsys):
    argv = ["--cache", str(module_store), "run", "--scale", "micro", "--method", "clipga", "--clip", "4",
            "--max-steps", "2", "--bits", "32", "4", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ClipGA+GDR (clip 4) full" in out and "knowmem_forget" in out
    store = RunStore(module_store)
    run_id = next(r for r in store.ids() if r.startswith("clipga-gdr-full-"))
    assert store.config(run_id).unlearn.param("clip") == 4.0
    assert main(["--cache", str(module_store), "show", run_id]) == 0
    assert "ClipGA+GDR (clip 4)" in capsys.readouterr().out


def test_the_documented_method_is_offered_on_the_run_page(clipga, tmp_path):
    at = AppTest.from_string(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport ui\nui.frame('run')\n",
                             default_timeout=60)
    at.session_state["store_root"] = str(tmp_path)
    at.run()
    method = at.radio(key="method")
    assert clipga in method.options or "ClipGA" in method.options
    method.set_value(clipga).run()
    assert not at.exception
    at.number_input(key=f"param-{clipga}-clip").set_value(2.5).run()
    (code,) = [c.value for c in at.code if " run " in c.value]  # the run's command
    assert "--method clipga" in code and "--clip 2.5" in code
