"""End-to-end runs of the native trainer on a small model: CLI, presets, crash safety, learning."""

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlvr_lab.cli import app
from rlvr_lab.config import load_config
from rlvr_lab.train.loop import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

FAST = [
    "run.threads=2",
    "model.tiny={hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, intermediate_size: 64, max_position_embeddings: 160}",
    "task.name=chain_sum",
    "task.config={min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}",
    "task.train_size=200",
    "task.eval_size=8",
    "sft.steps=3",
    "sft.batch_size=8",
    "train.steps=2",
    "train.prompts_per_step=4",
    "train.group_size=4",
    "train.micro_batch_size=8",
    "eval.samples=2",
    "eval.k=[1,2]",
]


def read_metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_cli_train_writes_run_directory(tmp_path):
    result = CliRunner().invoke(app, ["train", str(CONFIGS / "demo.yaml"), *FAST, f"run.output_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "demo"
    assert "step    2/2" in result.output and "held-out accuracy" in result.output
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/final/model.safetensors"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert set(summary["eval"]) == {"before_rl", "after_rl"}
    rl = [r for r in read_metrics(run) if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2]
    for key in ("reward/mean", "policy/entropy", "grpo/pg_loss", "grpo/pg_clipfrac", "policy/grad_norm",
                "rollout/response_len_mean", "groups/frac_all_correct", "logp/pos_mean", "time/step_s"):
        assert key in rl[0], key


@pytest.mark.parametrize("preset", ["grpo", "dr_grpo", "dapo", "gspo"])
def test_every_preset_runs(tmp_path, preset):
    cfg = load_config(CONFIGS / "demo.yaml", presets=[preset],
                      overrides=FAST + [f"run.output_dir={tmp_path}", "eval.enabled=false", "sft.steps=0"])
    summary = Trainer(cfg).run()
    rl = [r for r in read_metrics(summary["run_dir"]) if r["stage"] == "rl"]
    assert len(rl) == 2
    for r in rl:
        if "grpo/pg_loss" in r:
            assert math.isfinite(r["grpo/pg_loss"]) and math.isfinite(r["policy/grad_norm"])
    if preset == "dapo":
        assert "dapo/num_gen_batches" in rl[0] and "dapo/overlong_ratio" in rl[0]
    if preset == "gspo":
        assert rl[0]["policy/optimizer_steps"] == 4


def test_sampler_old_logprobs_equal_the_recomputed_pass(tmp_path):
    """train.old_logprobs=sampler: the old log-probs and entropies are the sampler's, equal to what the
    old pass recomputes on the same batch, and a run with it trains."""
    cfg = load_config(CONFIGS / "demo.yaml", overrides=FAST + [
        f"run.output_dir={tmp_path}", "eval.enabled=false", "sft.steps=0", "train.old_logprobs=sampler",
        "train.minibatches=2", "rollout.temperature=0.8"])
    trainer = Trainer(cfg)
    trainer.setup()
    batch = trainer.prepare(trainer.collect(1).batch)
    assert "sampler_entropy" not in batch.extras
    sampler_logp, sampler_ent = batch.old_logprobs.clone(), batch.extras["old_entropy"].clone()
    trainer.old_pass(batch, trainer.spec.temperature, cfg.train.micro_batch_size)
    mask = batch.loss_mask
    assert mask.sum() > 20
    assert torch.allclose(sampler_logp[mask], batch.old_logprobs[mask], atol=1e-4)
    assert torch.allclose(sampler_ent[mask], batch.extras["old_entropy"][mask], atol=1e-4)
    summary = trainer.run()
    rl = [r for r in read_metrics(summary["run_dir"]) if r["stage"] == "rl"]
    assert len(rl) == 2 and all(math.isfinite(r["policy/entropy"]) and r["policy/optimizer_steps"] == 2 for r in rl)


@pytest.mark.parametrize("override, key", [("rollout.top_k=5", "rollout.top_k"), ("rollout.top_p=0.9", "rollout.top_p")])
def test_sampler_old_logprobs_refuse_a_filtered_sampler(override, key):
    with pytest.raises(ValueError, match=key):
        load_config(CONFIGS / "demo.yaml", overrides=["train.old_logprobs=sampler", override])


def test_bfloat16_rollouts_of_a_float32_policy_log_their_gap(tmp_path):
    """rollout.dtype=bfloat16: the engine samples from bf16 copies, the policy and its recomputed old
    log-probs stay float32, and rollout/sampler_logp_gap shows the difference (float rounding in float32)."""
    gaps = {}
    for dtype in ("model", "bfloat16"):
        cfg = load_config(CONFIGS / "demo.yaml", overrides=FAST + [
            f"run.output_dir={tmp_path / dtype}", "eval.enabled=false", "sft.steps=0", f"rollout.dtype={dtype}"])
        trainer = Trainer(cfg)
        summary = trainer.run()
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        assert trainer.engine.decoder.dtype == (torch.float32 if dtype == "model" else torch.bfloat16)
        rl = [r for r in read_metrics(summary["run_dir"]) if r["stage"] == "rl"]
        gaps[dtype] = [r["rollout/sampler_logp_gap"] for r in rl]
    assert all(g < 1e-4 for g in gaps["model"]), gaps
    assert all(1e-5 < g < 0.1 for g in gaps["bfloat16"]), gaps  # 4e-4 on this 32-wide model


def test_bfloat16_rollouts_decode_swireasoning(tmp_path):
    """SwiReasoning feeds soft embeddings (float32 mixtures of the policy's embedding rows) to the bf16
    decoder; the run completes and logs no sampler gap (its log-probs were taken in soft contexts)."""
    cfg = load_config(CONFIGS / "demo.yaml", overrides=FAST + [
        f"run.output_dir={tmp_path}", "eval.enabled=false", "sft.steps=0", "rollout.dtype=bfloat16",
        "rollout.mode=swireasoning"])
    summary = Trainer(cfg).run()
    rl = [r for r in read_metrics(summary["run_dir"]) if r["stage"] == "rl"]
    assert summary["status"] == "completed" and len(rl) == 2
    assert all("rollout/sampler_logp_gap" not in r for r in rl)


def test_bfloat16_rollouts_refuse_sampler_old_logprobs():
    with pytest.raises(ValueError, match="rollout.dtype=bfloat16"):
        load_config(CONFIGS / "demo.yaml", overrides=["train.old_logprobs=sampler", "rollout.dtype=bfloat16"])
    cfg = load_config(CONFIGS / "demo.yaml", overrides=["train.old_logprobs=sampler", "rollout.dtype=bfloat16",
                                                        "model.dtype=bfloat16"])
    assert cfg.rollout.dtype == "bfloat16"  # a bf16 policy sampled in bf16: the sampler is the policy


def test_sampler_old_logprobs_refuse_methods_that_need_the_old_pass(tmp_path):
    cfg = load_config(CONFIGS / "demo.yaml", presets=["lp_reg"],
                      overrides=FAST + [f"run.output_dir={tmp_path}", "train.old_logprobs=sampler"])
    with pytest.raises(ValueError, match="recompute"):
        Trainer(cfg).setup()


def test_kl_to_reference_is_logged(tmp_path):
    cfg = load_config(CONFIGS / "demo.yaml", overrides=FAST + [f"run.output_dir={tmp_path}", "eval.enabled=false",
                                                               "algorithm.kl.coef=0.05", "train.minibatches=2"])
    summary = Trainer(cfg).run()
    rl = [r for r in read_metrics(summary["run_dir"]) if r["stage"] == "rl"]
    assert all("grpo/kl_loss" in r and r["grpo/kl_loss"] >= 0 for r in rl)


def test_crash_keeps_checkpoint_metrics_and_summary(tmp_path, monkeypatch):
    cfg = load_config(CONFIGS / "demo.yaml", overrides=FAST + [f"run.output_dir={tmp_path}", "eval.enabled=false",
                                                               "train.steps=3"])
    trainer = Trainer(cfg)
    real = Trainer.collect

    def flaky(self, step):
        if step == 2:
            raise RuntimeError("simulated crash")
        return real(self, step)

    monkeypatch.setattr(Trainer, "collect", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        trainer.run()
    run = Path(trainer.run_dir)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"].startswith("failed at RL step 2")
    assert (run / "checkpoints" / "crash-step-2" / "model.safetensors").exists()
    assert [r["step"] for r in read_metrics(run) if r["stage"] == "rl"] == [1]
