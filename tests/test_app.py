"""The dashboard script runs on an empty store and on a store with a finished run (streamlit's AppTest)."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from qru.cli import main

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_empty_store_offers_the_default_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("QRU_CACHE", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("store is empty" in i.value for i in at.info)
    assert any("default experiment" in b.label for b in at.sidebar.button)


def test_finished_run_shows_metrics_deltas_and_probes(micro_cache, micro_models, monkeypatch):
    assert main(["--cache", str(micro_cache), "run", "--scale", "micro", "--method", "ga", "--regularizer", "gdr",
                 "--adapter", "full", "--lr", "1e-3", "--epochs", "2", "--quiet"]) == 0
    monkeypatch.setenv("QRU_CACHE", str(micro_cache))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [s.value for s in at.subheader][:2] == [
        "Metrics", "Weight deltas against the quantization step (all quantized Linear layers)"]
    table = at.dataframe[1].value
    assert set(table["model"]) == {"target", "retrain", "unlearned"} and set(table["bits"]) == {32, 8, 4}
    assert len(at.expander) >= 1
