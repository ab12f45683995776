"""The dashboard's parts of issue 21 through streamlit's AppTest: the Run page's quantization-aware and SAM options,
the Metrics page's relearning attack (stored tables and the job form), the Findings sentence about it, the sweep's
relearning pass and the Trade-off page on a recorded fixes sweep."""
import pytest
from streamlit.testing.v1 import AppTest

from qru.analysis.tradeoff import load_points
from qru.cli import configs_for
from qru.config import RelearnConfig
from qru.relearn import compute_relearn, record_path
from qru.store import RunStore
from qru.sweeps import record, run_sweep
from test_app import FRAME, ROOT, _code, _texts


@pytest.fixture(scope="module")
def fixes_store(module_store):
    """Two micro runs (GA+GDR full, and quantization-aware LoRA from the NF4 grid) recorded as a fixes sweep, each
    attacked by relearning through the sweep's relearning pass."""
    store = RunStore(module_store)
    argv = ["run", "--scale", "micro", "--method", "ga", "--bits", "32", "4", "--quant-type", "nf4", "--max-steps",
            "4", "--lr", "2e-3"]
    configs = configs_for(argv) + configs_for(argv + ["--adapter", "lora", "--quant-aware", "nf4-b64@4",
                                                      "--start-grid", "nf4-b64@4"])
    relearn = RelearnConfig(steps=2, lr=1e-3)
    ids, failures = run_sweep("fixes", configs, (0,), store, relearn=relearn)
    assert not failures and all(record_path(store, r, relearn).is_file() for r in ids)
    return store, ids, relearn


def _page(root, page: str) -> AppTest:
    at = AppTest.from_string(FRAME.format(root=str(ROOT), page=page), default_timeout=90)
    at.session_state["store_root"] = str(root)
    at.run()
    assert not at.exception, at.exception
    return at


def test_run_page_builds_quant_aware_and_sam_commands(fixes_store):
    store, _, _ = fixes_store
    at = _page(store.root, "run")
    at.selectbox(key="quant-aware").set_value("nf4-b64@4").run()
    at.slider(key="qa-mix").set_value(0.5).run()
    at.number_input(key="sam-rho").set_value(0.05).run()
    assert not at.exception
    assert "--sam-rho 0.05 --quant-aware nf4-b64@4 --quant-aware-mix 0.5" in _code(at, " run ")
    at.selectbox(key="quant-aware").set_value("").run()
    assert "--quant-aware" not in _code(at, " run ")


def test_metrics_page_shows_the_relearning_attack_and_offers_another(fixes_store):
    store, ids, _ = fixes_store
    at = _page(store.root, "metrics")
    text = _texts(at)
    assert "Relearning attack: 2 steps at lr 0.001" in text
    tables = [d.value for d in at.dataframe if "undone by relearning @32" in d.value.columns]
    assert tables and "undone by PTQ @4" in tables[0].columns
    assert any(e.label.startswith("Relearning attack on") for e in at.expander)
    assert f"relearn {ids[0]} --steps 10 --lr 0.0001 --data forget" in _code(at, f" relearn {ids[0]} ")
    assert [b for b in at.button if b.label == "Relearn"]


def test_findings_says_what_relearning_undid(fixes_store):
    store, _, _ = fixes_store
    at = _page(store.root, "findings")
    assert "A relearning attack (2 steps at lr 0.001 on the forget slice, seed 0): share of the forgetting undone" \
        in _texts(at)


def test_tradeoff_page_draws_the_fixes_of_a_recorded_sweep(fixes_store):
    store, ids, relearn = fixes_store
    at = _page(store.root, "tradeoff")
    assert any("0 of them attacked by relearning (the default attack): `qru relearn RUN`" in c.value
               for c in at.caption)  # the fixture's attacks are not the default one
    assert len(at.get("plotly_chart")) == 1
    table = at.dataframe[0].value
    assert len(table) == 2 and "undone by 4-bit PTQ" in table.columns
    assert any("QA nf4-b64@4" in f for f in table["fix"])
    at.radio(key="tradeoff-forget").set_value("nll_forget").run()
    assert not at.exception and "NLL forget @32" in at.dataframe[0].value.columns
    points = load_points(store, ids, relearn)
    assert len(points) == 4 and set(points["bits"]) == {32, 4} and points["undone"].isna().sum() >= 2  # NaN at 32


def test_a_second_sweep_pass_reads_stored_attacks(fixes_store):
    store, ids, relearn = fixes_store
    before = {r: record_path(store, r, relearn).stat().st_mtime_ns for r in ids}
    again, failures = run_sweep("fixes", [store.config(r) for r in ids], (0,), store, relearn=relearn)
    assert again == ids and not failures
    assert {r: record_path(store, r, relearn).stat().st_mtime_ns for r in ids} == before
    assert compute_relearn(store, ids[0], relearn)["run_id"] == ids[0]
    record(store, "fixes", [store.config(r) for r in ids], (0,))
