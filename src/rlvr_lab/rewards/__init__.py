"""Verifiers (pure ``text, example -> Score`` functions), Rubrics, and running them safely.

Imports only the standard library, numpy, torch, and (lazily, when a verifier is built)
reasoning_gym and math_verify.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlvr_lab.rewards.extract import FALLBACKS, extract_answer
from rlvr_lab.rewards.qa import (
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
    token_f1,
)
from rlvr_lab.rewards.rubric import Rubric
from rlvr_lab.rewards.safe import TIMEOUT_ERROR, safe_score, score_batch, summarize_scores
from rlvr_lab.rewards.verifiers import (
    Verifier,
    check_reasoning_gym_task,
    create_reasoning_gym_dataset,
    exact_match_verifier,
    format_verifier,
    math_verifier,
    normalize_text,
    reasoning_gym_task_names,
    reasoning_gym_verifier,
)

VERIFIERS: dict[str, Callable[..., Verifier]] = {
    "reasoning_gym": reasoning_gym_verifier,
    "math": math_verifier,
    "exact_match": exact_match_verifier,
    "format": format_verifier,
    "qa_exact_match": qa_exact_match_verifier,
    "qa_f1": qa_f1_verifier,
    "search_r1": search_r1_format_verifier,
}
"""Verifier factories by kind, for configs."""


def build_verifier(kind: str, **kwargs: Any) -> Verifier:
    """The verifier of ``kind`` built with ``kwargs`` (``"reasoning_gym"`` needs ``task=``)."""
    if kind not in VERIFIERS:
        raise ValueError(f"unknown verifier kind {kind!r}; valid kinds: {', '.join(VERIFIERS)}")
    return VERIFIERS[kind](**kwargs)


__all__ = [
    "FALLBACKS",
    "TIMEOUT_ERROR",
    "VERIFIERS",
    "Rubric",
    "Verifier",
    "build_verifier",
    "check_reasoning_gym_task",
    "count_valid_searches",
    "create_reasoning_gym_dataset",
    "exact_match",
    "exact_match_verifier",
    "extract_answer",
    "format_verifier",
    "format_violation",
    "gold_answers",
    "is_valid_format",
    "math_verifier",
    "normalize_answer",
    "normalize_text",
    "qa_exact_match_verifier",
    "qa_f1_verifier",
    "reasoning_gym_task_names",
    "reasoning_gym_verifier",
    "retrieval_hit",
    "safe_score",
    "score_batch",
    "search_r1_format_verifier",
    "substring_match",
    "summarize_scores",
    "token_f1",
]
