"""A1 (arXiv 2512.04006): the Hadamard basis diagonalises the softmax, GD from a Hadamard init is the
singular-value recursion, the NC metrics at a simplex ETF, and the claim on the reduced sizes."""

from __future__ import annotations

import math
import time

import pytest
import torch

from rlvr_lab.testbeds import hadamard_ce as a1
from rlvr_lab.testbeds.runner import resolve_params

torch.set_num_threads(1)
F64 = torch.float64


def test_sylvester_hadamard_is_symmetric_and_orthogonal():
    Q = a1.sylvester_hadamard(8)
    assert torch.equal(Q, Q.mT)
    assert torch.allclose(Q @ Q, torch.eye(8, dtype=F64), atol=1e-15)
    assert torch.allclose(a1.sylvester_hadamard(2), torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=F64) / math.sqrt(2))


def test_hadamard_softmax_is_diagonal():
    # spec A1.4 (1): Z = Q diag(λ) Q has a column-softmax P that is diagonal in the same basis, with (QᵀPQ)₀₀ = 1
    Q = a1.sylvester_hadamard(8)
    lam = torch.randn(8, dtype=F64, generator=torch.Generator().manual_seed(0))
    P = torch.softmax(Q @ torch.diag(lam) @ Q, dim=0)
    spectrum = Q.mT @ P @ Q
    off = spectrum - torch.diag(spectrum.diagonal())
    assert off.abs().max() < 1e-12
    assert abs(float(spectrum[0, 0]) - 1.0) < 1e-12


def test_one_gd_step_from_hadamard_init_is_one_reduced_step():
    # spec A1.4 (2), for d > K as well
    for K, d in ((8, 8), (4, 6)):
        start = a1.hadamard_init(K, d, scale=0.3, generator=torch.Generator().manual_seed(1))
        W, H, _ = a1.gd_step(start.W, start.H, lr=1.0)
        a, b = a1.reduced_step(start.a, start.b, 1.0, start.Q)
        assert torch.allclose(W, start.Q * a @ start.R.mT, atol=1e-12, rtol=0)
        assert torch.allclose(H, start.R * b @ start.Q, atol=1e-12, rtol=0)


def test_mode_zero_never_moves():
    Q = a1.sylvester_hadamard(8)
    a = b = torch.linspace(0.5, 2.0, 8, dtype=F64)
    a1_, b1_ = a1.reduced_step(a, b, 1.0, Q)
    assert abs(float(a1_[0] * b1_[0] - a[0] * b[0])) < 1e-15  # softmax shift invariance: ĝ₀ = 0
    assert bool(((a1_ * b1_)[1:] > (a * b)[1:]).all())  # the other modes grow


def test_non_power_of_two_classes_are_refused():
    # spec A1.4 (3)
    with pytest.raises(ValueError, match="power of 2"):
        a1.hadamard_init(6, 8)
    with pytest.raises(ValueError, match="at least K"):
        a1.hadamard_init(8, 4)


def test_cross_entropy_gradient_matches_autograd():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(4, 5, dtype=F64, generator=g, requires_grad=True)
    H = torch.randn(5, 4, dtype=F64, generator=g, requires_grad=True)
    loss, G, P = a1.ce_logit_grad(W @ H)
    reference = torch.nn.functional.cross_entropy((W @ H).mT, torch.arange(4))
    assert torch.allclose(loss, reference)
    reference.backward()
    W1, H1, _ = a1.gd_step(W.detach(), H.detach(), lr=1.0)
    assert torch.allclose(W.detach() - W1, W.grad, atol=1e-14)
    assert torch.allclose(H.detach() - H1, H.grad, atol=1e-14)
    assert torch.allclose(P.sum(0), torch.ones(4, dtype=F64))
    assert float(a1.ce_logit_grad(torch.zeros(8, 8, dtype=F64))[0]) == pytest.approx(math.log(8))  # uniform: log K


def test_nc_metrics_at_a_simplex_etf():
    K = 4
    H = torch.eye(K, dtype=F64) - 1.0 / K  # centred one-hots: a simplex ETF
    metrics = a1.nc_metrics(H.mT.clone(), 2.0 * H, a1.sylvester_hadamard(K))
    for key in ("nc2_feat", "nc2_cls", "equinorm", "nc3"):
        assert metrics[key] < 1e-12, key
    assert metrics["sv_ratio"] == pytest.approx(1.0)


def test_checkpoints_hold_the_spec_steps_and_a_log_grid():
    steps = a1.checkpoints(20_000, 10)
    assert {0, 1, 100, 1000, 5000, 20_000} <= set(steps) and steps == sorted(set(steps))
    assert a1.claim_checkpoints(2_000) == [0, 100, 1000, 2000]


def test_claim_holds_on_the_reduced_sizes():
    params = resolve_params(a1, small=True)
    t0 = time.perf_counter()
    results = [a1.run(params, seed) for seed in (0, 1, 2)]
    assert time.perf_counter() - t0 < 60
    verdict = a1.claim(results, params)
    assert verdict["holds"], verdict["detail"]
    assert verdict["measured"] >= 0.3 and len(verdict["interval"]) == 2
    for result in results:
        final = result["final"]
        assert final["hadamard/offdiag_max"] < 1e-10
        assert final["hadamard/reduced_gap"] < 1e-10
        assert final["hadamard/nc3"] < 1e-3
        assert final["random/offdiag_max"] > 1e-2  # no freezing from a random init
        steps = [r["step"] for r in result["history"]]
        assert steps[0] == 0 and steps[-1] == params["steps"]
    figures = a1.figures(results, params)
    assert len(figures) == 5 and all(len(f[1].data) > 0 for f in figures)


def test_claim_fails_when_training_is_too_short():
    params = {**resolve_params(a1, small=True), "steps": 20}
    verdict = a1.claim([a1.run(params, seed) for seed in (0, 1)], params)
    assert not verdict["holds"]
