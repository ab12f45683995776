"""Dashboard data helpers on hand-made inputs: probe escaping and marking, came-back highlighting, histogram series,
run-form arguments and time estimates."""
import numpy as np
import pandas as pd
import pytest

from qru.cli import configs_for
from qru.config import ConfigError
from qru.store import RunStore
from qru.views.delta_charts import hist_series, histogram_figure, layer_table
from qru.views.metric_tables import came_back, came_back_cells, changes, comparison, comparison_mask, run_table
from qru.views.probe_view import leak_scores, mark_spans, ordered, output_keys, probe_html
from qru import recipes
from qru.command_line import command
from qru.views.runs import (RUN_SECONDS, data_choices, estimate_seconds, import_entries, quantizer_choices,
                            run_seconds)


def test_mark_spans_escapes_model_text_and_marks_only_spans():
    text = "<script>alert(1)</script> **bold** and the leaked words here"
    start = text.index("the leaked")
    out = mark_spans(text, [[start, len(text)]])
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert out.count("<mark>") == 1 and out.endswith("<mark>the leaked words here</mark>")
    assert "**bold**" in out  # shown as text (st.html renders no Markdown)


def test_mark_spans_clips_overlapping_and_out_of_range_spans():
    assert mark_spans("abcdef", [[1, 3], [2, 5], [4, 99]]) == "a<mark>bc</mark><mark>de</mark><mark>f</mark>"
    assert mark_spans("abc", []) == "abc"


def _probe(gt, outputs):
    return {"prompt": "p", "gt": gt, "outputs": {k: {"output": o, "rougeL_f1": r, "leaked_spans": []}
                                                 for k, (o, r) in outputs.items()}}


def test_probes_sort_by_what_came_back_after_quantization():
    a = _probe("x", {"target@32": ("x", 1.0), "unlearned@32": ("", 0.1), "unlearned@4": ("x", 0.9)})
    b = _probe("y", {"target@32": ("y", 1.0), "unlearned@32": ("", 0.5), "unlearned@4": ("y", 0.6)})
    assert leak_scores(a) == {"low": 0.9, "gain": pytest.approx(0.8), "leak": 0.0, "leak_gain": 0.0}
    assert [i for i, _ in ordered([b, a], "came back most after quantization")] == [1, 0]  # ROUGE-L breaks ties
    b["outputs"]["unlearned@4"]["leaked_spans"] = [[0, 1]]  # b reproduces its ground truth at 4 bits
    assert leak_scores(b)["leak_gain"] == 1.0
    assert [i for i, _ in ordered([a, b], "came back most after quantization")] == [1, 0]
    assert [i for i, _ in ordered([b, a], "corpus order", min_gain=0.5)] == [1]
    assert output_keys([a]) == ["target@32", "unlearned@32", "unlearned@4"]
    html = probe_html(_probe("<b>gt</b>", {"unlearned@4": ("<img src=x onerror=alert(1)>", 0.0)}), ["unlearned@4"])
    assert "<img" not in html and "&lt;b&gt;gt&lt;/b&gt;" in html


def _metrics():
    rows = []
    for model, base in (("target", 90.0), ("retrain", 20.0), ("unlearned", 30.0)):
        for bits, shift in ((32, 0.0), (8, 0.2), (4, 10.0 if model == "unlearned" else 0.5)):
            rows.append({"model": model, "bits": bits, "quant": "fp4" if bits == 4 else "none",
                         "verbmem": base + shift, "knowmem_forget": base + shift, "knowmem_retain": 50.0,
                         "privleak": -50.0 - shift, "nll_forget": 1.0 - shift / 100, "nll_retain": 1.0})
    return pd.DataFrame(rows)


def test_came_back_marks_only_changes_toward_remembering_beyond_noise():
    table = run_table(_metrics())
    assert list(table["model"]) == ["target"] * 3 + ["retrain"] * 3 + ["unlearned"] * 3
    mask = came_back_cells(table)
    flagged = table[mask["knowmem_forget"]]
    assert list(zip(flagged["model"], flagged["bits"])) == [("unlearned", 4)]
    assert mask.loc[flagged.index[0], "privleak"] and mask.loc[flagged.index[0], "nll_forget"]
    assert not mask["knowmem_retain"].any()
    change = changes(table)
    assert change[(change.model == "unlearned") & (change.bits == 4)]["verbmem"].item() == pytest.approx(10.0)
    assert came_back(change)["verbmem"].sum() == 1


def test_comparison_lists_target_retrain_once_and_each_run():
    table = comparison({"full": _metrics(), "LoRA": _metrics()}, 4)
    assert list(table["model"]) == ["target", "retrain", "full", "LoRA"]
    assert table.loc[2, "Δ KnowMem-forget"] == pytest.approx(10.0)
    assert comparison_mask(table)["Δ KnowMem-forget"].tolist() == [False, False, True, True]


NF4 = "nf4-b64@4"


def _hist_run():
    edges = np.logspace(-10, 0, 101)
    counts = np.zeros((2, 100), dtype=np.int64)
    counts[:, 40] = [6, 6]
    deltas = pd.DataFrame([{"quantizer": NF4, "bits": 4, "quant": "nf4", "tensor": "total", "numel": 10, "zero_delta": 4,
                            "median_step": 0.02, "below_half_step": 0.7, "layer": -1, "module": "all",
                            "code_flip_rate": 0.3, "code_flips": 3, "flips_scale": 1, "share_kept": 0.9,
                            "mean_abs_delta": 1.0, "cosine": 1.0, "noise_ratio": 2.0}])
    hists = {"abs_edges": edges, "rel_edges": np.logspace(-6, 2, 81), "tensors": np.array(["a", "total"]),
             "abs": counts, f"rel_{NF4}": np.zeros((2, 80), dtype=np.int64), f"dq_{NF4}": counts // 2,
             f"bnd_{NF4}": counts}
    return hists, deltas


def test_hist_series_reads_the_stored_view_and_threshold():
    hists, deltas = _hist_run()
    s = hist_series("run", hists, deltas, "total", "abs", NF4)
    assert s.line == pytest.approx(0.01) and s.zeros == 4 and "70.0% of weights below half a step" in s.note
    assert hist_series("run", hists, deltas, "total", "rel", NF4).line == 0.5
    dq = hist_series("run", hists, deltas, "total", "dq", NF4)
    assert dq.zeros == 7 and "30.0% of weights changed code" in dq.note and "30.0% changed value" in dq.note
    bnd = hist_series("run", hists, deltas, "total", "bnd", NF4)
    assert bnd.line == 1.0 and "≥60.0% of target weights" in bnd.note  # bin 40 (1e-6) lies below mean |dW| 1
    from qru.views.delta_charts import flip_summary
    assert flip_summary(deltas.iloc[0])["flips_by_scale"] == pytest.approx(1 / 3)
    assert np.isnan(flip_summary(deltas.drop(columns="flips_scale").iloc[0])["flips_by_scale"])
    del hists[f"dq_{NF4}"]
    with pytest.raises(KeyError, match="dequantized"):
        hist_series("run", hists, deltas, "total", "dq", NF4)
    fig = histogram_figure([s], "abs", "t")
    assert len(fig.data) == 1 and fig.data[0].y[0] == pytest.approx(60.0)  # % of all weights
    assert len(fig.to_json()) < 50_000


def test_layer_table_is_layer_by_module():
    deltas = pd.DataFrame([{"quantizer": NF4, "bits": 4, "tensor": f"l{l}.{m}", "layer": l, "module": m,
                            "code_flip_rate": l / 10} for l in range(2) for m in ("up_proj", "q_proj")])
    table = layer_table(deltas, NF4, "code_flip_rate")
    assert list(table.columns) == ["q_proj", "up_proj"] and table.loc[1, "q_proj"] == pytest.approx(0.1)


def _form(model, method, regularizer, adapter, lr, epochs, bits, quantizer, lora_r=32, lora_alpha=32, hf=None):
    """The config of a Run-page form, built as the page builds it (qru.views.runs choices -> qru.recipes)."""
    return recipes.run_config(**data_choices(model, "", hf), method=method, regularizer=regularizer, adapter=adapter,
                              lr=lr, epochs=epochs, lora_r=lora_r, lora_alpha=lora_alpha,
                              **quantizer_choices(quantizer, bits))


def test_form_choices_build_the_config_and_its_command_builds_it_again():
    config = _form("embedded micro (seconds)", "npo", "klr", "lora", 3e-4, 2, [32, 4], "nf4", 8, 16)
    u = config.unlearn
    assert (u.method, u.regularizer, u.adapter, u.lr, u.epochs, u.lora_r, u.lora_alpha) == \
        ("npo", "klr", "lora", 3e-4, 2, 8, 16)
    assert config.bits == (32, 4) and config.quant_type_4bit == "nf4" and config.model.hidden_size == 64
    assert configs_for(command(config)) == [config]
    with pytest.raises(ConfigError, match="folder"):
        data_choices("MUSE-layout folder")
    with pytest.raises(ConfigError, match="bit width"):
        _form("embedded tiny (default)", "ga", "gdr", "full", 1e-5, 5, [], "fp4")
    assert len(configs_for(["demo", "--scale", "micro"])) == 5


def test_form_choices_for_real_models_and_data(tmp_path):
    hf = {"model": "org/target", "retrain": "org/retrain", "corpus": "muse-books", "trust_remote_code": True}
    config = _form("Hugging Face model", "npo", "gdr", "full", 1e-5, 5, [32, 4], "fp4", hf=hf)
    m = config.model
    assert (m.source, m.retrain, m.trust_remote_code, m.max_len) == ("org/target", "org/retrain", True, 2048)
    assert config.corpus.source == "muse-books" and "[muse-books, target, retrain retrain, muse prompts]" in config.label
    smol = _form("SmolLM2-135M (packaged)", "ga", "gdr", "lora", 1e-4, 5, [32, 4], "fp4")
    assert smol.model.source == "smollm2" and smol.corpus.n_forget == 5
    news = _form("MUSE-News from the hub", "ga", "gdr", "full", 1e-4, 5, [32], "fp4")
    assert news.corpus.source == "muse-news" and news.model.source == "embedded"
    for built in (config, smol, news):
        assert configs_for(command(built)) == [built]
    with pytest.raises(ConfigError, match="model id"):
        data_choices("Hugging Face model", "", {"model": " "})
    with pytest.raises(ConfigError, match="folder"):
        data_choices("Hugging Face model", "", {"model": "org/x", "corpus": "folder"})
    store = RunStore(tmp_path)
    assert estimate_seconds(store, [config], models_built=True) is None  # unknown until one has run here
    assert estimate_seconds(store, [smol], models_built=False) > 600
    assert estimate_seconds(store, [news], models_built=True) is None  # MUSE data: the run states its plan


def test_import_entries_lines():
    assert import_entries(" a \n\nunlearned@4=b\n") == ["a", "unlearned@4=b"]
    with pytest.raises(ConfigError, match="at least one"):
        import_entries("\n  \n")


def test_estimate_uses_defaults_then_the_store_own_timings(tmp_path):
    store = RunStore(tmp_path)
    configs = configs_for(["demo", "--scale", "micro"])
    assert estimate_seconds(store, configs, models_built=True) == pytest.approx(5 * RUN_SECONDS["micro"])
    assert estimate_seconds(store, configs, models_built=False) > 5 * RUN_SECONDS["micro"]
    assert run_seconds({"started": "2026-01-01T10:00:00", "finished": "2026-01-01T10:00:30"}) == 30
    assert run_seconds({"started": "garbage"}) is None


def test_comparison_keeps_separate_references_for_runs_on_other_models():
    other = _metrics()
    other.loc[other["model"] == "target", "verbmem"] += 5
    eight = _metrics()
    eight = eight[eight["bits"] == 8]  # neither 32 nor 4 bits: no reference rows of its own
    table = comparison({"8-bit only": eight, "full": _metrics(), "LoRA": _metrics(), "big": other}, 4)
    assert list(table["model"]) == ["target", "target (big)", "retrain", "8-bit only", "full", "LoRA", "big"]


def test_picker_labels_are_unique_and_unreadable_runs_say_why():
    from qru.store import RunInfo
    from qru.views.runs import picker_labels

    infos = [RunInfo("a", "GA full", "done", "", 1, "", ""), RunInfo("b", "GA full", "done", "", 1, "", ""),
             RunInfo("c", "GA full", "running", "", 0.5, "", ""), RunInfo("d", "?", "failed", "", 0, "", "bad json")]
    labels = picker_labels(infos)
    assert len(set(labels.values())) == 4
    assert labels["a"] == "GA full · a" and labels["c"] == "GA full [running]" and "bad json" in labels["d"]


def test_estimate_scales_with_epochs():
    from qru.views.runs import estimate_seconds

    store = RunStore("/nonexistent-store")
    one, ten = (configs_for(["run", "--scale", "micro", "--epochs", str(e)]) for e in (1, 10))
    assert estimate_seconds(store, ten, True) == pytest.approx(10 * estimate_seconds(store, one, True))


def test_module_table_splits_flips_and_sums_per_module_type():
    from qru.views.flip_analysis import module_table

    rows = [{"quantizer": NF4, "tensor": f"l{l}.{m}", "module": m, "numel": 100, "code_flips": 10 * (l + 1),
             "flips_boundary": 6 * (l + 1), "flips_scale": 4 * (l + 1), "dw_sq": 1.0, "dq_sq": 4.0, "dot": 0.5 * l}
            for l in range(2) for m in ("up_proj", "q_proj")]
    rows.append({**rows[0], "tensor": "total", "numel": 10**6})  # the stored total row is not double counted
    table = module_table(pd.DataFrame(rows), NF4)
    assert table["module"].tolist() == ["q", "up", "all"]
    q = table.iloc[0]
    assert q["weights"] == 200 and q["code_flip_rate"] == pytest.approx(30 / 200)
    assert q["crossed_boundary"] == pytest.approx(18 / 200) and q["scale_changed"] == pytest.approx(12 / 200)
    assert q["share_kept"] == pytest.approx(0.5 / 2)
    assert table.iloc[2]["weights"] == 400 and module_table(pd.DataFrame(rows), "int8@8").empty


def test_flip_thresholds_read_the_boundary_distance_histogram():
    from qru.views.flip_analysis import explain, flip_thresholds

    edges = np.logspace(-10, 0, 101)
    counts = np.zeros(100, dtype=np.int64)
    counts[40], counts[60] = 4, 5  # 4 weights within 1.26e-6, 5 more within 1.26e-4; 1 exactly on a boundary
    limits = flip_thresholds(counts, edges, 10, (0.05, 0.5, 0.9))
    assert limits[0.05] == pytest.approx(edges[1])  # the weight on a boundary: the first bin's edge
    assert limits[0.5] == pytest.approx(edges[41]) and limits[0.9] == pytest.approx(edges[61])
    assert np.isnan(flip_thresholds(counts, edges, 0, (0.5,))[0.5])  # no weights: NaN, not a guess
    row = pd.Series({"median_step": 0.01, "mean_abs_delta": 1e-4, "below_half_step": 0.99, "numel": 1000,
                     "code_flips": 10, "flips_boundary": 8, "flips_scale": 2, "share_kept": 0.97, "noise_ratio": 3.0})
    text = explain(row, "4-bit NF4", limits)
    assert "0.01 of a step" in text and "kept the update on average" in text and "0.80%" in text
    assert "erased most" in explain(row.replace(0.97, 0.05), "4-bit NF4")
    assert "no quantization" in explain(pd.Series({"median_step": float("nan"), "mean_abs_delta": 1e-4}), "32-bit")


def test_quantizer_choices_group_stored_keys():
    from qru.views.quantizers import Choice, available, default_key

    keys = ["none@32", "fp4-b64@4", "int8@8", "rtn-asym-g32@3", "rtn-asym-g0@3", "rtn-asym-g32@8", "junk"]
    options = available(keys)
    assert list(options) == ["fp4", "int8", "rtn-asym", "none"]
    assert list(options["rtn-asym"]) == [8, 3] and options["rtn-asym"][3] == {0: "rtn-asym-g0@3",
                                                                             32: "rtn-asym-g32@3"}
    assert Choice.of("fp4-b64@4") == Choice("fp4", 4, 64)
    assert default_key(keys, ["nf4-b64@4", "int8@8"]) == "int8@8"
    assert default_key(keys, []) == "fp4-b64@4" and default_key(["none@32"], []) == "none@32"


def test_as_text_shows_stored_strings_as_text_never_as_markdown():
    """Labels, paths and messages in Markdown (st.markdown, captions, alerts, labels) read as the text they are:
    no link, image, HTML, emphasis, autolinked bare URL or e-mail, streamlit icon or arrow (U+2060 is invisible)."""
    import html
    import re

    from qru.views.text import JOINER, as_plot_text, as_text, displayed

    MarkdownIt = pytest.importorskip("markdown_it").MarkdownIt
    raw = ("x ![t](http://h/x.png) [docs](http://h/y) <img src=http://h/z.png> **bold** _it_ `code` # not a heading "
           "| a | b | $x^2$ :red[red] :streamlit: :material/home: :smile: a -> b -- c <https://h/auto> www.h.org "
           "a@b.co &amp; C:\\path\\x \\*kept\\* 1. not a list\n- nor a bullet\n2) nor a list\n---\n> nor a quote")
    escaped = as_text(raw)
    assert displayed(escaped) == raw and displayed(as_text("\\")) == "\\"
    assert as_text("GA+GDR full lr 0.001, 4-bit NF4, GGUF Q4_1") == "GA+GDR full lr 0.001, 4-bit NF4, GGUF Q4_1"
    bare = re.sub(r"\\.", "", escaped)  # what is left unescaped: no Markdown character but inside a word
    assert not re.search(r"[][()*`#|$<>&!~:{}=]|(?<![^\W_])[-_.+]|[-_.+](?![^\W_])", bare), bare
    rendered = MarkdownIt("commonmark", {"html": True}).render(escaped)  # raw HTML allowed: escaping must hold
    assert not re.search(r"<(a|img|strong|em|code|h\d|ol|ul|hr|blockquote)\b", rendered), rendered
    text = html.unescape(re.sub(r"</?p>", "", rendered)).strip()
    assert text.replace(JOINER, "") == raw  # CommonMark shows exactly the stored string
    # GitHub's autolinks and streamlit's text rules see the text after escapes: the word joiner stops them
    assert not re.search(r"https?://|www(?=\.)|[-.\w+]+@[-\w]+\.|:(streamlit|smile|material)|(^|\s)(->|--)(\s|$)",
                         text, re.IGNORECASE)
    assert as_plot_text("<a href='http://h'>x</a> & <b>") == "&lt;a href='http://h'&gt;x&lt;/a&gt; &amp; &lt;b&gt;"
