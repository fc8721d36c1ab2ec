"""Attentiveness to answer choices (arXiv 2305.14596): the pure maths, prompt templates, data loading and the
shipped offline set. Scoring with a model is in test_eval_mcq_scoring.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlvr_lab.eval.mcq import (
    MCQDataError,
    MCQuestion,
    accuracy_bounds,
    build_offline_mcq,
    build_prompt,
    continuations,
    draw_demos,
    load_mcq,
    load_offline_mcq,
    mean_interval,
    pmi_dc,
    pmi_dc_log,
    predict,
    prob_mass,
    sfc_resolved,
    top_two_gap,
    uncontextual_premise,
    wilson_interval,
)
from rlvr_lab.eval.mcq.data import OFFLINE_N_PER_TASK, OFFLINE_SEED, mcq_jsonl, offline_mcq_path

# --- B8.3: the spec's numeric example ------------------------------------------------------------

P_UNRESOLVED = (0.30, 0.20, 0.05, 0.05)
P_RESOLVED = (0.70, 0.15, 0.05, 0.05)


def test_b83_unresolved_example():
    assert prob_mass(P_UNRESOLVED) == pytest.approx(0.60, abs=1e-12)
    assert top_two_gap(P_UNRESOLVED) == pytest.approx(0.10, abs=1e-12)
    assert not sfc_resolved(P_UNRESOLVED)  # gap 0.10 < missing mass 0.40
    assert predict(P_UNRESOLVED) == 0  # A


def test_b83_resolved_example():
    assert prob_mass(P_RESOLVED) == pytest.approx(0.95, abs=1e-12)
    assert sfc_resolved(P_RESOLVED)  # missing mass 0.05 < gap 0.55


def test_b83_pmi_flips_the_answer():
    scores = pmi_dc(P_UNRESOLVED, (0.5, 0.1, 0.2, 0.2))
    assert scores == pytest.approx([0.6, 2.0, 0.25, 0.25], abs=1e-12)
    assert predict(P_UNRESOLVED) == 0 and predict(scores) == 1  # A before normalisation, B after


def test_pmi_log_space_matches_probability_space():
    import math

    logs = pmi_dc_log([math.log(p) for p in P_UNRESOLVED], [math.log(p) for p in (0.5, 0.1, 0.2, 0.2)])
    assert [math.exp(v) for v in logs] == pytest.approx([0.6, 2.0, 0.25, 0.25], abs=1e-12)


def test_pmi_floor_replaces_exact_zeros_only():
    assert pmi_dc([0.0, 0.2, 1e-20], [0.0, 0.4, 1e-20]) == pytest.approx([1.0, 0.5, 1.0])
    assert pmi_dc([0.1], [0.0], floor=1e-3) == pytest.approx([100.0])
    assert pmi_dc_log([float("-inf")], [0.0], floor=1e-15) == pytest.approx([-34.538776394910684])
    with pytest.raises(ValueError, match="choices"):
        pmi_dc([0.1, 0.2], [0.1])


def test_duplicate_choices_counted_once_first_occurrence():
    # the second "a" (0.25) is ignored, the first (0.30) counts
    assert prob_mass([0.30, 0.25, 0.10], ["a", "a", "b"]) == pytest.approx(0.40, abs=1e-12)
    assert prob_mass([0.30, 0.25, 0.10]) == pytest.approx(0.65, abs=1e-12)
    # deduplicated: PM 0.75, missing 0.25, gap 0.5 - 0.25 = 0.25 -> not resolved (strict inequality);
    # counted twice the mass would be 1.0 and the question "resolved"
    assert not sfc_resolved([0.5, 0.25, 0.25], ["x", "y", "y"])
    assert sfc_resolved([0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match="choice strings"):
        prob_mass([0.1, 0.2], ["a"])


def test_tie_at_the_top_is_never_resolved_and_argmax_takes_the_first():
    assert not sfc_resolved([0.5, 0.5])
    assert predict([0.2, 0.5, 0.5]) == 1


def test_probabilities_are_checked():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prob_mass([0.5, 1.5])
    with pytest.raises(ValueError, match="no choice"):
        prob_mass([])


def test_accuracy_bounds_hand_example():
    # verdicts: right+resolved, right+unresolved, wrong+resolved, wrong+unresolved
    lower, upper = accuracy_bounds([True, True, False, False], [True, False, True, False])
    assert (lower, upper) == (0.25, 0.75)  # 1/4 surely right; + 2 unresolved that could turn right
    assert lower <= 0.5 <= upper


def test_wilson_interval_known_values():
    # p = 0: centre = half = (z^2 / 20) / (1 + z^2 / 10) = 0.138766 with z^2 = 3.841459
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)


def test_mean_interval_hand_value():
    # mean 0.5, sample std sqrt(0.5), se 0.5 -> 0.5 ± 1.96 * 0.5
    low, high = mean_interval([0.0, 1.0])
    assert (low, high) == pytest.approx((0.5 - 0.979982, 0.5 + 0.979982), abs=1e-6)
    assert mean_interval([0.3]) == (0.3, 0.3)


# --- prompt templates (B8.4) ------------------------------------------------------------------------

Q = MCQuestion("What is 2 + 3?", ("4", "5", "6", "7"), 1, id="q")
DEMO = MCQuestion("Spell cat backward.", ("tac", "cat", "act", "tca"), 0, id="d")


def test_no_choices_prompt():
    assert build_prompt(Q, "no_choices") == "What is 2 + 3?"
    assert build_prompt(Q, "no_choices", [DEMO]) == "Spell cat backward. tac\nWhat is 2 + 3?"
    assert uncontextual_premise(Q, "no_choices") == "?"
    assert continuations(Q, "no_choices") == [" 4", " 5", " 6", " 7"]


def test_string_choices_prompt():
    block = "question: What is 2 + 3?\nanswer choices: 4, 5, 6, or 7\nThe correct answer is:"
    assert build_prompt(Q, "string_choices") == block
    demo = "question: Spell cat backward.\nanswer choices: tac, cat, act, or tca\nThe correct answer is: tac\n\n"
    assert build_prompt(Q, "string_choices", [DEMO], instruction="Answer.") == "Answer.\n\n" + demo + block
    assert uncontextual_premise(Q, "string_choices") == "answer choices: 4, 5, 6, or 7\nThe correct answer is:"
    assert continuations(Q, "string_choices") == [" 4", " 5", " 6", " 7"]


def test_enumerated_prompt():
    block = "Question: What is 2 + 3?\nChoices:\n A: 4\n B: 5\n C: 6\n D: 7\nAnswer:"
    assert build_prompt(Q, "enumerated") == block
    demo = "Question: Spell cat backward.\nChoices:\n A: tac\n B: cat\n C: act\n D: tca\nAnswer: A\n\n"
    assert build_prompt(Q, "enumerated", [DEMO]) == demo + block
    assert uncontextual_premise(Q, "enumerated") == "Choices:\n A: 4\n B: 5\n C: 6\n D: 7\nAnswer:"
    assert continuations(Q, "enumerated") == [" A", " B", " C", " D"]


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError, match="enumerated"):
        build_prompt(Q, "letters")  # type: ignore[arg-type]


# --- demonstrations --------------------------------------------------------------------------------


def _set(n: int) -> list[MCQuestion]:
    return [MCQuestion(f"question {i}", ("x", "y"), 0) for i in range(n)]


def test_demos_never_the_question_itself_nested_and_seeded():
    questions = _set(6)
    for index in range(6):
        four = draw_demos(questions, index, 4, seed=3)
        assert index not in four and len(set(four)) == 4
        assert draw_demos(questions, index, 2, seed=3) == four[:2]  # nested across shot counts
        assert draw_demos(questions, index, 4, seed=3) == four  # reproducible
    draws = {tuple(draw_demos(questions, 0, 3, seed=s)) for s in range(10)}
    assert len(draws) > 1  # the seed matters


def test_demos_skip_duplicates_of_the_question_and_need_enough_questions():
    questions = [*_set(3), MCQuestion("question 0", ("x", "y"), 1)]  # 3 repeats the text of 0
    for seed in range(20):
        assert set(draw_demos(questions, 0, 2, seed)) == {1, 2}
    with pytest.raises(ValueError, match="only 2 other"):
        draw_demos(questions, 0, 3, seed=0)
    assert draw_demos(questions, 0, 0, seed=0) == []


# --- loading ------------------------------------------------------------------------------------------


def _write(tmp_path, lines: list[str]):
    path = tmp_path / "mcq.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"question": "2+2?", "choices": ["3", "4"], "answer": 1})


def test_load_answer_forms_and_extra_fields(tmp_path):
    path = _write(tmp_path, [
        json.dumps({"question": "q1", "choices": ["a", "b", "c"], "answer": 2, "id": 7, "task": "t"}),
        "",
        json.dumps({"question": "q2", "choices": ["a", "b", "c"], "answer": "b"}),
        json.dumps({"question": "q3", "choices": ["x", "y", "z"], "answer": "C"}),
        json.dumps({"question": "q4", "choices": ["B", "A"], "answer": "B"}),  # a choice and the letter of choice 1
    ])
    with pytest.raises(MCQDataError, match=r"mcq.jsonl:5: field 'answer' 'B' is ambiguous"):
        load_mcq(path)
    questions = load_mcq(path, limit=3)
    assert [q.answer for q in questions] == [2, 1, 2]
    assert questions[0].id == "7" and questions[0].metadata == {"task": "t"}
    assert questions[1].id == "1"  # position among the questions, blank lines skipped


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (json.dumps({"question": "q", "choices": ["a", "b"]}), r":3: missing field 'answer'"),
        (json.dumps({"choices": ["a", "b"], "answer": 0}), r":3: missing field 'question'"),
        (json.dumps({"question": "q", "choices": "a, b", "answer": 0}), r":3: field 'choices' must be a list"),
        (json.dumps({"question": "q", "choices": ["a"], "answer": 0}), r":3: field 'choices' needs at least 2"),
        (json.dumps({"question": "q", "choices": ["a", 3], "answer": 0}), r":3: field 'choices' item 1"),
        (json.dumps({"question": "q", "choices": ["a", "b", "c"], "answer": 3}), r":3: field .answer. index 3 is out"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": "E"}), r":3: field 'answer' 'E' is neither"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": True}), r":3: field 'answer' must be"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": 1.0}), r":3: field 'answer' must be"),
        (json.dumps({"question": "", "choices": ["a", "b"], "answer": 0}), r":3: field 'question'"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 0', r":3: not valid JSON"),
        (json.dumps(["q", ["a", "b"], 0]), r":3: expected a JSON object"),
    ],
)
def test_load_errors_name_the_line_and_field(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, "", bad])  # the blank line still counts as line 2
    with pytest.raises(MCQDataError, match=message):
        load_mcq(path)


def test_load_empty_and_missing_files(tmp_path):
    with pytest.raises(MCQDataError, match="no questions"):
        load_mcq(_write(tmp_path, [""]))
    with pytest.raises(FileNotFoundError):
        load_mcq(tmp_path / "absent.jsonl")


def test_duplicate_choice_strings_are_kept_and_compared_as_strings():
    q = MCQuestion("q", ("a", "b", "a"), 0)
    assert q.is_correct(2) and not q.is_correct(1)


# --- the shipped offline set --------------------------------------------------------------------------


def test_shipped_file_is_what_the_generator_writes():
    shipped = offline_mcq_path().read_text(encoding="utf-8")
    assert shipped == mcq_jsonl(build_offline_mcq(OFFLINE_N_PER_TASK, OFFLINE_SEED))
    assert len(shipped.encode()) < 100_000


def test_shipped_set_is_well_formed():
    questions = load_offline_mcq()
    assert len(questions) == 150
    assert {q.metadata["task"] for q in questions} == {"chain_sum", "spell_backward", "letter_counting"}
    for q in questions:
        assert len(q.choices) == 4 and len(set(q.choices)) == 4
        assert not any(a != b and a.startswith(b) for a in q.choices for b in q.choices)  # no prefixes
    assert {q.answer for q in questions} == {0, 1, 2, 3}
    spelled = [q for q in questions if q.metadata["task"] == "spell_backward"]
    assert all(q.gold == q.question.rsplit(": ", 1)[1][::-1] for q in spelled)


def test_generator_depends_on_the_seed():
    assert mcq_jsonl(build_offline_mcq(2, 0)) != mcq_jsonl(build_offline_mcq(2, 1))


def test_importing_the_package_loads_neither_torch_nor_transformers():
    code = "import sys, rlvr_lab.eval.mcq; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_end_to_end_on_the_tiny_model(tmp_path):
    from typer.testing import CliRunner

    from rlvr_lab.cli import app

    out = tmp_path / "mcq"
    result = CliRunner().invoke(app, ["mcq", "tiny", "--format", "enumerated", "--format", "string_choices",
                                      "--shots", "0", "--shots", "1", "--questions", "3", "--out", str(out),
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "mcq.json").read_text())
    assert [(r["format"], r["n_demos"]) for r in rows] == [("enumerated", 0), ("enumerated", 1),
                                                            ("string_choices", 0), ("string_choices", 1)]
    assert all(r["n_questions"] == 3 and 0 <= r["prob_mass"] <= 1 for r in rows)
    assert len((out / "records.jsonl").read_text().splitlines()) == 4 * 3
    assert "| enumerated |" in (out / "mcq.md").read_text()


def test_cli_bad_data_names_the_line(tmp_path):
    from typer.testing import CliRunner

    from rlvr_lab.cli import app

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n{"question": "q2", "choices": "ab", "answer": 0}\n')
    result = CliRunner().invoke(app, ["mcq", "tiny", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "bad.jsonl:2" in result.output and "choices" in result.output
