"""Run directories and Hugging Face format checkpoints (safetensors, loadable by transformers)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rlvr_lab.faults import fault_point

TRAINER_STATE = "trainer_state.pt"
"""The file in a checkpoint folder that holds the trainer's state for an exact resume."""


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


def save_checkpoint(model, tokenizer, path: Path, *, meta: dict[str, Any] | None = None,
                    trainer_state: dict[str, Any] | None = None) -> Path:
    """Model and tokenizer in Hugging Face format, plus ``trainer_state.pt`` (what an exact resume needs:
    :mod:`rlvr_lab.train.resume`) when ``trainer_state`` is given. Everything is written to a temporary
    folder and renamed at the end, so a crash mid-save never leaves a half checkpoint under the final name
    (a leftover ``*.tmp`` folder is never read as a checkpoint)."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if trainer_state is not None:
        import torch

        torch.save(trainer_state, tmp / TRAINER_STATE)
    (tmp / "rlvr_state.json").write_text(json.dumps({"saved_at": time.time(), **(meta or {})}, indent=2))
    fault_point("checkpoint_write", int((meta or {}).get("rl_step", -1)))
    old = path.with_name(path.name + ".old")
    if path.exists():  # replace in two renames: the old folder is only deleted once the new one is in place
        if old.exists():
            shutil.rmtree(old)
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)
    return path


def step_checkpoints(folder: Path, prefix: str = "step-") -> list[Path]:
    """The periodic checkpoints in ``folder`` (``step-<N>`` folders), oldest first."""
    return sorted(
        (p for p in Path(folder).glob(f"{prefix}*") if p.is_dir() and p.name[len(prefix):].isdigit()),
        key=lambda p: int(p.name[len(prefix):]),
    )


def prune_checkpoints(folder: Path, keep: int, prefix: str = "step-", protect: Path | None = None) -> None:
    """Delete all but the newest ``keep`` periodic checkpoints, never ``protect`` (the best one)."""
    for old in step_checkpoints(folder, prefix)[:-keep]:
        if protect is None or old.resolve() != Path(protect).resolve():
            shutil.rmtree(old)


def load_weights(model, path: Path) -> None:
    """Load the weights of the checkpoint at ``path`` (a folder written by :func:`save_checkpoint`) into
    ``model`` in place. Every parameter must be in the file, except one tied to a parameter that is (an
    output head sharing the embedding); a shape or name mismatch raises ValueError naming the checkpoint."""
    from safetensors.torch import load_file

    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ValueError(f"{path} holds no model.safetensors: not a checkpoint written by rlvr train")
    state: dict[str, Any] = {}
    for name in files:
        state.update(load_file(str(path / name)))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"the checkpoint {path} does not fit this model: {exc}") from None
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in state if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise ValueError(f"the checkpoint {path} does not fit this model: missing {untied}, unexpected {unexpected}")
