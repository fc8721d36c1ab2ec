"""maj@k (spec B12): the spec's examples, exact subset averages by hand, a brute-force cross-check and
the Monte-Carlo estimate against the exact value."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from fractions import Fraction

import pytest

from rlvr_lab.eval.majority import answer_classes, maj_at_k, majority_answer


def test_spec_examples():
    assert maj_at_k([7, 7, 3], 7, 3) == 1.0
    assert maj_at_k([3, 7, None], 7, 3) == 0.0  # tie 3 vs 7: 3 is met first
    assert maj_at_k([3, 7, None], 3) == 1.0


def test_unparsable_answers_are_dropped():
    assert maj_at_k([None, 5, None, 4, 4], 4) == 1.0  # 4 has two votes; None is not a candidate answer
    assert maj_at_k([None, None], 4) == 0.0
    assert maj_at_k([], 4) == 0.0
    assert majority_answer([None, None]) is None


def test_subset_averages_by_hand():
    # [3, 7, 7], k=2: (3,7) -> 3, (3,7) -> 3, (7,7) -> 7; gold 7 -> 1/3
    assert maj_at_k([3, 7, 7], 7, 2) == pytest.approx(1 / 3)
    # k=1 is the fraction of correct answers, None counting as wrong
    assert maj_at_k([3, 7, 7, None], 7, 1) == pytest.approx(2 / 4)
    # [7, 3, 3, 7], k=3: (7,3,3) -> 3, (7,3,7) -> 7, (7,3,7) -> 7, (3,3,7) -> 3 -> 1/2
    assert maj_at_k([7, 3, 3, 7], 7, 3) == pytest.approx(1 / 2)


def same_value(a, b):
    return Fraction(a) == Fraction(b)


def test_custom_equivalence():
    answers = ["2", "1/2", "0.5", "2"]
    assert answer_classes(answers, same_value) == [0, 1, 1, 0]
    assert majority_answer(answers, equal_fn=same_value) == "2"  # 2 vs 2 votes: "2" is met first
    assert maj_at_k(answers, "4/2", equal_fn=same_value) == 1.0
    assert maj_at_k(["1/2", "2", "0.5"], "0.50", equal_fn=same_value) == 1.0
    assert maj_at_k(["1/2", "2", "0.5"], "0.50") == 0.0  # plain == sees three different strings


def reference_maj_at_k(answers, gold, k):
    """Every k-subset, voted with Counter on the raw answers."""
    values = []
    for subset in itertools.combinations(answers, k):
        votes = Counter(a for a in subset if a is not None)
        values.append(bool(votes) and votes.most_common(1)[0][0] == gold)
    return sum(values) / len(values)


def test_matches_a_plain_enumeration():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 7)
        answers = [rng.choice([1, 2, 3, None]) for _ in range(n)]
        for k in range(1, n + 1):
            assert maj_at_k(answers, 2, k) == pytest.approx(reference_maj_at_k(answers, 2, k)), (answers, k)


def test_monte_carlo_is_seeded_and_close_to_the_exact_value():
    rng = random.Random(1)
    answers = [rng.choice([1, 1, 2, 3, None]) for _ in range(16)]
    exact = maj_at_k(answers, 1, 8, exact_limit=20_000)  # C(16, 8) = 12870 subsets
    estimate = maj_at_k(answers, 1, 8)  # 12870 > 10_000: 1000 random subsets
    assert estimate == maj_at_k(answers, 1, 8)  # fixed default seed
    assert estimate == pytest.approx(exact, abs=0.05)  # standard error at most 0.016
    assert maj_at_k(answers, 1, 8, rng=5, samples=4000) == pytest.approx(exact, abs=0.03)
    assert estimate != exact  # it did not enumerate


def test_bad_k():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        maj_at_k([1, 2], 1, 3)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        maj_at_k([1, 2], 1, 0)
    with pytest.raises(ValueError, match="samples"):
        maj_at_k(list(range(30)), 1, 10, samples=0)
