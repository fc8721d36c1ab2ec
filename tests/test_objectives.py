"""Hand-computed values from the algorithms spec (section 12, table rows 1-10)."""

import math
import subprocess
import sys

import pytest
import torch

from rlvr_lab.objectives import (
    ADVANTAGE_ESTIMATORS,
    AGGREGATORS,
    POLICY_LOSSES,
    UnknownNameError,
    aggregate,
    broadcast_to_tokens,
    denominators,
    group_advantages,
    gspo_loss,
    informative_groups,
    kl_estimate,
    overlong_penalty,
    ppo_clip_loss,
)

T = torch.tensor


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ---- 1.1 advantages ---------------------------------------------------------------------------


def test_grpo_advantage_unbiased_population_and_dr():
    r = T([[1.0, 0, 0, 1]])
    assert close(group_advantages(r), [[0.866024, -0.866024, -0.866024, 0.866024]])
    assert close(group_advantages(r, std_unbiased=False), [[0.999998, -0.999998, -0.999998, 0.999998]])
    assert close(group_advantages(r, std_normalize=False), [[0.5, -0.5, -0.5, 0.5]])


def test_grpo_advantage_one_correct_and_trl_epsilon():
    r = T([[1.0, 0, 0, 0]])
    assert close(group_advantages(r), [[1.499997, -0.499999, -0.499999, -0.499999]])
    assert close(ADVANTAGE_ESTIMATORS.get("dr_grpo")(r), [[0.75, -0.25, -0.25, -0.25]])
    # errata 10: TRL's epsilon 1e-4 gives 0.865875 on the first example
    assert close(group_advantages(T([[1.0, 0, 0, 1]]), eps=1e-4)[0, 0], 0.865875, 1e-6)


def test_all_equal_group_is_exactly_zero_and_singleton_keeps_reward():
    assert torch.equal(group_advantages(T([[1.0, 1, 1, 1], [0.0, 0, 0, 0]])), torch.zeros(2, 4))
    assert close(group_advantages(T([[0.7], [0.0]])), [[0.7], [0.0]])


def test_groups_are_independent_rows():
    r = T([[1.0, 0, 0, 1], [1.0, 0, 0, 0]])
    a = group_advantages(r)
    assert close(a[1], [1.499997, -0.499999, -0.499999, -0.499999])


def test_broadcast_zeroes_masked_tokens():
    adv = broadcast_to_tokens(T([2.0, -1.0]), T([[1, 1, 0], [1, 0, 0]]).bool())
    assert torch.equal(adv, T([[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]))


# ---- 1.2 PPO clip, dual clip, KL ---------------------------------------------------------------


def _tok(logp, logp_old):
    return T([[math.log(logp)]]), T([[math.log(logp_old)]])


def test_ppo_clip_symmetric_and_clip_higher():
    lp, lpo = _tok(0.7, 0.5)  # ratio 1.4
    mask = T([[True]])
    loss, m = ppo_clip_loss(lp, lpo, T([[1.0]]), mask, clip_low=0.2, clip_high=0.2)
    assert close(loss, [[-1.2]])
    assert m["grpo/pg_clipfrac"].item() == 1.0
    loss, _ = ppo_clip_loss(lp, lpo, T([[1.0]]), mask, clip_low=0.2, clip_high=0.28)
    assert close(loss, [[-1.28]])


def test_ppo_clip_negative_advantage_clipped_has_no_gradient():
    lp = T([[math.log(0.35)]], requires_grad=True)
    loss, _ = ppo_clip_loss(lp, T([[math.log(0.5)]]), T([[-1.0]]), T([[True]]))
    assert close(loss, [[0.8]])
    loss.sum().backward()
    assert lp.grad.abs().item() == 0.0


def test_unclipped_token_gradient_is_minus_advantage_times_ratio():
    lp = T([[math.log(0.55)]], requires_grad=True)  # ratio 1.1 inside the clip range
    loss, m = ppo_clip_loss(lp, T([[math.log(0.5)]]), T([[1.0]]), T([[True]]))
    loss.sum().backward()
    assert close(lp.grad, [[-1.1]])
    assert m["grpo/pg_clipfrac"].item() == 0.0


def test_dual_clip():
    lp, lpo = _tok(0.5, 0.1)  # ratio 5
    loss, m = ppo_clip_loss(lp, lpo, T([[-1.0]]), T([[True]]), clip_ratio_c=3.0)
    assert close(loss, [[3.0]])
    assert m["grpo/pg_clipfrac_lower"].item() == 1.0
    loss_off, _ = ppo_clip_loss(lp, lpo, T([[-1.0]]), T([[True]]))  # errata 3: off by default
    assert close(loss_off, [[5.0]])
    with pytest.raises(ValueError, match="clip_ratio_c"):
        ppo_clip_loss(lp, lpo, T([[-1.0]]), T([[True]]), clip_ratio_c=0.5)


def test_kl_estimators():
    lp, ref = T([[math.log(0.5)]]), T([[math.log(0.4)]])
    assert close(kl_estimate(lp, ref, kind="k3"), [[0.023144]])
    lr = math.log(0.4 / 0.5)
    assert close(kl_estimate(lp, ref, kind="k1"), [[-lr]])
    assert close(kl_estimate(lp, ref, kind="k2"), [[0.5 * lr * lr]])
    assert close(kl_estimate(lp, ref, kind="abs"), [[abs(lr)]])
    # clamping: a huge ratio is bounded
    assert kl_estimate(T([[-30.0]]), T([[0.0]]), kind="k3").item() == 10.0
    with pytest.raises(ValueError, match="k3"):
        kl_estimate(lp, ref, kind="k4")


# ---- 1.5 GSPO --------------------------------------------------------------------------------


def test_gspo_sequence_ratio_values_and_gradient():
    old = torch.zeros(1, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    lp = T([[0.1, -0.1, 0.3]], requires_grad=True)
    loss, _ = gspo_loss(lp, old, torch.ones(1, 3), mask)
    assert close(loss, [[-1.0004] * 3])
    loss.sum().backward()
    assert lp.grad.abs().sum().item() == 0.0  # clipped
    lp2 = T([[0.1, -0.1, 0.3]], requires_grad=True)
    loss, _ = gspo_loss(lp2, old, -torch.ones(1, 3), mask)
    assert close(loss, [[1.105171] * 3])
    loss.sum().backward()
    assert close(lp2.grad, [[1.105171] * 3])  # s_i · ∇logp_t
    assert POLICY_LOSSES.entry("gspo").meta["aggregation"] == "seq-mean-token-mean"


def test_gspo_empty_response_is_finite_and_masked():
    loss, _ = gspo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1, 2, dtype=torch.bool))
    assert torch.isfinite(loss).all()
    assert aggregate(loss, torch.zeros(1, 2, dtype=torch.bool), "seq-mean-token-mean").item() == 0.0


# ---- 1.6 aggregation ---------------------------------------------------------------------------

L = T([[1.0, 2, 3], [4, 0, 0]])
M = T([[1, 1, 1], [1, 0, 0]]).bool()


@pytest.mark.parametrize(
    "mode,expected",
    [("token-mean", 2.5), ("seq-mean-token-sum", 5.0), ("seq-mean-token-mean", 3.0), ("seq-mean-token-sum-norm", 1.666667)],
)
def test_aggregation_modes(mode, expected):
    assert close(aggregate(L, M, mode, t_norm=3), expected)


def test_legacy_token_sum_norm_without_batch_division():
    assert close(aggregate(L, M, "seq-mean-token-sum-norm", t_norm=3, legacy_no_batch_norm=True), 3.333333)


def test_empty_rows_counted_unless_excluded():
    l3 = torch.cat([L, torch.zeros(1, 3)])
    m3 = torch.cat([M, torch.zeros(1, 3, dtype=torch.bool)])
    assert close(aggregate(l3, m3, "seq-mean-token-mean"), 2.0)  # 6 / 3 sequences (errata 7)
    assert close(aggregate(l3, m3, "seq-mean-token-mean", exclude_empty_sequences=True), 3.0)
    assert close(aggregate(l3, m3, "token-mean"), 2.5)


def test_all_masked_gives_zero_loss_that_keeps_the_graph():
    x = torch.ones(2, 3, requires_grad=True)
    out = aggregate(x, torch.zeros(2, 3, dtype=torch.bool), "token-mean")
    assert out.item() == 0.0
    out.backward()
    assert x.grad is not None


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_global_denominators_make_micro_batching_exact(mode):
    g = torch.Generator().manual_seed(0)
    loss = torch.randn(6, 5, generator=g)
    mask = torch.rand(6, 5, generator=g) > 0.4
    mask[0] = False  # one empty response
    full = aggregate(loss, mask, mode, t_norm=5)
    den = denominators(mask)
    parts = [aggregate(loss[i : i + 2], mask[i : i + 2], mode, t_norm=5, denominators=den) for i in (0, 2, 4)]
    assert close(sum(parts), full, 1e-6)
    # without global denominators token-mean is biased when micro-batches differ in token count
    if mode == "token-mean":
        naive = sum(aggregate(loss[i : i + 2], mask[i : i + 2], mode) for i in (0, 2, 4)) / 3
        assert not close(naive, full, 1e-4)


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownNameError, match="token-mean"):
        AGGREGATORS.get("token_mean")
    with pytest.raises(UnknownNameError, match="ppo_clip"):
        POLICY_LOSSES.get("ppo")


def test_unknown_parameter_is_rejected():
    with pytest.raises(UnknownNameError, match="clip_hi"):
        POLICY_LOSSES.entry("ppo_clip").check_params({"clip_hi": 0.3}, where="algorithm.policy_loss")
    POLICY_LOSSES.entry("ppo_clip").check_params({"clip_high": 0.3}, where="algorithm.policy_loss")


# ---- 1.3 DAPO ----------------------------------------------------------------------------------


def test_overlong_penalty():
    got = overlong_penalty(T([16000, 16384, 18432, 20480]), max_len=20480, cache_len=4096)
    assert close(got, [0.0, 0.0, -0.5, -1.0])
    with pytest.raises(ValueError):
        overlong_penalty(T([1]), max_len=10, cache_len=20)


def test_dynamic_sampling_filter():
    r = T([[1.0, 1, 1, 1], [0.0, 0, 0, 0], [1.0, 0, 0, 0]])
    assert informative_groups(r).tolist() == [False, False, True]


def test_objectives_import_is_light():
    code = "import sys, rlvr_lab.objectives; bad=[m for m in ('transformers','vllm','ray','verl') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
