"""Attentiveness to answer choices: probability mass, surface-form competition bound, PMI_DC.

The quantities of Wiegreffe et al., "Increasing Probability Mass on Answer Choices Does Not Always Improve
Accuracy" (arXiv 2305.14596), computed from the probabilities a model gives each answer choice of one
multiple-choice question:

* probability mass ``PM = sum_i P(l_i | x)``, the model's *attentiveness* to the valid choices;
* surface-form competition (SFC) is *resolved* when ``1 - PM < P_(1) - P_(2)``: even if every bit of the
  missing mass went to synonyms of the runner-up, the argmax could not change;
* PMI_DC (Holtzman et al., arXiv 2104.08315): ``P(l_i | x) / P(l_i | x_dc)`` with ``x_dc`` a
  domain premise that leaves the question out.

Everything here is plain arithmetic on per-choice probabilities (lists of floats, one per choice); nothing
imports torch or transformers. Dataset-level summaries (accuracy bounds, intervals) sit at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rlvr_lab.eval.intervals import Z95, wilson_interval  # noqa: F401 - wilson_interval: part of this module's interface

PMI_FLOOR = 1e-15
"""What an exact zero probability becomes before the PMI_DC division (arXiv 2305.14596, official code)."""


def first_occurrences(n_choices: int, choices: Sequence[str] | None = None) -> list[int]:
    """Indices of the choices that count: all of ``range(n_choices)``, or, given the choice strings, the
    first occurrence of each distinct string (arXiv 2305.14596 counts a repeated choice string once)."""
    if choices is None:
        return list(range(n_choices))
    if len(choices) != n_choices:
        raise ValueError(f"got {n_choices} probabilities but {len(choices)} choice strings")
    seen: set[str] = set()
    kept = []
    for index, text in enumerate(choices):
        if text not in seen:
            seen.add(text)
            kept.append(index)
    return kept


def prob_mass(p_choices: Sequence[float], choices: Sequence[str] | None = None) -> float:
    """Probability mass on the answer choices, ``PM = sum_i P(l_i | x)`` (arXiv 2305.14596, Sec. 3).

    Args:
        p_choices: ``(m,)`` probability of each choice string as a continuation of the prompt, in [0, 1].
        choices: the ``m`` choice strings; when given, a string that occurs more than once is counted once
            (its first occurrence), since the same text cannot take its probability twice.

    Returns:
        PM, in [0, 1] whenever no choice is a prefix of another. ``P(l | x)`` is the probability that the
        model's answer *starts with* ``l`` (there is no end-of-answer marker), so a choice "4" next to a
        choice "45" counts the mass of "45" twice and PM can then exceed 1.
    """
    _check_probabilities(p_choices)
    return float(sum(p_choices[i] for i in first_occurrences(len(p_choices), choices)))


def top_two_gap(p_choices: Sequence[float], choices: Sequence[str] | None = None) -> float:
    """``P_(1) - P_(2)``: the largest choice probability minus the second largest, over distinct strings.

    A question with a single distinct choice has gap ``P_(1)`` (no runner-up to lose to).
    """
    _check_probabilities(p_choices)
    ranked = sorted((p_choices[i] for i in first_occurrences(len(p_choices), choices)), reverse=True)
    return ranked[0] - (ranked[1] if len(ranked) > 1 else 0.0)


def sfc_resolved(p_choices: Sequence[float], choices: Sequence[str] | None = None) -> bool:
    """Whether surface-form competition cannot change the prediction: ``1 - PM < P_(1) - P_(2)``.

    The unassigned mass ``1 - PM`` is the most that strings outside the choices (synonyms, paraphrases)
    hold; if it is smaller than the lead of the top choice, no reassignment of it to any choice can
    change the argmax (arXiv 2305.14596, Sec. 3; ``analysis/compute_bounds.py`` of the official code).
    Duplicate choice strings are counted once, as in :func:`prob_mass`. A tie at the top is never resolved.
    """
    return 1.0 - prob_mass(p_choices, choices) < top_two_gap(p_choices, choices)


def pmi_dc(p_cond: Sequence[float], p_uncond: Sequence[float], floor: float = PMI_FLOOR) -> list[float]:
    """Domain-conditional PMI scores ``P(l_i | x) / P(l_i | x_dc)`` (Holtzman et al., arXiv 2104.08315).

    Args:
        p_cond: ``(m,)`` probability of each choice given the full prompt ``x``.
        p_uncond: ``(m,)`` probability of each choice given the uncontextual premise ``x_dc``.
        floor: what an exact zero in either list becomes, so that nothing is divided by zero (the official
            code of arXiv 2305.14596 uses 1e-15); non-zero values are left as they are.

    Returns:
        ``(m,)`` scores; the prediction is their argmax (:func:`predict`). Not probabilities: they can
        exceed 1 and do not sum to anything in particular.
    """
    if len(p_cond) != len(p_uncond):
        raise ValueError(f"p_cond has {len(p_cond)} choices but p_uncond has {len(p_uncond)}")
    if floor <= 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    _check_probabilities(p_cond)
    _check_probabilities(p_uncond)
    return [(c if c > 0 else floor) / (u if u > 0 else floor) for c, u in zip(p_cond, p_uncond)]


def pmi_dc_log(logp_cond: Sequence[float], logp_uncond: Sequence[float], floor: float = PMI_FLOOR) -> list[float]:
    """:func:`pmi_dc` in log space, ``log P(l_i | x) - log P(l_i | x_dc)``, with ``-inf`` (a zero
    probability) replaced by ``log(floor)``.

    Same argmax as :func:`pmi_dc` wherever the probabilities are representable, but a long choice whose
    probability underflows to 0 in float64 keeps its true score here instead of becoming ``floor``.
    """
    if len(logp_cond) != len(logp_uncond):
        raise ValueError(f"logp_cond has {len(logp_cond)} choices but logp_uncond has {len(logp_uncond)}")
    if floor <= 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    log_floor = math.log(floor)
    return [(c if c > -math.inf else log_floor) - (u if u > -math.inf else log_floor)
            for c, u in zip(logp_cond, logp_uncond)]


def predict(scores: Sequence[float]) -> int:
    """Index of the highest score; the first one on a tie (as ``numpy.argmax``)."""
    if not scores:
        raise ValueError("no scores to predict from")
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


# --- dataset-level summaries -------------------------------------------------------------------


def accuracy_bounds(correct: Sequence[bool], resolved: Sequence[bool]) -> tuple[float, float]:
    """Range of the accuracy that sequence scoring could reach once surface-form competition is resolved.

    An SFC-resolved question keeps its prediction whatever happens to the missing mass, so it keeps its
    verdict. An unresolved one could go either way. Hence

    * lower bound: every unresolved question counted wrong, ``#(correct and resolved) / n``;
    * upper bound: every unresolved question counted right, ``(#(correct and resolved) + #unresolved) / n``.

    The measured accuracy always lies between the two. (arXiv 2305.14596 reports the share of resolved
    questions; turning it into these two accuracy ends is our reading of its "bound on the impact of SFC".)

    Args:
        correct: ``(n,)`` whether sequence scoring picked the gold choice.
        resolved: ``(n,)`` :func:`sfc_resolved` of each question.

    Returns:
        ``(lower, upper)``, each in [0, 1].
    """
    if len(correct) != len(resolved):
        raise ValueError(f"got {len(correct)} verdicts but {len(resolved)} resolved flags")
    if not correct:
        raise ValueError("no questions")
    sure = sum(1 for c, r in zip(correct, resolved) if c and r)
    open_ = sum(1 for r in resolved if not r)
    n = len(correct)
    return sure / n, (sure + open_) / n


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float]:
    """Normal-approximation interval ``mean ± z · s / sqrt(n)`` of a mean (s: sample std, n - 1 divisor).

    Used for the mean probability mass, a mean of values in [0, 1] rather than a count of successes.
    A single value gives the degenerate interval ``(mean, mean)``.
    """
    if not values:
        raise ValueError("no values")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = z * math.sqrt(var / n)
    return mean - half, mean + half


def _check_probabilities(p: Sequence[float]) -> None:
    if len(p) == 0:
        raise ValueError("no choice probabilities")
    bad = [v for v in p if not 0.0 <= v <= 1.0]  # NaN fails both comparisons
    if bad:
        raise ValueError(f"choice probabilities must lie in [0, 1], got {bad}")
