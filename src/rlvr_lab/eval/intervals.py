"""Confidence intervals (pure Python; no torch, no scipy), shared by the evaluation, lab and analysis packages:
normal and Wilson intervals for proportions, and Student's t intervals over seeds (means and paired differences)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Any


Z95 = 1.959963984540054
"""Two-sided 95% quantile of the normal distribution."""


def normal_interval(mean: float, se: float, z: float = Z95) -> tuple[float, float]:
    """``mean ± z · se``: the normal-approximation interval (95% for the default ``z``)."""
    return mean - z * se, mean + z * se


def z_value(confidence: float) -> float:
    """Two-sided normal quantile for ``confidence`` (1.96 for 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, trials: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / trials`` (Wilson 1927); ``(0, 1)`` when ``trials == 0``.

    ``(p + z^2/2m -+ z sqrt(p(1-p)/m + z^2/4m^2)) / (1 + z^2/m)`` with ``p = successes / trials``, ``m =
    trials``. Unlike the normal approximation it stays inside [0, 1] and keeps a sensible width at 0 or
    ``trials`` successes and at the small counts of a CPU run; its ends are exactly 0 and 1 there.
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    z = z_value(confidence)
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


CONFIDENCE = 0.95
"""The level of every seed interval."""




def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for a, b > 0 and 0 <= x <= 1.

    The continued fraction of Numerical Recipes (3rd ed., §6.4, ``betacf``) evaluated by the modified Lentz
    method, applied directly for x < (a + 1) / (a + b + 2) and through I_x(a, b) = 1 − I_{1−x}(b, a) above.
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"a and b must be > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def _beta_continued_fraction(a: float, b: float, x: float, *, eps: float = 1e-15, max_terms: int = 500) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_terms + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge for a={a}, b={b}, x={x}")


def t_critical(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided critical value c of Student's t with ``df`` degrees of freedom: P(|T| <= c) = confidence.

    P(|T| > c) = I_{df/(df + c²)}(df/2, 1/2) (Abramowitz & Stegun 26.7.1 with 26.5.27); the x at which that
    tail equals 1 − confidence is found by bisection (I_x rises with x) and turned back into c. Gives the
    standard table's values, e.g. 12.706 (df 1), 4.303 (df 2), 2.042 (df 30), tending to 1.960.
    """
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    low, high = 0.0, 1.0  # x = df / (df + c²): a larger c is a smaller x
    for _ in range(200):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        if regularized_incomplete_beta(0.5 * df, 0.5, mid) < alpha:
            low = mid
        else:
            high = mid
    x = 0.5 * (low + high)
    return math.sqrt(df * (1.0 - x) / x)


def _finite(values: Iterable[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what} must be finite, got {bad}")
    return out


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its two-sided Student's t interval, mean ± t · s / √n.

    s is the sample standard deviation (divisor n − 1) and t the ``confidence`` quantile with n − 1 degrees of
    freedom (:func:`t_critical`). One value has no spread to estimate: it gives (value, nan, nan). Raises
    ValueError for no values or a non-finite one.

    >>> [round(v, 4) for v in mean_interval([0.5, 0.6, 0.7])]  # s = 0.1, t(2) = 4.3027
    [0.6, 0.3516, 0.8484]
    """
    xs = _finite(values, "values")
    n = len(xs)
    if n == 0:
        raise ValueError("no values to average")
    mean = math.fsum(xs) / n
    if n == 1:
        return mean, math.nan, math.nan
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_critical(n - 1, confidence) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_difference(
    condition_values_by_seed: Mapping[Any, float],
    baseline_values_by_seed: Mapping[Any, float],
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of condition − baseline over the n seeds present in both, paired by seed.

    The interval is :func:`mean_interval` of the per-seed differences. No common seed gives
    (nan, nan, nan, 0); one gives (difference, nan, nan, 1).
    """
    seeds = [s for s in condition_values_by_seed if s in baseline_values_by_seed]
    if not seeds:
        return math.nan, math.nan, math.nan, 0
    diffs = [float(condition_values_by_seed[s]) - float(baseline_values_by_seed[s]) for s in seeds]
    return (*mean_interval(diffs, confidence), len(seeds))
