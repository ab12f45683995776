"""Checkpoints read tensor by tensor, for comparing two models that need not fit in memory (``qru deltas A B``).

A checkpoint is a Hugging Face model folder of safetensors shards (``model.safetensors``, or
``model-0000k-of-0000n.safetensors`` with ``model.safetensors.index.json``), or a single ``.safetensors`` file. The
unlearned side may also be a qru run folder (its LoRA ``adapter/`` or its full fine-tuning's
``unlearned_delta.safetensors``, dW added to the target) or a peft LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``):
its weight is W_t + scaling * B A per adapted module (scaling = lora_alpha / r, or lora_alpha / sqrt(r) with
rsLoRA), as peft's ``merge_and_unload`` computes it. Only safetensors are read: PyTorch pickle weights
(``pytorch_model*.bin``, ``adapter_model.bin``, ``*.pt``) are refused with how to convert them (qru.run_target checks
that a qru run's adapter or dW is compared against that run's own target).

Every tensor is read with safetensors' lazy ``safe_open`` (the file is memory-mapped and only that tensor's bytes
are copied), and the file is closed again, so memory holds a few tensors whatever the model size.

Which tensors are compared: the weights of the layers that ``load_in_4bit`` / ``load_in_8bit`` quantize, i.e.
2-D ``*.weight`` tensors of Linear layers. In a state dict that means every 2-D ``.weight`` except the output head
(``lm_head``) and embeddings (names containing ``embed``, ``wte`` or ``wpe``), matching
``qru.quant.bnb.quantizable_linears`` for Llama-style models. Names are given without the ``.weight`` suffix, as
module names.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open

from qru.deltas import MODULE_TYPES
from qru.errors import CheckpointError

INDEX = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
DELTA_FILE = "unlearned_delta.safetensors"  # a qru full-fine-tuning run's dW
FLOAT_TYPES = ("F64", "F32", "F16", "BF16")
SKIPPED = re.compile(r"(^|\.)(lm_head|embed[^.]*|wte|wpe)(\.|$)")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")  # PyTorch pickles (torch.save): never loaded by qru
CONVERT = ("load it with transformers (AutoModelForCausalLM.from_pretrained, or peft's PeftModel for an adapter) and "
           "save it with save_pretrained(dir, safe_serialization=True)")


class UnusableCheckpointError(CheckpointError):
    """The checkpoints' values cannot be compared (NaN or infinity, a LoRA update that does not fit its weight):
    the comparison stores nothing."""


def pickle_error(path: Path, files: list[Path]) -> str:
    """The message refusing PyTorch pickle weights in ``path`` (``files``: the pickles found)."""
    return (f"{path} holds PyTorch pickle weights ({files[0].name}), which qru does not load (safetensors only): "
            f"{CONVERT}")


def pickles_in(folder: Path) -> list[Path]:
    """The PyTorch pickle weight files of a folder (``pytorch_model*.bin``, ``adapter_model.bin``, ``*.pt`` ...)."""
    return sorted(p for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES and p.is_file())


def quantizable_name(name: str, ndim: int) -> bool:
    """Whether a state-dict tensor is a Linear weight that PTQ quantizes (see the module docstring)."""
    return name.endswith(".weight") and ndim == 2 and not SKIPPED.search(name[: -len(".weight")])


def model_order(name: str) -> tuple:
    """Sort key putting tensor names in the order a Llama-style model defines them (safetensors files sort names
    as text, so layer 10 would precede layer 2): the numbers in the name, then q, k, v, o, gate, up, down, then the
    name."""
    parts = name.removesuffix(".weight").split(".")
    module = parts[-1]
    rank = MODULE_TYPES.index(module) if module in MODULE_TYPES else len(MODULE_TYPES)
    return tuple(int(p) for p in parts if p.isdigit()), rank, name


def _shard_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise CheckpointError(pickle_error(path, [path]))
        if path.suffix != ".safetensors":
            raise CheckpointError(f"not a .safetensors file: {path}")
        return [path]
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    index = path / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted({path / f for f in weight_map.values()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index} is not a safetensors index ({exc})") from exc
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} names shards that are missing: {', '.join(missing[:3])}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files and pickles_in(path):
        raise CheckpointError(pickle_error(path, pickles_in(path)))
    if not files:
        raise CheckpointError(f"no .safetensors files in {path}")
    return files


def fingerprint(paths: list[Path]) -> str:
    """A hash of the names, sizes and modification times (ns) of ``paths``: changes when a file is rewritten."""
    parts = []
    for p in sorted(paths):
        st = p.stat()
        parts.append(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class Checkpoint:
    """A safetensors checkpoint opened lazily: only the headers are read here.

    Raises CheckpointError if the path holds no safetensors file, a file is not valid safetensors, or a tensor
    name appears in two shards.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        self.files = _shard_files(self.path)
        self._where: dict[str, Path] = {}
        self._shape: dict[str, tuple[int, ...]] = {}
        self._dtype: dict[str, str] = {}
        for file in self.files:
            try:
                with safe_open(str(file), framework="pt", device="cpu") as handle:
                    for name in handle.keys():
                        if name in self._where:
                            raise CheckpointError(f"tensor {name} is in two shards of {self.path}")
                        self._where[name] = file
                        meta = handle.get_slice(name)
                        self._shape[name] = tuple(meta.get_shape())
                        self._dtype[name] = str(meta.get_dtype())
            except CheckpointError:
                raise
            except Exception as exc:  # safetensors raises SafetensorError / OSError for damaged files
                raise CheckpointError(f"{file} is not a readable safetensors file ({exc})") from exc

    def names(self) -> list[str]:
        """Every tensor name, in file order."""
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shape[name]

    def dtype(self, name: str) -> torch.dtype:
        """The stored dtype of a tensor (float32 for types torch has no float name for)."""
        return {"BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}.get(self._dtype[name],
                                                                                        torch.float32)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def tensor(self, name: str, as_stored: bool = False) -> torch.Tensor:
        """One tensor as float32 (bf16/fp16 are widened; the file is closed again), or with ``as_stored`` in the
        float type the file stores (bf16, fp16 or float32; other types as float32). Raises CheckpointError for an
        unknown name, a read error, or a tensor holding NaN or infinity (a diverged model cannot be compared)."""
        if name not in self._where:
            raise CheckpointError(f"no tensor {name} in {self.path}")
        try:
            with safe_open(str(self._where[name]), framework="pt", device="cpu") as handle:
                tensor = handle.get_tensor(name)
                if not as_stored or tensor.dtype not in (torch.bfloat16, torch.float16, torch.float32):
                    tensor = tensor.float()
        except Exception as exc:
            raise CheckpointError(f"cannot read {name} from {self._where[name]} ({exc})") from exc
        # one summing pass: a NaN or infinity makes the sum non-finite (an overflowing sum is checked exactly)
        if not math.isfinite(float(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
            raise UnusableCheckpointError(f"{name} in {self._where[name]} holds NaN or infinite values")
        return tensor

    def quantizable(self) -> list[str]:
        """Names (with ``.weight``) of the non-empty tensors PTQ quantizes, in file order (:func:`quantizable_name`).
        Raises CheckpointError for one stored as integers (an already quantized checkpoint)."""
        names = [n for n in self._where if quantizable_name(n, len(self._shape[n])) and all(self._shape[n])]
        ints = [n for n in names if self._dtype[n] not in FLOAT_TYPES]
        if ints:
            raise CheckpointError(f"{ints[0]} in {self.path} is stored as {self._dtype[ints[0]]}: qru compares "
                                  "unquantized (float) checkpoints")
        return names


class LoraAdapter:
    """A peft LoRA adapter folder, giving the merged update of each adapted weight.

    Raises CheckpointError for a folder without adapter_config.json / adapter_model.safetensors, a peft type other
    than LORA, DoRA (its merge rescales columns, not supported), or lora_A / lora_B tensors that do not pair up.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        config_path, weights = self.path / ADAPTER_CONFIG, self.path / ADAPTER_WEIGHTS
        if config_path.is_file() and not weights.is_file() and pickles_in(self.path):
            raise CheckpointError(pickle_error(self.path, pickles_in(self.path)))
        if not (config_path.is_file() and weights.is_file()):
            raise CheckpointError(f"{self.path} is not a peft adapter folder ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
        try:
            self.config = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CheckpointError(f"{config_path} is not valid JSON ({exc})") from exc
        if not isinstance(self.config, dict) or self.config.get("peft_type", "LORA") != "LORA":
            raise CheckpointError(f"{config_path}: only LoRA adapters are supported, got "
                                  f"{self.config.get('peft_type') if isinstance(self.config, dict) else self.config!r}")
        if self.config.get("use_dora"):
            raise CheckpointError(f"{config_path}: DoRA adapters are not supported (their merge rescales columns)")
        self.files = [config_path, weights]
        self.weights = Checkpoint(weights)
        self._pairs = self._lora_pairs()

    def _lora_pairs(self) -> dict[str, tuple[str, str]]:
        """Target weight name ('model.layers.0.self_attn.q_proj.weight') -> (lora_A name, lora_B name). Full weights
        saved beside them (peft's ``modules_to_save``) go to ``self.saved``: target name -> stored name."""
        pairs: dict[str, dict[str, str]] = {}
        self.saved: dict[str, str] = {}
        for name in self.weights.names():
            m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", name)
            if m:
                pairs.setdefault(m.group(1) + ".weight", {})[m.group(2)] = name
            elif name.endswith(".weight") and ".lora_" not in name:
                plain = re.sub(r"^base_model\.model\.", "", name)
                self.saved[re.sub(r"\.modules_to_save(\.[^.]+)?\.", ".", plain)] = name
        bad = [k for k, v in pairs.items() if set(v) != {"A", "B"}]
        if bad or not pairs:
            raise CheckpointError(f"{self.path}: no lora_A / lora_B pairs" if not pairs else
                                  f"{self.path}: {bad[0]} lacks lora_A or lora_B")
        return {k: (v["A"], v["B"]) for k, v in pairs.items()}

    def targets(self) -> list[str]:
        """Names of the adapted weights, as in the base checkpoint."""
        return list(self._pairs)

    def scaling(self, name: str, rank: int) -> float:
        """lora_alpha / r (or / sqrt(r) with rsLoRA) for a weight, honouring peft's alpha_pattern."""
        alpha = self.config.get("lora_alpha", 8)
        module = name[: -len(".weight")]
        for pattern, value in (self.config.get("alpha_pattern") or {}).items():
            if re.match(rf"(.*\.)?({pattern})$", module):
                alpha = value
                break
        return alpha / (rank ** 0.5 if self.config.get("use_rslora") else rank)

    def check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        """Raise UnusableCheckpointError unless the lora_A / lora_B pair of ``name`` (from the headers) multiply to
        ``shape``, the base weight's [out, in] (transposed with fan_in_fan_out)."""
        a_name, b_name = self._pairs[name]
        a, b = self.weights.shape(a_name), self.weights.shape(b_name)
        if len(a) != 2 or len(b) != 2 or b[1] != a[0]:
            raise UnusableCheckpointError(f"{self.path}: {a_name} {a} and {b_name} {b} do not pair")
        update = (a[1], b[0]) if self.config.get("fan_in_fan_out") else (b[0], a[1])
        if update != tuple(shape):
            raise UnusableCheckpointError(f"the adapter {self.path} updates {name} with shape {update}, but the base "
                                          f"weight has shape {tuple(shape)}: the adapter was not trained on this base")

    def delta(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """scaling * B @ A for the weight ``name`` of ``shape`` [out, in] (float32); fan_in_fan_out transposes.
        Raises UnusableCheckpointError if the product does not have the weight's shape."""
        self.check_shape(name, shape)
        a_name, b_name = self._pairs[name]
        a, b = self.weights.tensor(a_name), self.weights.tensor(b_name)
        update = (b @ a) * self.scaling(name, a.shape[0])
        return update.T if self.config.get("fan_in_fan_out") else update


class DeltaFile(Checkpoint):
    """A qru full-fine-tuning run's ``unlearned_delta.safetensors`` (dW = W_u - W_t of every weight): the unlearned
    weight is the target's plus dW. Raises CheckpointError like :class:`Checkpoint`."""


def open_target(path: str | Path) -> Checkpoint:
    """The target side: a Checkpoint. Raises CheckpointError for a LoRA adapter or a qru run folder, which belong on
    the unlearned side, or an unreadable path."""
    p = Path(path).expanduser()
    if (p / ADAPTER_CONFIG).is_file() or (p / "adapter" / ADAPTER_CONFIG).is_file() or (p / DELTA_FILE).is_file():
        raise CheckpointError(f"{p} holds an unlearning update (a LoRA adapter or a qru run), not a target "
                              "checkpoint: give it as the second argument, UNLEARNED")
    return Checkpoint(p)


def open_unlearned(path: str | Path) -> Checkpoint | LoraAdapter:
    """The unlearned side: a LoraAdapter where ``path`` holds adapter_config.json; a DeltaFile where it holds a qru
    run's unlearned_delta.safetensors (full fine-tuning, or LoRA from a snapped start) or is that file; a LoraAdapter
    where its ``adapter/`` folder does (a qru LoRA run); else a Checkpoint."""
    p = Path(path).expanduser()
    if (p / ADAPTER_CONFIG).is_file():
        return LoraAdapter(p)
    if (p / DELTA_FILE).is_file():  # before adapter/: a LoRA run from a snapped start stores both (qru.pipeline)
        return DeltaFile(p / DELTA_FILE)
    if (p / "adapter" / ADAPTER_CONFIG).is_file():
        return LoraAdapter(p / "adapter")
    if p.name == DELTA_FILE:
        return DeltaFile(p)
    return Checkpoint(p)


def stream_pairs(target: Checkpoint, unlearned: Checkpoint | LoraAdapter | DeltaFile) -> Iterator[tuple[str, torch.Tensor,
                                                                                           torch.Tensor]]:
    """(module name, W_t, W_u) of every quantizable weight of ``target``, read one pair at a time ([out, in], each in
    the float type its file stores, bf16 / fp16 / float32: qru.deltas.scan widens them a row chunk at a time).

    With an adapter, W_u = W_t + its update where the adapter has one, else W_t; the sum is rounded to the base
    weight's stored dtype (bf16 / fp16), as peft's merge writes it into the base weight. With a DeltaFile,
    W_u = W_t + dW. Raises CheckpointError (before reading any tensor) if the two checkpoints do not hold the same
    quantizable weights with the same shapes, or an adapter names a weight the target lacks.
    """
    names = sorted(target.quantizable(), key=model_order)
    if not names:
        raise CheckpointError(f"{target.path} holds no Linear weights to compare")
    from qru.run_target import check_run_target  # imports this module

    check_run_target(target, unlearned, names)
    if isinstance(unlearned, LoraAdapter):
        unknown = [n for n in unlearned.targets() + list(unlearned.saved) if n not in target
                   and quantizable_name(n, 2)]  # an adapted lm_head or embedding is never compared
        if unknown:
            raise CheckpointError(f"the adapter {unlearned.path} adapts {unknown[0]}, which {target.path} lacks")
        for name in sorted((n for n in unlearned.targets() if n in target), key=model_order):
            unlearned.check_shape(name, target.shape(name))
        bad = [n for n in unlearned.saved if n in target and unlearned.weights.shape(unlearned.saved[n])
               != target.shape(n)]
        if bad:
            raise CheckpointError(f"the adapter {unlearned.path} saves {bad[0]} with shape "
                                  f"{unlearned.weights.shape(unlearned.saved[bad[0]])}, the target's is "
                                  f"{target.shape(bad[0])}")
        return _read_pairs(target, unlearned, names)
    if isinstance(unlearned, DeltaFile):
        missing = [n for n in names if n not in unlearned]
        if missing:
            raise CheckpointError(f"the update {unlearned.path} has no {missing[0]}, which {target.path} holds")
    elif set(other := unlearned.quantizable()) != set(names):
        only = sorted(set(names) ^ set(other))
        raise CheckpointError(f"the checkpoints hold different Linear weights (e.g. {only[0]}): "
                              f"{target.path} vs {unlearned.path}")
    shapes = [n for n in names if target.shape(n) != unlearned.shape(n)]
    if shapes:
        n = shapes[0]
        raise CheckpointError(f"{n} has shape {target.shape(n)} in {target.path} but {unlearned.shape(n)} in "
                              f"{unlearned.path}")
    return _read_pairs(target, unlearned, names)


def _read_pairs(target: Checkpoint, unlearned: Checkpoint | LoraAdapter, names: list[str]) -> Iterator[
        tuple[str, torch.Tensor, torch.Tensor]]:
    adapted = set(unlearned.targets()) if isinstance(unlearned, LoraAdapter) else set()
    for name in names:
        w_t = target.tensor(name, as_stored=True)
        if isinstance(unlearned, LoraAdapter) and name in unlearned.saved:  # modules_to_save: a replaced weight
            w_u = unlearned.weights.tensor(unlearned.saved[name], as_stored=True)
        elif isinstance(unlearned, LoraAdapter):
            w_u = (w_t.float() + unlearned.delta(name, target.shape(name))).to(target.dtype(name)) \
                if name in adapted else w_t
        elif isinstance(unlearned, DeltaFile):
            w_u = w_t.float() + unlearned.tensor(name)
        else:
            w_u = unlearned.tensor(name, as_stored=True)
        yield name[: -len(".weight")], w_t, w_u
        del w_t, w_u


__all__ = ["Checkpoint", "CheckpointError", "DeltaFile", "LoraAdapter", "UnusableCheckpointError", "fingerprint",
           "open_target", "open_unlearned", "quantizable_name", "stream_pairs"]
