"""Shared warm-starts: a loaded warm-start trains exactly like one trained in the run, and a sweep trains
one per seed and warm-start config, before the cells that load it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from rlvr_lab.cli import app
from rlvr_lab.config import load_config
from rlvr_lab.lab import sweep
from rlvr_lab.lab.sweep import load_spec, plan_sweep, warm_key
from rlvr_lab.train.loop import Trainer
from tiny_run import TINY

ROOT = Path(__file__).resolve().parents[1]
WARM = {**TINY, "sft": {"steps": 3, "batch_size": 4}}


def weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "checkpoints" / "final" / "model.safetensors"))


def tiny_config(tmp_path: Path, *overrides: str):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(WARM))
    return load_config(tmp_path / "tiny.yaml", overrides=[f"run.output_dir={tmp_path}", "run.threads=1",
                                                          "train.minibatches=2", "algorithm.entropy_coef=0.01",
                                                          *overrides])


def test_a_loaded_warm_start_trains_exactly_like_one_trained_in_the_run(tmp_path):
    in_run = Trainer(tiny_config(tmp_path, "run.name=in_run")).run()
    warm = Trainer(tiny_config(tmp_path, "run.name=warm", "train.steps=0")).run()
    loaded = Trainer(tiny_config(tmp_path, "run.name=loaded",
                                 f"sft.init_from={warm['run_dir']}/checkpoints/final")).run()
    assert loaded["sft"]["loaded_from"].endswith("warm/checkpoints/final") and "final_loss" in in_run["sft"]
    a, b, start = weights(in_run["run_dir"]), weights(loaded["run_dir"]), weights(warm["run_dir"])
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "RL from the loaded warm-start took another path"
    assert any(not torch.equal(a[k], start[k]) for k in a), "RL changed nothing: the test would prove nothing"


def test_a_checkpoint_of_another_shape_is_refused(tmp_path):
    warm = Trainer(tiny_config(tmp_path, "run.name=warm", "train.steps=0")).run()
    other = tiny_config(tmp_path, "run.name=other", f"sft.init_from={warm['run_dir']}/checkpoints/final",
                        "model.tiny.hidden_size=64")
    with pytest.raises(ValueError, match="does not fit this model"):
        Trainer(other).run()


def write_sweep(root: Path, conditions: dict, **extra) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "experiments").mkdir()
    (root / "configs" / "tiny.yaml").write_text(yaml.safe_dump(WARM))
    spec = {"name": "warm", "base": "../configs/tiny.yaml", "seeds": [0, 1], "conditions": conditions,
            "overrides": ["train.minibatches=2"], **extra}
    path = root / "experiments" / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_warm_start_keys_follow_the_settings_a_warm_start_reads(tmp_path):
    spec = load_spec(write_sweep(tmp_path, {
        "grpo": {"presets": ["grpo"]}, "dr_grpo": {"presets": ["dr_grpo"]},
        "slow_sft": {"presets": ["grpo"], "overrides": ["sft.optim.lr=1.0e-4"]},
        "cold": {"presets": ["grpo"], "overrides": ["sft.steps=0"]}}))
    plan = plan_sweep(spec, tmp_path / "out", threads=1)
    by_cell = {c.label: job for c, job in plan.warm.items()}
    assert "cold/seed0" not in by_cell and plan.configs[next(c for c in plan.cells if c.condition == "cold")].sft.init_from is None
    assert by_cell["grpo/seed0"] == by_cell["dr_grpo/seed0"] != by_cell["slow_sft/seed0"]
    assert by_cell["grpo/seed0"] != by_cell["grpo/seed1"]
    assert len(plan.warm_todo) == 4  # (default lr, slower lr) x 2 seeds
    for cell, job in plan.warm.items():
        assert plan.configs[cell].sft.init_from == str((tmp_path / "out" / job.checkpoint).resolve())
        assert warm_key(plan.warm_configs[job]) == job.key and plan.warm_configs[job].train.steps == 0
    per_run = load_spec(write_sweep(tmp_path / "b", {"grpo": {"presets": ["grpo"]}}, warm_start="per_run"))
    plan = plan_sweep(per_run, tmp_path / "b" / "out", threads=1)
    assert not plan.warm and all(cfg.sft.init_from is None for cfg in plan.configs.values())


@pytest.mark.slow
def test_a_sweep_trains_each_warm_start_once_before_its_cells(tmp_path, monkeypatch):
    spec = write_sweep(tmp_path, {"grpo": {"presets": ["grpo"]}, "dr_grpo": {"presets": ["dr_grpo"]}})
    started, real = [], sweep.start_cell
    monkeypatch.setattr(sweep, "start_cell", lambda job: started.append(job.label) or real(job))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert [label.split(" ")[0] for label in started] == ["warm-start", "grpo/seed0", "dr_grpo/seed0",
                                                          "warm-start", "grpo/seed1", "dr_grpo/seed1"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [w["status"] for w in manifest["warm_starts"]] == ["completed", "completed"]
    assert all(c["status"] == "completed" for c in manifest["cells"])
    for seed in (0, 1):
        summaries = [json.loads((out / "runs" / c / f"seed{seed}" / "summary.json").read_text()) for c in ("grpo", "dr_grpo")]
        assert summaries[0]["sft"]["loaded_from"] == summaries[1]["sft"]["loaded_from"]
        assert f"/seed{seed}/checkpoints/final" in summaries[0]["sft"]["loaded_from"]
    started.clear()
    assert CliRunner().invoke(app, ["sweep", str(spec), "--out", str(out), "--threads", "1"]).exit_code == 0
    assert started == []


# The warm-start of seed 1 fails; the other runs write what the trainer writes (no training).
FAKE_TRAIN = """
import json, os, sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
run_dir = os.path.join(cfg["run"]["output_dir"], cfg["run"]["name"])
os.makedirs(os.path.join(run_dir, "checkpoints", "final"))
if cfg["train"]["steps"] == 0 and cfg["run"]["seed"] == 1:
    sys.exit(3)
json.dump({"status": "completed"}, open(os.path.join(run_dir, "summary.json"), "w"))
"""


def test_a_failed_warm_start_fails_its_cells_without_starting_them(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    monkeypatch.setattr(sweep, "cell_command", lambda config_file: [sys.executable, str(script), config_file])
    started, real = [], sweep.start_cell
    monkeypatch.setattr(sweep, "start_cell", lambda job: started.append(job.label) or real(job))
    spec = write_sweep(tmp_path, {"grpo": {"presets": ["grpo"]}, "dr_grpo": {"presets": ["dr_grpo"]}})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(out), "--threads", "1"])
    assert result.exit_code == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f"{c['condition']}/seed{c['seed']}": c["status"] for c in manifest["cells"]} == {
        "grpo/seed0": "completed", "dr_grpo/seed0": "completed", "grpo/seed1": "failed", "dr_grpo/seed1": "failed"}
    assert all("warm-start failed" in c["error"] for c in manifest["cells"] if c["status"] == "failed")
    assert not any(label.endswith("seed1") and not label.startswith("warm") for label in started)
