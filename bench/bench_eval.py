"""Batched VerbMem/KnowMem evaluation vs a one-prompt-at-a-time loop on the same model and prompts.

Prints both times, their ratio (loop / batched: how many times faster batching is) and whether the scores agree.
"""
from common import setup, timed

from qru.evals.knowmem import knowmem
from qru.evals.verbmem import verbmem


def main() -> None:
    args, corpus, pair, _ = setup(__doc__)
    model, tok = pair.target, pair.tokenizer
    items = corpus.verbmem_forget
    qa, icl = corpus.knowmem["forget_qa"], corpus.knowmem["forget_qa_icl"]

    def both(batch_size):
        vm, _ = verbmem(model, tok, items, 128, batch_size)
        km, _ = knowmem(model, tok, qa, icl, 32, batch_size)
        return vm, km

    both(16)  # warm-up
    (vm_b, km_b), t_batched = timed(both, 16)
    (vm_1, km_1), t_loop = timed(both, 1)
    print(f"prompts: {len(items)} VerbMem + {len(qa)} KnowMem")
    print(f"batched (16): {t_batched:.2f} s  VerbMem {vm_b:.2f} KnowMem {km_b:.2f}")
    print(f"one at a time: {t_loop:.2f} s  VerbMem {vm_1:.2f} KnowMem {km_1:.2f}")
    print(f"speed-up ratio loop/batched: {t_loop / t_batched:.2f}x; scores equal: "
          f"{abs(vm_b - vm_1) < 1e-9 and abs(km_b - km_1) < 1e-9}")


if __name__ == "__main__":
    main()
