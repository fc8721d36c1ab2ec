"""`rlvr eval`: the metrics read from kept samples (hand-computed), the model and input checks, and the
command end to end on the tiny model."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from rlvr_lab.cli import app
from rlvr_lab.eval.evaluate import (
    GREEDY,
    PER_PROMPT,
    EvalSample,
    EvalSamples,
    majority_correct,
    summarize,
)
from rlvr_lab.eval.run import EvalInputError, EvalRequest, eval_config, resolve_model

runner = CliRunner()


def sample(pid: str, k: int, answer: str | None, correct: bool, tokens: int = 3) -> EvalSample:
    return EvalSample(pid, k, f"<answer>{answer}</answer>", answer, float(correct), correct, tokens)


def two_questions() -> EvalSamples:
    """Question a: answers 7, 7, 3, none (gold 7: two right). Question b: 3, 5, 5, 2 (gold 3: one right)."""
    a = [sample("a", 0, "7", True), sample("a", 1, "7", True), sample("a", 2, "3", False),
         sample("a", 3, None, False, tokens=5)]
    b = [sample("b", 0, "3", True), sample("b", 1, "5", False), sample("b", 2, "5", False), sample("b", 3, "2", False)]
    greedy = [sample("a", GREEDY, "7", True), sample("b", GREEDY, "5", False)]
    return EvalSamples(["a", "b"], greedy, [a, b])


def test_summarize_hand_computed():
    m = summarize(two_questions(), ks=[1, 2, 4], maj=[4])
    assert m["eval/greedy_acc"] == 0.5 and math.isclose(m["eval/greedy_acc_se"], 0.5)
    # pass@1 = c/n: (2/4 + 1/4) / 2; pass@2 = 1 - C(n-c,2)/C(4,2): a 1 - 1/6, b 1 - 3/6
    assert math.isclose(m["eval/pass@1"], 0.375)
    assert math.isclose(m["eval/pass@2"], ((1 - 1 / 6) + 0.5) / 2)
    assert m["eval/pass@4"] == 1.0 and m["eval/pass@4_se"] == 0.0
    # maj@4: a's majority is 7 (right); b's is 5 (wrong)
    assert m["eval/maj@4"] == 0.5
    assert m[PER_PROMPT]["eval/maj@4"] == [1.0, 0.0]
    assert m["eval/n_prompts"] == 2 and m["eval/samples"] == 4
    assert math.isclose(m["eval/response_tokens"], (3 * 7 + 5) / 8)


def test_majority_ties_go_to_the_first_answer_and_missing_answers_are_dropped():
    first_wrong = [sample("q", 0, "3", False), sample("q", 1, "7", True), sample("q", 2, None, False)]
    assert majority_correct(first_wrong) == 0.0  # 3 vs 7 tied: 3 came first (spec B12)
    first_right = [sample("q", 0, "7", True), sample("q", 1, "3", False), sample("q", 2, None, False)]
    assert majority_correct(first_right) == 1.0
    assert majority_correct([sample("q", 0, None, False), sample("q", 1, None, False)]) == 0.0
    spaced = [sample("q", 0, "4 2", True), sample("q", 1, " 4  2 ", False), sample("q", 2, "1", False)]
    assert majority_correct(spaced) == 1.0  # whitespace-collapsed answers vote together


def test_majority_over_k_subsets_is_their_mean():
    group = [sample("q", 0, "7", True), sample("q", 1, "7", True), sample("q", 2, "3", False)]
    # the 3 subsets of 2: {7,7} right, {7,3} tie -> 7 first: right, {7,3} right: maj@2 = 1
    assert majority_correct(group, 2) == 1.0
    # subsets of 1: two of three are right
    assert math.isclose(majority_correct(group, 1), 2 / 3)


def test_k_above_samples_is_refused():
    with pytest.raises(ValueError, match="samples per question"):
        summarize(two_questions(), ks=[5])


def test_model_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(EvalInputError, match="no such path"):
        resolve_model(str(tmp_path / "missing"))


def test_run_directory_resolves_to_its_checkpoint_and_config(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-2").mkdir(parents=True)
    (run / "checkpoints" / "step-10").mkdir()
    (run / "config.yaml").write_text("task: {name: chain_sum}\n")
    spec = resolve_model(str(run))
    assert spec.source.endswith("step-10") and spec.run_config == run / "config.yaml"
    (run / "checkpoints" / "final").mkdir()
    assert resolve_model(str(run)).source.endswith("final")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    (tmp_path / "empty" / "config.yaml").write_text("{}\n")
    with pytest.raises(EvalInputError, match="no checkpoint"):
        resolve_model(str(tmp_path / "empty"))


def test_bad_requests_fail_before_loading():
    spec = resolve_model("tiny")
    with pytest.raises(EvalInputError, match="not both"):
        eval_config(EvalRequest("tiny", task="chain_sum", data="x.jsonl"), spec)
    with pytest.raises(EvalInputError, match="between 1 and samples"):
        eval_config(EvalRequest("tiny", task="chain_sum", samples=2, ks=[4]), spec)


def test_unknown_task_names_the_nearest(tmp_path):
    result = runner.invoke(app, ["eval", "tiny", "--task", "chain_summ", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "did you mean" in result.output and "chain_sum" in result.output


def test_data_file_errors_name_the_line(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n" + json.dumps({"question": "2+2?"}) + "\n")
    result = runner.invoke(app, ["eval", "tiny", "--data", str(data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "qa.jsonl:2:" in result.output and "answer" in result.output


TINY_FLAGS = ["--questions", "4", "--samples", "2", "--k", "1", "--k", "2", "--threads", "1",
              "rollout.max_new_tokens=6", "model.tiny={hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, "
              "intermediate_size: 64, max_position_embeddings: 128}"]


def test_cli_end_to_end_on_the_tiny_model(tmp_path):
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "tiny", "--task", "chain_sum", "--out", str(out), *TINY_FLAGS])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * (1 + 2)
    assert {r["sample"] for r in rows} == {GREEDY, 0, 1}
    assert all(set(r) >= {"prompt_id", "text", "answer", "score", "correct", "tokens", "question"} for r in rows)
    summary = json.loads((out / "eval.json").read_text())
    metrics = summary["models"][0]["metrics"]
    assert summary["questions"] == 4 and metrics["eval/n_prompts"] == 4
    sampled = [r for r in rows if r["sample"] != GREEDY]
    assert math.isclose(metrics["eval/pass@1"], sum(r["correct"] for r in sampled) / len(sampled))
    assert {"eval/greedy_acc", "eval/pass@2", "eval/maj@2"} <= set(metrics)
    assert "pass@2" in (out / "eval.md").read_text()


def test_compare_a_model_with_itself_gives_zero_paired_differences(tmp_path):
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["eval", "tiny", "--task", "chain_sum", "--compare", "tiny", "--out", str(out),
                                 *TINY_FLAGS])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "eval.json").read_text())
    diffs = summary["paired_difference"]
    assert {"eval/greedy_acc", "eval/pass@1", "eval/pass@2", "eval/maj@2"} <= set(diffs)
    # the same weights (same init seed) and the same sampling seed: every sample is the same
    assert all(d["mean"] == 0.0 and d["se"] == 0.0 for k, d in diffs.items() if k.startswith("eval/"))
    rows = (out / "samples.jsonl").read_text().splitlines()
    assert len(rows) == 2 * 4 * 3
