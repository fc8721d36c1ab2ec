"""Lp-Reg (arXiv 2510.03222): hand-computed values from the spec, section 5 and table rows 17-18."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.entropy_mech import rank_select
from rlvr_lab.objectives.lp_reg import (
    FILTERED_LOGIT,
    lp_reg_override,
    lp_reg_proxy_logprobs,
    lp_reg_select,
    lp_reg_token_loss,
)
from rlvr_lab.objectives.policy_losses import ppo_clip_loss
from rlvr_lab.objectives.registry import TOKEN_LOSS_OVERRIDES
from rlvr_lab.presets import preset_path

torch.set_num_threads(1)
T = torch.tensor
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OLD_PROBS = [0.6, 0.3, 0.08, 0.02]


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def proxy_probs(kappa, threshold, temperature=1.0):
    logits = T([OLD_PROBS]).log().repeat(4, 1)  # one row per sampled token 0..3
    lp = lp_reg_proxy_logprobs(logits, torch.arange(4), kappa=kappa, threshold=threshold, temperature=temperature)
    return lp


# ---- 5.1 proxy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kappa,threshold,expected",
    [
        (0.1, "minp", [0.612245, 0.306122, 0.081633, 0.0]),  # threshold 0.1·0.6 = 0.06
        (0.05, "fixed", [0.612245, 0.306122, 0.081633, 0.0]),
        (0.02, "minp", [0.6, 0.3, 0.08, 0.02]),  # threshold 0.012 keeps everything
    ],
)
def test_proxy_probabilities_match_spec_rows(kappa, threshold, expected):
    assert close(proxy_probs(kappa, threshold).exp(), expected, 1e-6)


def test_filtered_sampled_token_gets_the_code_floor_not_minus_inf():
    lp = proxy_probs(0.1, "minp")
    lse_kept = math.log(0.98)  # log Σ_kept p, the logits being log p
    assert torch.isfinite(lp).all()
    assert close(lp[3], FILTERED_LOGIT - lse_kept, 1e-2)
    assert close(proxy_probs(0.1, "minp", temperature=0.5)[3], FILTERED_LOGIT / 0.5, 5.0)


def test_proxy_equals_the_one_pass_closed_form_at_a_temperature():
    # spec 5.1 implementation note: logp_proxy = logp_T(y) − log Σ_keep p_T, keep() judged at T = 1
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 11, generator=g) * 2
    targets = logits.argsort(dim=-1, descending=True)[:, 1]  # a kept token
    temp = 0.7
    got = lp_reg_proxy_logprobs(logits, targets, kappa=0.2, threshold="minp", temperature=temp)
    p1 = logits.softmax(-1)
    keep = p1 >= 0.2 * p1.max(-1, keepdim=True).values
    log_pt = (logits / temp).log_softmax(-1)
    kept_mass = torch.logsumexp(log_pt.masked_fill(~keep, -math.inf), -1)
    expected = log_pt.gather(-1, targets[:, None]).squeeze(-1) - kept_mass
    assert close(got, expected, 1e-5)


def test_soft_fill_gives_filtered_tokens_the_minimum_logit():
    logits = T([OLD_PROBS]).log().repeat(4, 1)
    got = lp_reg_proxy_logprobs(logits, torch.arange(4), kappa=0.1, fill="soft").exp()
    p = T(OLD_PROBS)
    # the filtered token's logit is already the minimum, so the soft proxy is p itself
    assert close(got, p, 1e-6)
    logits2 = T([[2.0, 1.0, -3.0, -1.0]])  # probs ~ [.70, .26, .005, .035]; kappa .1 drops tokens 2, 3
    z = T([2.0, 1.0, -3.0, -3.0])
    expected = (z - torch.logsumexp(z, 0))[3]
    assert close(lp_reg_proxy_logprobs(logits2, T([3]), kappa=0.1, fill="soft"), [expected], 1e-6)


def test_proxy_is_fp32_no_grad_and_chunk_invariant():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(10, 7, generator=g, requires_grad=True)
    y = torch.randint(0, 7, (10,), generator=g)
    whole = lp_reg_proxy_logprobs(logits, y, kappa=0.3)
    parts = torch.cat([lp_reg_proxy_logprobs(logits[i : i + 3], y[i : i + 3], kappa=0.3) for i in range(0, 10, 3)])
    assert not whole.requires_grad and whole.dtype == torch.float32
    assert torch.equal(whole, parts)
    assert lp_reg_proxy_logprobs(logits.detach().bfloat16(), y, kappa=0.3).dtype == torch.float32
    with pytest.raises(ValueError, match="threshold"):
        lp_reg_proxy_logprobs(logits, y, threshold="topp")


# ---- 5.2 selection (tested apart from the loss; errata 13) -----------------------------------------


def batch(n_neg, *, low_logp=math.log(0.07), low_proxy=math.log(0.081633)):
    """(1, n_neg + 2): one low-prob negative token, n_neg - 1 ordinary negatives, 1 positive, 1 pad."""
    logp = torch.full((1, n_neg + 2), math.log(0.5))
    proxy = logp.clone()
    logp[0, 0], proxy[0, 0] = low_logp, low_proxy
    logp[0, -1] = -20.0  # pad: lowest log-prob of all, must never be picked
    logp[0, -2] = -15.0  # positive-advantage token, also very unlikely
    adv = torch.full((1, n_neg + 2), -1.0)
    adv[0, -2] = 1.0
    mask = torch.ones(1, n_neg + 2, dtype=torch.bool)
    mask[0, -1] = False
    return logp, proxy, adv, mask


def test_selection_needs_200_negative_tokens_at_rho_001():
    sel, reg = lp_reg_select(*batch(199), rho_neg=0.01)  # floor(1.99) = 1 -> nothing
    assert not sel.any() and not reg.any()
    logp, proxy, adv, mask = batch(200)  # floor(2.0) = 2 -> the two lowest negatives
    sel, reg = lp_reg_select(logp, proxy, adv, mask, rho_neg=0.01)
    assert int(sel.sum()) == 2 and bool(sel[0, 0]) and bool(sel[0, 1])
    # S' keeps only tokens the proxy rates higher: the spark token, not the 0.5 filler
    assert reg.nonzero().tolist() == [[0, 0]]
    assert not sel[0, -1] and not sel[0, -2]  # the pad and the positive token


def test_positive_branch_and_ceil_rounding():
    logp, proxy, adv, mask = batch(3)
    proxy[0, -2] = -1.0  # the positive token is below its proxy
    sel, _ = lp_reg_select(logp, proxy, adv, mask, rho_neg=0.01, rho_pos=0.0)
    assert not sel.any()
    _, reg = lp_reg_select(logp, proxy, adv, mask, rho_neg=0.0, rho_pos=1.0, rounding="ceil")
    assert reg.nonzero().tolist() == [[0, 3]]
    # ceil selects in a small micro-batch: ceil(0.01·3) = 1 token, the lowest negative
    sel, reg = lp_reg_select(logp, proxy, adv, mask, rho_neg=0.01, rounding="ceil")
    assert sel.nonzero().tolist() == [[0, 0]] and reg.nonzero().tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="rounding"):
        lp_reg_select(logp, proxy, adv, mask, rounding="round")


def test_filtered_token_is_never_regularised():
    logp, proxy, adv, mask = batch(200)
    proxy[0, 0] = FILTERED_LOGIT - math.log(0.98)  # token 3 of the example under kappa = 0.1
    logp[0, 0] = math.log(0.02)
    sel, reg = lp_reg_select(logp, proxy, adv, mask, rho_neg=0.01)
    assert bool(sel[0, 0]) and not reg.any()


def test_rank_select_matches_a_plain_loop():
    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        scores = torch.randn(4, 9, generator=g)
        cand = torch.rand(4, 9, generator=g) > 0.5
        n = trial % 6
        for largest in (False, True):
            got = rank_select(scores, cand, n, largest=largest)
            idx = [(float(scores[i, j]), i, j) for i in range(4) for j in range(9) if cand[i, j]]
            idx.sort(key=lambda t: -t[0] if largest else t[0])
            expected = torch.zeros(4, 9, dtype=torch.bool)
            for _, i, j in idx[:n]:
                expected[i, j] = True
            assert torch.equal(got, expected)


# ---- 5.2 loss ---------------------------------------------------------------------------------------


def test_regularised_token_loss_and_k3_gradient():
    lp = T([[math.log(0.07)]], requires_grad=True)
    old, proxy, adv = T([[math.log(0.08)]]), T([[math.log(0.08 / 0.98)]]), T([[-1.0]])
    loss = lp_reg_token_loss(lp, old, proxy, adv, coef=1.0, kl_type="k3")
    assert close(loss, [[0.887447]], 1e-6)  # ratio 0.875 + k3 0.012447
    k3 = lp_reg_token_loss(lp, old, proxy, torch.zeros(1, 1), coef=1.0)
    assert close(k3, [[0.012447]], 1e-6)
    k3.sum().backward()
    assert close(lp.grad, [[-0.166181]], 1e-6)  # 1 − π_proxy/π_θ


def test_override_end_to_end_selected_and_not():
    for n_neg, expected, n_reg in ((200, 0.887447, 1), (199, 0.875, 0)):
        logp, proxy, adv, mask = batch(n_neg)
        old = logp.clone()
        old[0, 0] = math.log(0.08)
        base, _ = ppo_clip_loss(logp, old, adv, mask, clip_low=1.0, clip_high=9.0)
        assert close(base[0, 0], 0.875, 1e-6)
        out, m = lp_reg_override(base, logp, old, adv, mask, StepContext(proxy_logprobs=proxy), rho_neg=0.01)
        assert close(out[0, 0], expected, 1e-6)
        assert torch.equal(out[0, 1:], base[0, 1:])  # unselected tokens keep the base loss
        assert m["lp_reg/num_regularized"].item() == n_reg
        assert m["lp_reg/num_selected"].item() == 2 * n_reg
        if n_reg:
            assert close(m["lp_reg/kl_mean"], 0.012447, 1e-6)


def test_override_needs_the_proxy_and_declares_it():
    logp, proxy, adv, mask = batch(3)
    with pytest.raises(ValueError, match="proxy_logprobs"):
        lp_reg_override(torch.zeros_like(logp), logp, logp, adv, mask, StepContext())
    entry = TOKEN_LOSS_OVERRIDES.entry("lp_reg")
    assert entry.needs == ("proxy_logprobs",)
    assert entry.meta["proxy_fn"] is lp_reg_proxy_logprobs
    assert set(entry.meta["proxy_params"]) <= set(entry.keyword_params())


def test_preset_params_match_the_signatures():
    algo = yaml.safe_load(preset_path("lp_reg").read_text())["algorithm"]
    (override,) = algo["token_overrides"]
    TOKEN_LOSS_OVERRIDES.entry(override["name"]).check_params(override["params"], where="lp_reg.yaml")
    assert algo["policy_loss"]["params"] == {"clip_low": 1.0, "clip_high": 9.0, "clip_ratio_c": None}
    assert override["params"]["kappa"] == 0.02 and override["params"]["rho_neg"] == 0.01


# ---- gradient bandit: Lp-Reg lifts a penalised spark token relative to GRPO ---------------------------


def bandit_step(use_lp_reg: bool, coef: float = 1.0, lr: float = 0.5) -> float:
    """One SGD step on the logits of a 4-armed softmax policy; returns π(arm 2) afterwards."""
    z = T([0.6, 0.3, 0.07, 0.03]).log().requires_grad_()
    logp_arm = torch.log_softmax(z, 0)[2]
    # a 200-token negative micro-batch: the arm's token plus 199 ordinary tokens (constants)
    logp, proxy, adv, mask = batch(200)
    logp = torch.cat([logp_arm.view(1, 1), logp[:, 1:]], dim=1)
    old = logp.detach().clone()
    old[0, 0] = math.log(0.08)
    old_logits = T([OLD_PROBS]).log()
    proxy[0, 0] = lp_reg_proxy_logprobs(old_logits, T([2]), kappa=0.1)[0]
    loss, _ = ppo_clip_loss(logp, old, adv, mask, clip_low=1.0, clip_high=9.0)
    if use_lp_reg:
        loss, _ = lp_reg_override(loss, logp, old, adv, mask, StepContext(proxy_logprobs=proxy), coef=coef)
    (loss * mask).sum().backward()
    # ∂L/∂logp of the arm: 0.875 for GRPO, 0.875 − coef·0.166181 with Lp-Reg
    dlogp = z.grad[2] / (1.0 - 0.07)
    expected = 0.875 - (coef * 0.166181 if use_lp_reg else 0.0)
    assert close(dlogp, expected, 1e-5)
    with torch.no_grad():
        return torch.softmax(z - lr * z.grad, 0)[2].item()


def test_lp_reg_raises_the_spark_token_relative_to_grpo():
    p_grpo = bandit_step(False)
    p_lp = bandit_step(True)
    assert p_grpo < 0.07  # GRPO pushes the negative-advantage token down
    assert p_grpo < p_lp < 0.07  # Lp-Reg pushes it down less
    assert bandit_step(True, coef=10.0) > 0.07  # a strong pull lifts it outright
