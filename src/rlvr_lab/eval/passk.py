"""Unbiased pass@k (Chen et al., arXiv 2107.03374, eq. 1), its sampling error, and paired differences."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n is correct.

    ``1 - C(n-c, k) / C(n, k)``, computed as a stable product.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(correct_counts: Sequence[int], n: int, k: int) -> float:
    """Mean of :func:`pass_at_k` over problems, each with ``n`` samples and ``correct_counts[i]`` correct."""
    if not correct_counts:
        raise ValueError("no problems")
    return sum(pass_at_k(n, c, k) for c in correct_counts) / len(correct_counts)


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of per-problem values (0 for fewer than two values)."""
    m = len(values)
    if m < 2:
        return 0.0
    mu = sum(values) / m
    var = sum((v - mu) ** 2 for v in values) / (m - 1)
    return math.sqrt(var / m)


def paired_difference(before: Sequence[float], after: Sequence[float]) -> tuple[float, float]:
    """(mean of ``after[i] - before[i]``, standard error of that mean) over the same problems.

    Both evaluations score the same questions, so their per-problem values are correlated (an easy
    question tends to be solved before and after). The standard error of the per-problem differences
    counts that correlation; ``sqrt(se_before**2 + se_after**2)`` assumes independent samples and,
    for positively correlated values, overstates the uncertainty of the change.
    """
    if len(before) != len(after):
        raise ValueError(f"paired values need one value per problem on each side, got {len(before)} before "
                         f"and {len(after)} after")
    if not before:
        raise ValueError("no problems")
    diffs = [a - b for b, a in zip(before, after)]
    return sum(diffs) / len(diffs), standard_error(diffs)
