"""Fuzzed model outputs (issue 22, "Fuzzed bad input"): what a policy can write, against everything that reads it.

Model text reaches the answer extractors (``rewards.extract``), the QA and exact-match verifiers, the
Search-R1 format check, the search environment's action parser and the selection reply parsers. For any
text up to 100 kB each of them returns a defined value (a string or None, a Score with a value in [0, 1],
an action kind, a verdict or None) within ``LIMIT_S`` seconds, never an exception. The inputs are built
from the pieces that break parsers: unterminated and nested tags by the thousand, ``\\boxed{`` with
unbalanced braces thousands deep, long digit, comma and space runs. The linear-time extractors are also
checked against the plain regular expressions they replace, on inputs small enough for those to finish.

Hypothesis runs derandomized with no example database; the example counts are the constants below.
"""

from __future__ import annotations

import math
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rlvr_lab.envs.retrievers import Passage
from rlvr_lab.envs.search import SearchEnv, parse_action
from rlvr_lab.eval.selection.parse import parse_best_solution, parse_judgement
from rlvr_lab.models.tokenizer import build_char_tokenizer
from rlvr_lab.rewards.extract import FALLBACKS, extract_answer, last_boxed, last_number, tagged_contents
from rlvr_lab.rewards.qa import (
    count_valid_searches,
    format_violation,
    qa_exact_match_verifier,
    qa_f1_verifier,
    retrieval_hit,
    search_r1_format_verifier,
)
from rlvr_lab.rewards.safe import TIMEOUT_ERROR, process_isolation_available, score_batch
from rlvr_lab.rewards.verifiers import exact_match_verifier, format_verifier, math_verifier
from rlvr_lab.types import Score

OUTPUT_EXAMPLES = 150  # texts up to 100 kB through every reader below
EQUIVALENCE_EXAMPLES = 300  # small texts: the linear-time extractors against the regular expressions
MATH_EXAMPLES = 25  # math-verify, time-limited in a child process
FAMILY_EXAMPLES = {"model outputs": OUTPUT_EXAMPLES + EQUIVALENCE_EXAMPLES + MATH_EXAMPLES}

LIMIT_S = 0.5
"""Wall-clock bound of one reader on one text of up to ``MAX_CHARS`` characters."""
HARD_LIMIT_S = 10.0
"""Where a runaway call is interrupted (SIGALRM), so a regression fails the test instead of hanging it."""
MAX_CHARS = 100_000

FUZZ = settings(
    deadline=None,  # time is asserted per call against LIMIT_S
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PIECES = [
    "<answer>", "</answer>", "<answer", "answer>", "</answer", "<search>", "</search>", "<think>", "</think>",
    "<information>", "</information>", "<best_solution>", "</best_solution>", "<BEST_SOLUTION>",
    "\\boxed{", "\\boxed", "{", "}", "{}", "Judgement:", "**Judgment**:", "judgement", "*", "yes", "No",
    "0", "9", "-", ",", ".", "/", "1,234", "-3.5", "3/4", " ", "\n", "\t", "\r", "the", "a ", "An",
    "\u00a0", "\u2028", "é", "\x00", "\ufeff",
]
BLOCKS = [  # whole blocks, so that well-formed answers, searches and verdicts occur among the broken ones
    "<answer>Paris</answer>", "<answer> 1,234 </answer>", "<answer></answer>", "<search>capital</search>",
    "<think>hmm</think>", "<information>Paris is</information>", "\\boxed{12}", "\\boxed{\\frac{1}{2}}",
    "<best_solution>2</best_solution>", "Judgement: Yes", "**Judgement**: no",
]
TEXT = st.text(max_size=12)


@st.composite
def model_output(draw, max_chars: int = MAX_CHARS) -> str:
    """Pieces, plain text and runs of one piece repeated up to 3,000 times, joined and cut to ``max_chars``."""
    parts = draw(st.lists(
        st.tuples(st.one_of(st.sampled_from(PIECES), st.sampled_from(BLOCKS), TEXT),
                  st.sampled_from([1, 1, 2, 10, 300, 3000])),
        max_size=8,
    ))
    return "".join(piece * times for piece, times in parts)[:max_chars]


ADVERSARIAL = {
    "unclosed answers": "<answer>" * 12_500,
    "unclosed searches": "<search>" * 12_500,
    "one unclosed answer": "<answer>" + "x" * 99_990,
    "answers then one close": "<answer>" * 12_000 + "</answer>",
    "nested answers": "<answer>" * 6_000 + "</answer>" * 6_000,
    "search inside answer": ("<search><answer>" * 6_000)[:MAX_CHARS],
    "unclosed boxed": "\\boxed{" * 14_000,
    "boxed then open braces": "\\boxed{" + "{" * 99_990,
    "boxed then close braces": ("\\boxed{" + "}" * 10) * 5_000,
    "boxed braces deep and closed": "\\boxed{" + "{" * 49_990 + "}" * 50_000,
    "digits": "1" * MAX_CHARS,
    "thousands commas": "1," * 50_000,
    "comma groups": "1,234" * 20_000,
    "decimal points": "1." * 50_000,
    "fractions": "1/" * 50_000,
    "minus signs": "-" * MAX_CHARS,
    "spaces": " " * MAX_CHARS,
    "newlines": "\n" * MAX_CHARS,
    "articles": "the a an " * 11_000,
    "think unclosed": "<think>" * 14_000,
    "think closes": "</think>" * 12_000,
    "information blocks": "<information>x</information>" * 3_500,
    "best solutions unclosed": "<best_solution>" * 6_600,
    "best solution then text": "<best_solution>" + "1" * 99_980,
    "judgement then spaces": "judgement" + " " * 99_990,
    "bold judgements": "**judgement**" * 7_600,
}


class Overran(BaseException):
    """Raised into a call that ran past HARD_LIMIT_S (a BaseException, so no ``except Exception`` swallows it)."""


@contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block with Overran after ``seconds`` (the regex engine checks for signals too)."""

    def expire(signum: int, frame: Any) -> None:
        raise Overran(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timed(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, asserted to return within ``LIMIT_S``.

    A call over the limit is timed once more and fails only if it is slow again: a slow algorithm is slow
    every time, a busy machine pausing the process is not (the readers take milliseconds at 100 kB).
    """
    for attempt in (1, 2):
        start = time.perf_counter()
        overran = False
        try:
            with hard_limit(HARD_LIMIT_S):
                out = fn(*args, **kwargs)
        except Overran:  # failed outside the handler: a traceback through the interrupted regex will not render
            overran = True
        if overran:
            pytest.fail(f"{name} still running after {HARD_LIMIT_S}s", pytrace=False)
        elapsed = time.perf_counter() - start
        if elapsed < LIMIT_S:
            return out
    pytest.fail(f"{name} took {elapsed:.2f}s, twice over the {LIMIT_S}s limit", pytrace=False)


EXAMPLE = {"question": "q", "answer": "1,234", "answers": ["Paris", "1234"]}
VERIFIERS = {
    "qa_em": qa_exact_match_verifier(),
    "qa_sub_em": qa_exact_match_verifier(substring=True),
    "qa_f1": qa_f1_verifier(),
    "search_r1": search_r1_format_verifier(),
    "format": format_verifier(),
    "format_think": format_verifier(require_think=True),
    **{f"exact_{fallback}": exact_match_verifier(fallback=fallback) for fallback in FALLBACKS},
}
SEARCH_R1_VALUES = {0.0, 0.1, 0.2, 0.3, 0.8, 1.0}


class EchoRetriever:
    """One passage quoting the query, so the observation path runs end to end."""

    def search(self, queries, k):
        return [[Passage("1", "Echo", query[:200])] for query in queries]


TOKENIZER = build_char_tokenizer()
ENV = SearchEnv(tokenizer=TOKENIZER, verifier=qa_exact_match_verifier(), retriever=EchoRetriever(), max_obs_tokens=50)


def check_every_reader(text: str) -> None:
    """Every reader of model text returns its defined kind of value within LIMIT_S."""
    for fallback in FALLBACKS:
        answer = timed(f"extract_answer[{fallback}]", extract_answer, text, fallback=fallback)
        assert answer is None or isinstance(answer, str)
    blocks = timed("tagged_contents", tagged_contents, text, "answer")
    if blocks:
        assert extract_answer(text, fallback="last_number") == blocks[-1].strip()
    number = timed("last_number", last_number, text)
    assert number is None or re.fullmatch(r"-?(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+)?", number), number
    boxed = timed("last_boxed", last_boxed, text)
    assert boxed is None or (isinstance(boxed, str) and "\\boxed{" in text)
    for name, verify in VERIFIERS.items():
        score = timed(name, verify, text, EXAMPLE)
        assert isinstance(score, Score) and score.error is None, (name, score)
        assert math.isfinite(score.value) and 0.0 <= score.value <= 1.0 and score.correct in (True, False, None)
        if name == "search_r1":
            assert round(score.value, 6) in SEARCH_R1_VALUES
    violation = timed("format_violation", format_violation, text)
    assert violation is None or isinstance(violation, str)
    assert isinstance(timed("count_valid_searches", count_valid_searches, text), int)
    assert isinstance(timed("retrieval_hit", retrieval_hit, text, ["paris"]), bool)
    kind, content = timed("parse_action", parse_action, text)
    assert kind in ("search", "answer", "invalid") and isinstance(content, str)
    reply = timed("SearchEnv.reply", ENV.reply, text)
    assert reply.done == (kind == "answer")
    assert sum(reply.counts.get(name, 0.0) for name in ("answered", "invalid_action", "valid_search")) == 1.0
    final = timed("SearchEnv.final_reply", ENV.final_reply, text)
    assert final.done and sum(final.counts.values()) == 1.0
    assert timed("parse_judgement", parse_judgement, text) in (True, False, None)
    pick = timed("parse_best_solution", parse_best_solution, text, 8)
    assert pick is None or (isinstance(pick, int) and 0 <= pick < 8)


@given(text=model_output())
@settings(FUZZ, max_examples=OUTPUT_EXAMPLES)
def test_any_model_output_gets_a_defined_reading_in_time(text):
    check_every_reader(text)
    event(f"action {parse_action(text)[0]}, {'an' if tagged_contents(text, 'answer') else 'no'} answer block")


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_model_output_gets_a_defined_reading_in_time(name):
    """The inputs that made the old extractors backtrack: 16 s (<answer> x 12,500), 15 s (<search> x 12,500)
    and 109 s (\\boxed{ x 14,000) for one call; each reader now takes milliseconds."""
    check_every_reader(ADVERSARIAL[name])


# ---- the linear-time extractors against the regular expressions they replace ------------------------------------


def regex_tagged_contents(text: str, tag: str) -> list[str]:
    name = re.escape(tag)
    return re.findall(rf"<{name}>(.*?)</{name}>", text, flags=re.DOTALL)


def loop_last_boxed(text: str) -> str | None:
    """The last ``\\boxed{...}`` whose braces close, by a depth count from each candidate (quadratic)."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth = 1
        for i in range(start + len("\\boxed{"), len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start + len("\\boxed{"): i].strip()
        start = text.rfind("\\boxed{", 0, start)
    return None


def regex_parse_action(text: str) -> tuple[str, str]:
    match = re.search(r"<(search|answer)>(.*?)</\1>", text, re.DOTALL)
    if match is None:
        return "invalid", ""
    kind, content = match.group(1), match.group(2).strip()
    if kind == "search" and (not content or any(f"<{t}>" in content or f"</{t}>" in content
                                                for t in ("think", "search", "information", "answer"))):
        return "invalid", content
    return kind, content


@given(text=model_output(max_chars=2_000), tag=st.sampled_from(["answer", "search", "a", "x.y", "b+"]))
@settings(FUZZ, max_examples=EQUIVALENCE_EXAMPLES)
def test_linear_extractors_match_the_regular_expressions(text, tag):
    assert tagged_contents(text, tag) == regex_tagged_contents(text, tag)
    assert last_boxed(text) == loop_last_boxed(text)
    assert parse_action(text) == regex_parse_action(text)


# ---- math-verify: no time bound of its own, so the scorer's limit is what holds -----------------------------------

MATH_PIECES = ["\\boxed{", "\\frac{1}{", "}", "{", "(", ")", "^", "x", "1", "2", "+", "\\sqrt{", "\\left(",
               "\\right)", "=", "\\infty", "$", "9" * 50]


@pytest.mark.skipif(not process_isolation_available(), reason="needs fork")
@given(parts=st.lists(st.tuples(st.sampled_from(MATH_PIECES), st.integers(1, 60)), min_size=1, max_size=5))
@settings(FUZZ, max_examples=MATH_EXAMPLES)
def test_math_verifier_scores_or_times_out_within_its_limit(parts):
    """math-verify can run for minutes on nested LaTeX (``\\frac{1}{`` x 50); scored in a child process with a
    time limit, every text gets a Score (a verdict or a counted error) by the limit plus slack."""
    text = "".join(piece * times for piece, times in parts)
    timeout_s = 0.5
    start = time.monotonic()
    with hard_limit(HARD_LIMIT_S):
        (score,) = score_batch(VERIFY_MATH, [text], [{"answer": "3"}], timeout_s=timeout_s, isolation="process")
    assert time.monotonic() - start < timeout_s + 1.5
    assert isinstance(score, Score) and 0.0 <= score.value <= 1.0
    assert score.error is None or score.error.startswith(TIMEOUT_ERROR) or ":" in score.error
    event("verdict" if score.error is None else "timeout, counted" if score.error.startswith(TIMEOUT_ERROR)
          else "error, counted")


@pytest.mark.skipif(not process_isolation_available(), reason="needs fork")
def test_math_verifier_that_would_run_for_minutes_is_a_counted_timeout():
    """The text that found the problem: math-verify was still parsing it after two minutes."""
    text = "\\boxed{" + "\\frac{1}{" * 50 + "2" + "}" * 50 + "}"
    start = time.monotonic()
    (score,) = score_batch(VERIFY_MATH, [text], [{"answer": "3"}], timeout_s=0.5, isolation="process")
    assert time.monotonic() - start < 2.0
    assert score == Score(0.0, correct=False, error=f"{TIMEOUT_ERROR} 0.5s")


VERIFY_MATH = math_verifier()
