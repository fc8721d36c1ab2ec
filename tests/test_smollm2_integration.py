"""The real embedded model: SmolLM2-135M-Instruct from its packaged GGUF, one GRPO step on CPU."""

import json
import math
from pathlib import Path

import pytest
import torch

from rlvr_lab.config import load_config
from rlvr_lab.train.loop import Trainer
from rlvr_lab.types import Score

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_one_grpo_step_on_smollm2(tmp_path, monkeypatch):
    cfg = load_config(
        CONFIGS / "demo.yaml",
        overrides=[
            "model.source=smollm2-135m-instruct",
            "task.name=chain_sum",
            f"run.output_dir={tmp_path}",
            "run.threads=2",
            "sft.steps=0",
            "eval.enabled=false",
            "task.instruction=Give only the final number between <answer> and </answer>.",
            "task.answer_fallback=last_number",
            "task.train_size=50",
            "task.eval_size=4",
            "rollout.max_new_tokens=16",
            "train.steps=1",
            "train.prompts_per_step=2",
            "train.group_size=4",
            "train.minibatches=2",
            "train.micro_batch_size=2",
            "train.optim.lr=1e-5",
        ],
    )
    # a reward that varies with the response, so every group has a non-zero advantage
    monkeypatch.setattr(
        "rlvr_lab.train.environment.task_rubric",
        lambda verifier, format_weight: (lambda text, example: Score(value=float(len(text) % 3), correct=False)),
    )
    trainer = Trainer(cfg)
    before = {}

    # snapshot a few weights right before the update to check that the step moved them
    real_update = __import__("rlvr_lab.train.loop", fromlist=["policy_update"]).policy_update

    def spy(model, *args, **kwargs):
        for name, p in list(model.named_parameters())[-3:]:
            before[name] = p.detach().clone()
        return real_update(model, *args, **kwargs)

    monkeypatch.setattr("rlvr_lab.train.loop.policy_update", spy)
    summary = trainer.run()
    assert summary["status"] == "completed"
    assert type(trainer.model).__name__ == "LlamaForCausalLM"
    assert trainer.engine.backend == "native"
    rl = [json.loads(x) for x in Path(summary["run_dir"], "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rl if r["stage"] == "rl"]
    assert len(rl) == 1
    rec = rl[0]
    assert math.isfinite(rec["grpo/pg_loss"]) and rec["policy/grad_norm"] > 0
    assert rec["policy/optimizer_steps"] == 2
    assert 0 < rec["rollout/response_len_mean"] <= 16
    assert math.isfinite(rec["policy/entropy"]) and rec["policy/entropy"] > 0
    params = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], params[n].detach()) for n in before)
    assert (Path(summary["final_checkpoint"]) / "model.safetensors").exists()


def test_search_preset_on_smollm2_with_a_user_corpus(tmp_path):
    """configs/search_corpus.yaml as a user would run it: SmolLM2, a JSONL corpus, JSONL questions."""
    from rlvr_lab.envs.synthetic_kb import generate_kb, write_corpus

    kb = generate_kb(seed=3, n_people=10, n_cities=10, n_companies=4)
    corpus = write_corpus(kb, tmp_path / "corpus.jsonl")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question": q["question"], "golden_answers": q["answers"]}) + "\n"
                                 for q in kb.questions[:12]))
    cfg = load_config(CONFIGS / "search_corpus.yaml", overrides=[
        f"run.output_dir={tmp_path}", "run.threads=2", f"search.corpus={corpus}", f"task.train_path={questions}",
        "task.eval_size=4", "eval.enabled=false", "search.max_turns=1", "search.top_k=1", "search.max_obs_tokens=64",
        "rollout.max_new_tokens=24", "train.steps=1", "train.prompts_per_step=2", "train.group_size=2",
        "train.micro_batch_size=2", "observe.probe_prompts=0", "observe.report=false",
    ])
    summary = Trainer(cfg).run()
    assert summary["status"] == "completed"
    (rec,) = [r for r in (json.loads(x) for x in Path(summary["run_dir"], "metrics.jsonl").read_text().splitlines())
              if r["stage"] == "rl"]
    assert 1 <= rec["search/turns_mean"] <= 2 and 0 < rec["state_tokens/coverage"] <= 1
    assert math.isfinite(rec["policy/entropy"]) and rec["policy/optimizer_steps"] == 2
