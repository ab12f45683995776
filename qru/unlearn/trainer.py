"""The unlearning loop: forget loss (+ alpha x regularizer) with AdamW at a constant learning rate.

Full fine-tuning updates every parameter; LoRA (peft) trains low-rank adapters on every Linear layer except lm_head
and merges them into the weights with ``merge_and_unload`` before anything is quantized (arXiv 2602.13151).
The reference model of NPO and KLR is the target (docs/design.md).

With ``sam_rho`` (sharpness-aware unlearning) each step first takes the forget term's gradient g at W, moves to
W + rho g / ||g|| and takes the step's gradient (forget + alpha x retain) there, then returns to W and steps; the
history's ``forget_loss`` is the one at W, ``forget_loss_at_sam_point``, ``retain_loss`` and ``loss`` those at
W + e. It costs one more forward and backward pass of the forget batch per step.

With ``quant_aware`` (quantization-aware unlearning, qru.unlearn.quant_aware) every loss of the step is computed with
the quantizable weights fake-quantized, Q(W) (LoRA: Q(W0 + scale B A)), its gradient passed straight through; with
``quant_aware_mix`` below 1 the step's loss is mix x L(Q(W)) + (1 - mix) x L(W) (two forward passes). The history's
``forget_loss`` is the forget term of that objective, ``forget_loss_quantized`` (and ``forget_loss_float``) its parts.

Scenario options (qru.scenarios): frozen embeddings under full fine-tuning; bf16 weights emulated in fp32 (trained
weights rounded to bfloat16 after every optimizer step, the merged LoRA weights once). The start point (grid snap) is
chosen by the caller: ``target`` is the model unlearning starts from.

Each method is one unit of qru/unlearn/methods/ (its forget term, parameters and retain term; the loop never asks which
method it runs); SURE is a saliency mask over the rows of every weight,
computed once from the forget loss's gradient on D_f at the target and applied to every step's gradients (the
reference code, FailureLLMUnlearning's SURE trainer, computes a mask per batch in an ``optimizer_step`` that the
Hugging Face Trainer never calls, so its mask is never applied).

The loop runs through Hugging Face Accelerate: on one device (CPU or one GPU) the Accelerator is a thin wrapper and
the loop is the plain one; under ``accelerate launch`` (DDP, FSDP or DeepSpeed ZeRO-3; examples/accelerate/) each
process takes its share of every batch, gradients are reduced across processes, and the full unlearned weights are
gathered on the main process, which alone evaluates and stores the run.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from qru.config import UnlearnConfig
from qru.errors import UnlearnError
from qru.models import Progress, no_progress, encode_chunks, encode_documents, pad_batch
from qru.quant.spec import quantizer_from_key
from qru.scenarios import freeze_embeddings, round_bf16_
from qru.unlearn.losses import nll
from qru.unlearn.quant_aware import mixed_loss, quantized_layers
from qru.unlearn.methods import Method, method as method_class

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class UnlearnResult:
    """The unlearned model (LoRA already merged), its adapter weights if LoRA, and the per-step loss history."""

    model: PreTrainedModel | None
    adapter_state: dict | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def lora_config(config: UnlearnConfig) -> LoraConfig:
    """peft LoraConfig of an UnlearnConfig: all attention and MLP projections, no bias, lm_head excluded."""
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=LORA_TARGETS, bias="none", task_type="CAUSAL_LM")


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[list[int]]:
    order = torch.randperm(n, generator=gen).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


class _RetainStream:
    """Endless shuffled batches of retain documents, one per unlearning step."""

    def __init__(self, data: list[list[int]], batch_size: int, gen: torch.Generator):
        self.data, self.batch_size, self.gen, self.queue = data, batch_size, gen, []

    def next(self) -> list[list[int]]:
        if not self.queue:
            self.queue = _batches(len(self.data), self.batch_size, self.gen)
        return [self.data[i] for i in self.queue.pop()]


def saliency_mask(policy, ref, method: Method, forget: list[list[int]], pad_id: int, batch_size: int,
                  share: float) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """SURE's saliency mask (Zhang et al. 2025, arXiv 2410.16454, sec. 5): for every trainable parameter, a 0/1 mask
    over its rows (dim 0; each entry of a 1-D parameter is a row), 1 for the ``share`` of all rows with the largest
    L2 norm of the forget loss's gradient accumulated over D_f at the starting weights.

    Returns ``[(parameter, mask)]``, mask float32 of shape [rows]; gradients are left zeroed.
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    for i in range(0, len(forget), batch_size):
        method.forget(policy, ref, pad_batch(forget[i:i + batch_size], pad_id)).backward()
    norms = [p.grad.float().reshape(p.shape[0], -1).norm(dim=1) if p.grad is not None else torch.zeros(p.shape[0])
             for p in params]
    flat = torch.cat([n.cpu() for n in norms])
    chosen = torch.zeros_like(flat)
    chosen[torch.topk(flat, max(1, int(round(share * flat.numel())))).indices] = 1.0  # exactly that many rows
    for p in params:
        p.grad = None
    return list(zip(params, chosen.split([n.numel() for n in norms])))


def _apply_mask(mask: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
    for p, rows in mask:
        if p.grad is not None:
            p.grad.mul_(rows.to(p.grad.device).view(-1, *([1] * (p.grad.dim() - 1))).to(p.grad.dtype))


@torch.no_grad()
def sam_perturb(params: list[torch.nn.Parameter], rho: float) -> list[torch.Tensor]:
    """Move ``params`` to SAM's worst-case point W + rho g / ||g|| (Foret et al. 2021, arXiv 2010.01412, eq. 2), g
    their current gradients (the forget term's; none counts as zero) and ||g|| the L2 norm over all of them. Returns
    copies of the weights at W for :func:`sam_restore` (as the reference implementation keeps ``old_p``, so that
    returning is exact). Gradients are left as they are."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads)) if grads else torch.tensor(0.0)
    scale = rho / max(float(norm), 1e-12)
    saved = [p.detach().clone() for p in params]
    for p, g in zip(params, grads):
        p.add_(g.to(p.dtype), alpha=scale)
    return saved


@torch.no_grad()
def sam_restore(params: list[torch.nn.Parameter], saved: list[torch.Tensor]) -> None:
    """Return ``params`` to the weights :func:`sam_perturb` saved, exactly."""
    for p, w in zip(params, saved):
        p.copy_(w)


def _share(idx: list, accelerator: Accelerator) -> list:
    """This process's part of a batch's indices (all of them on one process; never empty)."""
    n = accelerator.num_processes
    if n == 1:
        return idx
    part = idx[accelerator.process_index::n]
    return part or idx[:1]


def _gathered(policy, accelerator: Accelerator, target: PreTrainedModel, lora: bool):
    """The unlearned model with full weights on the main process (LoRA merged) and its adapter state (LoRA)."""
    model = accelerator.unwrap_model(policy)
    if accelerator.num_processes > 1:  # FSDP / ZeRO-3 shard the weights: gather them into a plain copy
        state = accelerator.get_state_dict(policy)
        if not accelerator.is_main_process:
            return None, None
        model = copy.deepcopy(get_peft_model(copy.deepcopy(target), model.peft_config["default"])
                              if lora else target)
        model.load_state_dict(state, strict=True)  # a key mismatch must fail, not silently keep the target
    adapter_state = None
    if lora:
        adapter_state = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}
        model = model.merge_and_unload()
    return model.eval(), adapter_state


def total_steps(n_forget_docs: int, config: UnlearnConfig) -> int:
    """Optimizer steps of an unlearning run: epochs x ceil(forget docs / batch), capped by max_steps if set."""
    steps = config.epochs * math.ceil(n_forget_docs / config.batch_size)
    return min(steps, config.max_steps) if config.max_steps else steps


def unlearn(target: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, forget_docs: list[str],
            retain_docs: list[str], config: UnlearnConfig, max_len: int, seed: int = 0,
            progress: Progress = no_progress) -> UnlearnResult:
    """Unlearn ``forget_docs`` from a copy of ``target`` (``target`` itself is left unchanged and is the reference).

    Under a multi-process ``accelerate launch`` only the main process gets the model back; the others get a result
    whose ``model`` is None. Raises UnlearnError if there are no forget documents, the method needs retain documents
    and there are none, RMU's layer does not exist, or SURE runs on more than one process.
    """
    if not forget_docs:
        raise UnlearnError("the corpus has no forget documents (raw/forget.txt is missing or empty)")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    accelerator = Accelerator(device_placement=False)
    ref = target.eval()
    policy = copy.deepcopy(target)
    if config.freeze_embeddings:
        freeze_embeddings(policy)
    if config.adapter == "lora":
        policy = get_peft_model(policy, lora_config(config))
    policy.train()
    forget = encode_chunks(tokenizer, forget_docs, max_len)  # long documents in max-length windows, never truncated
    retain = _RetainStream(encode_chunks(tokenizer, retain_docs, max_len), config.batch_size, gen) \
        if retain_docs else None
    method = method_class(config.method)(config, target, seed)
    if config.sure_share and accelerator.num_processes > 1:
        raise UnlearnError("SURE runs on one process: its row mask needs the whole, unsharded weights")
    if config.quant_aware and accelerator.num_processes > 1:
        raise UnlearnError("quantization-aware unlearning runs on one process: Q(W) needs whole, unsharded weights")
    quantizer = quantizer_from_key(config.quant_aware) if config.quant_aware else None
    mix = config.quant_aware_mix
    if quantizer is not None and not quantized_layers(policy, quantizer):
        raise UnlearnError(f"quant-aware quantizer {config.quant_aware} quantizes none of this model's Linear layers "
                           "(GGUF needs input sizes that are multiples of 32): nothing to train through it")
    if method.has_retain and retain is None:
        what = f"{method.label}'s retain term" if method.own_retain else f"regularizer {config.regularizer}"
        raise UnlearnError(f"{what} needs retain documents (raw/retain*.txt), found none")
    mask = saliency_mask(policy, ref, method, forget, tokenizer.pad_token_id, config.batch_size,
                         config.sure_share) if config.sure_share else None
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:  # DeepSpeed wants its micro batch up front (qru batches without a DataLoader)
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = max(
            1, math.ceil(config.batch_size / accelerator.num_processes))
    policy, opt = accelerator.prepare(policy, opt)
    bf16 = config.weight_precision == "bf16-rounded"  # bf16 weights emulated in fp32 (qru.scenarios)
    if bf16:
        round_bf16_(params)  # LoRA's fresh adapters; full fine-tuning's start is already bf16 (start_model)
    total = total_steps(len(forget), config)
    history, step, start = [], 0, time.time()
    while step < total:
        for idx in _batches(len(forget), config.batch_size, gen):
            if step >= total:
                break
            fbatch = pad_batch([forget[i] for i in _share(idx, accelerator)], tokenizer.pad_token_id)
            steps = None
            if config.sam_rho:  # SAM: the step's gradient is taken at the forget loss's worst-case neighbour
                at_w, parts_w = mixed_loss(lambda: method.forget(policy, ref, fbatch), policy, quantizer, mix)
                accelerator.backward(at_w)
                steps = sam_perturb(params, config.sam_rho)
                opt.zero_grad(set_to_none=True)
            loss_f, parts = mixed_loss(lambda: method.forget(policy, ref, fbatch), policy, quantizer, mix)
            loss = loss_f
            record = {"step": step + 1, "forget_loss": loss_f.item()}
            if steps is not None:  # the curve shows the model's own loss; the perturbed one is kept beside it
                record.update(forget_loss=at_w.item(), forget_loss_at_sam_point=loss_f.item())
                parts = parts_w  # the parts of the loss at W, as forget_loss is
            record.update({f"forget_loss_{k.removeprefix('at_')}": v for k, v in parts.items()})
            if method.has_retain:
                rbatch = pad_batch(_share(retain.next(), accelerator), tokenizer.pad_token_id)
                loss_r, _ = mixed_loss(lambda: method.retain(policy, ref, rbatch), policy, quantizer, mix)
                loss = loss + config.alpha * loss_r
                record["retain_loss"] = loss_r.item()
            if not torch.isfinite(loss):
                raise UnlearnError(f"the unlearning loss became non-finite ({loss.item()}) at step {step + 1}: the "
                                   f"model diverged; lower the learning rate or change beta / the RMU coefficient")
            accelerator.backward(loss)
            if steps is not None:
                sam_restore(params, steps)  # the gradient from W + e updates W
            if mask is not None:
                _apply_mask(mask)
            opt.step()
            if bf16:
                round_bf16_(params)
            opt.zero_grad(set_to_none=True)
            step += 1
            record["loss"] = loss.item()
            record["lr"] = opt.param_groups[0]["lr"]
            history.append(record)
            eta = (time.time() - start) / step * (total - step)
            progress("unlearning", step, total, f"step {step}/{total} loss {loss.item():.3f} ETA {eta:,.0f} s")
    accelerator.wait_for_everyone()
    model, adapter_state = _gathered(policy, accelerator, target, config.adapter == "lora")
    if bf16 and model is not None:
        round_bf16_(model.parameters())  # a bf16 model stores the merged sum in bf16
    return UnlearnResult(model=model, adapter_state=adapter_state, history=history, seconds=time.time() - start)


@torch.no_grad()
def forget_nll(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, docs: list[str], max_len: int) -> float:
    """Mean token NLL of ``model`` on ``docs`` (nats/token), one batch; a quick check used by tests."""
    batch = {k: v.to(model.device) for k, v in
             pad_batch(encode_documents(tokenizer, docs, max_len), tokenizer.pad_token_id).items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return nll(logits, batch["labels"]).item()
