"""Run directories and Hugging Face format checkpoints (safetensors, loadable by transformers)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any


def make_run_dir(output_dir: str | Path, name: str, *, overwrite: bool) -> Path:
    """``output_dir/name``; if it exists and ``overwrite`` is off, ``name-2``, ``name-3``, ..."""
    base = Path(output_dir)
    path = base / name
    if path.exists() and overwrite:
        shutil.rmtree(path)
    n = 2
    while path.exists():
        path = base / f"{name}-{n}"
        n += 1
    path.mkdir(parents=True)
    return path


def save_checkpoint(model, tokenizer, path: Path, *, meta: dict[str, Any] | None = None) -> Path:
    """Model and tokenizer in Hugging Face format; written to a temporary folder, then renamed,
    so a crash mid-save never leaves a half checkpoint under the final name."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "rlvr_state.json").write_text(json.dumps({"saved_at": time.time(), **(meta or {})}, indent=2))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def prune_checkpoints(folder: Path, keep: int, prefix: str = "step-") -> None:
    """Delete all but the newest ``keep`` periodic checkpoints."""
    found = sorted(
        (p for p in folder.glob(f"{prefix}*") if p.is_dir() and p.name[len(prefix):].isdigit()),
        key=lambda p: int(p.name[len(prefix):]),
    )
    for old in found[:-keep]:
        shutil.rmtree(old)
