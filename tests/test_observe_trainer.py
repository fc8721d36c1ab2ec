"""The observatory inside the trainer: signals in metrics.jsonl, phase alerts and their actions."""

import json
from pathlib import Path

import pytest

from rlvr_lab.config import load_config
from rlvr_lab.diagnostics.phases import PhaseReport
from rlvr_lab.train.loop import Trainer

from test_trainer_run import CONFIGS, FAST, read_metrics


def test_signals_are_logged(tmp_path):
    cfg = load_config(CONFIGS / "demo.yaml", overrides=FAST + [f"run.output_dir={tmp_path}", "eval.enabled=false",
                                                               "train.steps=2", "observe.lld_every=2"])
    summary = Trainer(cfg).run()
    rl = [r for r in read_metrics(summary["run_dir"]) if r["stage"] == "rl"]
    for key in ("policy/entropy_p10", "policy/entropy_p90", "tokens/low_prob_count", "tokens/low_prob_mass"):
        assert key in rl[0] and key in rl[1], key
    assert "lld/num_correct" not in rl[0]  # displacement only every 2nd step
    assert "lld/num_correct" in rl[1] and "lld/num_incorrect" in rl[1]
    assert rl[1]["lld/num_correct"] + rl[1]["lld/num_incorrect"] > 0
    assert all("phase/label" in r for r in rl)


@pytest.mark.parametrize("action", ["checkpoint", "stop"])
def test_phase_alert_actions(tmp_path, monkeypatch, action):
    cfg = load_config(CONFIGS / "demo.yaml", overrides=FAST + [f"run.output_dir={tmp_path}", "eval.enabled=false",
                                                               "train.steps=3", f"observe.on_alert={action}"])
    trainer = Trainer(cfg)
    trainer.setup()

    def fake_phase(step, record):  # enter a collapse on step 2
        alert = step == 2
        return PhaseReport(step=step, label="accelerated_collapse" if step >= 2 else "healthy",
                           lld_phase="accelerated_collapse", entropy_phase="ok", alert=alert,
                           entered=("accelerated_collapse",) if alert else (), action=action if alert else None,
                           evidence={"slope": -1.0})

    monkeypatch.setattr(trainer.observer, "phase", fake_phase)
    summary = trainer.run()
    run = Path(summary["run_dir"])
    assert summary["phase_alerts"][0]["step"] == 2
    steps = [r["step"] for r in read_metrics(run) if r["stage"] == "rl"]
    if action == "stop":
        assert steps == [1, 2] and summary["status"].startswith("stopped by the phase detector at RL step 2")
    else:
        assert steps == [1, 2, 3] and (run / "checkpoints" / "alert-step-2" / "model.safetensors").exists()
