"""Confidence intervals for proportions (pure Python; no torch), shared by the evaluation packages."""

from __future__ import annotations

import math
from statistics import NormalDist


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
