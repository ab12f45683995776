"""Text reports of the ``qru`` command: metric tables, weight-delta summaries, paper tables, the share undone and the
noise-control verdicts, and the progress lines. Formatting only; the numbers come from qru.analysis and the store."""
from __future__ import annotations

import sys
import time

import pandas as pd

from qru.metrics import headline, sweep_metrics, table_columns
from qru.store import SUMMARY_COLUMNS, RunStore, StoreError

SWEEP_TABLE_METRICS = (*sweep_metrics(), "share_kept")  # share_kept: a weight-update column (qru.deltas)
TABLE_COLUMNS = ["model", "bits", "quant", *table_columns()]


def progress_printer(quiet: bool):
    last = {"t": 0.0, "stage": "", "quiet": quiet}

    def show(stage: str, done: int, total: int, message: str) -> None:
        now = time.time()
        if last["quiet"] or (stage == last["stage"] and now - last["t"] < 2 and done != total):
            return
        last.update(t=now, stage=stage)
        count = f" {done}/{total}" if total else ""
        try:
            print(f"[{time.strftime('%H:%M:%S')}] {stage}{count} {message}".rstrip(), file=sys.stderr, flush=True)
        except OSError:  # stderr closed (e.g. piped into `head`): keep computing, stop printing
            last["quiet"] = True
    return show


def missing_note(frame: pd.DataFrame) -> str:
    """``PrivLeak missing: <reason>`` (and a newline) when the rows say why PrivLeak is empty, else ""."""
    if "privleak_missing" not in frame.columns or frame["privleak_missing"].isna().all():
        return ""
    return f"PrivLeak missing: {frame['privleak_missing'].dropna().iloc[0]}\n"


def metric_table(frame: pd.DataFrame) -> str:
    """The metric table as aligned text (rows model x bits, the headline columns)."""
    cols = [c for c in TABLE_COLUMNS if c in frame.columns]
    return frame[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")


def print_paper_tables(frame: pd.DataFrame, rows: str, seeds: list[int], metrics=SWEEP_TABLE_METRICS) -> None:
    from qru.views.paper_table import paper_table

    for metric in metrics:
        print(f"\n{metric} (unlearned: mean [95% bootstrap CI] over seeds {' '.join(map(str, seeds))})")
        try:
            print(paper_table(frame, metric, rows).to_string(index=False))
        except KeyError:
            print("(the runs have no such metric)")


def print_fixes(store: RunStore, run_ids: list[str]) -> None:
    """The trade-off of a sweep's runs in text (qru.views.tradeoff): which fixes kept the forgetting under the
    lowest width's quantization and under relearning, then the fixes table (KnowMem-forget and utility, shares
    undone), mean [95% CI] over seeds."""
    from qru.analysis.tradeoff import load_points
    from qru.views.text import displayed
    from qru.views.tradeoff import fixes_sentences, fixes_table

    points = load_points(store, run_ids)
    if points.empty:
        return
    print("\nThe fixes: share of the forgetting undone (median over the headline metrics; mean over seeds)")
    for line in fixes_sentences(points):
        print("- " + displayed(line).replace("**", ""))
    _print_wide(fixes_table(points, "knowmem_forget"))


def print_relearns(store: RunStore, run_id: str) -> None:
    """A run's stored relearning attacks (qru.relearn): what each did, then its shares undone by relearning beside
    those by quantization on the same held-out items."""
    from qru.analysis.relearning import relearning_undone
    from qru.relearn import read_relearns
    from qru.views.undone import relearning_caption, relearning_table

    for record in read_relearns(store, run_id):
        print(f"\nRelearning attack: {relearning_caption(record)}")
        _print_wide(relearning_table(relearning_undone(record)))


def _print_wide(frame: pd.DataFrame) -> None:
    """Print a table with every column and no wrapping of long cells (fix names, reasons)."""
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 70):
        print(frame.to_string(index=False))


def controls_report(store: RunStore, run_id: str, rows: list[dict], metrics: tuple[str, ...] | None = None) -> str:
    """What ``qru noise`` / ``qru curve`` print: the grid sentence, per metric the generated sentence (and where
    RTN starts to change the target), then the shares undone by quantization vs the noise controls per quantizer."""
    from qru.analysis.verdicts import curve_frame, undone_by_control
    from qru.views.curves import grid_sentence, onset_sentence, sentence, target_sentence, verdict_table

    frame, table = curve_frame(rows), store.metrics(run_id)
    samples = samples_of(store, run_id)
    lines = [grid_sentence(rows)] if grid_sentence(rows) else []
    undone = {}
    for metric in metrics or headline(every_corpus=True):
        undone[metric] = undone_by_control(frame, table, metric, samples)
        extra = [onset_sentence(frame, table, undone[metric], metric),
                 target_sentence(frame, table, undone[metric], metric)]
        lines.append(" ".join([sentence(run_id, undone[metric], metric).replace("**", "")] + [t for t in extra if t]))
    shares = verdict_table(undone)
    if not shares.empty:
        lines.append("\nshare of the forgetting undone, (u_b - u_32) / (t_b - u_32), by quantization and by noise of the "
                     "same per-block size:\n" + shares.to_string(index=False))
    return "\n".join(lines)


def samples_of(store: RunStore, run_id: str) -> dict | None:
    """A run's samples.json (per-item scores, for the noise thresholds), None if it has none."""
    try:
        return store.read_json(run_id, "samples.json")
    except StoreError:
        return None


SHOWN_FLIPS = ["flips_boundary", "flips_scale"]


def delta_summary(deltas: pd.DataFrame, keys: list[str], limit: int | None = 9) -> str:
    """The ``total`` rows of the quantizer ``keys`` (the first ``limit``; None = all) as aligned text, with the
    code flips split into boundary crossings and scale changes."""
    shown = keys[:limit] if limit else keys
    totals = deltas[(deltas["tensor"] == "total") & deltas["quantizer"].isin(shown)]
    if totals.empty:
        raise StoreError("deltas.parquet has no total rows")
    columns = ["quantizer", *SUMMARY_COLUMNS[2:], *[c for c in SHOWN_FLIPS if c in totals.columns]]
    text = totals[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}")
    more = len(keys) - len(shown)
    return text + (f"\n... and {more} more quantizers: add --all, or see the dashboard's Weight deltas page"
                   if more > 0 else "")


def undone_text(store: RunStore, run_id: str) -> str:
    """The share of the forgetting undone by quantization (qru.views.undone) as text; why a cell is empty is given
    once per reason below the table (footnotes a, b, ...), so the columns stay narrow."""
    from qru.analysis.undone import forgetting_undone
    from qru.views.undone import undone_table

    table = undone_table(forgetting_undone(store.metrics(run_id), samples_of(store, run_id)))
    if table.empty:
        return ""
    notes: dict[str, str] = {}

    def short(cell):
        if isinstance(cell, str) and cell.startswith("— (") and cell.endswith(")"):
            reason = cell[3:-1]
            notes.setdefault(reason, chr(ord("a") + len(notes)))
            return f"— ({notes[reason]})"
        return cell
    table = table.apply(lambda column: column.map(short))
    legend = "".join(f"\n  ({mark}) {reason}" for reason, mark in notes.items())
    return ("\nshare of the unlearning's effect undone by quantization, (u_b - u_32) / (t_b - u_32) (for the forget "
            "metrics: the share of the forgetting undone), where the 32-bit effect exceeds the noise:\n"
            + table.to_string(index=False) + legend)
