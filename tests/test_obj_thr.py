"""NTHR / THR (spec section 4): token influence scores and the two token-advantage modifiers.

Hand-computed values are the spec's section 4 example (table rows 15-16); fast paths are checked
against plain loops on random data.
"""

import math
from pathlib import Path

import pytest
import torch

from rlvr_lab.config import load_config
from rlvr_lab.objectives.advantages import broadcast_to_tokens, group_advantages
from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.registry import TOKEN_ADVANTAGE_MODIFIERS
from rlvr_lab.objectives.thr import (
    SCORE_KEY,
    compute_token_hidden_reward,
    group_vocabulary,
    nthr_advantages,
    positive_responses,
    thr_advantages,
    token_hidden_reward,
    token_hidden_reward_reference,
    vstar_probs_from_hidden,
)

torch.set_num_threads(1)
T_ = torch.tensor
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ---- the spec's example: V* = {a, b}, d = 2, G = 4, r = [1, 0, 0, 0] ------------------------------
A_ID, B_ID = 5, 9


def spec_example():
    ids = T_([[A_ID], [A_ID], [B_ID], [B_ID]])
    mask = torch.ones(4, 1, dtype=torch.bool)
    probs = T_([[[0.6, 0.4]], [[0.5, 0.5]], [[0.3, 0.7]], [[0.2, 0.8]]])  # π_old on V* = (a, b)
    # rows 2-3 sample b with h = 0, so their score is exactly 0 and they only make b part of V*
    hidden = T_([[[1.0, 0.0]], [[1.0, 0.5]], [[0.0, 0.0]], [[0.0, 0.0]]])
    rewards = T_([1.0, 0, 0, 0])
    return ids, mask, probs, hidden, rewards


def spec_scores():
    ids, mask, probs, hidden, rewards = spec_example()
    vocab = group_vocabulary(ids, mask, torch.zeros(4, dtype=torch.long))
    return token_hidden_reward(hidden, probs, vocab, mask, rewards == 1)


def spec_ctx_and_adv(scores):
    _, mask, _, _, rewards = spec_example()
    adv = broadcast_to_tokens(group_advantages(rewards.view(1, 4)).view(-1), mask)  # GRPO eps 1e-6
    ctx = StepContext(rewards=rewards, group_size=4, extras={SCORE_KEY: scores})
    return adv, mask, ctx


def test_spec_example_influence_scores():
    s = spec_scores()
    assert close(s[:, 0], [0.32, 0.40, 0.0, 0.0], 1e-6)  # s+ = 0.32, s- = 0.40


def test_spec_example_nthr_advantage():
    adv, mask, ctx = spec_ctx_and_adv(spec_scores())
    out, m = nthr_advantages(adv, mask, ctx)
    # τ = 1 · 0.32; s- = 0.40 > τ is selected; η = 2|0.5 - 1/4| = 0.5; A = -0.499999 -> -0.249999500001
    assert close(out[1, 0], -0.249999500001, 1e-6)
    assert close(out[[0, 2, 3], 0], adv[[0, 2, 3], 0], 0.0)  # correct row and s=0 rows unchanged
    assert m["nthr/num_selected"].item() == 1.0 and close(m["nthr/eta_mean"], 0.5)
    # β = 2 lifts τ to 0.64 > 0.40: nothing selected
    out2, _ = nthr_advantages(adv, mask, ctx, beta_tau=2.0)
    assert torch.equal(out2, adv)


@pytest.mark.parametrize("p,expected", [(0.2, (1.799996, -0.399999)), (-0.2, (1.199998, -0.599999))])
def test_spec_example_thr_beta_zero(p, expected):
    adv, mask, ctx = spec_ctx_and_adv(spec_scores())
    out, m = thr_advantages(adv, mask, ctx, p=p, beta_tau=0.0)
    assert close(out[:2, 0], expected, 1e-6)
    assert close(out[2:, 0], adv[2:, 0], 0.0)  # THR = 0 is never dominant
    assert close(m["thr/frac_dominant"], 0.5) and close(m["thr/frac_pos"], 0.5)


def test_spec_example_thr_beta_one_is_unchanged_within_tolerance():
    # errata 15: THR+ = 0.48 equals the anchor τ_THR = 0.48; the tie must not flip with rounding
    adv, mask, ctx = spec_ctx_and_adv(spec_scores())
    for p in (0.2, -0.2):
        out, m = thr_advantages(adv, mask, ctx, p=p, beta_tau=1.0)
        assert close(out, adv, 1e-6)
        assert m["thr/frac_dominant"].item() == 0.0


def test_ties_with_the_anchor_survive_rounding_of_the_mean():
    # errata 15: a correct response whose 3 tokens share one score x has mean(x, x, x) one ulp below x
    # in float32; a strict test without tolerance would then flag its own tokens as above the anchor.
    x = 0.9946783781051636
    s = torch.zeros(2, 3)
    s[0] = x  # correct response
    s[1] = x  # an incorrect response with the same scores: a tie with the anchor, not above it
    mask = torch.ones(2, 3, dtype=torch.bool)
    rewards = T_([1.0, 0.0])
    adv = broadcast_to_tokens(group_advantages(rewards.view(1, 2)).view(-1), mask)
    assert (s[0].sum() / 3) < s[0, 0] and ((adv[0] * s[0]).sum() / 3) < adv[0, 0] * s[0, 0]  # the hazard
    ctx = StepContext(rewards=rewards, group_size=2, extras={SCORE_KEY: s})
    assert torch.equal(thr_advantages(adv, mask, ctx)[0], adv)
    assert not torch.equal(thr_advantages(adv, mask, ctx, rtol=0.0)[0], adv)
    assert torch.equal(nthr_advantages(adv, mask, ctx)[0], adv)
    assert not torch.equal(nthr_advantages(adv, mask, ctx, rtol=0.0)[0], adv)


def test_thr_only_mode_keeps_dominant_tokens():
    adv, mask, ctx = spec_ctx_and_adv(spec_scores())
    out, _ = thr_advantages(adv, mask, ctx, beta_tau=0.0, mode="only")
    assert close(out[:, 0], [adv[0, 0], adv[1, 0], 0.0, 0.0], 1e-7)
    with pytest.raises(ValueError, match="reweight"):
        thr_advantages(adv, mask, ctx, mode="bogus")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        thr_advantages(adv, mask, ctx, p=1.5)


# ---- group vocabulary and V*-probabilities -------------------------------------------------------


def test_group_vocabulary_is_per_group_sorted_union_of_policy_tokens():
    ids = T_([[5, 9, 9], [7, 5, 3], [9, 9, 9], [2, 4, 4]])
    mask = T_([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]]).bool()  # token 3 is not a policy token
    vocab = group_vocabulary(ids, mask, T_([8, 8, 2, 2]))
    # groups numbered in sorted id order: group id 2 -> 0, id 8 -> 1
    assert vocab.row_group.tolist() == [1, 1, 0, 0]
    assert vocab.sizes.tolist() == [2, 3]
    assert vocab.index[0, :2].tolist() == [2, 9] and vocab.index[1].tolist() == [5, 7, 9]
    assert vocab.valid.tolist() == [[True, True, False], [True, True, True]]
    assert vocab.column.tolist() == [[0, 2, 2], [1, 0, 0], [1, 1, 1], [0, 0, 0]]


def random_case(seed, B=7, T=5, V=9, d=4, group_ids=(3, 1, 3, 2, 1, 3, 2)):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g)
    weight = torch.randn(V, d, generator=g)
    bias = torch.randn(V, generator=g) * 0.1
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[0] = False  # an empty response
    gids = T_(list(group_ids))
    positive = T_([True, False, False, True, True, True, False])
    return hidden, weight, bias, ids, mask, gids, positive


def test_vstar_probs_both_normalisers_match_full_softmax():
    hidden, weight, bias, ids, mask, gids, _ = random_case(0)
    temp = 0.7
    full = torch.softmax((hidden @ weight.T + bias) / temp, dim=-1)  # (B, T, V) only in the test
    vocab = group_vocabulary(ids, mask, gids)
    expected = full.gather(-1, vocab.index[vocab.row_group].unsqueeze(1).expand(-1, 5, -1))
    expected = expected * vocab.valid[vocab.row_group].unsqueeze(1) * mask.unsqueeze(-1)
    via_lse = vstar_probs_from_hidden(hidden, weight, vocab, mask, lm_head_bias=bias, temperature=temp, chunk_tokens=4)
    old_lp = torch.log(full.gather(-1, ids.unsqueeze(-1)).squeeze(-1))
    via_logp = vstar_probs_from_hidden(
        hidden, weight, vocab, mask, lm_head_bias=bias, old_logprobs=old_lp, temperature=temp, chunk_tokens=3
    )
    assert close(via_lse, expected, 1e-6)
    assert close(via_logp, expected, 1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_scores_match_plain_loop(seed):
    hidden, weight, bias, ids, mask, gids, positive = random_case(seed)
    full = torch.softmax(hidden @ weight.T + bias, dim=-1)
    ref = token_hidden_reward_reference(hidden, full, ids, mask, gids, positive)
    vocab = group_vocabulary(ids, mask, gids)
    probs = vstar_probs_from_hidden(hidden, weight, vocab, mask, lm_head_bias=bias)
    fast = token_hidden_reward(hidden.to(torch.bfloat16).float(), probs, vocab, mask, positive)
    fast_exact = token_hidden_reward(hidden, probs, vocab, mask, positive)
    assert close(fast_exact, ref, 1e-4)
    assert close(fast, ref, 0.1)  # bf16 hidden still gives close scores (products in fp32)
    # the one-call driver, one group at a time, with and without the mixed-only skip
    drv = compute_token_hidden_reward(hidden, weight, ids, mask, gids, positive, lm_head_bias=bias,
                                      groups_per_chunk=1, mixed_only=False)
    assert close(drv, ref, 1e-4)
    drv_mixed = compute_token_hidden_reward(hidden, weight, ids, mask, gids, positive, lm_head_bias=bias)
    assert close(drv_mixed, ref, 1e-4)  # every group of this case is mixed


def test_driver_skips_groups_that_are_not_mixed():
    hidden, weight, bias, ids, mask, gids, _ = random_case(3)
    positive = T_([True, True, True, False, False, True, True])  # group 3 (rows 0, 2, 5) all correct
    drv = compute_token_hidden_reward(hidden, weight, ids, mask, gids, positive)
    assert drv[[0, 2, 5]].abs().sum().item() == 0.0
    ref = token_hidden_reward_reference(hidden, torch.softmax(hidden @ weight.T, -1), ids, mask, gids, positive)
    assert ref[[2, 5]].abs().sum().item() > 0  # they would be nonzero if processed
    assert close(drv[[1, 3, 4, 6]], ref[[1, 3, 4, 6]], 1e-4)


def test_scores_carry_no_gradient():
    hidden, weight, bias, ids, mask, gids, positive = random_case(0)
    hidden.requires_grad_(True)
    weight.requires_grad_(True)
    s = compute_token_hidden_reward(hidden, weight, ids, mask, gids, positive)
    assert not s.requires_grad


# ---- modifiers vs plain loops --------------------------------------------------------------------


def nthr_loop(adv, mask, positive, s, G, beta, eta=None, rtol=1e-6):
    out = adv.clone()
    for p in range(adv.shape[0] // G):
        rows = list(range(p * G, (p + 1) * G))
        pos = [i for i in rows if positive[i]]
        if not 0 < len(pos) < G:
            continue
        means = [float(s[i][mask[i]].mean()) for i in pos if mask[i].any()]
        if not means:
            continue
        thresh = -math.inf if beta == -math.inf else beta * min(means) * (1 + rtol * math.copysign(1, beta * min(means)))
        e = 2 * abs(0.5 - len(pos) / G) if eta is None else eta
        for j in rows:
            if j in pos:
                continue
            for t in range(adv.shape[1]):
                if mask[j, t] and float(s[j, t]) > thresh:
                    out[j, t] = e * adv[j, t]
    return out


def thr_loop(adv, mask, positive, s, G, beta, p_w, mode, rtol=1e-6):
    out = adv.clone()
    thr = adv * s
    for p in range(adv.shape[0] // G):
        rows = list(range(p * G, (p + 1) * G))
        pos = [i for i in rows if positive[i]]
        if not 0 < len(pos) < G:
            continue
        means = [float(thr[i][mask[i]].abs().mean()) for i in pos if mask[i].any()]
        if not means:
            continue
        tau = beta * min(means)
        for j in rows:
            for t in range(adv.shape[1]):
                if not mask[j, t]:
                    continue
                dom = abs(float(thr[j, t])) > tau + rtol * abs(tau)
                if mode == "reweight" and dom:
                    out[j, t] = adv[j, t] * (1 + p_w * math.copysign(1.0, float(thr[j, t])) * (thr[j, t] != 0))
                elif mode == "only" and not dom:
                    out[j, t] = 0.0
    return out


def random_modifier_case(seed, P=5, G=4, T=6):
    g = torch.Generator().manual_seed(seed)
    rewards = (torch.rand(P, G, generator=g) > 0.5).float()
    rewards[0] = T_([1.0, 1, 1, 1])  # all correct
    rewards[1] = T_([0.0, 0, 0, 0])  # all wrong
    rewards[2] = T_([1.0, 0, 0, 0])
    rewards[3] = T_([0.0, 1, 1, 0])
    mask = torch.rand(P * G, T, generator=g) > 0.25
    mask[9] = False  # an empty incorrect response in a mixed group
    adv = broadcast_to_tokens(group_advantages(rewards).view(-1), mask)
    s = torch.randn(P * G, T, generator=g) * mask
    ctx = StepContext(rewards=rewards.view(-1), group_size=G, extras={SCORE_KEY: s})
    return adv, mask, rewards.view(-1) == 1, s, ctx


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta,eta", [(1.0, None), (0.1, None), (0.0, 0.0), (-math.inf, None)])
def test_nthr_matches_plain_loop(seed, beta, eta):
    adv, mask, positive, s, ctx = random_modifier_case(seed)
    out, m = nthr_advantages(adv, mask, ctx, beta_tau=beta, eta=eta)
    assert close(out, nthr_loop(adv, mask, positive, s, 4, beta, eta), 1e-6)
    assert all(not v.requires_grad and v.dim() == 0 for v in m.values())
    # all-correct and all-wrong groups are untouched
    assert torch.equal(out[:8], adv[:8])


def test_nthr_minus_infinity_selects_every_negative_token_of_mixed_groups():
    adv, mask, positive, s, ctx = random_modifier_case(0)
    out, _ = nthr_advantages(adv, mask, ctx, beta_tau=-math.inf)
    rows = torch.arange(8, 12)  # group 2: r = [1, 0, 0, 0], η = 0.5
    neg = rows[~positive[rows]]
    assert close(out[neg], 0.5 * adv[neg], 1e-7)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta,p,mode", [(1.0, 0.2, "reweight"), (0.5, -0.5, "reweight"), (0.0, 0.3, "reweight"),
                                         (1.0, 0.2, "only")])
def test_thr_matches_plain_loop(seed, beta, p, mode):
    adv, mask, positive, s, ctx = random_modifier_case(seed)
    out, m = thr_advantages(adv, mask, ctx, p=p, beta_tau=beta, mode=mode)
    assert close(out, thr_loop(adv, mask, positive, s, 4, beta, p, mode), 1e-6)
    assert torch.equal(out[:8], adv[:8])
    assert all(not v.requires_grad and v.dim() == 0 for v in m.values())


def test_thr_exploit_and_explore_have_opposite_effects():
    adv, mask, _, _, ctx = random_modifier_case(1)
    exploit, _ = thr_advantages(adv, mask, ctx, p=0.5, beta_tau=0.0)
    explore, _ = thr_advantages(adv, mask, ctx, p=-0.5, beta_tau=0.0)
    thr = adv * ctx.extras[SCORE_KEY]
    pos, neg = (thr > 0) & mask, (thr < 0) & mask
    assert (exploit.abs()[pos] > adv.abs()[pos]).all() and (exploit.abs()[neg] < adv.abs()[neg]).all()
    assert (explore.abs()[pos] < adv.abs()[pos]).all() and (explore.abs()[neg] > adv.abs()[neg]).all()


def test_thr_logs_overlap_with_high_entropy_tokens():
    adv, mask, _, _, ctx = random_modifier_case(0)
    ctx.old_entropy = torch.rand(adv.shape, generator=torch.Generator().manual_seed(5))
    _, m = thr_advantages(adv, mask, ctx, beta_tau=0.0)
    assert 0.0 <= m["thr/high_entropy_overlap"].item() <= 1.0


# ---- binary-reward check (rule 11.1) and inputs --------------------------------------------------


def test_non_binary_rewards_fall_back_to_correct():
    assert positive_responses(T_([1.0, 0.0, 1.0]), None).tolist() == [True, False, True]
    shaped = T_([1.3, 0.2, 0.1])  # e.g. SPEAR tool-call bonus on top of the task score
    assert positive_responses(shaped, T_([True, False, False])).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="ctx.correct"):
        positive_responses(shaped, None)
    # the modifier uses the verdict, not r > 0.5
    adv, mask, _ = spec_ctx_and_adv(spec_scores())
    ctx = StepContext(rewards=T_([1.2, 0.3, 0.1, 0.1]), correct=T_([True, False, False, False]), group_size=4,
                      extras={SCORE_KEY: spec_scores()})
    out, _ = nthr_advantages(adv, mask, ctx)
    assert close(out[1, 0], -0.249999500001, 1e-6)
    ctx.correct = None
    with pytest.raises(ValueError, match="binary"):
        nthr_advantages(adv, mask, ctx)


def test_missing_scores_name_the_key_and_the_function():
    adv, mask, ctx = spec_ctx_and_adv(spec_scores())
    ctx.extras = {}
    with pytest.raises(ValueError, match="token_hidden_reward"):
        thr_advantages(adv, mask, ctx)


def test_registered_and_presets_validate():
    assert TOKEN_ADVANTAGE_MODIFIERS.get("nthr") is nthr_advantages
    assert TOKEN_ADVANTAGE_MODIFIERS.get("thr") is thr_advantages
    nthr = load_config(CONFIGS / "demo.yaml", presets=["nthr"]).algorithm
    assert nthr.token_modifiers[0].name == "nthr" and nthr.token_modifiers[0].params["beta_tau"] == 1.0
    assert nthr.kl.coef == 1e-4 and nthr.dynamic_sampling.enabled
    thr = load_config(CONFIGS / "demo.yaml", presets=["thr"]).algorithm
    assert thr.token_modifiers[0].params == {"p": 0.2, "beta_tau": 1.0, "mode": "reweight"}


def test_all_masked_batch_gives_zero_scores():
    hidden, weight, bias, ids, _, gids, positive = random_case(0)
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    vocab = group_vocabulary(ids, mask, gids)
    assert vocab.sizes.tolist() == [0, 0, 0]
    s = compute_token_hidden_reward(hidden, weight, ids, mask, gids, positive, mixed_only=False)
    assert torch.equal(s, torch.zeros(ids.shape))
