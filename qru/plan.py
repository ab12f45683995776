"""What a run will cost, said before it starts: the tokens it trains on and evaluates, what does not fit the model,
and about how long each stage takes on this machine (docs/experiments.md "Size and time first").

Times come from a speed probe: a few training steps, forward passes and generation steps of a freshly initialised
model of the run's architecture (weights do not change the speed), timed on the compute device. For a model above
PROBE_MAX_PARAMETERS the probe times a matrix product instead and scales by the usual FLOP counts (6 per parameter
and token to train, 2 to run forward), which is rougher. Estimates are "about": they leave out loading and caching.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerBase

from qru.config import RunConfig
from qru.corpus.muse import MuseCorpus
from qru.evals.fit import cut_sentences, fit_report
from qru.evals.generation import context_length
from qru.models import TRAINING_SPLITS as SPLITS, cap_training, encode_chunks, epoch_documents
from qru.unlearn.methods import METHODS
from qru.unlearn.trainer import total_steps

PROBE_MAX_PARAMETERS = 300_000_000
DELTA_SECONDS_PER_MILLION = 0.25  # delta analysis, per million quantizable weights and quantizer (2-core CPU)


@dataclass
class Speed:
    """Measured throughput in tokens per second: training (forward + backward + AdamW step), scoring (forward) and
    greedy generation (new tokens per second over a batch)."""

    train: float
    score: float
    generate: float
    how: str = "probe"


@dataclass
class Plan:
    """Tokens and seconds per stage (``stages``: name -> {tokens, seconds}), the fit report
    (qru.evals.fit.fit_report) and the sentences that say it (``lines``)."""

    stages: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s["seconds"] for s in self.stages.values())

    def as_dict(self) -> dict:
        return {"stages": self.stages, "fit": self.fit, "seconds": self.seconds, "lines": self.lines}


def _timed(fn, repeats: int = 2) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def linear_weights(model_config: PretrainedConfig) -> int:
    """About how many weights the quantizable linear layers of a Llama-style model hold: per layer 4 h^2
    (attention) + 3 h f (MLP), h the hidden size and f the MLP width."""
    width = getattr(model_config, "hidden_size", 256)
    ffn = getattr(model_config, "intermediate_size", None) or 4 * width
    return getattr(model_config, "num_hidden_layers", 4) * (4 * width * width + 3 * width * ffn)


def probe_speed(model_config: PretrainedConfig, batch_size: int, seq_len: int, seed: int = 0) -> Speed:
    """Throughput of a model of ``model_config``'s architecture on batches of ``batch_size`` x ``seq_len`` tokens
    (fp32, the compute device). Above PROBE_MAX_PARAMETERS, from a timed matrix product and FLOP counts."""
    from qru.devices import compute_device

    device = compute_device()
    parameters = linear_weights(model_config) + model_config.vocab_size * getattr(model_config, "hidden_size", 256)
    seq_len = max(8, min(seq_len, getattr(model_config, "max_position_embeddings", seq_len) or seq_len))
    if parameters > PROBE_MAX_PARAMETERS:
        a, b = torch.randn(512, 2048, device=device), torch.randn(2048, 2048, device=device)
        flops = 2 * 512 * 2048 * 2048 / _timed(lambda: a @ b, 3)
        return Speed(train=flops / (6 * parameters), score=flops / (2 * parameters),
                     generate=batch_size * flops / (2 * parameters) / 4, how="FLOP estimate")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config).float().to(device)
    ids = torch.randint(0, model_config.vocab_size, (batch_size, seq_len), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def train_step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    train = _timed(train_step)
    with torch.inference_mode():
        score = _timed(lambda: model(input_ids=ids))
        prompt = ids[:, :min(16, seq_len)]
        gen = _timed(lambda: model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                            max_new_tokens=8, min_new_tokens=8, pad_token_id=0), 1)
    tokens = batch_size * seq_len
    return Speed(train=tokens / train, score=tokens / score, generate=batch_size * 8 / gen)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_run(config: RunConfig, corpus: MuseCorpus, tokenizer: PreTrainedTokenizerBase, model_config: PretrainedConfig,
             build: bool, n_quantizers: int, speed: Speed | None = None) -> Plan:
    """The plan of ``config``: model build (when ``build``: target, retrain and a pretrain-finetune base, each epochs x
    its training tokens), unlearning (steps x batch of forget and retain sequences), evaluation (every model at every
    bit width) and the delta analysis under ``n_quantizers`` quantizers. ``speed`` defaults to
    :func:`probe_speed`."""
    m, u = config.model, config.unlearn
    capped = cap_training(corpus, tokenizer, config.corpus.max_train_tokens)
    fit = fit_report(tokenizer, corpus, config.eval, context_length(model_config), m.max_len)
    chunks = {kind: encode_chunks(tokenizer, epoch_documents(capped.train_documents(kind), m.qa_chain,
                                                             torch.Generator().manual_seed(0)), m.max_len)
              for kind in ("target", "retrain")}
    mean_len = max(1, sum(len(c) for c in chunks["target"]) // max(1, len(chunks["target"])))
    speed = speed or probe_speed(model_config, m.batch_size, mean_len)
    plan = Plan(fit=fit)
    if build:
        kinds = ("target", "retrain") + (("base",) if m.target_recipe == "pretrain-finetune" else ())
        per_epoch = {k: sum(len(c) for c in chunks["retrain" if k == "base" else k]) for k in kinds}
        tokens = sum(per_epoch.values()) * m.epochs
        detail = " + ".join(f"{k} {m.epochs} epochs x {n:,}" for k, n in per_epoch.items())
        plan.stages["model build"] = {"tokens": tokens, "seconds": tokens / speed.train, "detail": detail}
    splits = {s: encode_chunks(tokenizer, capped.raw.get(s, []), m.max_len) for s in SPLITS}  # tokenized once
    forget = splits["forget"]
    steps = total_steps(len(forget), u) if forget else 0
    f_len = sum(len(c) for c in forget) / max(1, len(forget))
    r_len = sum(len(c) for c in chunks["retrain"]) / max(1, len(chunks["retrain"]))
    has_retain = METHODS[u.method].own_retain or u.regularizer != "none"
    tokens = int(steps * u.batch_size * (f_len + (r_len if has_retain else 0)))
    plan.stages["unlearning"] = {"tokens": tokens, "seconds": 1.33 * tokens / speed.train,  # + reference forward
                                 "detail": f"{steps} steps x {u.batch_size} forget" + (" + retain" if has_retain else "")
                                 + " sequences"}
    generated = fit["verbmem"]["items"] * config.eval.verbmem_max_new_tokens + \
        (fit["knowmem_forget"]["items"] + fit["knowmem_retain"]["items"]) * config.eval.knowmem_max_new_tokens
    read = sum(e["read"] for e in fit.values())
    retrain = bool(m.retrain) or not m.is_hf  # the 32-bit retrain model is PrivLeak's reference (cached)
    evaluations = len(config.bits) * (3 if retrain else 2) + (retrain and 32 not in config.bits)
    per_eval = generated / speed.generate + read / speed.score
    plan.stages["evaluation"] = {"tokens": evaluations * (generated + read), "seconds": evaluations * per_eval,
                                 "evaluations": evaluations}
    delta_seconds = linear_weights(model_config) / 1e6 * DELTA_SECONDS_PER_MILLION * n_quantizers
    plan.stages["delta analysis"] = {"tokens": 0, "seconds": delta_seconds}
    split_tokens = {s: sum(len(c) for c in chunks) for s, chunks in splits.items()}
    plan.lines = _lines(plan, config, corpus, capped, split_tokens, speed, evaluations, generated, read)
    return plan


def _lines(plan: Plan, config: RunConfig, corpus: MuseCorpus, capped: MuseCorpus, split_tokens: dict[str, int],
           speed: Speed, evaluations: int, generated: int, read: int) -> list[str]:
    lines = []
    for split in SPLITS:
        docs, full = capped.raw.get(split, []), corpus.raw.get(split, [])
        if full:
            tokens = split_tokens[split]
            cut = f" (of {len(full):,}: --max-train-tokens {config.corpus.max_train_tokens:,})" \
                if config.corpus.max_train_tokens and docs != full else ""
            lines.append(f"training text {split}: {len(docs):,} documents{cut}, {tokens:,} tokens with BOS/EOS")
    for name, stage in plan.stages.items():
        detail = f" ({stage['detail']})" if stage.get("detail") else ""
        what = f"{stage['tokens']:,} tokens{detail}, " if stage["tokens"] else ""
        if name == "evaluation":
            what = (f"{evaluations} evaluations x ({generated:,} generated + {read:,} read tokens), ")
        lines.append(f"{name}: {what}about {_duration(stage['seconds'])}")
    lines.append(f"whole run: about {_duration(plan.seconds)} (speed {speed.how}: {speed.train:,.0f} training, "
                 f"{speed.score:,.0f} scoring, {speed.generate:,.0f} generated tokens/s, measured now: other work on "
                 "the same cores slows the run)")
    lines += [f"evaluation lists: {s}" for s in cut_sentences(plan.fit)] or \
        ["evaluation lists: every item evaluated, every item fits the model"]
    return lines + _idle_caps(config, corpus, capped, plan.fit) + \
        ([config.quant_aware_note] if config.quant_aware_note else [])


def _idle_caps(config: RunConfig, corpus: MuseCorpus, capped: MuseCorpus, fit: dict) -> list[str]:
    """Warnings for a subsampling option that cuts nothing: it still gives the run (and its models) ids of their
    own, so leaving it out reuses what is cached."""
    lines = []
    n = config.corpus.max_train_tokens
    if n and all(capped.raw.get(s) == corpus.raw.get(s) for s in SPLITS):
        lines.append(f"--max-train-tokens {n:,} cuts nothing here (every training split is shorter): the models are "
                     "the same as without it but are built under an id of their own; leave it out to reuse them")
    n = config.eval.max_eval_items
    if n and all(e["items"] == e["of"] for e in fit.values()):
        lines.append(f"--max-eval-items {n:,} is at least every evaluation list's length: nothing is subsampled, "
                     "but the run has an id of its own; leave it out to reuse cached evaluations")
    return lines
