"""QA rewards: SQuAD normalisation, exact match and token F1 by hand, Search-R1's tag grammar and
format-aware reward table, and counting searches."""

from __future__ import annotations

import pytest

from rlvr_lab.rewards import (
    build_verifier,
    count_valid_searches,
    exact_match,
    format_violation,
    gold_answers,
    is_valid_format,
    normalize_answer,
    qa_exact_match_verifier,
    qa_f1_verifier,
    retrieval_hit,
    search_r1_format_verifier,
    substring_match,
    summarize_scores,
    token_f1,
)

# A well-formed two-turn Search-R1 response: think, search, information (forced), think, answer.
VALID = (
    "<think>I need the capital of France.</think>\n<search> capital of France </search>"
    "\n\n<information>Doc 1(Title: Paris) Paris is the capital of France.\n</information>\n\n"
    "<think>The document says Paris.</think>\n<answer> {answer} </answer>"
)


# --- normalisation, EM, F1 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The  Beijing!", "beijing"),  # spec section 10, unit test 4
        ("U.S.A.", "usa"),  # punctuation is deleted, not spaced
        ("An apple a day", "apple day"),
        ("The theatre", "theatre"),  # articles only as whole words
        ("  New\tYork\n", "new york"),
        ("A", ""),
    ],
)
def test_normalize_answer(raw: str, normalized: str):
    assert normalize_answer(raw) == normalized


def test_exact_and_substring_match_against_several_golds():
    assert exact_match("The  Beijing!", ["beijing"])
    assert exact_match("Beijing.", ["Peking", "BEIJING"])
    assert not exact_match("Beijing city", ["beijing"])
    assert substring_match("Beijing city", ["Shanghai", "beijing"])
    assert substring_match("party", ["art"])  # a character substring, as Search-R1's subem_check
    assert not substring_match("anything", ["the"])  # a gold that normalises to nothing never matches
    assert not exact_match("Paris", [])


def test_token_f1_by_hand():
    # pred -> [cat, sat, on, mat], gold -> [cat, on, mat]: 3 shared, P = 3/4, R = 1, F1 = 1.5 / 1.75
    assert token_f1("the cat sat on mat", ["a cat on the mat"]) == pytest.approx(6 / 7)
    # repeated tokens count once per occurrence: [new, new, york] vs [new, york]: 2 shared, P = 2/3, R = 1
    assert token_f1("new new york", ["New York"]) == pytest.approx(0.8)
    # the best gold wins
    assert token_f1("the cat sat on mat", ["dog", "a cat on the mat", "cat"]) == pytest.approx(6 / 7)
    assert token_f1("cat", ["dog"]) == 0.0
    # empty after normalisation: equal only to another empty answer
    assert token_f1("the", ["a"]) == 1.0
    assert token_f1("the", ["cat"]) == 0.0
    assert token_f1("cat", []) == 0.0


def test_gold_answers_prefer_answers_then_answer():
    assert gold_answers({"answers": ["a", "b"], "answer": "c"}) == ["a", "b"]
    assert gold_answers({"answer": "c"}) == ["c"]
    assert gold_answers({"answer": [1999]}) == ["1999"]
    with pytest.raises(KeyError):
        gold_answers({"question": "q"})


# --- format grammar --------------------------------------------------------------------------


def test_valid_formats():
    assert format_violation(VALID.format(answer="Paris")) is None
    assert is_valid_format("<think>x</think><answer>y</answer>")
    assert is_valid_format("\n<think>x</think>\n\n<answer>y</answer>\n")  # whitespace between blocks is fine


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<answer>Paris</answer>", "unexpected <answer> in state start"),  # no think first
        ("<think>x</think><search> q", "1 <search> but 0 </search>"),  # unclosed (spec unit test 2)
        ("<think>x</think> So it is <answer>P</answer>", "text 'So it is' outside any block"),
        ("<think>x</think><answer>P</answer> done", "text 'done' outside any block"),
        ("<think>a</think><search>q</search><information>i</information><answer>P</answer>", "unexpected <answer> in state information"),
        ("<think>a</think><think>b</think><answer>P</answer>", "unexpected <think> in state after_think"),
        ("<think><search>q</search></think><answer>x</answer>", "unexpected <search> in state in_think"),
        ("<think>a</think><search>q</search><information>i</information>", "incomplete: ended in state information"),
        ("<think>a</think><search>q</search><think>b</think><answer>x</answer>", "unexpected <think> in state after_search"),
        ("", "incomplete: ended in state start"),
        (
            "<think>a</think>\nMy previous action is invalid. Let me try again.\n<think>b</think><answer>x</answer>",
            "text 'My previous action is invalid",
        ),
    ],
)
def test_invalid_formats_name_the_violation(text: str, reason: str):
    violation = format_violation(text)
    assert violation is not None and violation.startswith(reason)
    assert not is_valid_format(text)


def test_count_valid_searches():
    text = "<search> a </search> <search>  </search> <search><search>b</search> <search>c\nd</search> <search>e"
    # "a" and "c\nd" count; the empty query, the one holding a tag, and the unclosed one do not
    assert count_valid_searches(text) == 2
    assert count_valid_searches(VALID.format(answer="Paris")) == 1
    assert count_valid_searches("<answer>x</answer>") == 0


def test_retrieval_hit_looks_only_inside_information_blocks():
    assert retrieval_hit(VALID.format(answer="Lyon"), ["paris"])
    assert not retrieval_hit("<think>Paris</think><answer>Paris</answer>", ["Paris"])
    assert not retrieval_hit(VALID.format(answer="Lyon"), ["Lyon"])


# --- verifiers -------------------------------------------------------------------------------


def test_em_verifier_scores_the_last_answer_of_the_response():
    verify = qa_exact_match_verifier()
    example = {"answers": ["beijing"]}
    assert verify("<answer>Shanghai</answer> wait... <answer>The  Beijing!</answer>", example).value == 1.0
    score = verify("<answer>Beijing</answer> no, <answer>Shanghai</answer>", example)
    assert (score.value, score.correct) == (0.0, False)
    # a response without an answer block scores 0 (spec unit test 5, response-only form)
    assert (verify("I think it is Beijing", example).value, verify("", example).correct) == (0.0, False)
    assert verify("<answer>beijing city</answer>", {"answer": "Beijing"}).value == 0.0
    assert qa_exact_match_verifier(substring=True)("<answer>beijing city</answer>", {"answer": "Beijing"}).value == 1.0


def test_f1_verifier_gives_partial_credit_and_an_em_verdict():
    score = qa_f1_verifier()("<answer>the cat sat on mat</answer>", {"answers": ["a cat on the mat"]})
    assert score.value == pytest.approx(6 / 7) and score.correct is False
    exact = qa_f1_verifier()("<answer>Cat on the mat.</answer>", {"answers": ["a cat on the mat"]})
    assert (exact.value, exact.correct) == (1.0, True)
    assert qa_f1_verifier()("no answer", {"answers": ["x"]}).value == 0.0


@pytest.mark.parametrize(
    ("text", "value", "correct", "valid", "hit"),
    [
        (VALID.format(answer="Paris"), 1.0, True, True, True),  # correct, valid
        ("<answer>Paris</answer>", 0.8, True, False, False),  # correct, invalid: 1 - 0.2
        (VALID.format(answer="Lyon"), 0.3, False, True, True),  # wrong, valid, gold in information: 0.2 + 0.1
        ("<think>no search</think><answer>Lyon</answer>", 0.2, False, True, False),  # wrong, valid, no hit
        ("<answer>Lyon</answer>", 0.1, False, False, False),  # wrong, invalid
        ("<information>Paris</information><answer>Lyon</answer>", 0.1, False, False, False),  # hit ignored when invalid
        ("I believe it is Paris.", 0.0, False, False, False),  # no answer, invalid
    ],
)
def test_search_r1_format_reward_table(text: str, value: float, correct: bool, valid: bool, hit: bool):
    score = search_r1_format_verifier()(text, {"answers": ["Paris"]})
    assert score.value == pytest.approx(value)
    assert score.correct is correct
    assert dict(score.parts) == {"em": float(correct), "valid_format": float(valid), "retrieval_hit": float(hit)}


def test_search_r1_reward_weights_are_arguments():
    verify = search_r1_format_verifier(structure_format_score=0.5, retrieval_score=0.0, final_format_score=0.0)
    assert verify("<answer>Paris</answer>", {"answers": ["Paris"]}).value == pytest.approx(0.5)
    assert verify(VALID.format(answer="Lyon"), {"answers": ["Paris"]}).value == pytest.approx(0.5)
    assert verify("<answer>Lyon</answer>", {"answers": ["Paris"]}).value == 0.0


def test_registry_builds_the_qa_verifiers_and_metrics_see_their_parts():
    verify = build_verifier("search_r1")
    scores = [verify(VALID.format(answer=a), {"answers": ["Paris"]}) for a in ("Paris", "Lyon")]
    metrics = summarize_scores(scores)
    assert metrics["reward/mean"] == pytest.approx(0.65)
    assert metrics["reward/accuracy"] == 0.5
    assert metrics["reward/part/valid_format"] == 1.0
    assert build_verifier("qa_f1")("<answer>x</answer>", {"answer": "x"}).value == 1.0
