"""A2 (arXiv 2510.22980): the data, the closed forms of GD and SpecGD on the noise-free population loss, and
the claim on the reduced sizes."""

from __future__ import annotations

import time

import pytest
import torch

from rlvr_lab.testbeds import specgd as a2
from rlvr_lab.testbeds.runner import resolve_params

torch.set_num_threads(1)
F64 = torch.float64
K, D, M = 5, 8, 3.0


def noise_free(priors: torch.Tensor) -> a2.Data:
    """One sample per class at its mean, weighted by its prior: the population loss of the noise-free mixture."""
    X = a2.class_means(K, D, M)
    return a2.Data(X=X, y=torch.arange(K), X_test=X, y_test=torch.arange(K), K=K, mu_norm=M, weights=priors)


def test_exponential_priors():
    pi = a2.exp_priors(5, 20.0)
    assert torch.allclose(pi, torch.tensor([0.540, 0.255, 0.121, 0.057, 0.027], dtype=F64), atol=1e-3)
    assert float(pi[0] / pi[-1]) == pytest.approx(20.0) and float(pi.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        a2.exp_priors(1, 2.0)


def test_gmm_samples_sit_around_orthogonal_means():
    X, y = a2.make_gmm(4000, K, D, a2.exp_priors(K, 20.0), mu_norm=M, sigma=0.1,
                       generator=torch.Generator().manual_seed(0))
    assert X.shape == (D, 4000) and y.shape == (4000,)
    assert torch.allclose(X[:, y == 0].mean(1), M * torch.eye(D, dtype=F64)[:, 0], atol=0.02)
    assert (y == 0).double().mean() > 0.5 > (y == 4).double().mean()


def test_balanced_accuracy_by_hand():
    y = torch.tensor([0, 0, 0, 1])
    bal, per_class = a2.balanced_accuracy(torch.tensor([0, 0, 1, 0]), y, 2)
    assert per_class == pytest.approx([2 / 3, 0.0]) and bal == pytest.approx(1 / 3)


def test_mse_gradient_in_the_outputs_is_residual_over_n():
    F = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = torch.tensor([0, 2, 1, 1])
    a2.objective(F, y, "mse").backward()
    residual = F.detach() - torch.nn.functional.one_hot(y, 3).to(F64).mT
    assert torch.allclose(F.grad, residual / 4)


def test_one_specgd_step_from_zero_on_the_population_loss():
    # spec A2.4 (2): the gradient at W = 0 is −Σ_k π_k m e_k u_kᵀ, and one SpecGD step is η Σ_k e_k u_kᵀ
    priors = a2.exp_priors(K, 20.0)
    data = noise_free(priors)
    W = torch.zeros(K, D, dtype=F64, requires_grad=True)
    a2.objective(W @ data.X, data.y, "mse", data.weights).backward()
    expected_grad = torch.zeros(K, D, dtype=F64)
    expected_grad[torch.arange(K), torch.arange(K)] = -priors * M
    assert torch.allclose(W.grad, expected_grad, atol=1e-15)
    opt = a2.make_optimizer("specgd", [W], lr=0.01)
    opt.step()
    assert torch.allclose(W.detach(), 0.01 * torch.eye(K, D, dtype=F64), atol=1e-15)


def test_gd_follows_its_closed_form_and_specgd_learns_every_class_at_one_rate():
    # spec A2.4 (3): a_k(t) = (1 − (1 − η π_k m²)^t) / m on noise-free data, to 1e-10
    priors = a2.exp_priors(K, 20.0)
    data = noise_free(priors)
    steps = [0, 1, 5, 20]
    for record in a2.train("linear", "gd", "mse", data, lr=0.05, steps=20, log_at=steps):
        coef = torch.tensor([record[f"coef_k{k}"] for k in range(K)], dtype=F64)
        assert torch.allclose(coef, M * a2.gd_closed_form(priors, M, 0.05, record["step"]), atol=1e-10, rtol=0)
    # SpecGD: a_k(t) = η t for every class until the target 1/m (here t ≤ 30 with η = 0.01, m = 3)
    for record in a2.train("linear", "specgd", "mse", data, lr=0.01, steps=20, log_at=steps):
        coef = [record[f"coef_k{k}"] for k in range(K)]
        assert coef == pytest.approx([M * 0.01 * record["step"]] * K, abs=1e-12)


def test_bilinear_model_starts_small_and_random():
    weights = a2.make_model("bilinear", K, D, init_scale=1e-3, generator=torch.Generator().manual_seed(0))
    assert [tuple(w.shape) for w in weights] == [(D, D), (K, D)]
    assert 5e-4 < float(weights[0].detach().std()) < 2e-3
    assert a2.end_to_end(weights).shape == (K, D)
    with pytest.raises(ValueError, match="allowed"):
        a2.make_model("trilinear", K, D)


def test_claim_holds_on_the_reduced_sizes():
    params = resolve_params(a2, small=True)
    t0 = time.perf_counter()
    results = [a2.run(params, seed) for seed in (0, 1, 2)]
    assert time.perf_counter() - t0 < 60
    verdict = a2.claim(results, params)
    assert verdict["holds"], verdict["detail"]
    assert verdict["measured"] >= 0.15 and verdict["interval"][0] < verdict["measured"] < verdict["interval"][1]
    for result in results:
        for model in ("linear", "bilinear"):
            gap = (result["final"][f"{model}_mse/specgd/window_bal_acc"]
                   - result["final"][f"{model}_mse/gd/window_bal_acc"])
            assert gap >= 0.15, (model, gap)
        record = result["history"][5]
        assert {f"linear_mse/{o}/bal_acc" for o in a2.OPTIMIZERS} <= set(record)
    figures = a2.figures(results, params)
    assert [title for title, *_ in figures][:2] == ["Balanced test accuracy: linear model, squared loss",
                                                    "Balanced test accuracy: bilinear model, squared loss"]
    assert {trace.name for trace in figures[0][1].data} >= {"GD", "SpecGD", "Adam", "Muon", "NGD"}


def test_claim_needs_the_squared_loss_and_both_optimisers():
    params = {**resolve_params(a2, small=True), "optimizers": ["specgd", "adam"]}
    with pytest.raises(ValueError, match="gd"):
        a2.claim([], params)
    with pytest.raises(ValueError, match="window_steps"):
        a2.run({**resolve_params(a2, small=True), "window_steps": [1, 40]}, 0)
