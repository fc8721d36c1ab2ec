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
    assert rl[0]["lld/num_correct"] + rl[0]["lld/num_incorrect"] > 0  # likelihood before the update: every step
    after = [k for k in rl[1] if k.endswith("_logp_after")]
    assert after and not any(k.endswith("_logp_after") for k in rl[0])  # displacement only every 2nd step
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


def test_probes_group_norms_and_tensorboard(tmp_path):
    probe_run(tmp_path)


def probe_run(tmp_path) -> Path:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    over = FAST + [f"run.output_dir={tmp_path}", "eval.enabled=false", "train.steps=2", "train.minibatches=1",
                   "train.epochs=1", "observe.probe_prompts=4", "observe.probe_samples=2", "observe.probe_every=1"]
    summary = Trainer(load_config(CONFIGS / "demo.yaml", overrides=over)).run()
    run = Path(summary["run_dir"])
    probes = json.loads((run / "probes.json").read_text())
    assert len(probes["response_ids"]) == 8 and summary["probes"]["responses"] == 8
    assert all(len(r) == len(lp) for r, lp in zip(probes["response_ids"], probes["ref_logprobs"]))
    rl = [r for r in read_metrics(run) if r["stage"] == "rl"]
    for r in rl:
        assert r["probe/kl_ref"] >= 0.0
        assert any(k in r for k in ("probe/correct_logp", "probe/incorrect_logp"))
        groups = {k: v for k, v in r.items() if k.startswith("grad_norm/")}
        assert set(groups) == {"grad_norm/embed", "grad_norm/layers_0", "grad_norm/head"}  # FAST: one layer
        assert sum(v * v for v in groups.values()) ** 0.5 == pytest.approx(r["policy/grad_norm"], rel=1e-4)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"reward/mean", "sft/loss", "probe/kl_ref", "grad_norm/head"} <= set(tags)
    assert [e.step for e in events.Scalars("reward/mean")] == [1, 2]
    assert events.Scalars("reward/mean")[1].value == pytest.approx(rl[1]["reward/mean"])
    return run



def test_probe_file_carries_the_same_responses_to_another_run(tmp_path):
    first = probe_run(tmp_path / "a")
    over = FAST + [f"run.output_dir={tmp_path / 'b'}", "eval.enabled=false", "train.steps=1", "sft.steps=1",
                   "observe.probe_every=1", f"observe.probe_file={first / 'probes.json'}", "observe.tensorboard=false"]
    summary = Trainer(load_config(CONFIGS / "demo.yaml", overrides=over)).run()
    a = json.loads((first / "probes.json").read_text())
    b = json.loads((Path(summary["run_dir"]) / "probes.json").read_text())
    assert b["response_ids"] == a["response_ids"] and b["correct"] == a["correct"]
    assert b["ref_logprobs"] != a["ref_logprobs"]  # re-scored by this run's own starting policy
    assert not (Path(summary["run_dir"]) / "tensorboard").exists()


def test_probe_file_from_another_vocabulary_is_refused(tmp_path):
    from rlvr_lab.diagnostics.probes import ProbeSet

    path = tmp_path / "probes.json"
    ProbeSet([[1]], [[10**6]], [[True]], [True]).save(path)
    over = FAST + [f"run.output_dir={tmp_path}", "eval.enabled=false", "train.steps=1", "sft.steps=0",
                   f"observe.probe_file={path}"]
    with pytest.raises(ValueError, match="beyond this model's vocabulary"):
        Trainer(load_config(CONFIGS / "demo.yaml", overrides=over)).run()


def test_wandb_and_mlflow_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("WANDB_SILENT", "true")
    over = FAST + [f"run.output_dir={tmp_path}", "eval.enabled=false", "train.steps=2", "observe.tensorboard=false",
                   "observe.wandb.enabled=true", "observe.mlflow.enabled=true"]
    summary = Trainer(load_config(CONFIGS / "demo.yaml", overrides=over)).run()
    run = Path(summary["run_dir"])
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb")), "no offline W&B run file"
    client = mlflow.tracking.MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("rlvr-lab")
    (mrun,) = client.search_runs([exp.experiment_id])
    history = client.get_metric_history(mrun.info.run_id, "reward/mean")
    rl = [r for r in read_metrics(run) if r["stage"] == "rl"]
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["reward/mean"])) for r in rl]
    assert mrun.data.params["task"] == "chain_sum"


def test_probes_do_not_drift_when_the_policy_does_not_move(tmp_path):
    over = FAST + [f"run.output_dir={tmp_path}", "eval.enabled=false", "train.steps=2", "train.optim.lr=1e-12",
                   "observe.probe_prompts=4", "observe.probe_samples=2", "observe.probe_every=1"]
    summary = Trainer(load_config(CONFIGS / "demo.yaml", overrides=over)).run()
    for r in (r for r in read_metrics(summary["run_dir"]) if r["stage"] == "rl"):
        assert r["probe/kl_ref"] == pytest.approx(0.0, abs=1e-6)
        for key in ("probe/correct_logp_delta", "probe/incorrect_logp_delta"):
            if key in r:
                assert r[key] == pytest.approx(0.0, abs=1e-5)
