"""qru's batched VerbMem/KnowMem evaluation vs the one-prompt-at-a-time loop MUSE's metrics code runs
(metrics/verbmem.py, knowmem.py: plain ``tokenizer(prompt)``, greedy generate, no padding; the loop written in
tests/test_muse_reference.py), on the same model and prompts, in the ``muse`` prompt format.

Prints both times, their ratio (loop / batched: how many times faster qru is; issue 20's target is >= 5x) and whether
the per-item scores are equal.
"""
import sys
from pathlib import Path

from common import setup, timed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_muse_reference import reference_knowmem, reference_verbmem  # noqa: E402

from qru.evals.knowmem import knowmem  # noqa: E402
from qru.evals.verbmem import verbmem  # noqa: E402


def main() -> None:
    args, corpus, pair, _ = setup(__doc__)
    model, tok = pair.target, pair.tokenizer
    items = corpus.verbmem_forget
    qa, icl = corpus.knowmem["forget_qa"], corpus.knowmem["forget_qa_icl"]

    def batched():
        vm = [r["rougeL_f1"] for r in verbmem(model, tok, items, 128, 16, "muse")[1]]
        km = [r["rougeL_f1"] for r in knowmem(model, tok, qa, icl, 32, 16, "muse")[1]]
        return vm, km

    def loop():
        return reference_verbmem(model, tok, items, 128, "muse"), reference_knowmem(model, tok, qa, icl, 32, "muse")

    batched()  # warm-up
    (vm_b, km_b), t_batched = timed(batched)
    (vm_l, km_l), t_loop = timed(loop)
    same = sum(a == b for a, b in zip(vm_b + km_b, vm_l + km_l))
    print(f"prompts: {len(items)} VerbMem + {len(qa)} KnowMem (muse prompt format)")
    print(f"qru batched (16): {t_batched:.2f} s  VerbMem {100 * sum(vm_b) / len(vm_b):.2f} "
          f"KnowMem {100 * sum(km_b) / len(km_b):.2f}")
    print(f"MUSE's loop:      {t_loop:.2f} s  VerbMem {100 * sum(vm_l) / len(vm_l):.2f} "
          f"KnowMem {100 * sum(km_l) / len(km_l):.2f}")
    print(f"speed-up ratio loop/batched: {t_loop / t_batched:.2f}x (target >= 5x); per-item scores equal: "
          f"{same} of {len(vm_b) + len(km_b)}")


if __name__ == "__main__":
    main()
