"""Loss weighting in last-layer retraining (arXiv 2506.20025): the fit, the exact accuracies, the contract, and
the claim that the best minority weight grows with gamma = d/n."""

import math

import numpy as np
import pytest
from testbed_contract import check_verdict_and_figures, contract_runs

from rlvr_lab.testbeds import llr_weighting as tb

TINY = {"gammas": [0.02, 0.1], "reps": 2, "n_omegas": 5, "n": 100}


def test_class_accuracies_hand_values():
    mu = np.array([1.5, 0.0])
    maj, mino = tb.class_accuracies(np.array([1.0, 0.0]), 0.0, mu)
    assert maj == pytest.approx(0.9331928, abs=1e-6) and mino == pytest.approx(0.9331928, abs=1e-6)  # Phi(1.5)
    maj, mino = tb.class_accuracies(np.array([2.0, 0.0]), 1.0, mu)  # (3 +- 1) / 2
    assert maj == pytest.approx(0.9772499, abs=1e-6) and mino == pytest.approx(0.8413447, abs=1e-6)
    # an orthogonal direction carries no signal: accuracies Phi(+-b/|theta|)
    maj, mino = tb.class_accuracies(np.array([0.0, 1.0]), 0.0, mu)
    assert maj == pytest.approx(0.5) and mino == pytest.approx(0.5)
    assert tb.class_accuracies(np.zeros(2), 0.3, mu) == (1.0, 0.0)


def test_bias_only_fit_matches_closed_form():
    """With all-zero features only the bias moves: sigma(b) = n_+ / (n_+ + omega n_-), so b = log(n_+ / (omega n_-))."""
    y = np.array([1.0] * 9 + [-1.0])
    x = np.zeros((10, 3))
    for omega, expected in ((1.0, math.log(9.0)), (9.0, 0.0), (3.0, math.log(3.0))):
        params = tb.fit_weighted_logreg(x, y, np.where(y < 0, omega, 1.0), lam=1e-4)
        assert params[-1] == pytest.approx(expected, abs=1e-7)
        assert np.allclose(params[:-1], 0.0)


def test_integer_weight_equals_duplicating_minority_rows():
    rng = np.random.default_rng(0)
    x, y = tb.sample_llr(120, 3, pi_min=0.3, snr=0.5, rng=rng)  # low SNR: not separable, so lam = 0 is fine
    weighted = tb.fit_weighted_logreg(x, y, np.where(y < 0, 3.0, 1.0), lam=0.0)
    minority = y < 0
    x_dup = np.vstack([x, x[minority], x[minority]])
    y_dup = np.concatenate([y, y[minority], y[minority]])
    duplicated = tb.fit_weighted_logreg(x_dup, y_dup, np.ones(len(y_dup)), lam=0.0)
    assert np.allclose(weighted, duplicated, atol=1e-6)


def test_fit_is_stationary_on_separable_data():
    rng = np.random.default_rng(1)
    x, y = tb.sample_llr(40, 60, pi_min=0.1, snr=1.5, rng=rng)  # d > n: separable, only the ridge bounds theta
    weights = np.where(y < 0, 50.0, 1.0)
    lam = 1e-2
    params = tb.fit_weighted_logreg(x, y, weights, lam=lam, iters=200)
    xa = np.hstack([x, np.ones((40, 1))])
    s = 1.0 / (1.0 + np.exp(y * (xa @ params)))
    grad = -(xa * (weights * y * s)[:, None]).sum(0) / 40 + np.append(lam * params[:-1], 0.0)
    assert np.abs(grad).max() < 1e-6


def test_sample_llr_shapes_and_means():
    rng = np.random.default_rng(2)
    x, y = tb.sample_llr(20000, 3, pi_min=0.1, snr=1.5, rng=rng)
    assert x.shape == (20000, 3) and set(np.unique(y)) == {-1.0, 1.0}
    assert (y < 0).mean() == pytest.approx(0.1, abs=0.01)
    assert x[y > 0, 0].mean() == pytest.approx(1.5, abs=0.05) and x[y < 0, 0].mean() == pytest.approx(-1.5, abs=0.1)
    assert tb.dimension(0.02, 200) == 4 and tb.dimension(0.001, 200) == 1


def test_contract():
    results = contract_runs(tb, "2506.20025", TINY)
    for result in results:
        assert all(isinstance(r["step"], int) for r in result["history"])
        assert len(result["history"]) == 2 * TINY["n_omegas"]
        assert all(isinstance(v, float) for v in result["final"].values())
    verdict = check_verdict_and_figures(tb, results, TINY)
    assert len(verdict["interval"]) == 2


def _fake(stars: dict[float, float]) -> dict:
    final = {}
    for g, s in stars.items():
        final |= {f"omega_star/gamma={g:g}": s, f"grid_edge/gamma={g:g}": 0.0, f"worst_acc@omega_star/gamma={g:g}": 0.8,
                  f"worst_acc@erm/gamma={g:g}": 0.7, f"worst_acc@inverse_prior/gamma={g:g}": 0.79}
    return {"history": [], "final": final}


def test_claim_can_fail():
    params = {"gammas": [0.02, 0.1]}
    assert tb.claim([_fake({0.02: 9.0, 0.1: 30.0})] * 2, params)["holds"]
    assert not tb.claim([_fake({0.02: 9.0, 0.1: 5.0})] * 2, params)["holds"]      # omega* shrinks
    assert not tb.claim([_fake({0.02: 40.0, 0.1: 80.0})] * 2, params)["holds"]    # far from the inverse prior


@pytest.mark.slow
def test_claim_small_omega_star_grows_with_gamma():
    """Spec A5.2 [M]: omega*(0.02) = 11.3 (inverse prior 9), omega*(0.1) = 27.4, a ratio of 2.4; we ask for 2."""
    results = [tb.run(tb.SMALL, seed) for seed in (0, 1, 2)]
    verdict = tb.claim(results, tb.SMALL)
    assert verdict["holds"], verdict
    assert verdict["measured"] > 2.0, verdict
    low = math.exp(np.mean(np.log([r["final"]["omega_star/gamma=0.02"] for r in results])))
    assert 9 / 1.5 <= low <= 9 * 1.5, verdict
