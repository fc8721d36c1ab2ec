"""Verifiers, Rubric and the safe runner: answer extraction, real reasoning-gym and math-verify scoring,
and failures (raising, hanging, misbehaving verifiers) turned into counted error Scores."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rlvr_lab.rewards as rewards
from rlvr_lab.rewards import (
    FALLBACKS,
    Rubric,
    build_verifier,
    exact_match_verifier,
    extract_answer,
    format_verifier,
    math_verifier,
    reasoning_gym_verifier,
    safe_score,
    score_batch,
    summarize_scores,
)
from rlvr_lab.rewards.safe import process_isolation_available
from rlvr_lab.types import Score

# --- extraction ------------------------------------------------------------------------------


def test_last_answer_block_wins_and_is_stripped():
    text = "<answer>draft</answer> thinking more... <answer>\n  final one \n</answer> trailing"
    assert extract_answer(text) == "final one"


def test_custom_tag():
    assert extract_answer("<result>7</result><answer>8</answer>", tag="result") == "7"


def test_empty_block_is_an_empty_answer_not_a_fallback():
    assert extract_answer("42 <answer> </answer>", fallback="last_number") == ""


def test_no_block_and_no_fallback_gives_none():
    assert extract_answer("the answer is 42") is None
    assert extract_answer("<answer>42") is None  # unclosed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so it is -3.", "-3"),
        ("first 2 then 4.5 kg", "4.5"),
        ("a ratio of 3/4", "3/4"),
        ("total: 1,234,567 dollars", "1234567"),
        ("x = 5-3", "3"),  # a minus after a number is subtraction, not a sign
        ("no digits here", None),
    ],
)
def test_last_number_fallback(text, expected):
    assert extract_answer(text, fallback="last_number") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{1} or rather \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{ {a, b} } then \boxed{unclosed", "{a, b}"),
        ("nothing boxed", None),
    ],
)
def test_boxed_fallback(text, expected):
    assert extract_answer(text, fallback="boxed") == expected


def test_line_and_full_fallbacks():
    text = "reasoning\n  Paris  \n\n"
    assert extract_answer(text, fallback="last_line") == "Paris"
    assert extract_answer(text, fallback="full") == "reasoning\n  Paris"
    assert extract_answer("  \n", fallback="full") is None


def test_unknown_fallback_lists_valid_names():
    with pytest.raises(ValueError, match="last_number") as info:
        extract_answer("x", fallback="first_number")
    assert all(name in str(info.value) for name in FALLBACKS)


# --- reasoning-gym ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain_sum_entry():
    import reasoning_gym

    return reasoning_gym.create_dataset("chain_sum", seed=3, size=5)[0]


@pytest.fixture(scope="module")
def spell_entry():
    import reasoning_gym

    return reasoning_gym.create_dataset("spell_backward", seed=3, size=5, min_word_len=5)[0]


def test_reasoning_gym_chain_sum(chain_sum_entry):
    verify = reasoning_gym_verifier("chain_sum")
    answer = chain_sum_entry["answer"]
    right = verify(f"<think>adding</think><answer>{answer}</answer>", chain_sum_entry)
    wrong = verify(f"<answer>{int(answer) + 1}</answer>", chain_sum_entry)
    assert right == Score(value=1.0, correct=True)
    assert wrong.value < 1.0 and wrong.correct is False and wrong.error is None


def test_reasoning_gym_missing_answer_is_zero_without_error(chain_sum_entry):
    score = reasoning_gym_verifier("chain_sum")(f"it is {chain_sum_entry['answer']}", chain_sum_entry)
    assert score == Score(value=0.0, correct=False, error=None)


def test_reasoning_gym_fallback_reads_a_number_from_prose(chain_sum_entry):
    verify = reasoning_gym_verifier("chain_sum", fallback="last_number")
    assert verify(f"so the sum is {chain_sum_entry['answer']}.", chain_sum_entry).correct is True


def test_reasoning_gym_partial_credit_on_a_text_task(spell_entry):
    verify = reasoning_gym_verifier("spell_backward")
    answer = spell_entry["answer"]
    near_miss = answer[:-1] + ("x" if answer[-1] != "x" else "y")
    assert verify(f"<answer>{answer}</answer>", spell_entry) == Score(value=1.0, correct=True)
    partial = verify(f"<answer>{near_miss}</answer>", spell_entry)
    assert 0.0 < partial.value < 1.0 and partial.correct is False


def test_reasoning_gym_unknown_task_suggests_names():
    with pytest.raises(ValueError, match=r"chain_sum.*\(\d+ tasks available\)"):
        reasoning_gym_verifier("chain_summ")


def test_reasoning_gym_bad_fallback_fails_at_construction():
    with pytest.raises(ValueError, match="fallback"):
        reasoning_gym_verifier("chain_sum", fallback="last")


# --- math ------------------------------------------------------------------------------------


def test_math_equivalent_forms():
    verify = math_verifier()
    assert verify(r"so \boxed{1/2}", {"answer": "0.5"}) == Score(value=1.0, correct=True)
    assert verify(r"<answer>\frac{\sqrt{2}}{2}</answer>", {"answer": r"\sqrt{2}/2"}).correct is True
    assert verify(r"so \boxed{1/3}", {"answer": "0.5"}) == Score(value=0.0, correct=False)


def test_math_missing_answer_and_unparsable_reference():
    verify = math_verifier()
    assert verify("one half", {"answer": "0.5"}) == Score(value=0.0, correct=False)
    broken = verify(r"\boxed{1}", {"answer": ""})
    assert broken.value == 0.0 and "reference" in broken.error


def test_math_verifier_works_in_a_worker_thread():
    # math-verify's default signal-based timeouts raise outside the main thread.
    score = safe_score(math_verifier(), r"\boxed{0.25}", {"answer": r"\frac{1}{4}"}, timeout_s=5.0)
    assert score == Score(value=1.0, correct=True)


# --- exact match and format ------------------------------------------------------------------


def test_exact_match_normalises():
    verify = exact_match_verifier()
    assert verify("<answer>The  Beijing!</answer>", {"answer": ["beijing"]}) == Score(value=1.0, correct=True)
    assert verify("<answer>an Apple, pie</answer>", {"answer": "apple pie"}).correct is True
    assert verify("<answer>Shanghai</answer>", {"answer": ["beijing", "peking"]}) == Score(value=0.0, correct=False)


def test_exact_match_without_normalising():
    verify = exact_match_verifier(normalize=False, fallback="full")
    assert verify("  Beijing ", {"answer": "Beijing"}).value == 1.0
    assert verify("beijing", {"answer": "Beijing"}).value == 0.0


@pytest.mark.parametrize(
    ("text", "require_think", "value"),
    [
        ("<answer>4</answer>", False, 1.0),
        ("<answer>4</answer> <answer>5</answer>", False, 0.0),
        ("<answer>  </answer>", False, 0.0),
        ("<answer>4", False, 0.0),
        ("<answer>4</answer></answer>", False, 0.0),
        ("<think>2+2</think><answer>4</answer>", True, 1.0),
        ("<answer>4</answer><think>2+2</think>", True, 0.0),
        ("<answer>4</answer>", True, 0.0),
    ],
)
def test_format_verifier(text, require_think, value):
    assert format_verifier(require_think=require_think)(text, {}) == Score(value=value, correct=None)


# --- Rubric ----------------------------------------------------------------------------------


def _constant(value: float, correct: bool | None = None):
    return lambda text, example: Score(value=value, correct=correct)


def _raises(text, example):
    raise RuntimeError("boom")


def _hangs(text, example):
    time.sleep(10)
    return Score(1.0)


def test_rubric_weighted_sum_keeps_parts():
    rubric = Rubric([("task", _constant(0.5, True), 1.0), ("fmt", _constant(1.0), 0.2), ("len", _constant(0.25), -2.0)])
    score = rubric("text", {})
    assert score.value == pytest.approx(0.5 * 1.0 + 1.0 * 0.2 + 0.25 * -2.0)
    assert score.parts == {"task": 0.5, "fmt": 1.0, "len": 0.25}
    assert score.correct is True and score.error is None


def test_rubric_primary_and_errors_keep_other_parts():
    rubric = Rubric(
        [("fmt", _constant(1.0), 0.5), ("bad", _raises, 1.0), ("task", _constant(1.0, False), 1.0)], primary="task"
    )
    score = rubric("text", {})
    assert score.value == pytest.approx(1.5)
    assert score.correct is False
    assert score.error == "bad: RuntimeError: boom"
    assert score.parts == {"fmt": 1.0, "bad": 0.0, "task": 1.0}


def test_rubric_rejects_bad_parts():
    with pytest.raises(ValueError, match="unique"):
        Rubric([("a", _constant(1.0), 1.0), ("a", _constant(0.0), 1.0)])
    with pytest.raises(ValueError, match="primary"):
        Rubric([("a", _constant(1.0), 1.0)], primary="b")
    with pytest.raises(ValueError, match="at least one"):
        Rubric([])


# --- safe running ----------------------------------------------------------------------------


def test_raising_verifier_gives_an_error_score():
    assert safe_score(_raises, "x", {}, timeout_s=0.2) == Score(value=0.0, correct=False, error="RuntimeError: boom")
    assert safe_score(_raises, "x", {}, timeout_s=None).error == "RuntimeError: boom"


def test_hanging_verifier_times_out_quickly():
    start = time.monotonic()
    score = safe_score(_hangs, "x", {}, timeout_s=0.2)
    assert time.monotonic() - start < 1.0
    assert score == Score(value=0.0, correct=False, error="timeout after 0.2s")


def test_batch_continues_after_a_timeout():
    def verifier(text, example):
        if text == "hang":
            time.sleep(10)
        return Score(float(text == example["answer"]), correct=text == example["answer"])

    texts = ["a", "hang", "b", "x", "hang", "c"]
    examples = [{"answer": a} for a in ["a", "-", "b", "y", "-", "c"]]
    start = time.monotonic()
    scores = score_batch(verifier, texts, examples, timeout_s=0.2)
    assert time.monotonic() - start < 2.0
    assert [s.value for s in scores] == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert [s.error is not None for s in scores] == [False, True, False, False, True, False]
    assert scores[3] == Score(value=0.0, correct=False)


def test_batch_in_a_thread_matches_a_plain_loop(chain_sum_entry):
    verify = reasoning_gym_verifier("chain_sum", fallback="last_number")
    texts = [f"{chain_sum_entry['answer']}", "7", "", "<answer>1</answer>", "-0"] * 3
    examples = [chain_sum_entry] * len(texts)
    expected = [verify(t, e) for t, e in zip(texts, examples)]
    assert score_batch(verify, texts, examples, timeout_s=5.0) == expected
    assert score_batch(verify, texts, examples, timeout_s=None) == expected


def test_batch_of_cheap_items_is_fast():
    verify = exact_match_verifier(fallback="full")
    texts, examples = ["Paris"] * 512, [{"answer": "paris"}] * 512
    score_batch(verify, texts[:8], examples[:8])  # warm-up
    start = time.perf_counter()
    scores = score_batch(verify, texts, examples, timeout_s=5.0)
    assert time.perf_counter() - start < 0.5
    assert all(s.correct for s in scores)


def test_batch_length_mismatch():
    with pytest.raises(ValueError, match="2 texts and 1 examples"):
        score_batch(_constant(1.0), ["a", "b"], [{}])


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (0.75, Score(value=0.75)),
        (True, Score(value=1.0, correct=True)),
        (0, Score(value=0.0)),
    ],
)
def test_numbers_are_accepted_as_scores(result, expected):
    assert safe_score(lambda t, e: result, "x", {}) == expected


@pytest.mark.parametrize(
    ("result", "message"), [("1.0", "returned str"), (None, "returned NoneType"), (math.nan, "non-finite")]
)
def test_unusable_results_are_errors(result, message):
    score = safe_score(lambda t, e: result, "x", {})
    assert score.value == 0.0 and score.correct is False and message in score.error


def test_summarize_scores_hand_computed():
    scores = [
        Score(1.0, correct=True, parts={"task": 1.0, "fmt": 1.0}),
        Score(0.5, correct=False, parts={"task": 0.0, "fmt": 0.5}),
        Score(0.0, correct=False, error="timeout after 5s"),
        Score(0.0, correct=False, error="task: timeout after 5s"),
        Score(0.0, correct=False, error="ValueError: bad"),
        Score(0.5, correct=None),
    ]
    metrics = summarize_scores(scores)
    mean = 2.0 / 6
    assert metrics["reward/mean"] == pytest.approx(mean)
    assert metrics["reward/std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in [1, 0.5, 0, 0, 0, 0.5]) / 6))
    assert metrics["reward/accuracy"] == pytest.approx(1 / 5)
    assert metrics["reward/timeouts"] == 2.0
    assert metrics["reward/verifier_errors"] == 1.0
    assert metrics["reward/part/task"] == pytest.approx(0.5)
    assert metrics["reward/part/fmt"] == pytest.approx(0.75)


def test_summarize_empty_batch_has_no_placeholder_means():
    assert summarize_scores([]) == {"reward/verifier_errors": 0.0, "reward/timeouts": 0.0}


# --- registry and imports --------------------------------------------------------------------


def test_build_verifier_by_kind(chain_sum_entry):
    verify = build_verifier("reasoning_gym", task="chain_sum")
    assert verify(f"<answer>{chain_sum_entry['answer']}</answer>", chain_sum_entry).correct is True
    assert build_verifier("format")("<answer>1</answer>", {}).value == 1.0
    with pytest.raises(ValueError, match="exact_match"):
        build_verifier("regex")


def test_importing_rewards_loads_no_heavy_backend():
    src = Path(rewards.__file__).parents[2]
    heavy = "{'reasoning_gym', 'math_verify', 'transformers'}"
    code = f"import sys, rlvr_lab.rewards; print(sorted({heavy} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


def test_reasoning_gym_binary_reward_keeps_raw_score():
    from rlvr_lab.envs.tasks import ReasoningGymTask

    task = ReasoningGymTask("spell_backward", seed=3, size=4)
    ex = task[0]
    wrong = ex["answer"][:-1] + ("a" if ex["answer"][-1] != "a" else "b")
    partial = task.verifier(partial_credit=True)(f"<answer>{wrong}</answer>", ex)
    binary = task.verifier(partial_credit=False)(f"<answer>{wrong}</answer>", ex)
    assert 0 < partial.value < 1 and partial.correct is False
    assert binary.value == 0.0 and binary.correct is False and binary.parts["score"] == partial.value
    right = task.verifier(partial_credit=False)(f"<answer>{ex['answer']}</answer>", ex)
    assert right.value == 1.0 and right.correct is True


# --- verifiers in child processes ------------------------------------------------------------------


def _sleeps_forever(text, example):
    time.sleep(10_000)


def _dies(text, example):
    if text == "die":
        os._exit(7)
    return Score(1.0, correct=True)


@pytest.mark.slow
@pytest.mark.skipif(not process_isolation_available(), reason="needs fork")
def test_a_verifier_that_never_returns_leaves_no_thread_or_process_behind():
    """1,000 calls of a verifier that sleeps forever: each is a timeout Score, and afterwards this process has
    exactly the threads and child processes it had before (thread isolation would leave 1,000 threads)."""
    import multiprocessing

    threads = set(threading.enumerate())  # an earlier test's abandoned thread may end meanwhile: count new ones
    scores = score_batch(_sleeps_forever, ["x"] * 1000, [{}] * 1000, timeout_s=0.005, isolation="process")
    assert scores == [Score(0.0, correct=False, error="timeout after 0.005s")] * 1000
    assert set(threading.enumerate()) - threads == set()
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not process_isolation_available(), reason="needs fork")
def test_process_isolation_scores_like_the_thread_and_survives_a_dying_verifier(chain_sum_entry):
    verify = exact_match_verifier(fallback="full")
    texts = [f"{chain_sum_entry['answer']}", "7", "", "<answer>1</answer>", "-0"] * 3
    examples = [chain_sum_entry] * len(texts)
    assert score_batch(verify, texts, examples, timeout_s=5.0, isolation="process") == \
        score_batch(verify, texts, examples, timeout_s=5.0, isolation="thread")
    scores = score_batch(_dies, ["a", "die", "b"], [{}] * 3, timeout_s=5.0, isolation="process")
    assert scores[0].correct and scores[2].correct
    assert scores[1] == Score(0.0, correct=False, error="verifier process died (exit code 7)")
    with pytest.raises(ValueError, match="isolation must be one of"):
        score_batch(verify, ["a"], [{}], isolation="fiber")
