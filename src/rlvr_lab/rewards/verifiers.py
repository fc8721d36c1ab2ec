"""Verifiers: pure functions from a response text and its example to a Score.

Every verifier has the signature ``verifier(text, example) -> Score``, where ``example`` is a mapping
with at least ``"answer"`` (the reference) and possibly ``"question"`` and ``"metadata"``. The
factories below check their arguments when called, so a misconfigured verifier fails at start-up.

A response without an extractable answer scores 0.0 with ``correct=False`` and no error: a wrong
format is the model's fault, not the verifier's. Errors are left to raise; ``rewards.safe`` turns
them into counted error Scores.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import string
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from rlvr_lab.rewards.extract import check_fallback, extract_answer, tagged_contents
from rlvr_lab.types import Score

Verifier = Callable[[str, Mapping[str, Any]], Score]
"""``verifier(text, example) -> Score``; ``example`` holds ``"answer"`` and maybe ``"metadata"``, ``"question"``."""

_CORRECT_TOLERANCE = 1e-9
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def _no_answer() -> Score:
    return Score(value=0.0, correct=False)


# --- reasoning-gym ---------------------------------------------------------------------------


def reasoning_gym_task_names() -> list[str]:
    """Sorted names of every task registered in reasoning-gym."""
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def check_reasoning_gym_task(name: str) -> None:
    """Raise ValueError naming close matches unless ``name`` is a registered reasoning-gym task."""
    names = reasoning_gym_task_names()
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(f"unknown reasoning-gym task {name!r}; {hint}({len(names)} tasks available)")


def reasoning_gym_verifier(
    task: str, *, fallback: str = "none", config: Mapping[str, Any] | None = None, partial_credit: bool = True
) -> Verifier:
    """Score with reasoning-gym's own ``score_answer`` for ``task``.

    ``value`` is reasoning-gym's score in [0, 1] (many tasks give partial credit); ``correct`` is
    ``value >= 1``. With ``partial_credit=False`` the value is the verdict (1.0 or 0.0) and the raw
    score stays in ``parts["score"]``: partial credit can be gamed (e.g. chain_sum credits any
    answer that contains the right one), so binary rewards are the usual RLVR choice. The example must be the full reasoning-gym entry, since some tasks score from
    ``example["metadata"]``. ``config`` is the task config the examples were generated with: a few
    tasks (e.g. ``decimal_arithmetic``, ``puzzle24``, ``time_intervals``) read it when scoring;
    without it the task's default config is used.
    """
    check_fallback(fallback)
    score_answer = _score_answer_fn(task, config or {})

    def verify(text: str, example: Mapping[str, Any]) -> Score:
        answer = extract_answer(text, fallback=fallback)
        if not answer:
            return _no_answer()
        score = float(score_answer(answer, dict(example)))
        correct = score >= 1.0 - _CORRECT_TOLERANCE
        if partial_credit:
            return Score(value=score, correct=correct)
        return Score(value=float(correct), correct=correct, parts={"score": score})

    return verify


def _score_answer_fn(task: str, config: Mapping[str, Any]) -> Callable[[str, dict], float]:
    """reasoning-gym's ``score_answer(answer, entry) -> float`` for ``task`` built with ``config``."""
    return create_reasoning_gym_dataset(task, config=config).score_answer


def create_reasoning_gym_dataset(name: str, *, config: Mapping[str, Any], **settings: Any) -> Any:
    """``reasoning_gym.create_dataset(name, **settings, **config)`` with errors that say what is allowed.

    ``settings`` are the arguments the caller controls itself (``seed``, ``size``); ``config`` may
    not repeat them. Raises ValueError for an unknown task, an unknown or repeated config field, or a
    value the task's config rejects.
    """
    check_reasoning_gym_task(name)
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    fields = [f.name for f in dataclasses.fields(DATASETS[name][1])]
    bad = sorted(key for key in config if key not in fields or key in settings)
    if bad:
        allowed = ", ".join(f for f in fields if f not in settings)
        raise ValueError(f"reasoning-gym task {name!r} does not accept config {bad}; valid fields: {allowed}")
    try:
        return reasoning_gym.create_dataset(name, **settings, **config)
    except (AssertionError, ValueError, TypeError) as exc:
        raise ValueError(f"invalid config for reasoning-gym task {name!r}: {str(exc) or type(exc).__name__}") from exc


# --- math ------------------------------------------------------------------------------------


def math_verifier(*, fallback: str = "boxed") -> Verifier:
    """Mathematical equivalence by math-verify (``1/2``, ``0.5`` and ``\\frac{1}{2}`` all match).

    The extracted answer and ``example["answer"]`` are each parsed as LaTeX (wrapped in
    ``\\boxed{}`` unless they already hold ``\\boxed`` or ``$``). math-verify's own signal-based
    time limits are switched off, since they only work in the main thread; ``rewards.safe`` limits
    the time instead. A reference that does not parse gives an error Score, never a silent zero.
    """
    check_fallback(fallback)
    from math_verify import parse, verify

    def verify_math(text: str, example: Mapping[str, Any]) -> Score:
        answer = extract_answer(text, fallback=fallback)
        if not answer:
            return _no_answer()
        gold = parse(_as_latex(str(example["answer"])), parsing_timeout=None)
        if not gold:
            return Score(0.0, correct=False, error=f"math-verify cannot parse the reference {example['answer']!r}")
        predicted = parse(_as_latex(answer), parsing_timeout=None)
        correct = bool(verify(gold, predicted, timeout_seconds=None))
        return Score(value=float(correct), correct=correct)

    return verify_math


def _as_latex(answer: str) -> str:
    """``answer`` in a form math-verify's LaTeX extraction finds: bare ``\\sqrt{2}/2`` is otherwise missed."""
    if "\\boxed" in answer or "$" in answer:
        return answer
    return f"\\boxed{{{answer}}}"


# --- exact match -----------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(" " if _is_punctuation(ch) else ch for ch in text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def _is_punctuation(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def exact_match_verifier(*, fallback: str = "none", normalize: bool = True) -> Verifier:
    """1.0 when the answer equals ``example["answer"]`` (a string or a list of accepted strings).

    With ``normalize`` both sides go through ``normalize_text``; without it they are only stripped.
    """
    check_fallback(fallback)
    clean = normalize_text if normalize else str.strip

    def verify(text: str, example: Mapping[str, Any]) -> Score:
        answer = extract_answer(text, fallback=fallback)
        if not answer:
            return _no_answer()
        references = example["answer"]
        if isinstance(references, str):
            references = [references]
        correct = clean(answer) in {clean(str(ref)) for ref in references}
        return Score(value=float(correct), correct=correct)

    return verify


# --- format ----------------------------------------------------------------------------------


def format_verifier(*, tag: str = "answer", require_think: bool = False) -> Verifier:
    """1.0 when the response has exactly one ``<tag>`` block, closed and non-empty, else 0.0.

    With ``require_think`` a closed ``<think>...</think>`` must also come before that block.
    ``correct`` is None: following the format is not a task verdict.
    """
    opening, closing = f"<{tag}>", f"</{tag}>"

    def verify(text: str, example: Mapping[str, Any]) -> Score:
        blocks = tagged_contents(text, tag)
        well_formed = (
            text.count(opening) == 1 and text.count(closing) == 1 and len(blocks) == 1 and bool(blocks[0].strip())
        )
        if well_formed and require_think:
            well_formed = bool(tagged_contents(text[: text.index(opening)], "think"))
        return Score(value=float(well_formed), correct=None)

    return verify
