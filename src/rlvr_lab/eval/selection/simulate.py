"""Simulated judges and selectors of known accuracy, for checking selection methods without a model.

The CPU check of our spec (B11.2, an inferred setting, not one of arXiv 2511.13027's experiments):
each candidate is correct with probability ``p``; the judge says yes with probability ``a`` to a
correct candidate and ``b`` to a wrong one; a GenSelect game that mixes correct and wrong candidates
is won by a correct one with probability ``q``, otherwise the winner is uniform in the group.
Candidate ids are ``0 .. n - 1``. Every draw comes from one seeded ``random.Random``, so a problem's
results are reproducible given the order of calls.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rlvr_lab.eval.selection.replies import Reply, as_rng

_UNREADABLE_JUDGEMENT = "I could not reach a verdict."
_UNREADABLE_CHOICE = "<best_solution>?</best_solution>"


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def sample_correctness(n: int, p_correct: float, rng: random.Random | int = 0) -> list[bool]:
    """``n`` latent correctness labels, each True with probability ``p_correct``."""
    _check_probability("p_correct", p_correct)
    rng = as_rng(rng)
    return [rng.random() < p_correct for _ in range(n)]


def noisy_judge(
    correct: Sequence[bool],
    *,
    yes_if_correct: float,
    yes_if_wrong: float,
    rng: random.Random | int = 0,
    p_unreadable: float = 0.0,
    tokens: int | None = None,
) -> Callable[[int, int], Reply]:
    """A judge ``judge_fn(candidate_id, sample) -> Reply`` that says yes to candidate ``i`` with
    probability ``yes_if_correct`` (``a``) if ``correct[i]``, else ``yes_if_wrong`` (``b``).

    With probability ``p_unreadable`` a reply carries no verdict. Every reply reports ``tokens``.
    """
    for name, value in (("yes_if_correct", yes_if_correct), ("yes_if_wrong", yes_if_wrong),
                        ("p_unreadable", p_unreadable)):
        _check_probability(name, value)
    rng = as_rng(rng)

    def judge_fn(candidate_id: int, sample: int) -> Reply:
        if rng.random() < p_unreadable:
            return Reply(_UNREADABLE_JUDGEMENT, tokens)
        p_yes = yes_if_correct if correct[candidate_id] else yes_if_wrong
        verdict = "Yes" if rng.random() < p_yes else "No"
        return Reply(f"The argument checks out up to the end.\nJudgement: {verdict}", tokens)

    return judge_fn


def noisy_selector(
    correct: Sequence[bool],
    *,
    prefer_correct: float,
    rng: random.Random | int = 0,
    p_unreadable: float = 0.0,
    tokens: int | None = None,
) -> Callable[[tuple], Reply]:
    """A GenSelect selector ``compare_fn(group) -> Reply`` over candidates with labels ``correct``.

    In a group with both correct and wrong candidates it picks a uniformly random correct one with
    probability ``prefer_correct`` (``q``), else a uniformly random wrong one; in a group of only
    correct or only wrong candidates it picks uniformly. For a pair with exactly one correct candidate
    this is the spec's "prefers the correct one with probability q". With probability ``p_unreadable``
    the reply names no candidate. Every reply reports ``tokens``.
    """
    for name, value in (("prefer_correct", prefer_correct), ("p_unreadable", p_unreadable)):
        _check_probability(name, value)
    rng = as_rng(rng)

    def compare_fn(group: tuple) -> Reply:
        if rng.random() < p_unreadable:
            return Reply(_UNREADABLE_CHOICE, tokens)
        right = [i for i, candidate in enumerate(group) if correct[candidate]]
        wrong = [i for i, candidate in enumerate(group) if not correct[candidate]]
        if right and wrong:
            pick = rng.choice(right) if rng.random() < prefer_correct else rng.choice(wrong)
        else:
            pick = rng.randrange(len(group))
        return Reply(f"Comparing the solutions.\n<best_solution>{pick + 1}</best_solution>", tokens)

    return compare_fn


@dataclass(frozen=True)
class SimulatedProblem:
    """One simulated problem: latent labels of candidates ``0 .. n - 1`` and a judge and selector for them."""

    correct: tuple[bool, ...]
    compare_fn: Callable[[tuple], Reply]
    judge_fn: Callable[[int, int], Reply]

    @property
    def candidate_ids(self) -> list[int]:
        return list(range(len(self.correct)))


def simulate_problem(
    n_candidates: int,
    *,
    p_correct: float,
    yes_if_correct: float,
    yes_if_wrong: float,
    prefer_correct: float,
    rng: random.Random | int = 0,
    p_unreadable: float = 0.0,
    tokens: int | None = None,
) -> SimulatedProblem:
    """Draw ``n_candidates`` labels with :func:`sample_correctness` and build a judge and a selector for them.

    The spec's setting is ``p_correct=0.3, yes_if_correct=0.8, yes_if_wrong=0.2, prefer_correct=0.8``.
    """
    rng = as_rng(rng)
    correct = tuple(sample_correctness(n_candidates, p_correct, rng))
    return SimulatedProblem(
        correct=correct,
        compare_fn=noisy_selector(correct, prefer_correct=prefer_correct, rng=rng, p_unreadable=p_unreadable,
                                  tokens=tokens),
        judge_fn=noisy_judge(correct, yes_if_correct=yes_if_correct, yes_if_wrong=yes_if_wrong, rng=rng,
                             p_unreadable=p_unreadable, tokens=tokens),
    )
