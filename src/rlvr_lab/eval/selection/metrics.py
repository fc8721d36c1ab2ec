"""How well best-of-n selection works: selector accuracy, its reference points, and judge quality.

Reference points for a selector over ``n`` candidates per problem (arXiv 2511.13027, final-answer
metrics of its NeMo-Skills recipe): the oracle (pass@n: some candidate is correct), random choice
(pass@1: the mean correctness of the candidates) and majority vote (maj@n). Judge quality treats a
"yes" verdict as a positive prediction of the verifier's label; which precision the paper reports is
not confirmed in its code (our spec, B11.2, marks it inferred).

Intervals: a mean of per-problem 0/1 values (selection accuracy, oracle, maj@n) and a proportion of
verdicts (precision, recall, accuracy) get the Wilson score interval, which stays inside [0, 1] and
keeps its coverage near 0 and 1; a mean of per-problem fractions (pass@1, maj@k with k < n, best-of-n
over shuffles) gets the normal approximation, mean +- z * standard error, clipped to [0, 1]. Both
describe the sampling of problems only (and of verdicts), not the randomness inside a selector.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlvr_lab.eval.intervals import wilson_interval, z_value
from rlvr_lab.eval.majority import maj_at_k
from rlvr_lab.eval.passk import standard_error
from rlvr_lab.eval.selection.replies import as_rng

UNREADABLE_VERDICTS: tuple[str, ...] = ("negative", "drop")


@dataclass(frozen=True)
class Estimate:
    """A value with its confidence interval ``[low, high]``, computed from ``n`` problems or trials.

    ``method`` is ``"wilson"`` or ``"normal"`` (see the module docstring). With ``n == 0`` the value is
    NaN and the interval is ``[0, 1]``.
    """

    value: float
    low: float
    high: float
    n: int
    method: str


def proportion(successes: int, trials: int, *, confidence: float = 0.95) -> Estimate:
    """``successes / trials`` with its Wilson interval (NaN value for no trials)."""
    low, high = wilson_interval(successes, trials, confidence=confidence)
    value = successes / trials if trials else math.nan
    return Estimate(value, low, high, trials, "wilson")


def mean_estimate(values: Sequence[float], *, confidence: float = 0.95) -> Estimate:
    """Mean of per-problem values in [0, 1] with the normal interval, clipped to [0, 1]."""
    if not values:
        raise ValueError("no problems")
    mean = sum(values) / len(values)
    half = z_value(confidence) * standard_error(values)
    return Estimate(mean, max(0.0, mean - half), min(1.0, mean + half), len(values), "normal")


def selection_accuracy(selected_correct: Sequence[bool], *, confidence: float = 0.95) -> Estimate:
    """Fraction of problems whose selected candidate is correct (one bool per problem), Wilson interval."""
    if not selected_correct:
        raise ValueError("no problems")
    return proportion(sum(map(bool, selected_correct)), len(selected_correct), confidence=confidence)


def _check_pools(correct: Sequence[Sequence[bool]]) -> None:
    if not correct:
        raise ValueError("no problems")
    empty = [i for i, pool in enumerate(correct) if len(pool) == 0]
    if empty:
        raise ValueError(f"every problem needs at least one candidate; problems without any: {empty[:10]}")


def oracle_accuracy(correct: Sequence[Sequence[bool]], *, confidence: float = 0.95) -> Estimate:
    """pass@n: fraction of problems with at least one correct candidate, Wilson interval.

    ``correct[p][i]`` is the verifier's label of candidate ``i`` of problem ``p``; pools may differ in size.
    """
    _check_pools(correct)
    return proportion(sum(any(pool) for pool in correct), len(correct), confidence=confidence)


def random_choice_accuracy(correct: Sequence[Sequence[bool]], *, confidence: float = 0.95) -> Estimate:
    """pass@1: the expected accuracy of picking a candidate uniformly at random.

    The mean correctness of each problem's candidates, averaged over problems (each problem weighs
    the same whatever its pool size); normal interval over problems.
    """
    _check_pools(correct)
    return mean_estimate([sum(map(bool, pool)) / len(pool) for pool in correct], confidence=confidence)


def majority_vote_accuracy(
    answers: Sequence[Sequence[Any]],
    golds: Sequence[Any],
    *,
    k: int | None = None,
    equal_fn: Callable[[Any, Any], bool] = operator.eq,
    rng: random.Random | int | None = None,
    confidence: float = 0.95,
) -> Estimate:
    """maj@n (``k=None``) or maj@k averaged over problems; see :func:`rlvr_lab.eval.majority.maj_at_k`.

    ``answers[p]`` holds the extracted answers of problem ``p``'s samples (None: unparsable).
    With ``k=None`` every problem scores 0 or 1 and the interval is Wilson's; otherwise it is normal.
    """
    if len(answers) != len(golds):
        raise ValueError(f"one gold answer per problem: got {len(answers)} problems and {len(golds)} golds")
    if not answers:
        raise ValueError("no problems")
    rng = None if rng is None else as_rng(rng)
    values = [maj_at_k(a, g, k, equal_fn=equal_fn, rng=rng) for a, g in zip(answers, golds)]
    if k is None:
        return proportion(int(sum(values)), len(values), confidence=confidence)
    return mean_estimate(values, confidence=confidence)


@dataclass(frozen=True)
class JudgeQuality:
    """A binary judge against verifier labels; "yes" is the positive prediction.

    Counts: ``tp`` yes on a correct solution, ``fp`` yes on a wrong one, ``fn`` no on a correct one,
    ``tn`` no on a wrong one; ``unreadable`` verdicts that could not be parsed (counted as "no" or
    dropped, see :func:`judge_quality`). ``precision`` = tp / (tp + fp): among accepted solutions, the
    fraction that is correct (with final-answer labels this is the paper's final-answer precision).
    ``recall`` = tp / (tp + fn), ``specificity`` = tn / (tn + fp), ``accuracy`` = (tp + tn) / all; each
    with its Wilson interval. ``f1`` and ``balanced_accuracy`` (mean of recall and specificity) are
    point values (NaN when undefined): they are not proportions of one set of trials.
    """

    tp: int
    fp: int
    fn: int
    tn: int
    unreadable: int
    accuracy: Estimate
    precision: Estimate
    recall: Estimate
    specificity: Estimate
    f1: float
    balanced_accuracy: float


def judge_quality(
    verdicts: Sequence[bool | None],
    labels: Sequence[bool],
    *,
    unreadable: str = "negative",
    confidence: float = 0.95,
) -> JudgeQuality:
    """Compare judge verdicts with verifier labels, one pair per judged solution (or per verdict).

    ``unreadable="negative"`` counts an unparsable verdict (None) as "no", as the paper's code does
    when it needs a boolean; ``"drop"`` leaves those solutions out.
    """
    if unreadable not in UNREADABLE_VERDICTS:
        raise ValueError(f"unknown unreadable policy {unreadable!r}; valid: {', '.join(UNREADABLE_VERDICTS)}")
    if len(verdicts) != len(labels):
        raise ValueError(f"one label per verdict: got {len(verdicts)} verdicts and {len(labels)} labels")
    tp = fp = fn = tn = missing = 0
    for verdict, label in zip(verdicts, labels):
        if verdict is None:
            missing += 1
            if unreadable == "drop":
                continue
        said_yes = verdict is True
        if said_yes and label:
            tp += 1
        elif said_yes:
            fp += 1
        elif label:
            fn += 1
        else:
            tn += 1

    precision = proportion(tp, tp + fp, confidence=confidence)
    recall = proportion(tp, tp + fn, confidence=confidence)
    specificity = proportion(tn, tn + fp, confidence=confidence)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return JudgeQuality(
        tp=tp, fp=fp, fn=fn, tn=tn, unreadable=missing,
        accuracy=proportion(tp + tn, tp + fp + fn + tn, confidence=confidence),
        precision=precision,
        recall=recall,
        specificity=specificity,
        f1=f1,
        balanced_accuracy=(recall.value + specificity.value) / 2,
    )


def bon_accuracy(
    labels: Sequence[Sequence[bool]],
    select_fn: Callable[[int, list[int]], int],
    n: int,
    *,
    shuffles: int = 500,
    rng: random.Random | int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Best-of-n accuracy on labelled pools, averaged over random draws of ``n`` candidates.

    For each problem ``p`` and each of ``shuffles`` draws, ``n`` distinct candidates are sampled from
    its pool ``labels[p]`` and ``select_fn(p, drawn_indices) -> chosen index`` picks one of them; the
    problem's value is the fraction of draws whose pick is labelled correct, and the result is the mean
    over problems with a normal interval. (The recipe's ``generic_bon_eval`` uses 500 shuffles; how it
    aggregates is not confirmed in its code, so this is our reading.)
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if shuffles < 1:
        raise ValueError(f"shuffles must be >= 1, got {shuffles}")
    _check_pools(labels)
    small = [p for p, pool in enumerate(labels) if len(pool) < n]
    if small:
        raise ValueError(f"best-of-{n} needs pools of at least {n} candidates; smaller pools: problems {small[:10]}")
    rng = as_rng(rng)
    values = []
    for p, pool in enumerate(labels):
        hits = 0
        for _ in range(shuffles):
            drawn = rng.sample(range(len(pool)), n)
            chosen = select_fn(p, drawn)
            if chosen not in drawn:
                raise ValueError(f"select_fn chose candidate {chosen!r} of problem {p}, which was not drawn {drawn}")
            hits += bool(pool[chosen])
        values.append(hits / shuffles)
    return mean_estimate(values, confidence=confidence)
