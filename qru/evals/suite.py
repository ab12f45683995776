"""All metrics of one model on one corpus: VerbMem, KnowMem-forget, KnowMem-retain, Min-K% AUC, NLL."""
from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerFast

from qru.config import EvalConfig
from qru.corpus.muse import MuseCorpus
from qru.evals.entity_verbmem import entity_verbmem
from qru.evals.fit import evaluation_corpus
from qru.evals.knowmem import knowmem
from qru.evals.privleak import mean_nll, mia_auc, mink_score, text_logprobs
from qru.evals.verbmem import verbmem
from qru.metrics import METRICS as METRIC_REGISTRY

# The metrics computed here, with their descriptions: declared once in qru.metrics (the registry).
METRICS = {name: m.description for name, m in METRIC_REGISTRY.items()}


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, corpus: MuseCorpus, config: EvalConfig,
             max_len: int) -> dict:
    """Every metric of ``model`` except PrivLeak (which needs the retrain model's AUC; see :func:`add_privleak`).

    Returns {"metrics": {name: float}, "samples": {verbmem, knowmem_forget, knowmem_retain: per-item records;
    mink_forget, mink_holdout: Min-K% scores; nll_forget, nll_retain, nll_holdout: per text {nll: summed NLL in nats,
    tokens: scored tokens, tokens_cut: tokens beyond ``max_len`` not scored}}, from which :func:`qru.stats.reaggregate`
    recomputes every metric. Items are tokenized in ``config.prompt_format`` and subsampled to
    ``config.max_eval_items`` (qru.evals.prompts, qru.evals.fit); records count what was cut to fit the model.
    """
    model.eval()
    corpus, fmt = evaluation_corpus(corpus, config), config.prompt_format
    vm, vm_rows = verbmem(model, tokenizer, corpus.verbmem_forget, config.verbmem_max_new_tokens, config.batch_size,
                          fmt)
    kf, kf_rows = knowmem(model, tokenizer, corpus.knowmem["forget_qa"], corpus.knowmem["forget_qa_icl"],
                          config.knowmem_max_new_tokens, config.batch_size, fmt)
    kr, kr_rows = knowmem(model, tokenizer, corpus.knowmem["retain_qa"], corpus.knowmem["retain_qa_icl"],
                          config.knowmem_max_new_tokens, config.batch_size, fmt)
    scored = {name: text_logprobs(model, tokenizer, corpus.privleak[name], max_len, config.batch_size, fmt)
              for name in ("forget", "retain", "holdout")}
    logp = {name: x[0] for name, x in scored.items()}
    mink = {name: [mink_score(x, config.mink_k) for x in logp[name]] for name in ("forget", "holdout")}
    metrics = {"verbmem": vm, "knowmem_forget": kf, "knowmem_retain": kr,
               "auc": mia_auc(mink["forget"], mink["holdout"]),
               "nll_forget": mean_nll(logp["forget"]), "nll_retain": mean_nll(logp["retain"]),
               "nll_holdout": mean_nll(logp["holdout"])}
    samples = {"verbmem": vm_rows, "knowmem_forget": kf_rows, "knowmem_retain": kr_rows,
               "mink_forget": mink["forget"], "mink_holdout": mink["holdout"],
               **{f"nll_{name}": [{"nll": float(-x.sum()), "tokens": len(x), "tokens_cut": cut}
                                  for x, cut in zip(*scored[name])] for name in ("forget", "retain", "holdout")}}
    result = {"metrics": metrics, "samples": samples}
    add_entity_verbmem(result, corpus)  # corpus is already the evaluated subsample here
    return result


def add_entity_verbmem(result: dict, corpus: MuseCorpus, config: EvalConfig | None = None) -> bool:
    """Add entity-token VerbMem (qru.evals.entity_verbmem) to an :func:`evaluate` result, from its VerbMem records:
    ``metrics["verbmem_entity"]`` and a per-item ``entity_f1`` (None where an item has no entity value). Nothing is
    added for a corpus without entities.json or a result that has it already. Returns True if it added it."""
    if not corpus.entities or "verbmem_entity" in result["metrics"]:
        return False
    records = result["samples"]["verbmem"]
    corpus = evaluation_corpus(corpus, config) if config is not None else corpus
    score, items = entity_verbmem(records, corpus.verbmem_forget, corpus.entities)
    if score is None:
        return False
    result["metrics"]["verbmem_entity"] = score
    for record, item in zip(records, items):
        record["entity_f1"] = item
    return True
