"""The trade-off view (issue 21 item 4) and the fixes preset (item 5): the Pareto frontier on hand-made points, the
fix means with seed intervals, the figure's arrows and rings, the fixes table and sentences, and the preset's runs."""
import numpy as np
import pandas as pd
import pytest

from qru.analysis.tradeoff import COLUMNS, fix_means, fix_name, pareto_front
from qru.recipes import sweep
from qru.sweeps import PRESETS
from qru.views.text import displayed
from qru.views.tradeoff import fixes_sentences, fixes_table, tradeoff_figure


def test_pareto_front_on_hand_made_points():
    utility = np.array([50, 60, 40, 60, 70, np.nan, 55])
    forget = np.array([10, 20, 5, 20, 40, 1, 30])  # lower forget = more forgotten
    front = pareto_front(utility, forget, y_lower_better=True)
    # (60, 20) twice: equal points both stay; (55, 30) is beaten by (60, 20); (50, 10) by nothing; NaN never
    assert front.tolist() == [True, True, True, True, True, False, False]
    assert pareto_front([1, 2], [5, 5], True).tolist() == [False, True]  # same forgetting, more utility
    nll = pareto_front([1, 1, 2], [0.5, 0.9, 0.1], y_lower_better=False)  # forget NLL: higher = more forgotten
    assert nll.tolist() == [False, True, True]


def _points() -> pd.DataFrame:
    rows = []
    for fix, (u32, f32, u4, f4, undone, relearn) in {"A full [natural start]": (40, 10, 40, 12, 0.05, 0.8),
                                                   "B LoRA [natural start]": (60, 50, 60, 50, 0.0, 0.1),
                                                   "C QA [start on g]": (30, 5, 28, 60, 0.9, 0.95)}.items():
        for seed in (0, 1, 2):
            rows.append({"run_id": f"{fix}{seed}", "fix": fix, "seed": seed, "bits": 32, "knowmem_forget": f32 + seed,
                         "nll_forget": 1.0, "knowmem_retain": u32 - seed, "undone": np.nan,
                         "relearn_undone": relearn, "relearn_stored": True})
            rows.append({"run_id": f"{fix}{seed}", "fix": fix, "seed": seed, "bits": 4, "knowmem_forget": f4 + seed,
                         "nll_forget": 1.0, "knowmem_retain": u4 - seed, "undone": undone,
                         "relearn_undone": relearn, "relearn_stored": True})
    return pd.DataFrame(rows, columns=COLUMNS)


def test_fix_means_mark_the_frontier_per_width():
    means = fix_means(_points(), "knowmem_forget").set_index(["fix", "bits"])
    assert means.loc[("A full [natural start]", 32), "forget"] == pytest.approx(11)
    assert means.loc[("A full [natural start]", 32), "seeds"] == [0, 1, 2]
    front = means["front"]
    assert front[("C QA [start on g]", 32)] and front[("B LoRA [natural start]", 32)] and \
        front[("A full [natural start]", 32)]
    assert not front[("C QA [start on g]", 4)]  # at 4 bits A forgets more (13 < 61) with more utility


def test_figure_table_and_sentences():
    points = _points()
    fig = tradeoff_figure(points, "knowmem_forget")
    assert len(fig.data) == 3 and len(fig.layout.annotations) == 3  # one arrow 32 -> 4 per fix
    c = next(t for t in fig.data if t.name.startswith("C"))
    assert list(c.marker.line.width) == [3, 0] and list(c.marker.symbol) == ["circle", "square"]
    assert c.error_y.array[0] > 0  # seeds as an interval
    table = fixes_table(points, "knowmem_forget").set_index("fix")
    assert table.loc["A full [natural start]", "KnowMem-forget @32"].startswith("11.0 [")
    assert table.loc["C QA [start on g]", "undone by 4-bit PTQ"] == "90% [90, 90]"
    assert table.loc["B LoRA [natural start]", "undone by relearning @32"] == "10% [10, 10]"
    text = displayed(" ".join(fixes_sentences(points)))
    assert "Under 4-bit PTQ" in text and "kept (under 20% undone): A full [natural start] (5%)" in text
    assert "lost most (at least 50%): C QA [start on g] (90%)" in text
    assert "Under relearning" in text and "lost most (at least 50%): A full [natural start] (80%)" in text
    points.loc[points["fix"].str.startswith("B"), ["relearn_undone", "relearn_stored"]] = [np.nan, False]
    points.loc[points["fix"].str.startswith("C"), "relearn_undone"] = np.nan
    text = displayed(" ".join(fixes_sentences(points)))
    assert "not attacked yet: B LoRA [natural start]" in text
    assert "not measurable (no effect beyond the noise): C QA [start on g]" in text


def test_the_fixes_preset_compares_every_fix_from_both_starts():
    preset = PRESETS["fixes"]
    assert preset.relearn
    configs = sweep("fixes", (0, 1, 2))
    assert len(configs) == 2 * 5 * 2 * 3
    fixes = {fix_name(c) for c in configs}
    assert len(fixes) == 20
    assert all(c.quant_type_4bit == "nf4" and c.bits == (32, 8, 4) for c in configs)
    qa = [c for c in configs if c.unlearn.quant_aware]
    assert {(c.unlearn.adapter, c.unlearn.quant_aware) for c in qa} == {("full", "nf4-b64@4"), ("lora", "nf4-b64@4")}
    sam = [c for c in configs if c.unlearn.sam_rho]
    assert {c.unlearn.adapter for c in sam} == {"full"} and len(sam) == 12
    assert {c.unlearn.start_grid for c in configs} == {"", "nf4-b64@4"}
    assert {c.unlearn.method for c in configs} == {"ga", "npo"} and {c.unlearn.regularizer for c in configs} == {"gdr"}
    fp4 = sweep("fixes", (0,), quant_type="fp4")  # the command's own choice wins over the preset's
    assert {c.quant_type_4bit for c in fp4} == {"fp4"}


def test_runs_that_differ_beyond_the_seed_are_never_pooled(tmp_path):
    import dataclasses
    from qru.analysis.tradeoff import _distinct
    from qru.config import ConfigError
    from qru.recipes import run_config

    a = run_config(scale="micro", method="npo", bits=(32, 4), max_steps=2)
    b = run_config(scale="tiny", method="npo", bits=(32, 4), epochs=5)
    c = dataclasses.replace(a, unlearn=dataclasses.replace(a.unlearn, alpha=2.0))
    assert fix_name(a) == fix_name(c)
    from qru.config import config_key
    points = [{"run_id": r, "fix": fix_name(cfg)} for r, cfg in (("a", a), ("a2", dataclasses.replace(a, seed=1)),
                                                                 ("b", b), ("c", c))]
    keys = {p["run_id"]: config_key(dataclasses.replace(cfg, seed=0)) for p, cfg in zip(points, (a, a, b, c))}
    labels = {"a": "A", "a2": "A", "b": "B", "c": "A"}
    _distinct(points, keys, labels)
    names = [p["fix"] for p in points]
    assert names[0] == names[1] and len(set(names)) == 3 and names[3].startswith("A #")
    with pytest.raises(ConfigError, match="--sam-rho is set run by run by the fixes preset"):
        sweep("fixes", (0,), sam_rho=0.5)
    with pytest.raises(ConfigError, match="--start-grid"):
        sweep("fixes", (0,), start_grid="fp4-b64@4")
    assert fixes_table(pd.DataFrame(columns=COLUMNS), "knowmem_forget").empty
    assert not tradeoff_figure(pd.DataFrame(columns=COLUMNS), "knowmem_forget").data
