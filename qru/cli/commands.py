"""The ``qru`` sub-commands: each turns parsed options into recipe choices (qru.recipes) or a serialized job file,
computes through the library and prints a report (qru.cli.reports).

Every user error (a bad value, a missing corpus folder, a corrupt run folder, a run already in progress) raises one
of the errors qru.cli.main turns into one line ``qru: error: ...`` with exit status 2; nothing stored is touched.
"""
from __future__ import annotations

import sys

import pandas as pd

from qru import recipes
from qru.cli.parser import choices, deltas_checkpoints, run_configs
from qru.cli.reports import (SWEEP_TABLE_METRICS, controls_report, delta_summary, metric_table, missing_note,
                             print_fixes, print_paper_tables, print_relearns, progress_printer, undone_text)
from qru.config import ConfigError, DeltasConfig, ImportConfig, RunConfig
from qru.store import RunStore, StoreError

SMOLLM2_NOTE = ("note: SmolLM2-135M: on a 2-core CPU, fine-tuning the target and retrain models takes ~10 minutes "
                "once (cached after that) at --scale small, and each run tens of minutes; the progress lines give "
                "each stage's ETA")


def _from_file(args, kind: str):
    """The configs of ``--config FILE`` (qru.jobs.read_job_file), refusing other options beside it."""
    from qru.jobs import read_job_file

    # options that default to None or empty (import's --prompt-format too; run's is absent unless given)
    plain = ("sweep", "seeds", "target", "unlearned", "quantizers", "entries", "name", "tool", "prompt_format")
    given = choices(args, drop=plain)
    names = [k for k in given if k != "params"] + list(given.get("params", {}))
    names += [k for k in plain if getattr(args, k, None)]
    if names:
        flags = {"sweep": "--preset", "entries": "PATH", "target": "TARGET", "unlearned": "UNLEARNED"}
        raise ConfigError("--config replaces the options " + ", ".join(flags.get(k, "--" + k.replace("_", "-"))
                                                                       for k in names))
    return read_job_file(args.config, kind)


def cmd_build_target(args) -> int:
    from qru.corpus import ensure_corpus
    from qru.models import ensure_models

    corpus_cfg, model_cfg = recipes.data_configs(**choices(args))
    corpus = ensure_corpus(corpus_cfg, args.cache)
    pair = ensure_models(corpus, corpus_cfg, model_cfg, args.cache, progress_printer(args.quiet))
    for kind in ("target", "retrain"):
        m = pair.manifest(kind)
        if m:
            print(f"{kind}: {pair.root / kind} ({m['parameters']:,} parameters, {m['steps']} steps, "
                  f"{m['tokens_per_s']:,.0f} tok/s, final loss {m['final_loss']:.3f})")
        else:
            source = model_cfg.source if kind == "target" else model_cfg.retrain or "none (PrivLeak will be missing)"
            print(f"{kind}: {source} (used as it is)")
    return 0


def cmd_run(args) -> int:
    from qru.hub import smollm2_available
    from qru.pipeline import is_worker_process, run
    from qru.views.evaluation import evaluation_lines

    configs = _from_file(args, "run") if args.config else run_configs(args)  # validate all before running any
    store = RunStore(args.cache)
    worker = is_worker_process()  # under a multi-process `accelerate launch`: the main process reports and stores
    for config in configs:
        if store.find(config) and not args.force:
            print(f"found in the store: {config.label}", file=sys.stderr, flush=True)
        elif config.model.source == "smollm2" and not worker and smollm2_available():
            print(SMOLLM2_NOTE, file=sys.stderr, flush=True)
        run_id = run(config, store, progress_printer(args.quiet or worker), force=args.force)
        if not worker:
            print(f"\nrun {run_id}: {config.label}")
            print(metric_table(store.metrics(run_id)))
            print(missing_note(store.metrics(run_id)), end="")
            print("\n".join(evaluation_lines(store, run_id)))
    return 0


def cmd_sweep(args) -> int:
    from qru.config import RelearnConfig
    from qru.sweeps import PRESETS, record, run_sweep
    from qru.views.paper_table import sweep_frame

    if args.config:
        job = _from_file(args, "sweep")
        configs, args.sweep, args.seeds = job["configs"], job["sweep"], job["seeds"]
    else:
        configs = run_configs(args)
    store = RunStore(args.cache)
    print(f"sweep {args.sweep}: {PRESETS[args.sweep].description}; seeds {' '.join(map(str, args.seeds))}; "
          f"{len(configs)} runs, {sum(store.find(c) is not None for c in configs)} already in the store",
          file=sys.stderr, flush=True)
    print(f"sweep record: {record(store, args.sweep, configs, tuple(args.seeds))}", file=sys.stderr, flush=True)

    def announce(i: int, n: int, config: RunConfig, found: bool) -> None:
        state = "found in the store" if found else "running"
        print(f"[sweep {i + 1}/{n}] {state}: {config.label} seed {config.seed}", file=sys.stderr, flush=True)

    relearn = RelearnConfig() if PRESETS[args.sweep].relearn else None
    ids, failures = run_sweep(args.sweep, configs, tuple(args.seeds), store, progress_printer(args.quiet), announce,
                              relearn)
    frame = sweep_frame({i: store.config(i) for i in ids}, {i: store.metrics(i) for i in ids},
                        {i: store.deltas(i) for i in ids})
    print_paper_tables(frame, PRESETS[args.sweep].rows, args.seeds)
    if relearn is not None:
        print_fixes(store, ids)
    for config, exc in failures:
        print(f"qru: error: failed: {config.label} seed {config.seed}: {exc}", file=sys.stderr)
    return 1 if failures else 0


def _resolve_sweeps(store: RunStore, names: list[str]) -> list:
    """The recorded sweeps named by ids or unique beginnings (e.g. ``zhang2025``: the newest record of that preset
    if several). Raises StoreError for a name that matches none."""
    from qru.sweeps import list_sweeps

    infos, out = list_sweeps(store), []
    for name in names:
        match = [i for i in infos if i.sweep_id == name] or [i for i in infos if i.sweep_id.startswith(name)]
        if not match:
            known = ", ".join(i.sweep_id for i in infos) or "none recorded"
            raise StoreError(f"no sweep {name!r} in {store.root / 'sweeps'} (recorded: {known})")
        out.append(match[0])  # newest first
    return out


def cmd_paper_table(args) -> int:
    from qru.sweeps import PRESETS, combine
    from qru.views.paper_table import load_sweep

    store = RunStore(args.cache)
    infos = _resolve_sweeps(store, args.sweeps)
    run_ids, rows, seeds = combine(infos)
    frame, missing = load_sweep(store, run_ids)
    if missing:
        print(f"{len(missing)} of {len(run_ids)} runs not finished (left out)", file=sys.stderr)
    if frame.empty:
        print("no finished runs in these sweeps yet")
        return 0
    print_paper_tables(frame, rows, seeds, args.metric or SWEEP_TABLE_METRICS)
    if any(PRESETS.get(i.preset) and PRESETS[i.preset].relearn for i in infos):
        print_fixes(store, run_ids)
    return 0


NOISE_DESCRIPTION = (
    "Evaluate a finished run's target and unlearned model with random perturbations of the same per-block size as "
    "the run's own quantizers' error (the block's error values permuted, or Gaussian with their RMS), over noise "
    "seeds, and print the share of the forgetting undone by quantization vs by the noise: similar shares mean the "
    "forgetting is fragile, far more by quantization means rounding back. Stored in the run's controls.json; a "
    "rerun computes only what is missing.")


CURVE_DESCRIPTION = (
    "Metrics of a finished run against bit width: the target (the start of unlearning), retrain and unlearned model "
    "under RTN int-k at each --bits and the bitsandbytes formats (LLM.int8 at 8, FP4/NF4 at 4), each with its noise "
    "controls, plus where the target's weights sit relative to each 4-bit grid (GGUF Q4_1/Q4_0 included). Prints "
    "per headline metric whether rounding back or fragility explains what came back, where RTN starts to change "
    "the target, and the shares undone by quantization vs noise per quantizer; the Curves page draws it. Work: "
    "about 1 + 2 x kinds x seeds evaluations per quantizer (the target's and retrain's quantized evaluations are "
    "shared with every run from the same start; the run's own quantizers are read from its results). Stored in "
    "the run's controls.json, written after each quantizer; a rerun computes only what is missing.")


def _qru_run(store: RunStore, text: str, need: str) -> tuple[str, RunConfig]:
    """The run id ``text`` names and its RunConfig. Raises ConfigError for a comparison or import (``need`` says
    what needs a run's models), StoreError for no such run."""
    run_id = _resolve_run_id(store, text)
    config = store.config(run_id)
    if not isinstance(config, RunConfig):
        raise ConfigError(f"{run_id} is not a qru run: {need} need its models")
    return run_id, config


def cmd_noise(args) -> int:
    from qru.controls import compute_controls

    store = RunStore(args.cache)
    run_id, config = _qru_run(store, args.run_id, "noise controls")
    specs = [s for s in config.quant_specs() if s.bits < 32]
    if not specs:
        raise ConfigError(f"run {run_id} has no quantized bit width to compare noise controls with")
    if any(s.is_gptq for s in specs):
        raise ConfigError("noise controls need a quantizer that rounds block by block; GPTQ quantizes whole models")
    rows = compute_controls(store, run_id, specs, tuple(args.kinds), tuple(args.seeds), quantized=True,
                            progress=progress_printer(args.quiet))
    print(controls_report(store, run_id, [r for r in rows if r["quantizer"] in {s.key for s in specs}]))
    return 0


def cmd_curve(args) -> int:
    from qru.controls import compute_controls, curve_specs

    store = RunStore(args.cache)
    run_id, config = _qru_run(store, args.run_id, "curves")
    specs = curve_specs(config, tuple(sorted(set(args.bits), reverse=True)), args.group_size)
    rows = compute_controls(store, run_id, specs, tuple(args.kinds), tuple(args.noise_seeds), quantized=True,
                            progress=progress_printer(args.quiet))
    print(controls_report(store, run_id, rows))
    return 0


def cmd_deltas(args) -> int:
    from qru.compare import compare
    from qru.devices import scan_device

    if args.config:
        config = _from_file(args, "deltas")
    else:
        deltas_checkpoints(args)  # checkpoints given after --quantizers
        if not (args.target and args.unlearned):
            raise ConfigError("give the TARGET and UNLEARNED checkpoints (or --config FILE)")
        config = recipes.comparison(args.target, args.unlearned, args.quantizers or ["all"])
    device = scan_device(args.device)
    store = RunStore(args.cache)
    if store.find(config) and not args.force:
        print(f"found in the store: {config.label}", file=sys.stderr, flush=True)
    run_id = compare(config, store, progress_printer(args.quiet), force=args.force, device=device)
    print(f"\nrun {run_id}: {config.label}")
    print(delta_summary(store.deltas(run_id), [s.key for s in config.quant_specs()], None if args.all else 9))
    return 0


def cmd_import(args) -> int:
    from qru.interop import import_results

    if args.config:
        config = _from_file(args, "import")
    elif not args.entries:
        raise ConfigError("give at least one [MODEL@BITS=]PATH to import (or --config FILE)")
    else:
        config = recipes.imported(args.entries, args.name, args.tool, args.prompt_format)
    store = RunStore(args.cache)
    if store.find(config) and not args.force:
        print(f"found in the store: {config.label}", file=sys.stderr, flush=True)
        run_id = store.find(config)
    else:
        run_id = import_results(config, store)
    print(f"run {run_id}: {config.label}")
    print(metric_table(store.metrics(run_id)))
    print(missing_note(store.metrics(run_id)), end="")
    return 0


def cmd_export(args) -> int:
    from qru.interop import export_run

    store = RunStore(args.cache)
    run_id = _resolve_run_id(store, args.run_id)
    folders = export_run(store, run_id, args.dest, args.model)
    print(f"exported {len(folders)} evaluation(s) of {args.model} in run {run_id} (open-unlearning's shape):")
    for folder in folders:
        print(folder / "MUSE_EVAL.json")
    return 0


def cmd_queue(args) -> int:
    from qru.queue import describe, set_slots

    if args.slots is not None:
        print(f"job slots of {args.cache}: {set_slots(args.cache, args.slots)} (heavy jobs that run at once; jobs "
              f"already running keep their slot and threads)")
    print("\n".join(describe(args.cache)))
    return 0


def cmd_cancel(args) -> int:
    from qru.queue import cancel

    for line in cancel(RunStore(args.cache), args.target):
        print(line)
    return 0


def cmd_ls(args) -> int:
    from qru.queue import describe, tickets

    if tickets(args.cache):
        print("\n".join(describe(args.cache)) + "\n")
    runs = RunStore(args.cache).list()
    if not runs:
        print(f"no runs in {RunStore(args.cache).runs}")
        return 0
    frame = pd.DataFrame([{"run_id": r.run_id, "state": r.state, "stage": r.stage if r.state != "done" else "",
                           "stage progress": f"{100 * r.progress:.0f}%", "label": r.label, "updated": r.updated,
                           "error": str(r.error)[:60]} for r in runs])
    text = frame.astype(str)
    widths = {c: max(len(c), text[c].str.len().max()) for c in text.columns}
    print("  ".join(c.ljust(widths[c]) for c in text.columns).rstrip())
    for _, row in text.iterrows():
        print("  ".join(row[c].ljust(widths[c]) for c in text.columns).rstrip())
    return 0


def _resolve_run_id(store: RunStore, text: str) -> str:
    """A run id, or the one run id that starts with ``text``. Raises StoreError if none or several match."""
    ids = store.ids()
    if text in ids:
        return text
    matches = [r for r in ids if r.startswith(text)] if text else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise StoreError(f"{text!r} matches {len(matches)} runs: {', '.join(matches[:5])}"
                         + (", ..." if len(matches) > 5 else ""))
    raise StoreError(f"no run {text!r} in {store.runs}")


def cmd_show(args) -> int:
    from qru.provenance import provenance_lines, read_provenance

    store = RunStore(args.cache)
    args.run_id = _resolve_run_id(store, args.run_id)
    config, status = store.config(args.run_id), store.status(args.run_id)
    stage = f" (stage: {status['stage']})" if status.get("stage") and status["state"] != "done" else ""
    print(f"run {args.run_id}: {config.label}\nstate: {status['state']}{stage}")
    if isinstance(config, DeltasConfig):
        print(f"target: {config.target}\nunlearned: {config.unlearned}")
    if isinstance(config, ImportConfig):
        print("imported: " + "\n          ".join(config.entries))
    else:
        print("\n".join(provenance_lines(read_provenance(store.path(args.run_id)))))
    if status.get("error"):
        print(f"error: {status['error']}")
    if status.get("rerun_error"):
        print(f"the last re-run failed ({status.get('rerun_updated', '')}): {status['rerun_error']}; the results below "
              "are the earlier run's")
    if status["state"] != "done":
        return 0
    if isinstance(config, (RunConfig, ImportConfig)):
        from qru.views.evaluation import evaluation_lines

        print(metric_table(store.metrics(args.run_id)))
        print(missing_note(store.metrics(args.run_id)), end="")
        print("\n".join(evaluation_lines(store, args.run_id)))
    if isinstance(config, RunConfig):
        print(undone_text(store, args.run_id))
        print_relearns(store, args.run_id)
    if isinstance(config, ImportConfig):
        return 0
    print("\nweight deltas (all quantized Linear layers):")
    deltas = store.deltas(args.run_id)
    keys = list(deltas["quantizer"].unique()) if args.all else [s.key for s in config.quant_specs()]
    print(delta_summary(deltas, keys, None if args.all else 9))
    return 0
