"""What produced a result: the library versions, the machine and the full quantizer settings, stored as
``provenance.json`` beside each run's ``config.json`` (written when the run starts; a re-run writes its own), read
back by ``qru show`` and written by ``qru export``.

The config alone does not pin a result: the same config computed with another torch or bitsandbytes release can
round differently (bitsandbytes 0.50's CPU kernel, for one, dequantizes some 4-bit blocks differently from its CUDA
kernel: docs/results.md). Runs stored before this file existed have none; their provenance reads as unknown.
"""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

from qru.quant.spec import QuantSpec

PACKAGES = ("qru", "torch", "transformers", "peft", "bitsandbytes", "tokenizers", "safetensors", "numpy",
            "rouge-score", "scikit-learn", "accelerate")
FILE = "provenance.json"


def versions() -> dict[str, str]:
    """Installed versions of PACKAGES ("not installed" where absent) and Python's."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def source_commit() -> str:
    """The git commit of qru's source tree with ``+changes`` when files differ from it, or "" outside a checkout."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    if head.returncode:
        return ""
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def quantizer_settings(spec: QuantSpec, quant_load: bool = False) -> dict:
    """Every setting of one quantizer as qru applies it: the key and label, bits, type, block or group size, and
    how Q(W) is computed (qru's fake-quant per implementation, or bitsandbytes' quantized loading with its
    BitsAndBytesConfig values: docs/design.md "Quantizers")."""
    out = {"key": spec.key, "label": spec.label, "bits": spec.bits, "quant_type": spec.quant_type}
    if spec.bits == 32:
        return {**out, "how": "none (float32 weights)"}
    if spec.quant_type in ("fp4", "nf4"):
        out.update(blocksize=spec.blocksize, double_quant=False, scaling="absmax per block of consecutive weights",
                   how=("bitsandbytes quantized loading: BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="
                        f"{spec.quant_type!r}, bnb_4bit_use_double_quant=False)") if quant_load else
                   "fake-quant: bitsandbytes' reference 4-bit rounding in torch (qru.quant.bnb.quantize_4bit), "
                   "code value x block absmax")
    elif spec.quant_type == "int8":
        out.update(scaling="absmax per output row (LLM.int8 weights), weight cast to float16 first",
                   how=("bitsandbytes quantized loading: BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold="
                        "6.0)") if quant_load else "fake-quant: bitsandbytes int8_vectorwise_quant (weights only; "
                   "no outlier features kept in 16 bits)")
    else:
        kind = "GPTQ (calibrated on the retain set)" if spec.is_gptq else "round-to-nearest"
        out.update(group_size=spec.group_size, symmetric=spec.quant_type.endswith("-sym"),
                   how=f"fake-quant: {kind} int{spec.bits}, "
                       + ("per output channel" if spec.group_size == 0 else f"groups of {spec.group_size}"))
    return out


def provenance(specs: list[QuantSpec], quant_load: bool = False, device: str = "cpu") -> dict:
    """The provenance record of a result computed now under ``specs`` on ``device``: versions, source commit,
    machine and each quantizer's settings (:func:`quantizer_settings`)."""
    return {"versions": versions(), "qru_commit": source_commit(), "device": str(device),
            "machine": f"{platform.system()} {platform.machine()}",
            "quantizers": [quantizer_settings(s, quant_load) for s in specs]}


def read_provenance(folder: Path) -> dict | None:
    """The provenance record stored in a run folder, or None where it has none (or it cannot be read)."""
    from qru.atomic import read_json

    try:
        data = read_json(Path(folder) / FILE, ValueError, FILE)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def provenance_lines(record: dict | None) -> list[str]:
    """``qru show``'s lines for a stored record (None: stored before provenance was recorded)."""
    if not record:
        return ["provenance: not recorded (the run was stored before qru recorded library versions)"]
    v = record.get("versions", {})
    commit = f" (commit {record['qru_commit']})" if record.get("qru_commit") else ""
    lines = [f"provenance: qru {v.get('qru', '?')}{commit}, torch {v.get('torch', '?')}, transformers "
             f"{v.get('transformers', '?')}, peft {v.get('peft', '?')}, bitsandbytes {v.get('bitsandbytes', '?')}, "
             f"python {v.get('python', '?')}; on {record.get('device', '?')} ({record.get('machine', '?')})"]
    lines += [f"  {q.get('key')}: {q.get('how')}" for q in record.get("quantizers", []) if q.get("bits", 32) < 32]
    return lines


__all__ = ["FILE", "provenance", "provenance_lines", "read_provenance", "quantizer_settings", "source_commit", "versions"]
