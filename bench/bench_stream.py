"""Benchmark of `qru deltas` on two synthetic checkpoints of at least 1 GB each: streaming speed and peak memory.

Builds a Llama-shaped target (layers of q/k/v/o 2048x2048 and gate/up/down 5632x2048 / 2048x5632, as TinyLlama) in
safetensors shards with an index, and an unlearned copy moved by Gaussian noise of 1e-4 per weight, then measures,
each in a fresh process, on the same bytes (both checkpoints, warm page cache):

- plain read: every file read sequentially into a buffer (the reference speed);
- streamed pairs: the tensor-by-tensor reading of ``qru deltas`` alone (safetensors lazy loading, widened to fp32);
- ``qru deltas`` with 32 bits only, then with the quantizers given by --quantizers (default FP4).

Prints each speed as a ratio to the plain read (goal >= 0.5) and each process's peak resident memory next to the
size of one checkpoint and of its largest tensor. Run: ``.venv/bin/python bench/bench_stream.py [--size-gb 1]``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN, INTER = 2048, 5632
MODULES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
           "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
           "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}


def build(folder: Path, n_layers: int, dtype: str, noise: float, seed: int) -> int:
    """Write a sharded checkpoint (two layers per shard) of ``n_layers`` layers; returns its size in bytes.
    With ``noise`` > 0 the weights are the seed's target weights plus N(0, noise^2)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    weight_map, total = {}, 0
    shards = [list(range(i, min(i + 2, n_layers))) for i in range(0, n_layers, 2)]
    for s, layers in enumerate(shards):
        tensors = {}
        for layer in layers:
            for module, shape in MODULES.items():
                gen = torch.Generator().manual_seed(seed * 1000 + layer * 10 + list(MODULES).index(module))
                w = torch.randn(shape, generator=gen) * 0.02
                if noise:
                    w += torch.randn(shape, generator=gen) * noise
                tensors[f"model.layers.{layer}.{module}.weight"] = w.to(getattr(torch, dtype))
        name = f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(folder / name))
        total += (folder / name).stat().st_size
        weight_map.update({k: name for k in tensors})
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    return total


# The process's own peak resident memory (VmHWM, KiB) at exit; ru_maxrss would include the parent's, inherited at fork.
PEAK = ("import atexit, sys\n"
        "atexit.register(lambda: print('PEAK', [l.split()[1] for l in open('/proc/self/status') "
        "if l.startswith('VmHWM')][0], file=sys.stderr))\n")


def child(code: str) -> tuple[float, float]:
    """Run ``code`` in a fresh Python; returns (wall seconds, peak resident MiB of that process)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK + code], check=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    peaks = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK ")]
    return seconds, (peaks[-1] / 1024 if peaks else float("nan"))


PLAIN = """
import sys
buf = bytearray(64 << 20)
for path in sys.argv[1:] or {files!r}:
    with open(path, 'rb', buffering=0) as f:
        while f.readinto(buf):
            pass
"""
PAIRS = """
from qru.checkpoints import Checkpoint, stream_pairs
for name, wt, wu in stream_pairs(Checkpoint({a!r}), Checkpoint({b!r})):
    float((wu - wt).abs().max())
"""
DELTAS = """
import sys
from qru.cli import main
sys.exit(main(['--cache', {store!r}, 'deltas', {a!r}, {b!r}, '--quantizers', *{quantizers!r}, '--force', '--quiet']))
"""
# The import cost of torch / bitsandbytes in a fresh process, subtracted from every timing that pays it.
IMPORTS = "import torch, bitsandbytes, pandas, safetensors; import qru.cli, qru.compare"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="least size of each checkpoint (GB, 1e9 bytes)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--quantizers", nargs="+", default=["fp4-b64@4"], help="as `qru deltas --quantizers`")
    parser.add_argument("--dir", default=None, help="where to write the checkpoints (default: a temporary folder)")
    args = parser.parse_args()
    per_layer = sum(a * b for a, b in MODULES.values()) * (4 if args.dtype == "float32" else 2)
    n_layers = max(1, -(-int(args.size_gb * 1e9) // per_layer))
    root = Path(tempfile.mkdtemp(prefix="qru-bench-", dir=args.dir))
    try:
        print(f"building two checkpoints of {n_layers} layers ({args.dtype}) in {root} ...", flush=True)
        size = build(root / "target", n_layers, args.dtype, 0.0, 0)
        build(root / "unlearned", n_layers, args.dtype, 1e-4, 0)
        files = sorted(str(p) for p in root.rglob("*.safetensors"))
        largest = max(a * b for a, b in MODULES.values()) * 4 / 2**20
        a, b, store = str(root / "target"), str(root / "unlearned"), str(root / "store")
        child(PLAIN.format(files=files))  # warm the page cache: every timing reads the same cached bytes
        imports, _ = child(IMPORTS)
        plain, plain_mib = child(PLAIN.format(files=files))
        print(f"\ncheckpoints: 2 x {size / 1e9:.2f} GB; largest tensor {largest:.0f} MiB as fp32; "
              f"fresh-process import time {imports:.1f} s (subtracted below)")
        print(f"{'what':44s} {'seconds':>8s} {'GB/s':>6s} {'ratio':>6s} {'peak RSS MiB':>13s}")
        print(f"{'plain read of both checkpoints':44s} {plain:8.2f} {2 * size / 1e9 / plain:6.2f} {1:6.2f} "
              f"{plain_mib:13.0f}")
        runs = [("streamed pairs (safetensors lazy, fp32)", PAIRS.format(a=a, b=b)),
                ("qru deltas --quantizers none@32", DELTAS.format(store=store, a=a, b=b, quantizers=["none@32"])),
                (f"qru deltas --quantizers {' '.join(args.quantizers)}",
                 DELTAS.format(store=store, a=a, b=b, quantizers=args.quantizers))]
        for label, code in runs:
            seconds, peak = child(code)
            work = max(seconds - imports, 1e-9)
            print(f"{label:44s} {work:8.2f} {2 * size / 1e9 / work:6.2f} {plain / work:6.2f} {peak:13.0f}",
                  flush=True)
        print(f"\nratio = plain read time / time (goal >= 0.5). Peak RSS is per process, each checkpoint "
              f"{size / 2**20:.0f} MiB: memory holds a few tensors, not a checkpoint.")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
