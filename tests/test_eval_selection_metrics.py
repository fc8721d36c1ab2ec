"""Selection metrics by hand (Wilson intervals, oracle, random choice, maj@n, judge precision/recall,
best-of-n over shuffles) and the prompt templates."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from rlvr_lab.eval.selection import (
    GENSELECT_TEMPLATE,
    JUDGE_TEMPLATE,
    bon_accuracy,
    format_candidates,
    genselect_prompt,
    judge_prompt,
    judge_quality,
    knockout_select,
    load_template,
    majority_vote_accuracy,
    mean_estimate,
    oracle_accuracy,
    parse_best_solution,
    parse_judgement,
    prompt_compare_fn,
    prompt_judge_fn,
    proportion,
    random_choice_accuracy,
    selection_accuracy,
    wilson_interval,
)

# --- intervals ---------------------------------------------------------------------------------------


def test_wilson_interval_by_hand():
    # 8/10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71673, half 1.41602 * sqrt(0.016 + 0.009604) = 0.22658
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    # 0/10: the upper end is z^2 / (n + z^2) = 3.8415 / 13.8415
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # a wider interval at a higher confidence
    assert wilson_interval(8, 10, confidence=0.99)[0] < low
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=95)


def test_normal_interval_by_hand():
    # values 0, 1/3, 1/2: mean 5/18; sample variance (0.077160 + 0.003086 + 0.049383) / 2 = 0.064815;
    # standard error sqrt(0.064815 / 3) = 0.14699; half width 1.96 * 0.14699 = 0.28810
    estimate = mean_estimate([0.0, 1 / 3, 1 / 2])
    assert estimate.value == pytest.approx(5 / 18)
    assert estimate.low == 0.0  # 0.2778 - 0.2881 clipped
    assert estimate.high == pytest.approx(5 / 18 + 0.28810, abs=1e-4)
    assert estimate.method == "normal" and estimate.n == 3
    with pytest.raises(ValueError, match="no problems"):
        mean_estimate([])


# --- reference points --------------------------------------------------------------------------------

POOLS = [[False, False], [True, False, False], [False, True]]


def test_selection_oracle_and_random_choice_by_hand():
    selected = selection_accuracy([True, True, False, True])
    assert selected.value == 0.75 and selected.n == 4 and selected.method == "wilson"
    assert (selected.low, selected.high) == pytest.approx(wilson_interval(3, 4))
    oracle = oracle_accuracy(POOLS)
    assert oracle.value == pytest.approx(2 / 3) and oracle.method == "wilson"
    random_pick = random_choice_accuracy(POOLS)
    assert random_pick.value == pytest.approx((0 + 1 / 3 + 1 / 2) / 3)  # each problem weighs the same
    assert random_pick.method == "normal"
    with pytest.raises(ValueError, match="no problems"):
        selection_accuracy([])
    with pytest.raises(ValueError, match="at least one candidate"):
        oracle_accuracy([[True], []])


def same_value(x, y):
    return Fraction(x) == Fraction(y)


def test_majority_vote_accuracy_by_hand():
    answers = [[7, 7, 3], [3, 7, None], [None, None], ["1/2", "0.5", "2"]]
    golds = [7, 7, 7, "0.50"]
    assert majority_vote_accuracy(answers, golds).value == pytest.approx(1 / 4)  # only [7, 7, 3] is right
    estimate = majority_vote_accuracy(answers[3:], golds[3:], equal_fn=same_value)
    assert estimate.value == 1.0 and estimate.method == "wilson"
    # maj@2 of [7, 7, 3] with gold 7: pairs (7,7) (7,3) (7,3) all vote 7 (first met on ties) -> 1;
    # [3, 7, None]: (3,7) -> 3, (3,None) -> 3, (7,None) -> 7 -> 1/3
    at_two = majority_vote_accuracy(answers[:2], golds[:2], k=2)
    assert at_two.value == pytest.approx((1 + 1 / 3) / 2) and at_two.method == "normal"
    with pytest.raises(ValueError, match="one gold answer per problem"):
        majority_vote_accuracy(answers, golds[:2])


# --- judge quality -----------------------------------------------------------------------------------

# (verdict, verifier label): 3 TP, 1 FP, 2 FN, 3 TN and one unreadable verdict on a correct solution
TABLE = [(True, True)] * 3 + [(True, False)] + [(False, True)] * 2 + [(False, False)] * 3 + [(None, True)]


def test_judge_quality_counting_unreadable_as_no():
    verdicts, labels = zip(*TABLE)
    quality = judge_quality(verdicts, labels)
    assert (quality.tp, quality.fp, quality.fn, quality.tn, quality.unreadable) == (3, 1, 3, 3, 1)
    assert quality.precision.value == pytest.approx(3 / 4)
    assert quality.recall.value == pytest.approx(3 / 6)
    assert quality.specificity.value == pytest.approx(3 / 4)
    assert quality.accuracy.value == pytest.approx(6 / 10)
    assert quality.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 3))  # 0.6, the harmonic mean of 3/4 and 1/2
    assert quality.balanced_accuracy == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert (quality.precision.low, quality.precision.high) == pytest.approx(wilson_interval(3, 4))
    assert (quality.recall.low, quality.recall.high) == pytest.approx(wilson_interval(3, 6))


def test_judge_quality_dropping_unreadable():
    verdicts, labels = zip(*TABLE)
    quality = judge_quality(verdicts, labels, unreadable="drop")
    assert (quality.tp, quality.fp, quality.fn, quality.tn, quality.unreadable) == (3, 1, 2, 3, 1)
    assert quality.recall.value == pytest.approx(3 / 5)
    assert quality.accuracy.value == pytest.approx(6 / 9)
    assert quality.f1 == pytest.approx(6 / 9)


def test_judge_quality_undefined_precision_is_nan_with_the_full_interval():
    quality = judge_quality([False, False, None], [True, False, False])
    assert math.isnan(quality.precision.value)
    assert (quality.precision.low, quality.precision.high) == (0.0, 1.0)
    assert quality.recall.value == 0.0 and quality.f1 == 0.0
    with pytest.raises(ValueError, match="unreadable"):
        judge_quality([True], [True], unreadable="ignore")
    with pytest.raises(ValueError, match="one label per verdict"):
        judge_quality([True], [True, False])


def test_proportion_of_no_trials():
    estimate = proportion(0, 0)
    assert math.isnan(estimate.value) and estimate.n == 0


# --- best-of-n over shuffles -------------------------------------------------------------------------


def test_bon_accuracy_against_closed_forms():
    labels = [[True, False, False, False], [False] * 4]
    # the oracle picks a correct drawn candidate when there is one:
    # P(candidate 0 among 2 of 4) = 1 - C(3,2)/C(4,2) = 1/2
    oracle = bon_accuracy(labels, lambda p, drawn: max(drawn, key=lambda i: labels[p][i]), 2, shuffles=4000, rng=1)
    assert oracle.value == pytest.approx((1 / 2 + 0) / 2, abs=0.02)  # standard error 0.004
    # taking the first drawn candidate is a uniform pick: 1/4 on the first problem
    first = bon_accuracy(labels, lambda p, drawn: drawn[0], 2, shuffles=4000, rng=1)
    assert first.value == pytest.approx((1 / 4 + 0) / 2, abs=0.02)
    with pytest.raises(ValueError, match="pools of at least 5"):
        bon_accuracy(labels, lambda p, drawn: drawn[0], 5)
    with pytest.raises(ValueError, match="was not drawn"):
        bon_accuracy(labels, lambda p, drawn: 99, 2, shuffles=1)


def test_bon_accuracy_with_a_knockout_selector():
    # a selector that always prefers a correct candidate (q = 1) in a bracket finds one whenever drawn
    labels = [[True, False, False, False, False, False]]

    def select(p, drawn):
        def prefer_correct(group):
            best = max(range(len(group)), key=lambda i: labels[p][group[i]])
            return f"<best_solution>{best + 1}</best_solution>"

        return knockout_select(drawn, 1, prefer_correct, rng=0)[0][0]

    # P(candidate 0 among 3 of 6) = 1/2
    assert bon_accuracy(labels, select, 3, shuffles=3000, rng=2).value == pytest.approx(0.5, abs=0.04)


# --- templates ---------------------------------------------------------------------------------------


def test_builtin_prompts_show_the_solutions_and_ask_for_the_parsed_formats():
    prompt = genselect_prompt("What is 1+1?", ["It is 2.", "It is 3."])
    assert "What is 1+1?" in prompt
    assert "[Solution 1]\nIt is 2.\n\n[Solution 2]\nIt is 3." in prompt
    assert "<best_solution>i</best_solution>" in prompt and "between 1 and 2" in prompt
    assert format_candidates(["a"]) == "[Solution 1]\na"
    judge = judge_prompt("What is 1+1?", "It is {2}.")  # braces in the solution are left alone
    assert "It is {2}." in judge and '"Judgement: Yes"' in judge and '"Judgement: No"' in judge
    assert load_template("genselect") is GENSELECT_TEMPLATE
    assert load_template("judge", kind="judge") is JUDGE_TEMPLATE


def test_load_template_from_a_file(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("Q: {problem}\n{candidates}\nPick one of {num_candidates}; JSON like {{\"a\": 1}}.")
    text = load_template(mine)
    expected = 'Q: p\n[Solution 1]\nx\n\n[Solution 2]\ny\nPick one of 2; JSON like {"a": 1}.'
    assert genselect_prompt("p", ["x", "y"], text) == expected
    judge_file = tmp_path / "judge.txt"
    judge_file.write_text("{problem} / {solution}")
    assert judge_prompt("p", "s", load_template(str(judge_file))) == "p / s"


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("{problem} and nothing else", "genselect", r"missing required field\(s\) \{candidates\}"),
        ("{candidates} only", "genselect", r"missing required field\(s\) \{problem\}"),
        ("{problem}", "judge", r"missing required field\(s\) \{solution\}"),
        ("{problem} {solution} {answer}", "judge", r"unknown field\(s\) \{answer\}"),
        ("{problem} {candidates} {", "genselect", "Single '{'"),
        ("{problem} {candidates} {}", "genselect", "must be named"),
        ("{problem} alone", None, "cannot tell the template's kind"),
    ],
)
def test_load_template_names_what_is_wrong(tmp_path, text, kind, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_template(path, kind=kind)
    assert "bad.txt" in str(error.value)


def test_load_template_errors_on_missing_files_and_kind_mismatch(tmp_path):
    with pytest.raises(FileNotFoundError, match="built-in template names"):
        load_template(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="not a 'judge' template"):
        load_template("genselect", kind="judge")
    ranker = tmp_path / "ranker.txt"
    ranker.write_text("{problem}")
    with pytest.raises(ValueError, match="unknown template kind 'ranker'"):
        load_template(ranker, kind="ranker")


def test_prompt_backed_callables_in_a_tournament_and_a_judge():
    solutions = ["wrong: 3", "right: 2", "wrong: 5"]
    prompts, seeds = [], []

    def generate(prompt, seed):
        prompts.append(prompt)
        seeds.append(seed)
        if "[Solution 1]" in prompt:  # a selector that finds the solution containing "right"
            shown = [line for line in prompt.splitlines() if line.startswith(("right", "wrong"))]
            best = next((i for i, s in enumerate(shown, 1) if s.startswith("right")), 1)
            return f"<best_solution>{best}</best_solution>"
        return "Judgement: Yes" if "solution:\nright" in prompt else "Judgement: No"

    compare_fn = prompt_compare_fn("What is 1+1?", solutions, generate)
    winners, log = knockout_select([0, 1, 2], 1, compare_fn, rng=0)
    assert winners == [1] and log.failed_comparisons == 0
    assert seeds == [0, 1]  # each game its own seed
    for game, prompt in zip(log.games, prompts):
        assert f"[Solution 1]\n{solutions[game.participants[0]]}" in prompt
    judge_fn = prompt_judge_fn("What is 1+1?", solutions, generate)
    assert parse_judgement(judge_fn(1, 5)) is True and parse_judgement(judge_fn(0, 6)) is False
    assert seeds[-2:] == [5, 6]
    assert parse_best_solution(compare_fn((2, 1)), 2) == 1
    with pytest.raises(ValueError, match="missing required field"):
        prompt_judge_fn("p", solutions, generate, template="{problem}")
