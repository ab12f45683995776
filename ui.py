"""Streamlit glue shared by app.py and pages/: the sidebar (store and run picker), cached loaders keyed by run id and
file mtime, and error display. No computation: everything comes from qru.store and qru.views."""
from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st

from qru.jobs import Job, JobProgress, job_progress, list_jobs
from qru.queue import cancel_process, tickets
from qru.store import RunInfo, RunStore, StoreError
from qru.views.quantizers import FAMILIES, Choice, available, choice_of, default_key, size_label
from qru.views.runs import picker_labels
from qru.views.text import as_text

PICK_DEFAULT = 4  # runs picked on a first visit: the newest finished ones
PAGES = {"run": ("Run", ":material/play_arrow:"), "sweeps": ("Sweeps", ":material/stacked_line_chart:"),
         "bring_your_own": ("Bring your own", ":material/upload_file:"),
         "deltas": ("Weight deltas", ":material/bar_chart:"),
         "metrics": ("Metrics", ":material/table_chart:"), "findings": ("Findings", ":material/lightbulb:"),
         "tradeoff": ("Trade-off", ":material/scatter_plot:"),
         "curves": ("Curves", ":material/show_chart:"), "training": ("Training", ":material/timeline:"),
         "probes": ("Probes", ":material/manage_search:"),
         "teaching": ("Why 4-bit forgets to forget", ":material/school:")}


_IN_FRAME = []  # non-empty while ui.frame runs a page


def frame(default: str = "run") -> None:
    """The dashboard: navigation over pages/<name>.py (``default`` first shown), the sidebar, the chosen page."""
    folder = Path(__file__).resolve().parent / "pages"
    page = st.navigation([st.Page(folder / f"{name}.py", title=title, icon=icon, default=name == default)
                          for name, (title, icon) in PAGES.items()])
    sidebar()
    _IN_FRAME.append(page)
    try:
        page.run()
    finally:
        _IN_FRAME.pop()


def in_frame() -> None:
    """Called first by every page: if streamlit ran a pages/ file by itself (its older pages/ folder mode, e.g. a
    page's URL opened on a freshly started server), run the frame instead, whose navigation picks the same page from
    the URL (no "page not found"), then stop."""
    if not _IN_FRAME:
        frame()
        st.stop()


def store() -> RunStore:
    """The run store named in the sidebar (default ./cache or $QRU_CACHE)."""
    return RunStore(st.session_state.get("store_root") or os.environ.get("QRU_CACHE") or "cache")


# The sidebar's values live under plain session keys ("store_root", "picked"), mirrored into and out of the widgets
# ("store_input", "picked_input"): widget state is dropped on st.switch_page, plain keys are not.
def _keep(widget: str, key: str):
    return lambda: st.session_state.update({key: st.session_state[widget]})


def sidebar() -> None:
    """The store location and the run picker; they stay put across pages (ui.frame draws them on every run)."""
    st.session_state.setdefault("store_root", os.environ.get("QRU_CACHE") or "cache")
    with st.sidebar:
        st.session_state["store_input"] = st.session_state["store_root"]
        st.text_input("Run store", key="store_input", on_change=_keep("store_input", "store_root"),
                      help="folder of the run store (default ./cache)")
        current = store()
        try:
            if current.root.exists() and not current.root.is_dir():
                st.error(f"The store {as_text(current.root)} is not a folder.")
                return
            infos = {i.run_id: i for i in current.list()}
        except OSError as exc:
            st.error(as_text(f"Cannot read the store {current.root}: {exc.strerror or exc}"))
            return
        picked = st.session_state.get("picked", []) + st.session_state.pop("pick_next", [])
        if st.session_state.get("picked_store") != str(current.root):  # first visit, or another store: defaults
            picked += [i.run_id for i in infos.values() if i.state == "done"][:PICK_DEFAULT]
            st.session_state["picked_store"] = str(current.root)
        st.session_state["picked"] = st.session_state["picked_input"] = [r for r in dict.fromkeys(picked)
                                                                          if r in infos]
        labels = picker_labels(list(infos.values()))  # options are plain text: shown as they are
        st.multiselect("Runs to show", list(infos), key="picked_input", format_func=labels.get,
                       on_change=_keep("picked_input", "picked"),
                       help="one run, or several to compare (e.g. full fine-tuning vs LoRA)",
                       placeholder="no runs yet" if not infos else "pick runs")
        st.caption(f"{len(infos)} run(s) in {as_text(current.runs)}")


def picked_runs() -> list[RunInfo]:
    """The picked runs that finished; a note for picked runs that did not (yet)."""
    current = store()
    try:
        if not current.root.is_dir():
            return []
    except OSError:
        return []
    infos = [current.info(r) for r in st.session_state.get("picked", [])]
    pending = [i for i in infos if i.state != "done"]
    if pending:
        st.caption("Not shown: " + as_text("; ".join(f"{i.run_id} (unreadable: {i.error})" if i.label == "?" else
                                                    f"{i.label} [{i.state}]" for i in pending)))
    return [i for i in infos if i.state == "done"]


def require_runs(metrics: bool = False, deltas: bool = False) -> list[RunInfo]:
    """The picked finished runs, or stop the page with a hint to pick or start one. With ``metrics``, checkpoint
    comparisons (``qru deltas``: weight deltas only) are left out with a note; with ``deltas``, imported results
    (``qru import``: metrics only) are."""
    runs = picked_runs()
    if metrics:
        compared = [r for r in runs if r.run_id.startswith("deltas-")]
        if compared:
            st.caption("Not shown (checkpoint comparisons have weight deltas only, see **Weight deltas**): "
                       + as_text("; ".join(r.label for r in compared)))
        runs = [r for r in runs if not r.run_id.startswith("deltas-")]
    if deltas:
        imported = [r for r in runs if r.run_id.startswith("import-")]
        if imported:
            st.caption("Not shown (imported results have metrics and generations only, see **Metrics** and "
                       "**Probes**): " + as_text("; ".join(r.label for r in imported)))
        runs = [r for r in runs if not r.run_id.startswith("import-")]
    if not runs:
        st.info("Pick one or more finished runs in the sidebar, or start one on the **Run** page.")
        st.stop()
    return runs


def _mtime(root: str, run_id: str, name: str) -> int:
    try:
        return (RunStore(root).path(run_id) / name).stat().st_mtime_ns
    except (OSError, StoreError):
        return 0


@st.cache_data(max_entries=128, show_spinner=False)
def _load(root: str, run_id: str, what: str, mtime: int):
    runs = RunStore(root)
    return {"metrics": runs.metrics, "deltas": runs.deltas, "histograms": runs.histograms,
            "probes": runs.probes, "samples": lambda r: runs.read_json(r, "samples.json")}[what](run_id)


FILES = {"metrics": "metrics.json", "deltas": "deltas.parquet", "histograms": "deltas_hist.npz",
         "probes": "probes.json", "samples": "samples.json"}


def load(run_id: str, what: str, stop: bool = True):
    """A stored table of a run ("metrics", "deltas", "histograms", "probes", "samples"), cached until its file changes.
    If the file is missing or corrupt: shows the error, then stops the page (or returns None if not ``stop``)."""
    root = str(store().root)
    try:
        return _load(root, run_id, what, _mtime(root, run_id, FILES[what]))
    except StoreError as exc:
        st.error(as_text(exc))
        if stop:
            st.stop()
        return None


def pick(run_ids: list[str]) -> None:
    """Add runs to the sidebar's picker on the next full rerun (the widget cannot change once drawn)."""
    st.session_state["pick_next"] = list(dict.fromkeys(st.session_state.get("pick_next", []) + list(run_ids)))


def jobs_panel(limit: int = 4) -> None:
    """Live progress of the store's newest jobs, redrawn every 2 s while one runs (read from the runs' status files,
    so a browser refresh or another tab shows the same)."""
    current = store()
    try:
        jobs = list_jobs(current)[:limit]
    except OSError:  # the sidebar reports an unreadable store
        return
    states = {job.job_id: job_progress(current, job) for job in jobs}
    running = {j for j, p in states.items() if p.state in ("running", "queued")}
    finished = st.session_state.get("running_jobs", set()) - running
    st.session_state["running_jobs"] = running
    if finished:  # a job ended since the last redraw: pick its runs and redraw the whole page
        pick([r for job in jobs if job.job_id in finished and states[job.job_id].state == "done" for r in job.run_ids])
        st.rerun(scope="app")
    for job in jobs:
        _job_line(job, states[job.job_id])
    covered = {r for job in jobs for r in job.run_ids}
    for info in current.list():  # runs started elsewhere (e.g. `qru run` in a shell)
        if info.state in ("running", "queued") and info.run_id not in covered:
            st.progress(info.progress, text=f"**{as_text(info.label)}** (started outside the dashboard) — "
                                            f"{as_text(info.stage)}")
    ours = {job.pid for job in jobs}
    for ticket in tickets(current.root):  # waiting commands from a shell
        if ticket.state == "waiting" and ticket.pid not in ours:
            st.caption(f"waiting in the queue (started outside the dashboard): `{as_text(ticket.title)}`")


def _cancel_button(job: Job) -> None:
    if st.button("Cancel", key=f"cancel-{job.job_id}", help="stop this job (qru cancel): its run is recorded as "
                                                             "cancelled; the same job resumes from what was cached"):
        cancel_process(store().root, job.pid, job.pid_start)
        st.toast(f"asked {job.title} to stop")


def _job_line(job: Job, progress: JobProgress) -> None:
    started = time.strftime("%H:%M", time.localtime(job.started))
    title = f"**{as_text(job.title)}** (started {started})"
    if progress.state in ("running", "queued"):
        bar, button = st.columns([6, 1])
        if progress.state == "running":
            bar.progress(progress.fraction, text=f"{title} — {as_text(progress.stage)}")
        else:
            bar.info(f"{title} — queued: {as_text(progress.stage)}")
        with button:
            _cancel_button(job)
    elif progress.state == "cancelled":
        st.warning(f"{title} was cancelled: starting it again continues from what was cached.")
    elif progress.state == "failed":
        st.error(f"{title} failed: {as_text(progress.error)}")
        with st.expander("log tail"):
            st.code(progress.log_tail or "(no log)", language=None)
    else:
        st.success(f"{title} finished: its runs are in the sidebar's picker.")


def names(runs: list[RunInfo]) -> dict[str, str]:
    """Run id -> display name: the method part of the label where that tells the picked runs apart, else the whole
    label, with the id appended where two picked runs share a label. Raw text: escape it (qru.views.text) where
    it goes into Markdown."""
    short = [r.label.split(" @ ")[0] for r in runs]
    labels = short if len(set(short)) == len(short) else [r.label for r in runs]
    return {r.run_id: label if labels.count(label) == 1 else f"{label} ({r.run_id})"
            for r, label in zip(runs, labels)}


def quantizer_picker(keys: list[str], preferred: list[str]) -> str | None:
    """Widgets choosing one of the stored quantizer ``keys`` (QuantSpec.key): family, bit width, block / group size.
    Honours a request from another page (``st.session_state["deltas_request"] = {"quantizer": key}``) and keeps
    the choice across pages under the plain key "deltas_quantizer" (not "quantizer": that is the Run page's quantizer
    radio, which would reset it). Returns the chosen key (None if there is none)."""
    options = available(keys)
    if not options:
        return None
    state = st.session_state
    request = state.pop("deltas_request", None)
    wanted = request.get("quantizer") if isinstance(request, dict) else None
    if wanted or "q_family" not in state:  # first draw on this page visit, or a request: widgets from the key
        start = choice_of(wanted) or choice_of(state.get("deltas_quantizer")) or Choice.of(default_key(keys, preferred))
        if wanted and wanted not in keys:
            st.warning(f"The picked runs were not analysed under {as_text(wanted)}; showing the closest stored "
                       "quantizer.")
        state["q_family"], state["q_bits"], state["q_size"] = start.family, start.bits, start.size
    if state["q_family"] not in options:
        state["q_family"] = next(iter(options))
    family = state["q_family"]
    widths = sorted(options[family])
    state["q_bits"] = min(widths, key=lambda b: abs(b - state.get("q_bits", 4)))
    sizes = list(options[family][state["q_bits"]])
    if state.get("q_size") not in sizes:
        state["q_size"] = sizes[-1]
    for name in ("q_family", "q_bits", "q_size"):  # written in this run: the browser shows these values even for
        state[name] = state[name]  # a widget that was not drawn in the last run (else it shows its first option)
    left, mid, right = st.columns([3, 2, 2])
    left.selectbox("Quantizer", list(options), format_func=FAMILIES.get, key="q_family",
                   help="every quantizer the run was analysed under")
    if len(widths) > 1:
        mid.select_slider("Bit width", widths, key="q_bits", help="redraws the step lines and flip rates")
    else:
        mid.markdown(f"**{state['q_bits']} bits**")
    if len(sizes) > 1:
        right.selectbox("Group size", sizes, key="q_size", format_func=lambda s: size_label(family, s))
    elif family != "none":
        right.markdown(size_label(family, state["q_size"]))
    key = options[family][state["q_bits"]][state["q_size"]]
    state["deltas_quantizer"] = key
    return key
