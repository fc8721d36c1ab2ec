"""pass@k against its closed form, standard errors and paired differences by hand, per-prompt eval values."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch

from rlvr_lab.eval import mean_pass_at_k, paired_difference, pass_at_k, standard_error
from rlvr_lab.eval.evaluate import PER_PROMPT, evaluate
from rlvr_lab.train.loop import accuracy_gain
from rlvr_lab.types import Score


def closed_form(n: int, c: int, k: int) -> Fraction:
    """``1 - C(n-c, k) / C(n, k)`` in exact arithmetic (arXiv 2107.03374, eq. 1)."""
    if n - c < k:
        return Fraction(1)
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_the_closed_form_for_every_small_case():
    checked = 0
    for n in range(1, 20):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(closed_form(n, c, k)), rel=0, abs=1e-12), (n, c, k)
                checked += 1
    assert checked == sum((n + 1) * n for n in range(1, 20))


def test_pass_at_k_edge_values():
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 8, 3) == 1.0  # n - c = 2 < k: every draw of 3 contains a correct sample
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6


@pytest.mark.parametrize(("n", "c", "k"), [(5, -1, 1), (5, 6, 1), (5, 2, 0), (5, 2, 6), (0, 0, 1), (3, 1, -1)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="need"):
        pass_at_k(n, c, k)


def test_mean_pass_at_k():
    # n=4, k=2: c=0 -> 0, c=1 -> 1/2, c=2 -> 1 - 1/6 = 5/6, c=4 -> 1
    assert mean_pass_at_k([0, 1, 2, 4], 4, 2) == pytest.approx((0 + 1 / 2 + 5 / 6 + 1) / 4)
    assert mean_pass_at_k([3], 8, 1) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k([], 4, 1)
    with pytest.raises(ValueError, match="need"):
        mean_pass_at_k([5], 4, 1)


def test_standard_error_by_hand():
    # mean 1/2, sample variance (4 * 1/4) / 3 = 1/3, standard error sqrt(1/3 / 4) = sqrt(1/12)
    assert standard_error([1.0, 0.0, 0.0, 1.0]) == pytest.approx(math.sqrt(1 / 12))
    # mean 2, squared deviations 1, 0, 1: variance 1, standard error sqrt(1/3)
    assert standard_error([1.0, 2.0, 3.0]) == pytest.approx(math.sqrt(1 / 3))
    assert standard_error([0.7, 0.7, 0.7]) == pytest.approx(0.0, abs=1e-12)
    assert standard_error([0.3]) == 0.0
    assert standard_error([]) == 0.0


def test_paired_difference_by_hand_is_smaller_than_the_unpaired_error_on_correlated_data():
    before = [0.0, 0.0, 1.0, 1.0]
    after = [0.0, 1.0, 1.0, 1.0]  # the same questions: one more solved, none lost
    mean, se = paired_difference(before, after)
    # differences 0, 1, 0, 0: mean 1/4, variance (3 * 1/16 + 9/16) / 3 = 1/4, standard error sqrt(1/4 / 4) = 1/4
    assert mean == pytest.approx(0.25)
    assert se == pytest.approx(0.25)
    # unpaired: se_before^2 = (1/3) / 4 = 1/12, se_after^2 = (1/4) / 4 = 1/16
    unpaired = math.sqrt(standard_error(before) ** 2 + standard_error(after) ** 2)
    assert unpaired == pytest.approx(math.sqrt(1 / 12 + 1 / 16))
    assert se < unpaired - 0.1


def test_paired_difference_of_a_constant_shift_has_no_error():
    before = [0.1, 0.5, 0.9, 0.3]
    mean, se = paired_difference(before, [v + 0.1 for v in before])
    assert mean == pytest.approx(0.1)
    assert se == pytest.approx(0.0, abs=1e-12)
    assert standard_error(before) > 0.1  # the unpaired error would be large


def test_paired_difference_refuses_unpaired_inputs():
    with pytest.raises(ValueError, match="3 before and 2 after"):
        paired_difference([0.0, 1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="no problems"):
        paired_difference([], [])


# ---- per-prompt values from evaluate --------------------------------------------------------------


class CountingEnv:
    """Prompt i is answered right greedily when i is even, and by the first ``i % (samples + 1)`` of its samples."""

    def __init__(self, samples: int):
        self.samples = samples

    def render(self, example):
        return example["id"]

    def generate(self, engine, prompts, params, seed):
        texts, seen = [], {}
        for i in prompts:
            if params.temperature == 0:
                texts.append("right" if i % 2 == 0 else "wrong")
            else:
                j = seen[i] = seen.get(i, -1) + 1
                texts.append("right" if j < i % (self.samples + 1) else "wrong")
        return SimpleNamespace(texts=texts, response_mask=torch.ones(len(texts), 3, dtype=torch.bool))

    def score(self, texts, examples):
        return [Score(value=float(t == "right"), correct=t == "right") for t in texts]


ENGINE = SimpleNamespace(encode=lambda rendered: list(rendered))


def test_evaluate_keeps_per_prompt_values_in_prompt_order():
    samples, examples = 4, [{"id": i} for i in range(11)]
    result = evaluate(ENGINE, CountingEnv(samples), examples, samples=samples, ks=(1, 2), temperature=1.0,
                      max_new_tokens=8, max_batch=8)  # 2 prompts per sampling batch: several batches
    per_prompt = result[PER_PROMPT]
    assert set(per_prompt) == {"eval/greedy_acc", "eval/pass@1", "eval/pass@2"}
    assert per_prompt["eval/greedy_acc"] == [float(i % 2 == 0) for i in range(11)]
    assert per_prompt["eval/pass@1"] == pytest.approx([(i % 5) / 4 for i in range(11)])
    assert per_prompt["eval/pass@2"] == pytest.approx([pass_at_k(4, i % 5, 2) for i in range(11)])
    for key, values in per_prompt.items():
        assert result[key] == pytest.approx(sum(values) / len(values))
        assert result[key + "_se"] == pytest.approx(standard_error(values))
    # every other entry stays a float (the metric sinks and the console read them as numbers)
    assert all(isinstance(v, float) for k, v in result.items() if k != PER_PROMPT)
    assert json.loads(json.dumps(result)) == result  # goes into metrics.jsonl and summary.json as it is


def test_evaluate_without_greedy_has_no_greedy_values():
    result = evaluate(ENGINE, CountingEnv(2), [{"id": i} for i in range(3)], samples=2, ks=(1,), temperature=1.0,
                      max_new_tokens=8, greedy=False)
    assert set(result[PER_PROMPT]) == {"eval/pass@1"} and "eval/greedy_acc" not in result


# ---- the before/after change of a run summary -------------------------------------------------------


def eval_result(values: list[float], key: str = "eval/pass@1") -> dict:
    return {key: sum(values) / len(values), key + "_se": standard_error(values), PER_PROMPT: {key: values}}


def test_accuracy_gain_is_paired_when_the_summary_has_per_prompt_values():
    summary = {"eval": {"before_rl": eval_result([0.0, 0.0, 1.0, 1.0]), "after_rl": eval_result([0.0, 1.0, 1.0, 1.0])}}
    change, se = accuracy_gain(summary)
    assert change == pytest.approx(0.25)
    assert se == pytest.approx(0.25)  # by hand above; unpaired would be sqrt(1/12 + 1/16) = 0.382


def test_accuracy_gain_falls_back_to_the_unpaired_error_for_older_summaries():
    summary = {"eval": {"before_rl": {"eval/pass@1": 0.25, "eval/pass@1_se": 0.03},
                        "after_rl": {"eval/pass@1": 0.40, "eval/pass@1_se": 0.04}}}
    change, se = accuracy_gain(summary)
    assert change == pytest.approx(0.15)
    assert se == pytest.approx(0.05)


def test_accuracy_gain_refuses_evaluations_of_different_prompt_sets():
    summary = {"eval": {"before_rl": eval_result([0.0, 1.0, 1.0]), "after_rl": eval_result([1.0, 1.0])}}
    with pytest.raises(ValueError, match="one value per problem"):
        accuracy_gain(summary)
