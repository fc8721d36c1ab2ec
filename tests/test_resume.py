"""Exact resume: a run killed with SIGKILL at random points and resumed each time ends bitwise equal to an
uninterrupted run of the same seed (metrics and final weights); the pieces it rests on."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rlvr_lab.config import load_config
from rlvr_lab.diagnostics.sinks import JsonlSink, truncate_jsonl
from rlvr_lab.faults import ENV as FAULT_ENV
from rlvr_lab.faults import armed
from rlvr_lab.train.checkpoint import TRAINER_STATE
from rlvr_lab.train.loop import Trainer
from rlvr_lab.train.resume import auto_resume_dir, config_differences, latest_checkpoint

RUN = {
    "extends": "grpo",
    "run": {"name": "resume", "seed": 3, "threads": 1},
    "model": {"source": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                                         "intermediate_size": 64, "max_position_embeddings": 160}},
    "task": {"name": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
             "train_size": 60, "eval_size": 8},
    "rollout": {"max_new_tokens": 8},
    "sft": {"steps": 3, "batch_size": 4},
    # two mini-batches: the optimiser state and the shuffling generator both matter after a resume
    "train": {"steps": 6, "checkpoint_every": 1, "prompts_per_step": 4, "group_size": 4, "micro_batch_size": 8,
              "minibatches": 2},
    "eval": {"enabled": True, "samples": 2, "k": [1, 2]},
    "observe": {"report": False, "tensorboard": False, "probe_prompts": 2, "probe_samples": 2, "probe_every": 2},
}

# Not compared: wall-clock times.
TIMING = ("time/", "eval/seconds")


def comparable(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith(TIMING)} for row in rows]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "final" / "model.safetensors"))


def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlvr_lab.cli", "train", "--quiet", *args]


def child_env(fault: str | None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return env


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "run.yaml"
    path.write_text(yaml.safe_dump(RUN))
    return path


@pytest.fixture(scope="module")
def uninterrupted(config_file) -> Path:
    out = config_file.parent / "reference"
    done = subprocess.run(train_command(str(config_file), f"run.output_dir={out}"), env=child_env(None),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "resume"


@pytest.mark.slow
def test_killed_and_resumed_run_is_bitwise_equal_to_an_uninterrupted_one(config_file, uninterrupted):
    """At least 10 SIGKILLs: at each named fault point (rollout, update, mid-checkpoint write, mid-line of
    metrics.jsonl) in several steps, including before the first checkpoint; then up to 3 at random moments."""
    out = config_file.parent / "killed"
    run_dir = out / "resume"
    named = ["rollout:1", "update:2", "checkpoint_write:2", "metrics_write:3", "rollout:4", "checkpoint_write:4",
             "update:5", "rollout:6", "metrics_write:6", "checkpoint_write:6"]  # each lands: 10 kills
    rng = random.Random(0)
    timed = [rng.uniform(2.0, 6.0) for _ in range(3)]
    kills, attempts = 0, 0
    plan: list[tuple[str | None, float | None]] = [(f, None) for f in named] + [(None, t) for t in timed]
    plan += [(None, None)] * 5  # then run to completion
    for fault, delay in plan:
        attempts += 1
        args = [str(config_file), f"run.output_dir={out}"] if not run_dir.exists() else ["--resume", str(run_dir)]
        proc = subprocess.Popen(train_command(*args), env=child_env(fault), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        if delay is not None:
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        output, _ = proc.communicate(timeout=300)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            continue
        assert proc.returncode == 0, f"attempt {attempts} (fault {fault}, delay {delay}):\n{output[-3000:]}"
        break  # completed (a timed kill may come too late on a fast machine)
    assert kills >= 10, f"only {kills} kills landed in {attempts} attempts"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert comparable(run_dir) == comparable(uninterrupted)
    expected, got = final_weights(uninterrupted), final_weights(run_dir)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["resumed"]) >= 1 and summary["rl_steps_done"] == RUN["train"]["steps"]


def test_resume_refuses_a_different_config_and_names_the_keys(config_file, uninterrupted, tmp_path):
    cfg = load_config(uninterrupted / "config.yaml", overrides=["train.optim.lr=0.5", "rollout.temperature=0.5"])
    with pytest.raises(ValueError, match="train.optim.lr") as err:
        Trainer(cfg, resume_dir=uninterrupted).setup()
    assert "rollout.temperature" in str(err.value) and "train.steps" not in str(err.value)


def test_resume_refuses_a_completed_run_at_its_budget(uninterrupted):
    cfg = load_config(uninterrupted / "config.yaml")
    with pytest.raises(ValueError, match="nothing to resume"):
        Trainer(cfg, resume_dir=uninterrupted).setup()


def test_a_larger_step_budget_continues_a_completed_run(uninterrupted, tmp_path):
    import shutil

    run_dir = tmp_path / "resume"
    shutil.copytree(uninterrupted, run_dir)
    cfg = load_config(run_dir / "config.yaml", overrides=["train.steps=7"])
    summary = Trainer(cfg, resume_dir=run_dir).run()
    assert summary["status"] == "completed" and summary["rl_steps_done"] == 7
    steps = [r["step"] for r in comparable(run_dir) if r["stage"] == "rl"]
    assert steps == [1, 2, 3, 4, 5, 6, 7]  # no step duplicated or missing


def test_auto_resume_picks_the_latest_matching_run(uninterrupted):
    cfg = load_config(uninterrupted / "config.yaml", overrides=["run.resume=auto", "train.steps=8"])
    found, message = auto_resume_dir(cfg)
    assert found == uninterrupted and "resuming" in message
    same_budget = load_config(uninterrupted / "config.yaml", overrides=["run.resume=auto"])
    assert auto_resume_dir(same_budget)[0] is None  # completed at that budget: a new run
    other = load_config(uninterrupted / "config.yaml", overrides=["run.resume=auto", "train.steps=8", "run.seed=4"])
    found, message = auto_resume_dir(other)
    assert found is None and "run.seed" in message


def test_checkpoint_holds_the_trainer_state_and_half_written_ones_are_ignored(uninterrupted, tmp_path):
    import shutil

    latest = latest_checkpoint(uninterrupted)
    assert latest is not None and latest.name == "step-6" and (latest / TRAINER_STATE).is_file()
    state = torch.load(latest / TRAINER_STATE, weights_only=False)
    assert state["step"] == 6 and {"optimizer", "scheduler", "rng", "methods", "observer"} <= state.keys()
    copy = tmp_path / "run"
    shutil.copytree(uninterrupted, copy)
    (copy / "checkpoints" / "step-9.tmp").mkdir()  # a kill mid-save leaves its temporary folder
    (copy / "checkpoints" / "step-8").mkdir()  # a folder without a trainer state is no resume point
    assert latest_checkpoint(copy).name == "step-6"


def test_truncate_jsonl_drops_later_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4, "b"')
    assert truncate_jsonl(path, 2) == (1, True)
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    assert JsonlSink(path).lines == 2
    with pytest.raises(ValueError, match="fewer than the 5"):
        truncate_jsonl(path, 5)


def test_config_differences_ignore_budget_and_output_options():
    saved = {"train": {"steps": 5, "optim": {"lr": 1e-3}}, "run": {"name": "a", "seed": 0}}
    new = {"train": {"steps": 9, "optim": {"lr": 1e-3}}, "run": {"name": "b", "seed": 1}}
    assert config_differences(saved, new) == ["run.seed: 0 -> 1"]


def test_fault_spec_is_validated(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "update:3,rollout:*")
    assert armed("update", 3) and not armed("update", 4) and armed("rollout", 7) and not armed("metrics_write", 3)
    monkeypatch.setenv(FAULT_ENV, "nowhere:1")
    with pytest.raises(ValueError, match="unknown fault point"):
        armed("update", 1)


def test_keep_best_protects_the_best_checkpoint(tmp_path):
    cfg = load_config(None, overrides=[f"{k}={json.dumps(v)}" for k, v in {
        "run": {**RUN["run"], "output_dir": str(tmp_path)}, "model": RUN["model"], "task": RUN["task"],
        "rollout": RUN["rollout"], "eval": {"enabled": False}, "observe": {"report": False, "tensorboard": False},
        "train": {**RUN["train"], "steps": 4, "keep_checkpoints": 1, "keep_best": {"metric": "reward/mean", "mode": "min"}},
    }.items()])
    summary = Trainer(cfg).run()
    best = summary["best_checkpoint"]
    kept = sorted(p.name for p in (tmp_path / "resume" / "checkpoints").iterdir())
    rewards = {r["step"]: r["reward/mean"] for r in comparable(tmp_path / "resume") if r["stage"] == "rl"}
    assert best["value"] == min(rewards.values()) and best["step"] == min(rewards, key=lambda s: (rewards[s], s))
    assert f"step-{best['step']}" in kept and "step-4" in kept and len(kept) <= 3  # best, newest, final


def nan_loss_at(monkeypatch, bad_steps: set[int] | None):
    """Make every micro-batch loss NaN at the given global steps (0-based RL step; None: always)."""
    from rlvr_lab.train import step as step_module

    real = step_module.micro_batch_loss

    def poisoned(model, mb, spec, den, scale, extras, global_step):
        loss, metrics = real(model, mb, spec, den, scale, extras, global_step)
        return (loss * float("nan"), metrics) if bad_steps is None or global_step in bad_steps else (loss, metrics)

    monkeypatch.setattr(step_module, "micro_batch_loss", poisoned)


def small_run(tmp_path, **train) -> "Trainer":
    overrides = {"run": {**RUN["run"], "output_dir": str(tmp_path)}, "model": RUN["model"], "task": RUN["task"],
                 "rollout": RUN["rollout"], "eval": {"enabled": False}, "observe": {"report": False, "tensorboard": False},
                 "train": {**RUN["train"], "checkpoint_every": 0, **train},
                 # an entropy bonus: every step has a gradient, even when all rewards of a group are equal
                 "algorithm": {"entropy_coef": 0.01}}
    return Trainer(load_config(None, overrides=[f"{k}={json.dumps(v)}" for k, v in overrides.items()]))


def test_a_nan_loss_is_skipped_counted_and_leaves_the_weights(tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, {1})  # RL step 2
    trainer = small_run(tmp_path, steps=3)
    trainer.setup()
    before = {}

    real_rl_step = trainer.rl_step

    def watched(step, optimizer, scheduler):
        before[step] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        return real_rl_step(step, optimizer, scheduler)

    trainer.rl_step = watched
    summary = trainer.run()
    assert summary["status"] == "completed"
    rl = [r for r in comparable(tmp_path / "resume") if r["stage"] == "rl"]
    assert [r["train/skipped_steps"] for r in rl] == [0.0, 2.0, 2.0]  # both mini-batch steps of step 2
    after_step2 = before[3]
    assert all(torch.equal(before[2][k], after_step2[k]) for k in after_step2)  # step 2 changed nothing
    assert not all(torch.equal(before[1][k], before[2][k]) for k in after_step2)  # step 1 did


def test_consecutive_nonfinite_steps_stop_the_run_with_a_checkpoint(tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, None)
    trainer = small_run(tmp_path, steps=6, max_nonfinite_steps=2)
    trainer.setup()
    start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.run()
    assert summary["status"].startswith("stopped at RL step 2: 2 consecutive steps with a non-finite")
    saved = load_file(str(Path(summary["nonfinite_checkpoint"]) / "model.safetensors"))
    assert all(torch.equal(saved[k], start[k]) for k in saved)  # the last good weights: never updated


def test_tensorboard_continues_the_same_run_without_duplicated_steps(tmp_path):
    """A resumed run drops the TensorBoard events written after its checkpoint (purge_step), so each RL step
    appears once in the curves."""
    pytest.importorskip("tensorboard")
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = small_run(tmp_path, steps=3, checkpoint_every=1)
    trainer.cfg.observe.tensorboard = True
    trainer.run()
    run_dir = tmp_path / "resume"
    # as a kill after step 3 but before its checkpoint leaves it
    shutil.rmtree(run_dir / "checkpoints" / "step-3")
    shutil.rmtree(run_dir / "checkpoints" / "final")
    (run_dir / "summary.json").unlink()
    cfg = load_config(run_dir / "config.yaml")
    Trainer(cfg, resume_dir=run_dir).run()
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("reward/mean")] == [1, 2, 3]


def test_cli_resume_of_a_completed_run_is_a_no_op(uninterrupted):
    from typer.testing import CliRunner

    from rlvr_lab.cli import app

    before = (uninterrupted / "metrics.jsonl").read_text()
    result = CliRunner().invoke(app, ["train", "--resume", str(uninterrupted)])
    assert result.exit_code == 0, result.output
    assert "nothing to resume" in result.output and (uninterrupted / "metrics.jsonl").read_text() == before
