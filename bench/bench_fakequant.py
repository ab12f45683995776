"""Fake-quant evaluation (dequantized fp32 weights) vs bitsandbytes' real Linear4bit layers on CPU.

Times the same full metric evaluation with both 4-bit models and prints the ratio (Linear4bit / fake-quant) and the
largest difference between the two models' metrics.
"""
from common import setup, timed

from qru.config import EvalConfig
from qru.evals.suite import evaluate
from qru.quant.bnb import fake_quantize, to_bnb_linear4bit
from qru.quant.spec import QuantSpec


def main() -> None:
    args, corpus, pair, model_cfg = setup(__doc__)
    cfg = EvalConfig()
    for quant_type in ("fp4", "nf4"):
        fake, t_q_fake = timed(fake_quantize, pair.target, QuantSpec(4, quant_type))
        real, t_q_real = timed(to_bnb_linear4bit, pair.target, quant_type)
        evaluate(fake, pair.tokenizer, corpus, cfg, model_cfg.max_len)  # warm-up
        r_fake, t_fake = timed(evaluate, fake, pair.tokenizer, corpus, cfg, model_cfg.max_len)
        r_real, t_real = timed(evaluate, real, pair.tokenizer, corpus, cfg, model_cfg.max_len)
        diff = max(abs(r_fake["metrics"][k] - r_real["metrics"][k]) for k in r_fake["metrics"])
        print(f"{quant_type}: quantize fake {t_q_fake:.2f} s / Linear4bit {t_q_real:.2f} s; evaluate fake "
              f"{t_fake:.2f} s / Linear4bit {t_real:.2f} s; ratio Linear4bit/fake {t_real / t_fake:.2f}x; "
              f"max metric difference {diff:.2e}")


if __name__ == "__main__":
    main()
