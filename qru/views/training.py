"""Training curves: the per-step unlearning losses of stored runs (``train_log.json``: forget term, retain term,
total, learning rate) as one table and one chart, full fine-tuning and LoRA runs side by side."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from qru.config import RunConfig
from qru.store import RunStore, StoreError
from qru.views.text import as_plot_text

TERMS = {"forget_loss": "forget term", "retain_loss": "retain term", "loss": "total loss", "lr": "learning rate"}


def training_frame(store: RunStore, names: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """Long table of the runs ``names`` (run id -> name shown) with columns run, name, adapter, step, term (a TERMS
    value), value; and the names of the runs that have no training log (imports, comparisons, failed runs). A run
    stored before qru logged the learning rate gets its config's (the schedule is constant)."""
    rows, missing = [], []
    for run_id, name in names.items():
        try:
            config = store.config(run_id)
            history = store.read_json(run_id, "train_log.json") if isinstance(config, RunConfig) else None
        except StoreError:
            history = None
        if not history or not isinstance(history, list):
            missing.append(name)
            continue
        for record in history:
            for field, term in TERMS.items():
                value = record.get(field, config.unlearn.lr if field == "lr" else None)
                if isinstance(value, (int, float)):
                    rows.append({"run": run_id, "name": name, "adapter": config.unlearn.adapter,
                                 "step": int(record.get("step", 0)), "term": term, "value": float(value)})
    return pd.DataFrame(rows, columns=["run", "name", "adapter", "step", "term", "value"]), missing


def training_figure(frame: pd.DataFrame) -> go.Figure:
    """One panel per term present (forget, retain, total, learning rate) against the unlearning step, one line per
    run (dashed for LoRA), in the same colour across panels."""
    terms = [t for t in TERMS.values() if t in set(frame["term"])]
    fig = make_subplots(rows=len(terms), cols=1, shared_xaxes=True, subplot_titles=terms, vertical_spacing=0.06)
    colours = dict(zip(frame["run"].unique(), _palette()))
    for row, term in enumerate(terms, start=1):
        for run_id, part in frame[frame["term"] == term].groupby("run", sort=False):
            fig.add_trace(go.Scatter(
                x=part["step"], y=part["value"], mode="lines", name=as_plot_text(part["name"].iloc[0]),
                legendgroup=run_id, showlegend=row == 1,
                line={"color": colours[run_id], "dash": "dash" if part["adapter"].iloc[0] == "lora" else "solid"}),
                row=row, col=1)
    fig.update_xaxes(title_text="unlearning step", row=len(terms), col=1)
    fig.update_layout(height=220 * len(terms) + 80, legend={"orientation": "h", "y": -0.12},
                      margin={"t": 40, "b": 40})
    return fig


def _palette() -> list[str]:
    import plotly.express as px

    return px.colors.qualitative.Plotly * 10
