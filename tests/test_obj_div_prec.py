"""Diversity-or-Precision loss (arXiv 2512.22955): the spec's section 9 example, table row 26, errata 6."""

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from rlvr_lab.objectives.div_prec import div_prec_chunked_loss, div_prec_target_weight, div_prec_token_loss
from rlvr_lab.presets import preset_path

torch.set_num_threads(1)
T = torch.tensor
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PI = [0.25, 0.4, 0.2, 0.15]


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def logit_grad(**params):
    z = T([PI]).log().requires_grad_()
    loss, metrics = div_prec_token_loss(z, T([0]), k=2, **params)
    loss.sum().backward()
    return z.grad[0], loss, metrics


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"beta": 0.0}, [-0.75, 0.4, 0.2, 0.15]),  # cross-entropy
        ({"beta": -0.25}, [-0.831681, 0.443563, 0.221782, 0.166336]),
        ({"beta": 0.0, "lambda_tail": -0.1}, [-0.75875, 0.386, 0.213, 0.15975]),
        ({"beta": 0.0, "lambda_top": 0.1}, [-0.74, 0.376, 0.208, 0.156]),
    ],
)
def test_logit_gradients_of_the_spec_example(params, expected):
    grad, _, _ = logit_grad(**params)
    assert close(grad, expected, 1e-6)


def test_target_weight_values():
    got = div_prec_target_weight(T([0.25, 0.25, 0.25, 0.9, 0.9]), beta=-0.25, w_max=10.0)
    assert close(got[:1], [1.108908], 1e-6)  # r_pos = w/π = 4.435633
    assert close(got[0] / 0.25, 4.435633, 1e-5)
    assert close(div_prec_target_weight(T([0.25, 0.9]), beta=0.5, w_max=10.0), [0.830499, 0.930491], 1e-6)
    assert close(div_prec_target_weight(T([0.9]), beta=-0.25, w_max=10.0), [1.085456], 1e-6)
    # errata 6: only beta < -1 is unbounded; w_max guards it: 0.5^(1 - 0.5^-3) = 128 -> 10
    assert close(div_prec_target_weight(T([0.5]), beta=-3.0, w_max=10.0), [10.0])
    assert close(div_prec_target_weight(T([1.0]), beta=-0.25, w_max=10.0), [1.0])  # 1 − π floored


def test_loss_value_and_metrics_of_the_combined_example():
    # ref_examples.py: beta = -0.25, lambda_tail = -0.1, k = 2 -> 1.476628 (CE 1.386294)
    _, loss, m = logit_grad(beta=-0.25, lambda_tail=-0.1)
    assert close(loss, [1.476628], 1e-6)
    assert close(m["div_prec/ce"], 1.386294, 1e-6)
    assert close(m["div_prec/topk_mass"], 0.65, 1e-6)
    assert close(m["div_prec/target_prob"], 0.25, 1e-6)
    assert close(m["div_prec/entropy"], -sum(p * torch.log(T(p)) for p in PI), 1e-6)
    assert all(not v.requires_grad for v in m.values())


def test_beta0_lambda0_is_cross_entropy_exactly():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 50, generator=g) * 3
    y = torch.randint(0, 50, (7,), generator=g)
    a = logits.clone().requires_grad_()
    loss, _ = div_prec_token_loss(a, y, beta=0.0, lambda_top=0.0, lambda_tail=0.0)
    b = logits.clone().requires_grad_()
    ce = F.cross_entropy(b, y, reduction="none")
    assert torch.equal(loss, ce)
    loss.sum().backward()
    ce.sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-7)
    # fp32 inside: half-precision logits give the fp32 result of the same values
    half, _ = div_prec_token_loss(logits.bfloat16(), y, beta=0.0)
    assert half.dtype == torch.float32
    assert torch.equal(half, F.cross_entropy(logits.bfloat16().float(), y, reduction="none"))


def test_gradient_matches_the_closed_form_from_a_plain_loop():
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(5, 9, generator=g) * 2).requires_grad_()
    y = torch.randint(0, 9, (5,), generator=g)
    beta, lam_top, lam_tail, k = -0.4, 0.2, -0.3, 3
    loss, _ = div_prec_token_loss(z, y, beta=beta, lambda_top=lam_top, lambda_tail=lam_tail, k=k)
    loss.sum().backward()
    pi = z.detach().softmax(-1)
    for i in range(5):
        top = set(pi[i].argsort(descending=True)[:k].tolist())
        w = torch.zeros(9)
        for a in range(9):
            p = float(pi[i, a])
            if a == int(y[i]):
                w[a] = p ** (1 - (1 - p) ** beta)
            else:
                w[a] = p * (lam_top if a in top else lam_tail)
        assert close(z.grad[i], -w + pi[i] * w.sum(), 1e-5)


def test_ignored_rows_and_masked_vocabulary():
    z = T([[0.0, 1.0, float("-inf"), 2.0], [3.0, 0.0, 0.0, float("-inf")]], requires_grad=True)
    loss, m = div_prec_token_loss(z, T([1, -100]), beta=-0.25, lambda_tail=-0.1, k=1)
    assert torch.isfinite(loss).all() and loss[1].item() == 0.0
    assert m["div_prec/num_tokens"].item() == 1.0
    loss.sum().backward()
    assert torch.isfinite(z.grad).all() and torch.equal(z.grad[1], torch.zeros(4))


def test_chunked_loss_equals_direct_loss_and_gradients():
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(10, 6, generator=g, requires_grad=True)
    weight = torch.randn(13, 6, generator=g, requires_grad=True)
    y = torch.randint(0, 13, (10,), generator=g)
    y[4] = -100
    params = dict(beta=-0.25, lambda_top=0.1, lambda_tail=-0.1, k=4)
    direct, dm = div_prec_token_loss(hidden @ weight.T, y, **params)
    direct.sum().backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    chunked, cm = div_prec_chunked_loss(hidden, weight, y, chunk_tokens=3, **params)
    chunked.sum().backward()
    assert torch.allclose(direct, chunked, atol=1e-6)
    assert torch.allclose(gh, hidden.grad, atol=1e-6) and torch.allclose(gw, weight.grad, atol=1e-6)
    for key in dm:
        assert torch.allclose(dm[key], cm[key], atol=1e-6), key


def test_presets_are_the_two_separate_settings():
    precision = yaml.safe_load(preset_path("div_prec_precision").read_text())["sft"]["loss"]
    tail = yaml.safe_load(preset_path("div_prec_tail").read_text())["sft"]["loss"]
    assert precision["name"] == tail["name"] == "div_prec"
    assert precision["params"]["beta"] == -0.25 and precision["params"]["lambda_tail"] == 0.0
    assert tail["params"]["beta"] == 0.0 and tail["params"]["lambda_tail"] == -0.1 and tail["params"]["k"] == 100
    allowed = {n for n, p in inspect.signature(div_prec_token_loss).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert set(precision["params"]) <= allowed and set(tail["params"]) <= allowed
