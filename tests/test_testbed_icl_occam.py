"""In-context Occam's razor (arXiv 2506.19351): exact Bayesian references on hand-computable cases, the in-context
regressor's causality, the testbed contract, and the claim on the reduced configuration."""

import math

import numpy as np
import pytest
import torch
from testbed_contract import check_verdict_and_figures, contract_runs

from rlvr_lab.testbeds import icl_occam as tb

TINY = {"steps": 20, "eval_tasks": 40, "markov_sequences": 3, "markov_length": 32, "markov_every": 8}


# ---- Markov references -----------------------------------------------------------------------------------


def test_dirichlet_marginal_hand_value():
    """V=2, a=1, order 1, x = 0 0 0 1 from t=1: context 0 is followed by 0, 0, 1 -> 1/2 * 2/3 * 1/4 = 1/12."""
    x = np.array([0, 0, 0, 1])
    assert math.exp(tb.log_marginal_dirichlet(x, 1, 2, alpha=1.0, start=1)) == pytest.approx(1 / 12)
    q = tb.dirichlet_predictive(x, 1, 2, alpha=1.0, start=1)
    assert np.allclose(q[0], [0.5, 0.5])  # before start: uniform
    assert np.allclose(q[1:], [[1 / 2, 1 / 2], [2 / 3, 1 / 3], [3 / 4, 1 / 4]])


def test_dirichlet_marginal_equals_brute_force_integration():
    """Order 1, V=2: ML = prod over contexts of int p^N(c,0) (1-p)^N(c,1) Beta(a, a) dp; midpoint rule."""
    x = np.array([0, 1, 1, 0, 1, 1, 1, 0, 0, 1])
    alpha = 0.7
    counts = tb.transition_counts(x, 1, 2, start=1)
    p = (np.arange(200000) + 0.5) / 200000
    beta = p ** (alpha - 1) * (1 - p) ** (alpha - 1) / math.exp(2 * math.lgamma(alpha) - math.lgamma(2 * alpha))
    brute = np.prod([np.mean(p ** n0 * (1 - p) ** n1 * beta) for n0, n1 in counts])
    assert tb.log_marginal_dirichlet(x, 1, 2, alpha=alpha, start=1) == pytest.approx(math.log(brute), abs=2e-3)


def test_chain_rule_links_predictive_and_marginal():
    rng = np.random.default_rng(0)
    x = tb.sample_markov_chain(3, 3, 60, alpha=1.0, rng=rng)
    for order in (1, 3):
        q = tb.dirichlet_predictive(x, order, 3, alpha=0.5, start=3)
        for end in (3, 10, 60):
            chain = float(np.sum(np.log(q[np.arange(3, end), x[3:end]])))
            assert chain == pytest.approx(tb.log_marginal_dirichlet(x, order, 3, alpha=0.5, start=3, end=end))


def test_bma_weights_are_a_posterior():
    rng = np.random.default_rng(1)
    x = tb.sample_markov_chain(1, 3, 40, alpha=1.0, rng=rng)
    weights, predictive = tb.bma_markov(x, [1, 3], 3, alpha=1.0)
    assert weights.shape == (41, 2) and predictive.shape == (40, 3)
    assert np.allclose(weights.sum(1), 1.0) and np.allclose(predictive.sum(1), 1.0)
    assert np.allclose(weights[:4], 0.5)  # nothing counted before start = 3
    l1 = tb.log_marginal_dirichlet(x, 1, 3, alpha=1.0, start=3, end=20)
    l3 = tb.log_marginal_dirichlet(x, 3, 3, alpha=1.0, start=3, end=20)
    assert weights[20, 0] == pytest.approx(1 / (1 + math.exp(l3 - l1)))


def test_markov_occam_preference():
    """Spec A4.2b [M]: mean P(order 1) at t=128 is .995 on order-1 data and .014 on order-3 data (200 sequences)."""
    curves = tb.markov_posterior_curves({**tb.DEFAULTS, "markov_sequences": 40}, np.random.default_rng(0))
    assert curves[1][128] > 0.95 and curves[3][128] < 0.05
    assert curves[1][128] > curves[1][16]  # the evidence accumulates


# ---- linear-regression references ----------------------------------------------------------------------


def test_gaussian_references_hand_values():
    x = torch.tensor([[[2.0]]], dtype=torch.float64)
    y = torch.tensor([[4.0]], dtype=torch.float64)
    xq = torch.tensor([[1.0]], dtype=torch.float64)
    # y ~ N(0, x^2 + sigma^2) = N(0, 5)
    expected = -0.5 * (16 / 5 + math.log(5) + math.log(2 * math.pi))
    assert float(tb.gaussian_log_marginal(x, y, sigma=1.0)) == pytest.approx(expected)
    assert float(tb.posterior_mean_predict(x, y, xq, sigma=1.0)) == pytest.approx(8 / 5)  # x y / (x^2 + s^2)
    assert float(tb.posterior_mean_predict(x, y, xq, sigma=0.0)) == pytest.approx(2.0)    # least squares
    assert float(tb.posterior_mean_predict(x[:, :0], y[:, :0], xq, sigma=0.0)) == 0.0     # no examples


def test_min_norm_least_squares_when_underdetermined():
    """One example in 2-D at sigma = 0: w = x y / |x|^2 (min-norm), so predicting at x itself returns y."""
    x = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)
    y = torch.tensor([[10.0]], dtype=torch.float64)
    assert float(tb.posterior_mean_predict(x, y, torch.tensor([[3.0, 4.0]], dtype=torch.float64), sigma=0.0)) == \
        pytest.approx(10.0)
    assert float(tb.posterior_mean_predict(x, y, torch.tensor([[4.0, -3.0]], dtype=torch.float64), sigma=0.0)) == \
        pytest.approx(0.0, abs=1e-12)


def test_linreg_posterior_prefers_the_simple_class():
    """Spec A4.2b: d1=1, d2=4, sigma=0.1; at k=5 P(simple) > .95 on simple tasks and < .05 on complex ones."""
    g = torch.Generator().manual_seed(0)
    for simple, check in ((True, lambda p: p > 0.95), (False, lambda p: p < 0.05)):
        x, y, _ = tb.sample_linreg(300, 9, d1=1, d2=4, sigma=0.1, simple=torch.full((300,), simple), generator=g)
        refs = tb.linreg_references(x.double(), y.double(), 5, d1=1, sigma=0.1, noise_floor=0.01)
        assert check(float(refs["p_simple"].mean()))
        assert torch.allclose(refs["bma"], refs["p_simple"] * refs["simple"] + (1 - refs["p_simple"]) * refs["complex"])


def test_sample_linreg_simple_rows_ignore_extra_coordinates():
    g = torch.Generator().manual_seed(0)
    simple = torch.tensor([True, False, True])
    x, y, w = tb.sample_linreg(3, 5, d1=2, d2=4, sigma=0.0, simple=simple, generator=g)
    assert torch.all(w[simple, 2:] == 0) and torch.all(w[~simple, 2:] != 0)
    assert torch.allclose(y, torch.einsum("bnd,bd->bn", x, w))


def test_regressor_is_causal():
    """Prediction i may use x_1..x_i and y_1..y_{i-1} only: changing y_3 leaves predictions 0..3 unchanged."""
    torch.manual_seed(0)
    model = tb.InContextRegressor(3, 6, width=16, layers=2, heads=2).eval()
    x, y = torch.randn(2, 6, 3), torch.randn(2, 6)
    y2 = y.clone()
    y2[:, 3] += 5.0
    a, b = model(x, y), model(x, y2)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6) and not torch.allclose(a[:, 4:], b[:, 4:])


# ---- contract and claim --------------------------------------------------------------------------------


def test_contract():
    results = contract_runs(tb, "2506.19351", TINY)
    for result in results:
        assert all(isinstance(r["step"], int) for r in result["history"])
        pairs = [r for r in result["history"] if "context_pairs" in r]
        assert [r["context_pairs"] for r in pairs] == list(range(tb.DEFAULTS["n_context"] + 1))
        assert [r["context_tokens"] for r in result["history"] if "context_tokens" in r] == [8, 16, 24, 32]
        assert all(isinstance(v, float) for v in result["final"].values())
        # at sigma = 0 the simple class's posterior mean is exact on simple prompts once k >= d1
        assert pairs[1]["simple_mse/simple"] < 1e-10
    check_verdict_and_figures(tb, results, TINY)


def test_untrained_model_fails_the_claim():
    verdict = tb.claim([tb.run({**TINY, "steps": 1}, seed) for seed in (0, 1)], TINY)
    assert not verdict["holds"] and verdict["measured"] > 0.7


@pytest.mark.slow
def test_claim_small_transformer_prefers_the_simple_hypothesis():
    """Spec A4.2c [M]: after 12k steps the ratio is about 0.5 (criterion 0.7); the reduced run trains less."""
    results = [tb.run(tb.SMALL, 0)]
    verdict = tb.claim(results, tb.SMALL)
    assert verdict["holds"], verdict
