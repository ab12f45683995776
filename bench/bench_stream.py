"""Benchmark of `qru deltas` on two synthetic checkpoints of at least 1 GB each: streaming speed and peak memory.

Builds a Llama-shaped target (layers of q/k/v/o 2048x2048 and gate/up/down 5632x2048 / 2048x5632, as TinyLlama) in
safetensors shards with an index, and an unlearned copy moved by Gaussian noise of 1e-4 per weight, then measures,
each in a fresh process, on the same bytes (both checkpoints, warm page cache):

- plain read: every file read sequentially into a buffer (the reference speed);
- streamed pairs: the tensor-by-tensor reading of ``qru deltas`` alone (safetensors lazy loading, as stored);
- ``qru deltas`` with 32 bits only (target >= 0.5 of the plain read), with FP4 + NF4 + LLM.int8 together
  (target >= 0.2) and with all 59 quantizers of the analysis grid (target >= 0.01; left out with --no-all).

Prints each speed as a ratio to the plain read and each process's peak resident memory above that of a process that
only imports the libraries, as a multiple of the largest tensor in fp32 (target <= 8x). ``--device cuda`` runs the
scans on a GPU. Run: ``.venv/bin/python bench/bench_stream.py [--size-gb 1] [--dtype bfloat16] [--device cuda]``.
"""
from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {"tinyllama": (2048, 5632), "7b": (4096, 11008)}  # (hidden, intermediate): TinyLlama-1.1B, Llama-2-7B


def modules(shape: str) -> dict[str, tuple[int, int]]:
    """The Linear weights of one layer of a Llama of ``shape`` (a key of SHAPES), [out, in] each."""
    hidden, inter = SHAPES[shape]
    return {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
            "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
            "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden), "mlp.down_proj": (hidden, inter)}




@functools.lru_cache(maxsize=8)
def _random(size: tuple[int, int], seed: int, scale: float):
    """N(0, scale^2) weights of ``size`` for ``seed``, drawn once (torch's CPU generator draws ~10M values/s)."""
    import torch

    return torch.randn(size, generator=torch.Generator().manual_seed(seed)) * scale


def build(folder: Path, n_layers: int, dtype: str, noise: float, seed: int, shape: str = "tinyllama") -> int:
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
            for module, size in modules(shape).items():
                w = torch.roll(_random(size, seed, 0.02), shifts=layer * 7919)  # each layer its own (cheap) values
                if noise:
                    w += torch.roll(_random(size, seed + 1, noise), shifts=layer * 104729)
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
sys.exit(main(['--cache', {store!r}, 'deltas', {a!r}, {b!r}, '--quantizers', *{quantizers!r}, '--force', '--quiet',
               '--device', {device!r}]))
"""
# The import cost of torch / bitsandbytes in a fresh process, subtracted from every timing that pays it.
IMPORTS = "import torch, bitsandbytes, pandas, safetensors; import qru.cli, qru.compare"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="least size of each checkpoint (GB, 1e9 bytes)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--device", default="cpu", help="as `qru deltas --device` (cpu, cuda, auto)")
    parser.add_argument("--shape", choices=tuple(SHAPES), default="tinyllama",
                        help="layer shapes: tinyllama (hidden 2048, MLP 5632) or 7b (Llama-2-7B: 4096, 11008; "
                             "--size-gb 13 --dtype bfloat16 gives its 32 layers)")
    parser.add_argument("--no-all", action="store_true", help="leave out the scan under all 59 quantizers")
    parser.add_argument("--no-bnb", action="store_true", help="leave out the scan under FP4 + NF4 + int8")
    parser.add_argument("--dir", default=None, help="where to write the checkpoints (default: a temporary folder)")
    args = parser.parse_args()
    layer = modules(args.shape)
    per_layer = sum(a * b for a, b in layer.values()) * (4 if args.dtype == "float32" else 2)
    n_layers = max(1, -(-int(args.size_gb * 1e9) // per_layer))
    root = Path(tempfile.mkdtemp(prefix="qru-bench-", dir=args.dir))
    try:
        print(f"building two {args.shape}-shaped checkpoints of {n_layers} layers ({args.dtype}) in {root} ...",
              flush=True)
        size = build(root / "target", n_layers, args.dtype, 0.0, 0, args.shape)
        build(root / "unlearned", n_layers, args.dtype, 1e-4, 0, args.shape)
        files = sorted(str(p) for p in root.rglob("*.safetensors"))
        largest = max(a * b for a, b in layer.values()) * 4 / 2**20
        a, b, store = str(root / "target"), str(root / "unlearned"), str(root / "store")
        child(PLAIN.format(files=files))  # warm the page cache: every timing reads the same cached bytes
        imports, base_mib = child(IMPORTS)
        plain, plain_mib = child(PLAIN.format(files=files))
        print(f"\ncheckpoints: 2 x {size / 1e9:.2f} GB ({args.dtype}); largest tensor {largest:.0f} MiB as fp32; "
              f"a fresh process's imports take {imports:.1f} s and {base_mib:.0f} MiB (subtracted below); "
              f"scans on {args.device}")
        print(f"{'what':44s} {'seconds':>8s} {'GB/s':>6s} {'ratio':>6s} {'target':>7s} {'memory':>7s}")
        print(f"{'plain read of both checkpoints':44s} {plain:8.2f} {2 * size / 1e9 / plain:6.2f} {1:6.2f}")
        deltas = lambda keys: DELTAS.format(store=store, a=a, b=b, quantizers=keys, device=args.device)  # noqa: E731
        runs = [("streamed pairs (safetensors lazy, as stored)", PAIRS.format(a=a, b=b), None),
                ("qru deltas: 32-bit statistics", deltas(["none@32"]), 0.5)]
        if not args.no_bnb:
            runs.append(("qru deltas: FP4 + NF4 + int8 together", deltas(["fp4-b64@4", "nf4-b64@4", "int8@8"]), 0.2))
        if not args.no_all:
            runs.append(("qru deltas: all 59 quantizers", deltas(["all"]), 0.01))
        for label, code, target in runs:
            seconds, peak = child(code)
            work = max(seconds - imports, 1e-9)
            print(f"{label:44s} {work:8.2f} {2 * size / 1e9 / work:6.2f} {plain / work:6.2f} "
                  f"{'' if target is None else f'>= {target}':>7s} {(peak - base_mib) / largest:6.1f}x", flush=True)
        print(f"\nratio = plain read time / time. memory = peak resident memory above the import-only process, as a "
              f"multiple of the largest tensor in fp32 (target <= 8x); each checkpoint is {size / 2**20:.0f} MiB.")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
