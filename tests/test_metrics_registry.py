"""The metric registry (qru.metrics) and the views and analysis that read it: each metric's facts written out here
once more by hand, so that a wrong direction, floor, label or number of decimals in the registry, or a consumer that
ignores it, fails a test."""
import math

import pandas as pd
import pytest

from qru.analysis.undone import forgetting_undone, noise, share_undone
from qru.metrics import (METRICS, Metric, UnknownMetric, curve_metrics, forget_columns, headline, label, metric,
                         required_columns, sweep_metrics, table_columns)
from qru.store import METRIC_COLUMNS, StoreError, _check_columns
from qru.views.metric_tables import came_back, comparison, highlight, run_table, thresholds_text
from qru.views.paper_table import paper_table

# name: (label, set, direction, floor, table decimals, paper-table decimals, headline)
EXPECTED = {
    "knowmem_forget": ("KnowMem-forget", "forget", +1, 1.0, 2, 1, True),
    "nll_forget": ("NLL forget", "forget", -1, 0.01, 3, 3, True),
    "verbmem_entity": ("VerbMem (entity tokens)", "forget", +1, 1.0, 2, 1, True),
    "verbmem": ("VerbMem", "forget", +1, 1.0, 2, 1, False),
    "privleak": ("PrivLeak", "forget", -1, 1.0, 2, 1, False),
    "knowmem_retain": ("KnowMem-retain (utility)", "retain", +1, 1.0, 2, 1, False),
    "nll_retain": ("NLL retain", "retain", -1, 0.01, 3, 3, False),
}


def test_registry_declares_each_metric_once_with_its_facts():
    assert table_columns() == list(EXPECTED)  # the display order of every table
    for name, (title, data, direction, floor, digits, paper_digits, head) in EXPECTED.items():
        m = metric(name)
        assert (m.name, m.label, m.set, m.direction, m.floor, m.digits, m.paper_digits, m.headline) == \
            (name, title, data, direction, floor, digits, paper_digits, head)
        assert m.unit and m.description.endswith(")."), name  # a unit, and the definition's source
    assert set(METRICS) == set(EXPECTED) | {"nll_holdout", "auc"}  # stored, not shown in the tables
    assert not metric("auc").shown and metric("nll_holdout").set == "holdout"
    assert headline() == ["knowmem_forget", "nll_forget", "verbmem_entity"]
    assert headline(every_corpus=True) == ["knowmem_forget", "nll_forget"]
    assert forget_columns() == ["knowmem_forget", "nll_forget", "verbmem_entity", "verbmem", "privleak"]
    assert curve_metrics() == ["knowmem_forget", "nll_forget", "verbmem_entity", "privleak", "knowmem_retain"]
    assert sweep_metrics() == ["knowmem_forget", "nll_forget", "verbmem_entity", "verbmem", "privleak",
                               "knowmem_retain"]
    with pytest.raises(Exception):
        metric("verbmem").floor = 2.0  # frozen
    with pytest.raises(ValueError, match="direction"):
        Metric("x", "X", "u", "forget", 0, 1.0, 2, 1, False, "x.")


def test_an_unknown_metric_is_a_clear_key_error():
    with pytest.raises(KeyError) as err:
        metric("knowmem")
    assert isinstance(err.value, UnknownMetric)
    assert str(err.value).startswith("unknown metric 'knowmem' (known: knowmem_forget, nll_forget")
    assert label("share_kept") == "share_kept" and label("privleak") == "PrivLeak"
    with pytest.raises(KeyError, match="unknown metric"):
        noise("knowmem", None)


def _change(**values):
    return pd.DataFrame([{"model": "unlearned", "bits": 4, "quant": "fp4", **values}])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_came_back_and_the_share_undone_follow_each_metrics_direction_and_floor(name):
    _, data, direction, floor, *_ = EXPECTED[name]
    toward, away = _change(**{name: 1.5 * floor * direction}), _change(**{name: -1.5 * floor * direction})
    within = _change(**{name: 0.5 * floor * direction})
    forget = data == "forget"
    assert came_back(toward)[name].item() is forget  # only a forget-set metric "comes back"
    assert not came_back(away)[name].item() and not came_back(within)[name].item()
    assert noise(name, None) == (floor, "floor")
    # target remembers more than the unlearned model at 32 bits (in this metric's direction): a share is stated
    u32, t32 = 10.0, 10.0 + 10 * floor * direction
    assert share_undone(name, t32, u32, t32, u32 + 5 * floor * direction, floor) == (pytest.approx(0.5), "")
    share, reason = share_undone(name, u32, t32, u32, u32, floor)  # the unlearned model remembers more
    if forget:
        assert math.isnan(share) and "remembers more than the target" in reason
    else:  # utility: either way
        assert share == pytest.approx(1.0) and reason == ""


def test_forgetting_undone_covers_the_table_metrics_with_their_floors():
    rows = [{"model": m, "bits": b, "quant": "q", **{n: 50.0 + (5 if m == "target" else 0) for n in EXPECTED},
             "auc": 0.5} for m in ("target", "unlearned") for b in (32, 4)]
    undone = forgetting_undone(pd.DataFrame(rows))
    assert list(undone["metric"]) == list(EXPECTED)  # not the AUC: not a table column
    assert dict(zip(undone["metric"], undone["noise"])) == {n: e[3] for n, e in EXPECTED.items()}


def test_tables_round_each_metric_to_its_decimals():
    rows = [{"model": m, "bits": b, "quant": "q", **{n: 12.34567 for n in EXPECTED}}
            for m in ("target", "retrain", "unlearned") for b in (32, 4)]
    frame = pd.DataFrame(rows)
    table = run_table(frame)
    styler = highlight(table, pd.DataFrame(False, index=table.index, columns=table.columns))
    html = styler.to_html()
    assert "12.346<" in html and "12.35<" in html  # NLL: 3 decimals, scores: 2
    assert html.count("12.346<") == 2 * len(table) and html.count("12.35<") == 5 * len(table)
    compared = comparison({"run": frame}, 4)
    html = highlight(compared, pd.DataFrame(False, index=compared.index, columns=compared.columns)).to_html()
    assert "+0.000" in html and "+0.00<" in html  # "Δ NLL forget" 3 decimals, "Δ KnowMem-forget" 2
    assert thresholds_text().startswith("KnowMem-forget up by more than 1; NLL forget down by more than 0.01;")


def test_paper_table_cells_use_each_metrics_paper_decimals():
    frame = pd.DataFrame([{"run_id": "r", "method": "NPO", "adapter": "full", "lr": 1e-5, "seed": 0, "scenario": "",
                           "model": m, "bits": 32, "quant": "none", "knowmem_forget": 12.34567,
                           "nll_forget": 1.234567, "share_kept": 0.123456} for m in ("unlearned", "target")])
    assert paper_table(frame, "knowmem_forget").iloc[0]["full @32"] == "12.3"
    assert paper_table(frame, "nll_forget").iloc[0]["full @32"] == "1.235"
    assert paper_table(frame, "share_kept").iloc[0]["full @32"] == "0.123"  # a weight statistic: 3


def test_store_requires_the_metrics_every_run_has():
    assert [c for c in METRIC_COLUMNS if c not in ("model", "bits", "quant")] == required_columns()
    assert set(required_columns()) == set(EXPECTED) - {"verbmem_entity"}  # entity VerbMem needs entities.json
    frame = pd.DataFrame([{"model": "target", "bits": 32, "quant": "none", **{n: 1.0 for n in required_columns()}}])
    _check_columns(frame.copy(), METRIC_COLUMNS, "r", "metrics.json")
    with pytest.raises(StoreError, match="lacks column\\(s\\) nll_retain"):
        _check_columns(frame.drop(columns="nll_retain"), METRIC_COLUMNS, "r", "metrics.json")
