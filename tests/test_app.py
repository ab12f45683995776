"""Every dashboard page through streamlit's AppTest, against a store the test builds with the CLI (micro scale).

AppTest.switch_page drops the main script's sidebar after switching (streamlit 1.67), so each page is opened as the
frame's default page through ui.frame, the function app.py calls; the browser test covers real navigation.

Widgets are addressed by their key (every widget on every page has one), never by position; outputs (code blocks,
tables, charts) have no keys and are picked by what they say or by the words above them (_code, _after)."""
import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from qru.atomic import write_json
from qru.cli import configs_for, main
from qru.command_line import command, shown
from qru.jobs import job_progress, list_jobs, read_job_file
from qru.store import RunStore
from qru.views.text import as_text, displayed

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
FRAME = "import sys\nsys.path.insert(0, {root!r})\nimport ui\nui.frame({page!r})\n"
MICRO = ["--scale", "micro", "--lr", "1e-3", "--epochs", "2", "--quiet"]


@pytest.fixture(scope="module")
def store(micro_cache, micro_models):
    """The session's micro store with a full fine-tuning and a LoRA run."""
    for method, adapter in (("ga", "full"), ("npo", "lora")):
        assert main(["--cache", str(micro_cache), "run", "--method", method, "--regularizer", "gdr",
                     "--adapter", adapter, *MICRO]) == 0
    return RunStore(micro_cache)


def _app(root, page=None) -> AppTest:
    """app.py itself, or the frame opened on ``page`` (a key of ui.PAGES), on the store ``root``."""
    if page:
        at = AppTest.from_string(FRAME.format(root=str(ROOT), page=page), default_timeout=60)
    else:
        at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["store_root"] = str(root)
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at) -> str:
    """The page's texts as a reader sees them (stored strings are escaped for Markdown, qru.views.text)."""
    return displayed(" ".join(e.value for kind in ("markdown", "caption", "info", "success", "error", "warning")
                          for e in getattr(at, kind)))


def _code(at, marker: str) -> str:
    """The one code block that holds ``marker`` (e.g. " run ", " sweep ", " deltas ")."""
    found = [c.value for c in at.code if marker in c.value]
    assert len(found) == 1, [c.value for c in at.code]
    return found[0]


def _nodes(node):
    """The page's elements in document order."""
    yield node
    children = getattr(node, "children", None) or {}
    for i in sorted(children):
        yield from _nodes(children[i])


TEXT = ("title", "header", "subheader", "heading", "markdown", "caption")


def _after(at, words: str, kind: str = "dataframe"):
    """The first output of ``kind`` (a table unless told) after the first heading, text or widget label that says
    ``words``; a table's value is its DataFrame."""
    seen = False
    for node in _nodes(at.main):
        if seen and node.type == kind:
            return node.value if kind == "dataframe" else node
        said = node.value if node.type in TEXT else getattr(node, "label", None)
        seen = seen or (isinstance(said, str) and words in said)
    raise AssertionError(f"no {kind} after {words!r}")


def test_empty_store_offers_the_demo_set_with_its_time(tmp_path):
    at = _app(tmp_path)
    assert [b for b in at.button if b.label == "Run the demo set"]
    assert "Five runs" in _texts(at) and "minutes" in _texts(at) and "snapped to the NF4 grid" in _texts(at)
    assert at.sidebar.multiselect(key="picked_input").options == []


def test_run_form_finds_a_stored_config_and_rerenders(store):
    at = _app(store.root)
    assert not [h for h in at.subheader if "First visit" in h.value]  # the store has runs: the demo set is folded
    assert any(b.label.startswith("Run (") for b in at.button)  # the papers' defaults: not in the store
    at.selectbox(key="model").select("embedded micro (seconds)").run()
    at.radio(key="preset").set_value("embedded").run()  # calibrated
    at.select_slider(key="lr-embedded-full").set_value(1e-3).run()  # learning rate (per preset and adapter)
    at.number_input(key="epochs-embedded").set_value(2).run()
    assert not at.exception
    assert "already in the store" in _texts(at)
    assert [b for b in at.button if b.label == "Show it"]
    at.radio(key="adapter").set_value("lora").run()  # LoRA shows r and alpha
    assert {n.label for n in at.number_input} >= {"LoRA r", "LoRA alpha"}


def test_sidebar_lists_runs_with_method_adapter_and_state(store):
    at = _app(store.root)
    picker = at.sidebar.multiselect(key="picked_input")
    assert len(picker.value) == 2
    assert any("GA+GDR full lr 0.001 x2 ep @ 32/8/4 bit" in o for o in picker.options)
    assert any("NPO+GDR LoRA r32" in o for o in picker.options)


def test_deltas_page_draws_histograms_and_layers_and_redraws(store):
    at = _app(store.root, "deltas")
    assert len(at.get("plotly_chart")) == 3  # histogram + one heatmap per run
    histogram = _after(at, "Tensor", "plotly_chart").proto.spec  # the chart beside the tensor picker
    figure = json.loads(histogram)
    assert len(figure["data"]) == 2 and "half a step" in figure["data"][0]["name"]
    assert len(histogram) < 300_000
    for mode in ("rel", "dq", "bnd"):
        at.radio(key="deltas-mode").set_value(mode).run()
        assert not at.exception and len(at.get("plotly_chart")) == 3
    assert "flips_by_scale" in _after(at, "Summary under").columns
    own = _after(at, "Each run under its own quantizers")  # 8-bit int8 and 4-bit FP4
    assert {"run", "start", "quantizer label", "share_kept", "cosine"} <= set(own.columns) and len(own) == 4
    assert "crossed_boundary" in _after(at, "Code flips by module type").columns  # the flip split per module type
    assert "4-bit FP4" in _texts(at) and "of a step" in _texts(at)  # the written explanation
    at.selectbox(key="q_family").select("int8").run()
    assert _after(at, "Summary under")["bits"].tolist() == [8, 8]
    at.radio(key="deltas-value").set_value("share_kept").run()
    assert not at.exception


def test_deltas_page_switches_to_any_rtn_bit_width_without_recomputing(store):
    at = _app(store.root, "deltas")
    at.selectbox(key="q_family").select("rtn-asym").run()
    assert at.select_slider(key="q_bits").options == [str(b) for b in range(2, 9)]
    flips, lines = {}, {}
    for bits in (2, 5, 8):
        at.select_slider(key="q_bits").set_value(bits).run()
        assert not at.exception
        summary = _after(at, "Summary under")
        assert summary["bits"].tolist() == [bits, bits]
        flips[bits] = summary["code_flip_rate"].tolist()
        lines[bits] = json.loads(_after(at, "Tensor", "plotly_chart").proto.spec)["layout"]["shapes"][0]["x0"]
        assert f"{bits}-bit RTN asym g64" in _texts(at)  # the group size follows FP4's block size
    assert flips[2][0] < flips[5][0] < flips[8][0]  # finer grid, more codes change
    assert lines[2] > lines[5] > lines[8]  # the half-step line moves left with the step
    at.selectbox(key="q_size").select(32).run()  # group size
    assert "g32" in _texts(at) and not at.exception
    at.session_state["deltas_request"] = {"quantizer": "nf4-b64@4"}  # as the teaching page asks
    at.run()
    assert "4-bit NF4" in _texts(at) and at.selectbox(key="q_family").value == "nf4"


def _next_page(at, page: str) -> AppTest:
    """``page`` opened after ``at`` as a page switch leaves the session: its plain keys kept, its widgets' dropped."""
    widgets = {getattr(n, "key", None) for root in (at.main, at.sidebar) for n in _nodes(root)}
    after = AppTest.from_string(FRAME.format(root=str(ROOT), page=page), default_timeout=60)
    for key, value in at.session_state.items():
        if key not in widgets:
            after.session_state[key] = value
    after.run()
    assert not after.exception, after.exception
    return after


def test_the_weight_deltas_quantizer_survives_a_visit_to_the_run_page(store):
    """The Weight-deltas choice is kept across pages in a plain session key; the Run page's quantizer radio once
    had the same name and reset it to its own default (fp4)."""
    at = _app(store.root, "deltas")
    at.selectbox(key="q_family").select("int8").run()
    at = _next_page(_next_page(at, "run"), "deltas")
    assert at.selectbox(key="q_family").value == "int8" and "8-bit int8" in _texts(at)


def test_metrics_page_tables_comparison_reference_and_csv(store):
    at = _app(store.root, "metrics")
    first = _after(at, "VerbMem, KnowMem: ROUGE-L")  # the first picked run's table
    assert set(first["model"]) == {"target", "retrain", "unlearned"} and set(first["bits"]) == {32, 8, 4}
    assert {"VerbMem", "KnowMem-forget", "KnowMem-retain (utility)", "PrivLeak", "NLL forget"} <= set(first.columns)
    assert any("Llama-2-7B" in c.value for c in at.caption)
    assert len(at.get("download_button")) == 2
    at.radio(key="metrics-view").set_value("comparison across runs").run()
    table = _after(at, "Compare 32 bits with")
    assert table["model"].tolist()[:2] == ["target", "retrain"] and len(table) == 4
    assert "Δ KnowMem-forget" in table.columns


def test_metrics_page_paper_table_of_a_recorded_sweep(store, store_copy):
    from qru.sweeps import record

    root = store_copy(store.root, ("runs",))
    copy = RunStore(root)
    configs = [copy.config(r) for r in sorted(copy.ids())]
    record(copy, "zhang2025", configs, (0,))
    at = _app(root, "metrics")
    at.radio(key="metrics-mode").set_value("paper table of a sweep").run()
    assert not at.exception
    table = _after(at, "Unlearned models: mean [")
    assert list(table[""])[:2] == ["GA+GDR", "NPO+GDR"] and {"full @32", "LoRA @4"} <= set(table.columns)
    assert "bootstrap" in _texts(at)
    at.selectbox(key="metrics-sweep-metric").set_value("verbmem").run()
    assert not at.exception and len(at.dataframe) == 2  # beside it, the papers' VerbMem numbers
    assert "Zhang et al. 2025, NEWS: full @4" in _after(at, "Beside it, the papers' numbers").columns
    at.multiselect(key="metrics-sweeps").set_value([]).run()
    assert not at.exception and any("Pick at least one sweep" in i.value for i in at.info)


def test_run_page_offers_the_new_methods_and_gptq(store):
    at = _app(store.root)
    at.radio(key="method").set_value("rmu").run()
    assert [r for r in at.radio if r.label == "Regularizer"][0].options == ["NONE"]  # its key follows the method
    assert "--method rmu --regularizer none" in _code(at, " run ")
    at.radio(key="method").set_value("simnpo").run()
    at.radio(key="quantizer").set_value("gptq").run()
    assert "--method simnpo" in _code(at, " run ") and "--quantizer gptq --group-size 0" in _code(at, " run ")
    at.slider(key="sure").set_value(0.1).run()
    at.radio(key="target-recipe").set_value("pretrain-finetune").run()
    assert "--sure 0.1" in _code(at, " run ") and "--target-recipe pretrain-finetune" in _code(at, " run ")
    assert not at.exception


def test_sweeps_page_offers_the_papers_sweeps(store):
    at = _app(store.root, "sweeps")
    assert not at.exception
    assert "sweep --preset zhang2025 --seeds 0 1 2 --scale tiny" in _code(at, " sweep ")
    assert [b for b in at.button if b.label.startswith("Run the sweep (18 of 18 runs")]
    at.multiselect(key="sweep-seeds").set_value([]).run()
    assert any("at least one seed" in e.value for e in at.error)


def test_run_page_scenario_options_and_the_demo_box(store):
    at = _app(store.root)
    assert any("five runs, both outcomes" in e.label for e in at.expander)
    at.radio(key="start-grid").set_value("nf4-b64@4").run()
    at.radio(key="weight-precision").set_value("bf16-rounded").run()
    at.radio(key="frozen").set_value(True).run()
    code = _code(at, " run ")
    assert "--start-grid nf4-b64@4 --weight-precision bf16-rounded --freeze-embeddings" in code
    at.radio(key="adapter").set_value("lora").run()
    assert not at.exception and "--freeze-embeddings" not in _code(at, " run ")  # LoRA never trains embeddings


def test_findings_page_states_the_numbers_of_the_picked_runs(store):
    at = _app(store.root, "findings")
    assert not at.exception
    table = _after(at, "Generated from the picked runs")
    assert {"run", "start", "adapter", "share kept", "code-flip rate"} <= set(table.columns)
    text = _texts(at)
    assert "share kept" in text and "**adapter** differs" in text and "Share undone" in text
    kept = store.deltas(store.ids()[0]).query("tensor == 'total'")
    assert any(f"share kept {v:.2f}" in text for v in kept["share_kept"])


def test_curves_page_offers_a_curve_job_then_draws_it_with_its_sentence(store, store_copy):
    from qru.quant.spec import QuantSpec
    from qru.controls import compute_controls

    root = store_copy(store.root)
    copy = RunStore(root)
    run_id = next(r for r in copy.ids() if r.startswith("ga-"))
    at = _app(root, "curves")
    assert [b for b in at.button if b.label.startswith("Compute the curve of")]
    assert "qru --cache" in _code(at, f"curve {run_id} ") and f"curve {run_id}" in " ".join(c.value for c in at.code)
    at.multiselect(key="curves-bits").set_value([4, 2]).run()
    at.multiselect(key="curves-kinds").set_value(["permuted"]).run()
    at.number_input(key="curves-seeds").set_value(1).run()
    assert f"curve {run_id} --bits 4 2 --kinds permuted --noise-seeds 0" in " ".join(c.value for c in at.code)
    assert "Per quantizer (6 here)" in " ".join(c.value for c in at.caption)
    compute_controls(copy, run_id, [QuantSpec(4, "fp4", 64)], ("permuted",), (0,))  # the run's own 4-bit quantizer
    at = _app(root, "curves")
    assert not at.exception and len(at.get("plotly_chart")) == 1
    text = _texts(at)
    assert "KnowMem-forget" in text or "NLL forget" in text
    assert "Measured on the target (the start of unlearning)" in text and "GGUF Q4_1" in text
    at = _app(root, "metrics")
    assert not at.exception and any("Quantized vs noise controls" in c.value for c in at.caption)
    at = _app(root, "findings")
    assert not at.exception and "GGUF Q4_1: " in _texts(at)


def test_probes_page_marks_leaks_and_shows_model_text_as_text(store, store_copy):
    root = store_copy(store.root, ("runs",))
    run_id = next(r for r in RunStore(root).ids() if r.startswith("ga-"))
    probes_path = root / "runs" / run_id / "probes.json"
    probes = json.loads(probes_path.read_text())
    probes[0]["outputs"]["unlearned@4"]["output"] = "<script>alert(1)</script> **not bold**"
    probes[0]["outputs"]["unlearned@4"]["leaked_spans"] = [[0, 8]]
    write_json(probes_path, probes)
    at = _app(root, "probes")
    at.selectbox(key="probes-run").select(run_id).run()
    at.selectbox(key="probes-order").select("corpus order").run()
    assert not at.exception and len(at.expander) == len(probes)
    (body,) = [h.proto.body for h in at.get("html") if "alert(1)" in h.proto.body]  # the edited probe's row
    assert "<mark>&lt;script&gt;</mark>alert(1)&lt;/script&gt; **not bold**" in body
    at.number_input(key="probes-min-gain").set_value(1.0).run()
    assert len(at.expander) < len(probes)


def test_failed_job_shows_its_error_and_log_tail(store, store_copy):
    root = store_copy(store.root, ("runs",))
    run_id = RunStore(root).ids()[0]
    status = json.loads((root / "runs" / run_id / "status.json").read_text())
    write_json(root / "runs" / run_id / "status.json", {**status, "state": "failed", "error": "ValueError: boom"})
    (root / "runs" / run_id / "log.txt").write_text("line 1\nTraceback: the last words\n")
    write_json(root / "jobs" / "20260101-000000-abcdef.json", {
        "job_id": "20260101-000000-abcdef", "title": "a job", "argv": ["run"], "run_ids": [run_id],
        "pid": 2 ** 22 + 7, "started": 0.0})
    at = _app(root)
    assert any("a job" in e.value and "boom" in e.value for e in at.error)
    assert "Traceback: the last words" in _code(at, "Traceback")  # the log tail (the run's command is another)


def test_run_button_launches_a_cli_job_that_finishes(store, store_copy):
    root = store_copy(store.root, ("models", "corpus"))
    at = _app(root)
    at.selectbox(key="model").select("embedded micro (seconds)").run()
    at.number_input(key="epochs-paper").set_value(1).run()
    shown_command = _code(at, " run ")
    next(b for b in at.button if b.label.startswith("Run (")).click().run()
    assert not at.exception
    job = list_jobs(RunStore(root))[0]
    assert job.argv == ["run", "--config", str(root / "jobs" / f"{job.job_id}.config.json")]  # a job file
    configs = read_job_file(job.argv[2], "run")
    assert [shown(command(c), root) for c in configs] == [shown_command]  # exactly the config the page showed
    assert configs_for(shlex.split(shown_command)[1:]) == configs
    deadline = time.time() + 300
    while job_progress(RunStore(root), job).state == "running" and time.time() < deadline:
        time.sleep(1)
    assert job_progress(RunStore(root), job).state == "done"
    at.run()
    assert "finished" in _texts(at)


def test_runs_alike_but_for_the_seed_and_a_32_bit_only_run_are_shown_without_errors(store, store_copy):
    root = store_copy(store.root)
    for seed in ("0", "1"):
        assert main(["--cache", str(root), "run", "--method", "ga", "--regularizer", "gdr", "--adapter", "full",
                     "--bits", "32", "--seed", seed, *MICRO]) == 0
    at = _app(root, "deltas")
    picker = at.sidebar.multiselect(key="picked_input")
    assert len(picker.value) == 4 and len(set(picker.options)) == len(picker.options) == 4
    at.radio(key="deltas-mode").set_value("dq").run()  # runs evaluated at 32 bits only: still under every quantizer
    assert not at.exception and len(json.loads(_after(at, "Tensor", "plotly_chart").proto.spec)["data"]) == 4
    seeds = [r for r in picker.value if r.startswith("ga-gdr-full")]
    at.sidebar.multiselect(key="picked_input").set_value(seeds[:2]).run()
    assert not at.exception and sorted(at.sidebar.multiselect(key="picked_input").value) == sorted(seeds[:2])
    at.run()
    assert sorted(at.sidebar.multiselect(key="picked_input").value) == sorted(seeds[:2])  # kept across reruns


def test_run_page_offers_rtn_and_the_bring_your_own_page_compares_checkpoints_into_the_store(
        store, micro_models, store_copy, tmp_path):
    from qru.compare import compare, deltas_config
    from qru.quant.spec import quantizer_set

    root = store_copy(store.root)
    copy = RunStore(root)
    lora = [r for r in copy.ids() if r.startswith("npo-gdr-lora")][0]
    target, adapter = str(micro_models.root / "target"), str(copy.path(lora) / "adapter")
    at = _app(root)
    at.radio(key="quantizer").set_value("rtn").run()
    assert "--quantizer rtn --group-size 128" in _code(at, " run ") and "--bits 32 4 3" in _code(at, " run ")
    at.radio(key="symmetric").set_value(True).run()  # the grid
    assert "--symmetric" in _code(at, " run ")
    at = _app(root, "bring_your_own")
    at.text_input(key="target").input(target).run()
    at.text_input(key="unlearned").input(str(tmp_path / "missing")).run()
    assert any("not found" in e.value for e in at.error) and not at.exception
    at.text_input(key="unlearned").input(adapter).run()
    at.radio(key="quantizers").set_value("bnb").run()
    assert f"qru --cache {root} deltas --quantizers bnb -- {target} {adapter}" in _code(at, " deltas ")
    assert [b for b in at.button if b.label == "Compare"]
    run_id = compare(deltas_config(target, adapter, quantizer_set(["bnb"])), copy)  # as the job would
    at.run()
    assert "already in the store" in _texts(at) and [b for b in at.button if b.label == "Show the comparison"]
    at = _app(root, "metrics")
    at.session_state["picked"] = [run_id, lora]
    at.run()
    assert not at.exception and "checkpoint comparisons" in _texts(at)
    at = _app(root, "deltas")
    at.session_state["picked"] = [run_id]
    at.run()
    picked = at.sidebar.multiselect(key="picked_input").value
    assert not at.exception and "checkpoint deltas" in _texts(at) + " ".join(picked)
    assert [o.split(" ")[0] for o in at.selectbox(key="q_family").options] == ["FP4", "NF4", "LLM.int8", "none"]


def test_run_page_real_model_choices_and_the_bring_your_own_page_imports(store, store_copy, tmp_path):
    from test_interop import _ou_eval

    root = store_copy(store.root, ("runs",))
    at = _app(root)
    at.selectbox(key="model").select("Hugging Face model").run()
    assert any("give a Hugging Face model id" in e.value for e in at.error) and not at.exception
    at.text_input(key="hf-model").input("org/target").run()
    at.text_input(key="hf-retrain").input("org/retrain").run()
    code = _code(at, " run ")
    assert "--model org/target --retrain-model org/retrain --corpus muse-news" in code
    assert "time stated when it starts" in " ".join(b.label for b in at.button)
    at.selectbox(key="model").select("SmolLM2-135M (packaged)").run()
    assert "--scale small" in _code(at, " run ") and "--model smollm2" in _code(at, " run ")
    assert "tens of minutes" in _texts(at)
    at.selectbox(key="model").select("MUSE-Books from the hub").run()
    assert "--corpus muse-books" in _code(at, " run ")
    # import box: the command, then the import as the job would run it, then the imported entry on the pages
    at = _app(root, "bring_your_own")
    full, quant = _ou_eval(tmp_path / "full", 0.1, 0.3, 5.0), _ou_eval(tmp_path / "q4", 0.4, 0.55, -90.0)
    at.text_area(key="entries").input(f"unlearned@32={full}\nunlearned@4={quant}").run()
    at.text_input(key="label").input("NPO elsewhere").run()
    assert f"import --name 'NPO elsewhere' -- unlearned@32={full} unlearned@4={quant}" in _code(at, " import ")
    assert [b for b in at.button if b.label == "Import"]
    assert main(["--cache", str(root), "import", "--name", "NPO elsewhere", "--", f"unlearned@32={full}",
                 f"unlearned@4={quant}"]) == 0
    run_id = [r for r in RunStore(root).ids() if r.startswith("import-")][0]
    at.run()
    assert "This import is already in the store: imported open-unlearning: NPO elsewhere" in _texts(at)
    assert [b for b in at.button if b.label == "Show the import"]
    lora = [r for r in RunStore(root).ids() if r.startswith("npo-gdr-lora")][0]
    for page in ("metrics", "probes", "deltas"):
        at = _app(root, page)
        at.session_state["picked"] = [run_id, lora]
        at.run()
        assert not at.exception, page
        if page == "metrics":
            tables = [d.value for d in at.dataframe]
            assert any(set(t["bits"]) == {32, 4} and t["VerbMem"].max() == pytest.approx(40.0) for t in tables
                       if "VerbMem" in t.columns)
        if page == "probes":
            at.selectbox(key="probes-run").select(run_id).run()
            assert not at.exception and len(at.expander) == 2
        if page == "deltas":
            assert "imported results have metrics and generations only" in _texts(at)


MARKUP = "x ![t](http://host/x.png) [docs](http://host/y) <img src=http://host/z.png> **bold** :red[r]"


def _markdown(at) -> list[str]:
    """Every string the page hands to streamlit's Markdown: texts, headings, alerts, progress texts, the labels of
    widgets, buttons and expanders, radio options (selectbox and multiselect options, code and tables are plain)."""
    said = []
    for root in (at.main, at.sidebar):
        for node in _nodes(root):
            if node.type in TEXT + ("info", "success", "warning", "error"):
                said.append(node.value)
            elif node.type == "progress":
                said.append(node.proto.text)
            elif isinstance(getattr(node, "label", None), str):
                said.append(node.label)
            said += node.options if node.type == "radio" else []
    return said


def _as_text(at, where: str) -> str:
    """The page's Markdown, checked to hold no live Markdown or HTML from MARKUP: no link, image, tag, bold text
    or bare URL left unescaped."""
    said = _markdown(at)
    bare = [re.sub(r"\\.", "", s) for s in said]  # escaped characters left out
    live = [s for s, b in zip(said, bare) if any(m in b for m in ("](http", "<img", "**bold", "http://", ":red["))]
    assert not live, (where, live)
    return " ".join(said)


def test_stored_strings_are_shown_as_text_on_every_page(store, store_copy, tmp_path):
    """Issue 18: an import named with Markdown and HTML, a job's title, error and log line, shown as text."""
    from test_interop import _ou_eval

    root = store_copy(store.root, ("runs",))
    full, quant = _ou_eval(tmp_path / "full", 0.1, 0.3, 5.0), _ou_eval(tmp_path / "q4", 0.4, 0.55, -90.0)
    assert main(["--cache", str(root), "import", "--name", MARKUP, "--", f"unlearned@32={full}",
                 f"unlearned@4={quant}"]) == 0
    run_id = [r for r in RunStore(root).ids() if r.startswith("import-")][0]
    label = RunStore(root).info(run_id).label
    lora = [r for r in RunStore(root).ids() if r.startswith("npo-gdr-lora")][0]
    for page in ("metrics", "deltas", "probes", "findings"):
        at = _app(root, page)
        at.session_state["picked"] = [run_id, lora]
        at.run()
        assert not at.exception, page
        said = _as_text(at, page)
        assert any(label in o for o in at.sidebar.multiselect(key="picked_input").options)  # plain text: as it is
        if page == "probes":
            assert label in at.selectbox(key="probes-run").options  # a plain-text widget
        else:
            assert as_text(label) in said, page
    # the job panel: a finished import job, a failed and a running analysis job, titled and logged with MARKUP
    jobs = root / "jobs"
    write_json(jobs / "20260101-000000-aaaaaa.json", {"job_id": "20260101-000000-aaaaaa", "title": label,
                                                      "argv": ["import"], "run_ids": [run_id], "pid": 2 ** 22 + 7,
                                                      "started": 0.0})
    for job_id, pid in (("20260101-000001-bbbbbb", 2 ** 22 + 7), ("20260101-000002-cccccc", os.getpid())):
        write_json(jobs / f"{job_id}.json", {"job_id": job_id, "title": f"curve of {MARKUP}", "argv": ["curve"],
                                             "run_ids": [], "pid": pid, "started": 0.0})
        (jobs / f"{job_id}.log").write_text(f"qru: {MARKUP}\n")
    for page in (None, "bring_your_own"):
        at = _app(root, page)
        said = _as_text(at, page or "run")
        assert as_text(label) in said and as_text(f"curve of {MARKUP}") in said and as_text(f"qru: {MARKUP}") in said
    at.text_area(key="entries").input(f"unlearned@32={full}\nunlearned@4={quant}").run()
    at.text_input(key="label").input(MARKUP).run()
    assert f"This import is already in the store: {label}" in _texts(at)
    _as_text(at, "bring_your_own")


def test_run_page_prompt_format_and_subsampling_build_the_command(store):
    at = _app(store.root)
    at.selectbox(key="model").select("embedded micro (seconds)").run()
    assert at.radio(key="prompt-format-healed").value == "healed"  # the embedded corpus's default
    assert "--prompt-format" not in _code(at, " run ")
    at.radio(key="prompt-format-healed").set_value("muse").run()
    at.number_input(key="max-eval-items").set_value(5).run()
    at.number_input(key="max-train-tokens").set_value(20000).run()
    code = _code(at, " run ")
    assert "--max-train-tokens 20000" in code and "--prompt-format muse --max-eval-items 5" in code
    at.selectbox(key="model").select("MUSE-layout folder").run()
    assert at.radio(key="prompt-format-muse").value == "muse"  # MUSE data: MUSE's literal prompts by default


def test_metrics_page_names_the_prompt_format_and_marks_mixed_formats(store, store_copy):
    root = store_copy(store.root)
    assert main(["--cache", str(root), "run", "--method", "ga", "--prompt-format", "muse", "--bits", "32", "4",
                 "--max-steps", "2", *MICRO]) == 0
    muse = [i.run_id for i in RunStore(root).list() if "muse prompts" in i.label]
    healed = [r for r in RunStore(root).ids() if r.startswith("ga-gdr-full") and r not in muse]
    assert len(muse) == 1 and healed
    (root / "runs" / healed[0] / "plan.json").unlink(missing_ok=True)  # as a run stored before qru counted cuts
    at = _app(root, "metrics")
    at.session_state["picked"] = [muse[0], healed[0]]
    at.run()
    said = _texts(at)
    assert "Prompt format: muse (MUSE's literal prompt strings" in said
    assert "Every evaluation item fit the model." in said
    assert "Prompt format: healed" in said and "not recorded for this run" in said
    at.radio(key="metrics-view").set_value("comparison across runs").run()
    warning = displayed(" ".join(w.value for w in at.warning))
    assert "different prompt formats" in warning and "muse: " in warning and "healed: " in warning
