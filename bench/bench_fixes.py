"""Cost per unlearning step of the fixes against plain unlearning (README "Command line": the cost of --quant-aware
and --sam-rho): NPO+GDR on the tiny default (or --micro), full fine-tuning and LoRA, plain / quantization-aware (NF4,
loss at Q(W) only, and mixed 0.5 with the loss at W) / SAM, the same steps each; prints seconds per step and the ratio
to plain unlearning with the same adapter, all measured in this one run."""
from common import setup, timed

from qru.recipes import unlearn_config
from qru.unlearn.trainer import unlearn

STEPS = 12
VARIANTS = {"plain": {}, "quant-aware NF4": {"quant_aware": "nf4-b64@4"},
            "quant-aware NF4, mix 0.5": {"quant_aware": "nf4-b64@4", "quant_aware_mix": 0.5},
            "SAM rho 1": {"sam_rho": 1.0}}


def main() -> None:
    args, corpus, pair, model_cfg = setup(__doc__)
    forget, retain = corpus.raw["forget"], corpus.train_documents("retrain")
    for adapter in ("full", "lora"):
        base = None
        for name, extra in VARIANTS.items():
            config = unlearn_config("npo", adapter=adapter, lr=1e-4, max_steps=STEPS, **extra)
            unlearn(pair.target, pair.tokenizer, forget, retain, unlearn_config("npo", adapter=adapter, max_steps=2,
                                                                                 **extra), model_cfg.max_len)  # warm
            _, seconds = timed(unlearn, pair.target, pair.tokenizer, forget, retain, config, model_cfg.max_len)
            per_step = seconds / STEPS
            base = base or per_step
            print(f"{adapter:4} {name:26} {per_step * 1000:7.0f} ms/step  {per_step / base:5.2f}x plain", flush=True)


if __name__ == "__main__":
    main()
