"""Majority vote over sampled answers: maj@k.

For ``k`` = all samples this is the rule of arXiv 2511.13027's final-answer metrics (NeMo-Skills recipe,
``make_metrics_fa_qs.py``): drop the answers that could not be extracted, take the most frequent one
(ties go to the answer met first, the order of Python's ``Counter.most_common``) and score it against
the gold answer; a problem with no extracted answer scores 0. For ``k`` below the number of samples,
maj@k is the expected maj over a uniformly random ``k``-subset of the samples (our spec, B12; not
defined in that code): exact over all subsets when there are at most ``exact_limit`` of them, else a
seeded Monte-Carlo average.
"""

from __future__ import annotations

import itertools
import math
import operator
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any


def answer_classes(answers: Sequence[Any], equal_fn: Callable[[Any, Any], bool] = operator.eq) -> list[int | None]:
    """The equivalence class of each answer: the position of the first answer it equals, None for None.

    ``equal_fn`` is taken to be an equivalence relation; each answer is compared with the first member
    of every class seen so far, so answers need not be hashable.
    """
    representatives: list[int] = []
    classes: list[int | None] = []
    for i, answer in enumerate(answers):
        if answer is None:
            classes.append(None)
            continue
        match = next((r for r in representatives if equal_fn(answers[r], answer)), None)
        if match is None:
            representatives.append(i)
            match = i
        classes.append(match)
    return classes


def majority_answer(answers: Sequence[Any], *, equal_fn: Callable[[Any, Any], bool] = operator.eq) -> Any | None:
    """The most frequent answer that is not None (first met on ties), or None when every answer is None."""
    classes = answer_classes(answers, equal_fn)
    winner = _majority_class(classes)
    return None if winner is None else answers[winner]


def _majority_class(classes: Sequence[int | None]) -> int | None:
    """The most frequent class that is not None; ``Counter.most_common`` keeps first-met order on ties."""
    votes = Counter(c for c in classes if c is not None)
    if not votes:
        return None
    return votes.most_common(1)[0][0]


def maj_at_k(
    answers: Sequence[Any],
    gold: Any,
    k: int | None = None,
    *,
    equal_fn: Callable[[Any, Any], bool] = operator.eq,
    rng: random.Random | int | None = None,
    exact_limit: int = 10_000,
    samples: int = 1000,
) -> float:
    """maj@k of one problem: the (expected) correctness of the majority answer among ``k`` samples.

    Args:
        answers: the extracted answer of each of the ``n`` samples, in sampling order; None where no
            answer could be extracted (dropped from the vote).
        gold: the reference answer; the majority answer ``m`` is correct iff ``equal_fn(m, gold)``.
        k: samples per vote; None uses all ``n`` (the result is then 0.0 or 1.0, and 0.0 for no
            samples at all). Otherwise ``1 <= k <= n``, else ValueError.
        equal_fn: answer equivalence (an equivalence relation), default ``==``.
        rng: a ``random.Random`` or an int seed for the Monte-Carlo case; None seeds with 0, so the
            estimate is reproducible.
        exact_limit: average over every ``k``-subset when ``C(n, k) <= exact_limit``.
        samples: the number of random ``k``-subsets otherwise.

    A subset keeps the samples' original order, so "first met" on ties refers to sampling order.
    Returns a value in [0, 1].
    """
    n = len(answers)
    if k is None:
        if n == 0:
            return 0.0  # no samples: no answer to vote on
        k = n
    if not 1 <= k <= n:
        raise ValueError(f"maj@k needs 1 <= k <= n, got k={k} with n={n} answers")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")

    classes = answer_classes(answers, equal_fn)
    right = {c: bool(equal_fn(answers[c], gold)) for c in set(classes) if c is not None}

    def vote(subset: Sequence[int]) -> float:
        winner = _majority_class([classes[i] for i in subset])
        return 0.0 if winner is None else float(right[winner])

    if k == n:
        return vote(range(n))
    if math.comb(n, k) <= exact_limit:
        subsets = list(itertools.combinations(range(n), k))
        return sum(vote(s) for s in subsets) / len(subsets)
    if rng is None:
        rng = random.Random(0)
    elif not isinstance(rng, random.Random):
        rng = random.Random(rng)
    return sum(vote(sorted(rng.sample(range(n), k))) for _ in range(samples)) / samples
