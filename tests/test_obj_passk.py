"""Pass@K shaping (spec section 3, arXiv 2510.23049): hand-computed values of spec 3.1-3.3 and table
rows 12-14, the degenerate rows of ref_examples_output.txt, the vectorised groups against a plain
per-group loop, and a bandit comparison with GRPO."""

import math
from pathlib import Path

import pytest
import torch

from rlvr_lab.objectives import ADVANTAGE_ESTIMATORS, StepContext, group_advantages
from rlvr_lab.objectives.passk import (
    binary_outcomes,
    passk_advantages,
    passk_group_metrics,
    pkpo_advantages,
    surrogate_advantages,
    surrogate_value,
    surrogate_weight,
)

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def group(n, c):
    """One group of n binary rewards with the first c correct, as (1, n)."""
    return torch.tensor([[1.0] * c + [0.0] * (n - c)])


def test_registered_names():
    for name in ("passk", "pkpo", "passk_surrogate"):
        assert name in ADVANTAGE_ESTIMATORS


# ---- 3.1 closed form and 3.2 PKPO: table rows 12-13 -------------------------------------------


@pytest.mark.parametrize(
    "n, c, k, a_pos, a_neg, r_pos, r_neg",
    [(4, 1, 2, 0.999998, -0.333333, 0.5, 0.166667), (8, 2, 4, 0.522232, -0.174077, 0.5, 0.357143)],
)
def test_closed_form_and_pkpo_spec_values(n, c, k, a_pos, a_neg, r_pos, r_neg):
    adv = passk_advantages(group(n, c), k=k)
    assert close(adv[0, :c], [a_pos] * c) and close(adv[0, c:], [a_neg] * (n - c))
    assert close(adv.sum(), 0.0, 1e-5)  # zero-mean group
    r = pkpo_advantages(group(n, c), k=k)
    assert close(r[0, :c], [r_pos] * c) and close(r[0, c:], [r_neg] * (n - c))


@pytest.mark.parametrize("c, pkpo_pos, pkpo_neg", [(0, None, 0.0), (6, 0.5, 0.5), (8, 0.5, None)])
def test_degenerate_groups_of_the_reference_output(c, pkpo_pos, pkpo_neg):
    # ref_examples_output.txt: n=8, k=4 with c=0 (ρ=0), c=6 (n-c < k, ρ=1), c=8: every advantage 0
    adv = passk_advantages(group(8, c), k=4)
    assert torch.equal(adv, torch.zeros(1, 8))
    r = pkpo_advantages(group(8, c), k=4)
    if pkpo_pos is not None:
        assert close(r[0, :c], [pkpo_pos] * c)
    if pkpo_neg is not None:
        assert close(r[0, c:], [pkpo_neg] * (8 - c))
    assert close(pkpo_advantages(group(8, c), k=4, baseline="mean"), torch.zeros(1, 8))


def test_k1_is_grpo_with_population_std():
    r = torch.tensor([[1.0, 0, 0, 0], [1.0, 1, 0, 0]])
    assert close(passk_advantages(r, k=1), group_advantages(r, std_unbiased=False), 1e-5)


def test_pkpo_mean_baseline_is_a_positive_rescale_of_the_closed_form():
    # spec 3.2: centred PKPO rewards = (k/n) · σ · Chen advantages (up to the eps in σ + eps)
    for n, c, k in ((4, 1, 2), (8, 2, 4), (8, 3, 3)):
        rho = 1 - math.comb(n - c, k) / math.comb(n, k)
        sigma = math.sqrt(rho * (1 - rho))
        centred = pkpo_advantages(group(n, c), k=k, baseline="mean")
        assert close(centred, (k / n) * sigma * passk_advantages(group(n, c), k=k), 1e-6)


def _loop_passk(rewards, k, eps=1e-6):
    """Plain per-group loop with math.comb (spec 3.1 as written)."""
    out = torch.zeros_like(rewards, dtype=torch.float64)
    n = rewards.shape[1]
    for p in range(rewards.shape[0]):
        c = int((rewards[p] > 0).sum())
        if c == 0 or n - c < k:
            continue
        rho = 1 - math.comb(n - c, k) / math.comb(n, k)
        sigma = math.sqrt(rho * (1 - rho))
        q = math.comb(n - c - 1, k - 1) / math.comb(n - 1, k - 1)
        for g in range(n):
            out[p, g] = (1 - rho) / (sigma + eps) if rewards[p, g] > 0 else (1 - rho - q) / (sigma + eps)
    return out


def _loop_pkpo(rewards, k):
    out = torch.zeros_like(rewards, dtype=torch.float64)
    n = rewards.shape[1]
    for p in range(rewards.shape[0]):
        c = int((rewards[p] > 0).sum())
        miss = math.comb(n - 1 - c, k - 1) / math.comb(n - 1, k - 1) if n - 1 - c >= 0 else 0.0
        for g in range(n):
            out[p, g] = k / n if rewards[p, g] > 0 else (k / n) * (1 - miss)
    return out


def test_vectorised_groups_match_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    for n in (2, 5, 8):
        # every correct count 0..n, shuffled inside each row, plus random rows
        rows = [torch.tensor([1.0] * c + [0.0] * (n - c))[torch.randperm(n, generator=g)] for c in range(n + 1)]
        rewards = torch.stack(rows + [(torch.rand(n, generator=g) > 0.5).float() for _ in range(4)])
        for k in range(1, n + 1):
            assert close(passk_advantages(rewards, k=k), _loop_passk(rewards, k), 1e-5)
            assert close(pkpo_advantages(rewards, k=k), _loop_pkpo(rewards, k), 1e-6)
    with pytest.raises(ValueError, match="k"):
        passk_advantages(group(4, 1), k=5)


# ---- binary outcomes (composition rule 11.1) ------------------------------------------------------


def test_non_binary_rewards_use_ctx_correct_else_positive():
    shaped = torch.tensor([[1.1, -0.2, 0.3, 0.0]])  # e.g. a bonus and an overlong penalty
    assert torch.equal(binary_outcomes(shaped), torch.tensor([[True, False, True, False]]))
    ctx = StepContext(correct=torch.tensor([True, False, False, False]))
    assert torch.equal(binary_outcomes(shaped, ctx), torch.tensor([[True, False, False, False]]))
    assert close(passk_advantages(shaped, ctx, k=2), passk_advantages(group(4, 1), k=2))
    # binary rewards are their own verdict even when ctx.correct disagrees
    assert torch.equal(binary_outcomes(group(4, 2), ctx), torch.tensor([[True, True, False, False]]))


# ---- 3.3 surrogate recipe: table row 14 and errata 4 -----------------------------------------------


def test_surrogate_omega_spec_values():
    r = group(4, 1)  # ρ̂ = 0.25
    assert close(surrogate_advantages(r, omega="grpo")[0, :2], [1.732051, -0.577350])
    assert close(surrogate_advantages(r, omega="passk", k=2)[0, :2], [1.125, -0.375])
    hard = surrogate_advantages(r, omega="hard_example")
    assert close(hard[0, :2], [1.299038, -0.433013])
    # hard-example up-weighting = GRPO advantages times (1 - ρ̂)
    assert close(hard, 0.75 * surrogate_advantages(r, omega="grpo"))
    assert close(surrogate_advantages(r, omega="reinforce"), ADVANTAGE_ESTIMATORS.get("dr_grpo")(r))
    # a user-supplied ω
    assert close(surrogate_advantages(r, omega=lambda rho: 4.0 * torch.ones_like(rho))[0, :2], [3.0, -1.0])


def test_surrogate_values_and_errata_4():
    assert close(surrogate_value(0.25, omega="grpo"), 1.047198)  # F_grpo(0.25) = 2·arcsin(0.5) = π/3
    assert close(surrogate_value(0.3, omega="hard_example"), 1.037897)  # ½·F_GRPO + sqrt(ρ(1-ρ))
    assert close(surrogate_value(0.3, omega="hard_example"),
                 0.5 * surrogate_value(0.3, omega="grpo") + math.sqrt(0.3 * 0.7))
    # F' = ω for every preset (checked by autograd)
    for name in ("reinforce", "grpo", "passk", "hard_example"):
        rho = torch.tensor([0.1, 0.3, 0.7], dtype=torch.float64, requires_grad=True)
        surrogate_value(rho, omega=name, k=3).sum().backward()
        assert close(rho.grad, surrogate_weight(rho.detach(), omega=name, k=3), 1e-9)


def test_surrogate_degenerate_groups_and_zero_mean():
    r = torch.stack([group(4, 0)[0], group(4, 4)[0], group(4, 3)[0]])
    adv = surrogate_advantages(r, omega="grpo")
    assert torch.equal(adv[:2], torch.zeros(2, 4)) and torch.isfinite(adv).all()
    assert close(adv[2].sum(), 0.0, 1e-6)
    # pass@k ρ instead of c/n (inferred variant): A+ is the closed form's, A- is -ρ/σ
    pk = surrogate_advantages(group(4, 1), omega="grpo", rho_source="passk", k=2)
    assert close(pk[0, :2], [1.0, -1.0], 1e-5)  # ρ = 0.5, σ = 0.5
    with pytest.raises(ValueError, match="grpo"):
        surrogate_advantages(r, omega="pass@k")


def test_metrics():
    r = torch.stack([group(8, 2)[0], group(8, 0)[0]])
    adv = passk_advantages(r, k=4)
    m = passk_group_metrics(r, adv, k=4)
    assert close(m["passk/rho_mean"], 0.785714 / 2)
    assert close(m["passk/frac_zero_adv_groups"], 0.5)
    assert close(m["passk/adv_pos_abs_mean"], 0.522232)
    assert close(m["passk/adv_neg_abs_mean"], 0.174077 * 6 / 14)


# ---- bandit: Pass@K penalises the wrong samples of a hard prompt less than GRPO ----------------------


def test_bandit_mostly_wrong_group_penalty_is_smaller_than_grpo():
    """Softmax policy over 3 answers, answer 0 correct. A group of 8 samples: answer 0 once, answer 1
    four times, answer 2 three times. With zero-mean advantages the REINFORCE gradient on logit j is
    Σ_{i: y_i = j} A_i, so the push-down on a wrong answer is proportional to |A-|."""
    samples = torch.tensor([0, 1, 1, 1, 1, 2, 2, 2])
    rewards = (samples == 0).float().unsqueeze(0)  # (1, 8), one correct

    def logit_grad(adv):
        theta = torch.zeros(3, requires_grad=True)
        logp = torch.log_softmax(theta, -1)[samples]
        (-(adv[0] * logp).mean()).backward()  # minimised loss
        return -theta.grad  # ascent direction

    grpo = group_advantages(rewards)
    passk = passk_advantages(rewards, k=4)
    assert close(passk[0, 1:], [-0.142857] * 7, 1e-5)  # ρ = 0.5, q = 4/7
    assert close(grpo[0, 1:], [-0.353553] * 7, 1e-5)
    assert (passk[0, 1:].abs() < grpo[0, 1:].abs()).all()
    g_grpo, g_passk = logit_grad(grpo), logit_grad(passk)
    assert g_passk[0] > 0 and g_grpo[0] > 0  # both raise the correct answer
    assert (g_passk[1:] < 0).all() and (g_grpo[1:] < 0).all()  # both lower the wrong ones
    assert (g_passk[1:].abs() < g_grpo[1:].abs()).all()  # Pass@K lowers them less


def test_presets_validate():
    from rlvr_lab.config import load_config

    for preset, name in (("passk", "passk"), ("pkpo", "pkpo")):
        algo = load_config(CONFIGS / "demo.yaml", presets=[preset]).algorithm
        assert algo.advantage.name == name and algo.advantage.params["k"] == 4
