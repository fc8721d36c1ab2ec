"""Learning, not only code paths: under GRPO the reward must rise within a fixed budget."""

import json
from pathlib import Path

import pytest

from rlvr_lab.config import load_config
from rlvr_lab.rewards import extract_answer
from rlvr_lab.train.loop import Trainer
from rlvr_lab.types import Score

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def seven_first(text: str, example) -> Score:
    """A prompt-independent target the warm-started model hits by chance a few times in 20:
    a well-formed answer that starts with 7, 8 or 9."""
    answer = extract_answer(text)
    ok = bool(answer) and answer[0] in "789"
    return Score(value=float(ok), correct=ok)


def run(tmp_path, monkeypatch, preset: str, steps: int):
    monkeypatch.setattr("rlvr_lab.train.environment.task_rubric", lambda verifier, format_weight: seven_first)
    cfg = load_config(
        CONFIGS / "demo.yaml",
        presets=[preset],
        overrides=[
            f"run.output_dir={tmp_path}",
            "run.threads=2",
            "model.tiny={hidden_size: 48, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 96, max_position_embeddings: 160}",
            "task.name=chain_sum",
            "task.config={min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}",
            "task.train_size=400",
            "task.eval_size=8",
            "eval.enabled=false",
            "sft.steps=60",
            "sft.batch_size=32",
            f"train.steps={steps}",
            "train.prompts_per_step=16",
            "train.group_size=8",
            "train.minibatches=1",
            "train.micro_batch_size=128",
            "train.optim.lr=1e-3",
            "train.optim.warmup_steps=5",
        ],
    )
    summary = Trainer(cfg).run()
    rows = [json.loads(x) for x in Path(summary["run_dir"], "metrics.jsonl").read_text().splitlines()]
    return [r["reward/mean"] for r in rows if r["stage"] == "rl"]


@pytest.mark.parametrize("preset", ["grpo", "dr_grpo"])
def test_grpo_raises_reward_within_budget(tmp_path, monkeypatch, preset):
    # 36 steps: at 30 the last steps' mean sat within float-level noise of the margin (0.31 against the
    # 0.32 needed, one thread, mini-batches of whole groups; 0.33 with row-shuffled ones)
    rewards = run(tmp_path, monkeypatch, preset, steps=36)
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert start < 0.35, rewards
    assert end > start + 0.25 and end > 2 * start, rewards


def test_tiny_model_learns_to_search_and_answer(tmp_path):
    """configs/search_tiny.yaml at a reduced RL budget: after the warm-start on demonstration
    trajectories, GRPO on multi-turn search rollouts raises the share of responses that search and
    answer correctly (the reward is exact match, and the answer is only in the retrieved passage)."""
    cfg = load_config(CONFIGS / "search_tiny.yaml", overrides=[
        f"run.output_dir={tmp_path}", "run.threads=2", "eval.enabled=false", "train.steps=12",
        "train.prompts_per_step=128", "observe.report=false", "observe.tensorboard=false",
        # the sampler's log-probs as the old ones: no old-policy pass, a quarter of each step saved
        "train.old_logprobs=sampler",
    ])
    summary = Trainer(cfg).run()
    rl = [json.loads(x) for x in Path(summary["run_dir"], "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rl if r["stage"] == "rl"]
    # every response here searches (the protocol is learnt in the warm-start), so reward = searched and correct
    assert all(r["search/frac_searched"] > 0.9 for r in rl), [r["search/frac_searched"] for r in rl]
    rewards = [r["reward/mean"] for r in rl]
    start, end = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert end > start + 0.04 and max(rewards[-4:]) > max(rewards[:4]), rewards
