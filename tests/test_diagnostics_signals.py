"""Hand-computed values for the per-step diagnostic signals (rlvr_lab.diagnostics.signals)."""

import math

import pytest
import torch

from rlvr_lab.diagnostics.signals import (
    entropy_summary,
    kl_to_reference,
    likelihood_displacement,
    low_probability_tokens,
    probe_drift,
    response_likelihood,
)


def _lld_inputs():
    # Row 0 correct, A=+1; row 1 incorrect, A=-1, last position padding; row 2 correct, A=+1, likelihood falls.
    old = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0], [-1.0, -1.0, -1.0]])
    new = torch.tensor([[-1.0, -1.0, -2.0], [-1.0, -1.0, -9.0], [-2.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    correct = torch.tensor([True, False, True])
    adv = torch.tensor([[1.0] * 3, [-1.0] * 3, [1.0] * 3])
    return old, new, mask, correct, adv


def test_likelihood_displacement_hand_computed():
    m = likelihood_displacement(*_lld_inputs())
    # Sequence sums: old (-6, -1, -3), new (-4, -2, -4); the padded -9 is ignored.
    assert m["lld/correct_logp_before"] == pytest.approx(-4.5)
    assert m["lld/correct_logp_after"] == pytest.approx(-4.0)
    assert m["lld/correct_logp_delta"] == pytest.approx(0.5)  # after - before: positive = likelihood rose
    assert m["lld/incorrect_logp_before"] == pytest.approx(-1.0)
    assert m["lld/incorrect_logp_after"] == pytest.approx(-2.0)
    assert m["lld/incorrect_logp_delta"] == pytest.approx(-1.0)
    assert m["lld/frac_correct_fell"] == pytest.approx(0.5)  # row 2 fell, row 0 rose
    # A>0 tokens: rows 0 and 2 -> old mean -9/6, new mean -8/6.  A<0 tokens: row 1's two tokens.
    assert m["logp/pos_mean"] == pytest.approx(-1.5)
    assert m["lld/pos_token_logp_after"] == pytest.approx(-8 / 6)
    assert m["lld/pos_token_logp_delta"] == pytest.approx(1 / 6)
    assert m["logp/neg_mean"] == pytest.approx(-0.5)
    assert m["lld/neg_token_logp_after"] == pytest.approx(-1.0)
    assert m["lld/neg_token_logp_delta"] == pytest.approx(-0.5)
    assert m["lld/num_correct"] == 2.0 and m["lld/num_incorrect"] == 1.0
    assert all(isinstance(v, float) for v in m.values())


def test_likelihood_displacement_undefined_stats_are_left_out():
    old, new, mask, _, adv = _lld_inputs()
    m = likelihood_displacement(old, new, mask, torch.tensor([False, False, False]), adv.abs())
    assert m["lld/num_correct"] == 0.0
    assert "lld/correct_logp_before" not in m and "lld/frac_correct_fell" not in m
    assert "logp/neg_mean" not in m  # no A<0 token
    # No update (new == old): nothing fell.
    m = likelihood_displacement(old, old.clone(), mask, torch.tensor([True, True, True]), adv)
    assert m["lld/frac_correct_fell"] == 0.0 and m["lld/correct_logp_delta"] == 0.0


def test_likelihood_displacement_rejects_bad_shapes():
    old, new, mask, correct, adv = _lld_inputs()
    with pytest.raises(ValueError, match="advantages"):
        likelihood_displacement(old, new, mask, correct, adv[:, :2])
    with pytest.raises(ValueError, match="correct"):
        likelihood_displacement(old, new, mask, correct[:2], adv)


def test_entropy_summary_hand_computed():
    entropy = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 99.0], [6.0, 7.0, 8.0, 9.0, 10.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]])
    m = entropy_summary(entropy, mask)
    # Values 1..10: mean 5.5; linear quantiles at positions 0.9, 4.5, 8.1 of the sorted list.
    assert m == pytest.approx({"policy/entropy": 5.5, "policy/entropy_p10": 1.9, "policy/entropy_p50": 5.5, "policy/entropy_p90": 9.1})
    assert entropy_summary(entropy, torch.zeros_like(mask)) == {}


def test_entropy_quantiles_match_torch_quantile():
    g = torch.Generator().manual_seed(0)
    entropy = torch.rand(4, 37, generator=g) * 3
    mask = torch.rand(4, 37, generator=g) > 0.3
    m = entropy_summary(entropy, mask)
    ref = torch.quantile(entropy[mask], torch.tensor([0.1, 0.5, 0.9]))
    assert [m["policy/entropy_p10"], m["policy/entropy_p50"], m["policy/entropy_p90"]] == pytest.approx(ref.tolist(), abs=1e-6)


def test_low_probability_tokens_hand_computed():
    probs = torch.tensor([[0.5, 0.01, 0.001, 0.001]])
    mask = torch.tensor([[1, 1, 1, 0]])  # the last low-probability token is padding
    m = low_probability_tokens(probs.log(), mask)  # default threshold 0.02
    assert m["tokens/low_prob_count"] == 2.0
    assert m["tokens/low_prob_mass"] == pytest.approx(0.011)
    assert m["tokens/low_prob_frac"] == pytest.approx(2 / 3)
    m = low_probability_tokens(probs.log(), mask, threshold=0.005)
    assert m["tokens/low_prob_count"] == 1.0 and m["tokens/low_prob_mass"] == pytest.approx(0.001)
    with pytest.raises(ValueError, match="threshold"):
        low_probability_tokens(probs.log(), mask, threshold=0.0)
    assert not math.isnan(low_probability_tokens(probs.log(), torch.zeros_like(mask))["tokens/low_prob_mass"])


def test_response_likelihood_is_the_before_half_of_displacement():
    old, new, mask, correct, adv = _lld_inputs()
    every_step = response_likelihood(old, mask, correct)
    full = likelihood_displacement(old, new, mask, correct, adv)
    assert every_step == {k: full[k] for k in every_step}
    assert every_step["lld/correct_logp_before"] == pytest.approx(-4.5)
    # Per token, pooled over the correct rows 0 and 2: (-6 - 3) / 6 tokens; incorrect row 1: -1 / 2 tokens.
    assert every_step["lld/correct_logp_per_token"] == pytest.approx(-1.5)
    assert every_step["lld/incorrect_logp_per_token"] == pytest.approx(-0.5)
    assert set(every_step) == {"lld/correct_logp_before", "lld/incorrect_logp_before", "lld/correct_logp_per_token",
                               "lld/incorrect_logp_per_token", "lld/num_correct", "lld/num_incorrect"}
    no_correct = response_likelihood(old, mask, torch.zeros(3, dtype=torch.bool))
    assert "lld/correct_logp_before" not in no_correct and "lld/correct_logp_per_token" not in no_correct
    assert no_correct["lld/num_correct"] == 0.0


def test_per_token_likelihood_is_not_confounded_by_length():
    # Same token log-prob (-0.5) in both batches; the second batch's correct responses are twice as long.
    short = torch.tensor([[-0.5, -0.5, 0.0, 0.0], [-0.5, -0.5, 0.0, 0.0]])
    long = torch.full((2, 4), -0.5)
    short_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    long_mask = torch.ones(2, 4, dtype=torch.bool)
    correct = torch.tensor([True, True])
    a = response_likelihood(short, short_mask, correct)
    b = response_likelihood(long, long_mask, correct)
    assert b["lld/correct_logp_before"] == pytest.approx(2 * a["lld/correct_logp_before"])  # the sum doubles
    assert a["lld/correct_logp_per_token"] == pytest.approx(b["lld/correct_logp_per_token"]) == pytest.approx(-0.5)


def test_kl_to_reference_k3_hand_computed():
    # log r = ref - pi: (0, ln 2) on the two masked tokens; k3 = r - 1 - log r = (0, 1 - ln 2).
    pi = torch.tensor([[-1.0, -2.0, -5.0]])
    ref = torch.tensor([[-1.0, -2.0 + math.log(2.0), 0.0]])
    mask = torch.tensor([[True, True, False]])
    assert kl_to_reference(pi, ref, mask)["kl/ref"] == pytest.approx((1 - math.log(2.0)) / 2)
    assert kl_to_reference(pi, pi.clone(), mask)["kl/ref"] == pytest.approx(0.0)
    assert kl_to_reference(pi, ref, torch.zeros_like(mask)) == {}
    with pytest.raises(ValueError, match="ref_logprobs"):
        kl_to_reference(pi, ref[:, :2], mask)


def test_probe_drift_hand_computed():
    # Reference sequence sums: (-3, -2, -4); now: (-2, -3, -5).  Rows 0, 2 correct; row 1 incorrect.
    ref = torch.tensor([[-1.0, -2.0], [-2.0, 0.0], [-2.0, -2.0]])
    now = torch.tensor([[-1.0, -1.0], [-3.0, -7.0], [-2.0, -3.0]])
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    correct = torch.tensor([True, False, True])
    m = probe_drift(ref, now, mask, correct)
    assert m["probe/correct_logp"] == pytest.approx(-3.5)
    assert m["probe/correct_logp_delta"] == pytest.approx(0.0)  # +1 and -1
    assert m["probe/incorrect_logp"] == pytest.approx(-3.0)
    assert m["probe/incorrect_logp_delta"] == pytest.approx(-1.0)
    assert m["probe/frac_correct_fell"] == pytest.approx(0.5)
    # Per token now: correct rows (-1 - 1 - 2 - 3) / 4 tokens; incorrect row 1: -3 / 1 token (the 0 is masked).
    assert m["probe/correct_logp_per_token"] == pytest.approx(-1.75)
    assert m["probe/incorrect_logp_per_token"] == pytest.approx(-3.0)
    # KL(ref||now) with samples from ref: log r = now - ref on the 5 masked tokens = (0, 1, -1, 0, -1).
    k3 = [math.exp(x) - 1 - x for x in (0.0, 1.0, -1.0, 0.0, -1.0)]
    assert m["probe/kl_ref"] == pytest.approx(sum(k3) / 5)
    unchanged = probe_drift(ref, ref.clone(), mask, correct)
    assert unchanged["probe/kl_ref"] == 0.0 and unchanged["probe/frac_correct_fell"] == 0.0
