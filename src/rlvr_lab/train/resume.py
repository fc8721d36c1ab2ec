"""Exact resume: what a checkpoint must hold so that a run killed at any point and resumed from its last
checkpoint ends bitwise identical to a run that was never interrupted (on CPU, same seeds and threads).

A periodic checkpoint (``train.checkpoint_every``) holds the weights (Hugging Face format) and
``trainer_state.pt``: the optimiser's and scheduler's state, every random-number generator the loop draws
from (Python's, NumPy's, torch's global ones and the trainer's own mini-batch generator), the RL step,
the number of lines ``metrics.jsonl`` held after that step, the run summary so far, the frozen reference
model's weights when a KL term uses one, the method state (SPEAR's replay buffer and schedules, HAPO's
entropy statistics, the inactivity counters) and the observatory's (the phase detector's window, the
probe set with its reference log-probs). The data order and the rollout seeds are functions of the step,
so they need no state. Steps after the checkpoint are run again; the lines and TensorBoard events they had
written are dropped first.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr_lab.train.checkpoint import TRAINER_STATE, step_checkpoints

STATE_VERSION = 1

RESUME_MAY_DIFFER = (
    "train.steps", "train.checkpoint_every", "train.keep_checkpoints", "run.name", "run.output_dir",
    "run.overwrite", "run.resume", "observe.report", "observe.tensorboard", "observe.wandb", "observe.mlflow",
)
"""Config keys (and everything under them) a resumed run may change: the step budget and the output
options. Anything else would make the continuation a different run, so it is refused."""


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random-number generator state the training loop draws from."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The newest ``checkpoints/step-N`` folder of ``run_dir`` that holds a trainer state (None: none yet).
    Folders still under a temporary name (a kill mid-save) are never considered."""
    folders = [p for p in step_checkpoints(Path(run_dir) / "checkpoints") if (p / TRAINER_STATE).is_file()]
    return folders[-1] if folders else None


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    state = torch.load(Path(checkpoint) / TRAINER_STATE, map_location="cpu", weights_only=False)
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{checkpoint / TRAINER_STATE} has state version {state.get('version')!r}; this "
                         f"rlvr-lab reads version {STATE_VERSION}")
    return state


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any],
                       may_differ: tuple[str, ...] = RESUME_MAY_DIFFER) -> list[str]:
    """The dotted keys whose values differ between two config dumps, outside ``may_differ``, as
    ``key: saved -> new`` lines."""
    a, b = flatten(saved), flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or key.startswith(k + ".") for k in may_differ):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            lines.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return lines


def run_dirs_named(output_dir: Path | str, name: str) -> list[Path]:
    """The run directories ``make_run_dir`` gives one name: ``name``, ``name-2``, ``name-3``, ... in that order."""
    base = Path(output_dir)
    found = [(1, base / name)] if (base / name).is_dir() else []
    for p in base.glob(f"{name}-*"):
        suffix = p.name[len(name) + 1:]
        if p.is_dir() and suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found)]


def auto_resume_dir(cfg) -> tuple[Path | None, str]:
    """``run.resume: auto``: the latest run directory of ``cfg``'s name when its config matches ``cfg``
    (apart from :data:`RESUME_MAY_DIFFER`), else None; and a line saying what was decided and why."""
    import yaml

    dirs = [d for d in run_dirs_named(cfg.run.output_dir, cfg.run.name) if (d / "config.yaml").is_file()]
    if not dirs:
        return None, f"run.resume=auto: no earlier run named {cfg.run.name!r} in {cfg.run.output_dir}; starting one"
    latest = dirs[-1]
    done = completed_steps(latest)
    if done is not None and (done >= cfg.train.steps or latest_checkpoint(latest) is None):
        return None, f"run.resume=auto: {latest} completed {done} RL steps; starting a new run directory"
    differences = config_differences(yaml.safe_load((latest / "config.yaml").read_text()), cfg.model_dump(mode="json"))
    if differences:
        return None, (f"run.resume=auto: not resuming {latest}, its config differs in " + "; ".join(differences[:5])
                      + (" ..." if len(differences) > 5 else "") + "; starting a new run directory")
    return latest, f"run.resume=auto: resuming {latest}"


def completed_steps(run_dir: Path) -> int | None:
    """The RL steps of a run directory whose summary says it completed (None: not completed, or no summary)."""
    import json

    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return int(summary.get("rl_steps_done", 0)) if summary.get("status") == "completed" else None
