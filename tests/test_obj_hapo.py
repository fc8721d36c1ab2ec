"""HAPO (arXiv 2509.16591): the spec's section 8 example and table rows 23-25."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.hapo import (
    adaptive_clip_ranges,
    entropy_stats,
    hapo_loss,
    hapo_temperature,
    hapo_tlga_advantages,
    logits_entropy,
    normalized_entropy,
    redistribute_advantages,
)
from rlvr_lab.objectives.policy_losses import ppo_clip_loss
from rlvr_lab.objectives.registry import ADVANTAGE_ESTIMATORS, POLICY_LOSSES
from rlvr_lab.presets import preset_path

torch.set_num_threads(1)
T = torch.tensor
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

H = T([0.05, 0.2, 0.5, 1.0, 2.0])
HHAT_INTENDED = [-1.0, -0.537244, -0.231378, 0.0, 1.0]
HHAT_CODE = [1.0, 0.537244, 0.231378, 0.0, 1.0]


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ---- 8.1 ĥ ------------------------------------------------------------------------------------------


def test_entropy_stats_and_hhat_intended_and_code():
    stats = entropy_stats(H, None)
    assert close(stats["pivot"], 0.0)  # sorted(log H)[round(0.8·4) = 3] = log 1
    assert close(stats["std"], 1.582758, 1e-6)
    assert close((torch.log(H) - stats["pivot"]) / stats["std"], [-1.892730, -1.016857, -0.437936, 0.0, 0.437936])
    assert close(normalized_entropy(H, stats), HHAT_INTENDED, 1e-6)
    code = entropy_stats(H, None, code_compat_sign=True)
    assert close(normalized_entropy(H, code), HHAT_CODE, 1e-6)
    assert code["scale_neg"].item() < 0 < stats["scale_neg"].item()


def test_pivot_uses_half_to_even_rounding_and_masked_tokens_are_ignored():
    # N = 6, q = 0.5: round(2.5) = 2 (Python), not 3
    e = T([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert close(entropy_stats(e.exp(), None, entropy_pivot=0.5)["pivot"], 3.0)
    padded = torch.cat([H, T([50.0, 1e-9])]).view(1, 7)
    mask = T([[True] * 5 + [False, False]])
    stats = entropy_stats(padded, mask)
    assert close(normalized_entropy(padded, stats)[0, :5], HHAT_INTENDED, 1e-6)
    empty = entropy_stats(padded, torch.zeros_like(mask))
    assert torch.equal(normalized_entropy(padded, empty), torch.zeros(1, 7))


# ---- 8.3 / 8.4 ------------------------------------------------------------------------------------


def test_adaptive_clip_rows():
    lo, hi = adaptive_clip_ranges(T(HHAT_INTENDED), clip_low=0.2, clip_high=0.2, clip_alpha=1.0)
    assert close(lo, [0.4, 0.307449, 0.246276, 0.2, 0.2], 1e-6)
    assert close(hi, [0.2, 0.2, 0.2, 0.2, 0.4], 1e-6)
    lo, hi = adaptive_clip_ranges(T(HHAT_CODE), clip_low=0.2, clip_high=0.2, clip_alpha=1.0)
    assert close(lo, [0.2] * 5, 1e-6)
    assert close(hi, [0.4, 0.307449, 0.246276, 0.2, 0.4], 1e-6)


def test_redistribution_example():
    hhat = T(HHAT_INTENDED)
    lo, hi = adaptive_clip_ranges(hhat, clip_low=0.2, clip_high=0.2, clip_alpha=1.0)
    ratio = T([1.0, 1.3, 1.0, 1.3, 1.0])  # neutral = [T, F, T, F, T]
    got = redistribute_advantages(torch.ones(5), hhat, ratio, lo, hi, adv_beta=1.0)
    assert close(got, [0.0, 1.0, 0.768622, 1.0, 1.0], 1e-6)


def hapo_inputs(ratio):
    logp = torch.zeros(1, 5, requires_grad=True)
    old = -torch.log(T([ratio]))
    return logp, old, torch.ones(1, 5), torch.ones(1, 5, dtype=torch.bool), StepContext(entropy=H.view(1, 5))


def test_hapo_loss_values_and_gradient():
    logp, old, adv, mask, ctx = hapo_inputs([1.0, 1.3, 1.0, 1.3, 1.0])
    loss, m = hapo_loss(logp, old, adv, mask, ctx)
    # A' = [0, 1, .768622, 1, 1]; ε_high' = [.2, .2, .2, .2, .4]: 1.3 clips at 1.2 on tokens 1 and 3
    assert close(loss, [[0.0, -1.2, -0.768622, -1.2, -1.0]], 1e-6)
    loss.sum().backward()
    assert close(logp.grad, [[0.0, 0.0, -0.768622, 0.0, -1.0]], 1e-6)
    assert close(m["grpo/pg_clipfrac"], 0.4) and m["hapo/pg_clipfrac_count"].item() == 2
    assert close(m["hapo/adv_shift_abs_mean"], (1.0 + 0.231378) / 5, 1e-6)
    assert close(m["hapo/eps_low_mean"], (0.4 + 0.307449 + 0.246276 + 0.2 + 0.2) / 5, 1e-6)


def test_hapo_without_adaptation_is_ppo_clip_with_dual_clip():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(3, 6, generator=g) * 0.3
    old = logp + torch.randn(3, 6, generator=g) * 0.5
    adv = torch.randn(3, 6, generator=g) * 2
    mask = torch.rand(3, 6, generator=g) > 0.2
    ctx = StepContext(entropy=torch.rand(3, 6, generator=g) * 3)
    got, m = hapo_loss(logp, old, adv, mask, ctx, clip_alpha=0.0, adv_beta=0.0, clip_ratio_c=3.0)
    ref, ref_m = ppo_clip_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2, clip_ratio_c=3.0)
    assert torch.equal(got, ref)
    assert torch.equal(m["grpo/pg_clipfrac"], ref_m["grpo/pg_clipfrac"])
    assert torch.equal(m["grpo/pg_clipfrac_lower"], ref_m["grpo/pg_clipfrac_lower"])


def test_hapo_declares_and_needs_entropy():
    assert POLICY_LOSSES.entry("hapo").needs == ("entropy",)
    logp, old, adv, mask, _ = hapo_inputs([1.0] * 5)
    with pytest.raises(ValueError, match="ctx.entropy"):
        hapo_loss(logp, old, adv, mask, StepContext())


# ---- 8.2 TLGA -----------------------------------------------------------------------------------------


def test_tlga_example_and_no_std():
    ctx = StepContext(response_lengths=T([2, 4, 2, 8]))
    r = T([[1.0, 0.0, 0.0, 1.0]])
    assert close(hapo_tlga_advantages(r, ctx), [[0.774595, -1.290992, -1.290992, 0.774595]], 1e-6)
    assert close(hapo_tlga_advantages(r, ctx, std_normalize=False), [[0.375, -0.625, -0.625, 0.375]])
    assert ADVANTAGE_ESTIMATORS.get("hapo_tlga") is hapo_tlga_advantages


def test_tlga_falls_back_to_grpo_per_group():
    r = T([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    lengths = T([1, 100, 100, 100, 2, 4, 2, 8, 3, 3, 3, 3])
    got = hapo_tlga_advantages(r, StepContext(response_lengths=lengths))
    # group 0: μ = 1/301, the correct answer gets |A| ≈ 17 >= 5 -> GRPO
    assert close(got[0], [1.499997, -0.499999, -0.499999, -0.499999], 1e-6)
    assert close(got[1], [0.774595, -1.290992, -1.290992, 0.774595], 1e-6)
    assert torch.equal(got[2], torch.zeros(4))
    empty = hapo_tlga_advantages(T([[1.0, 0.0]]), StepContext(response_lengths=T([0, 0])))
    assert close(empty, [[0.707106, -0.707106]], 1e-6)  # no tokens: GRPO
    with pytest.raises(ValueError, match="response_lengths"):
        hapo_tlga_advantages(r, StepContext())


def test_tlga_padded_position_quirk_behind_flag():
    # μ = 1, σ = 0.0707: the valid |A| are 1.41, but the pad value |0 − μ|/σ = 14 trips the release's check
    r = T([[1.0, 1.1, 0.9, 1.0]])
    lengths = T([2, 2, 2, 2])
    clean = hapo_tlga_advantages(r, StepContext(response_lengths=lengths))
    assert close(clean, [[0.0, 1.414194, -1.414194, 0.0]], 1e-5)
    quirk = StepContext(response_lengths=lengths, extras={"padded_length": 3})
    grpo = [[0.0, 1.224733, -1.224733, 0.0]]  # unbiased std 0.081650
    assert close(hapo_tlga_advantages(r, quirk, code_compat_pad_check=True), grpo, 1e-5)
    no_pad = StepContext(response_lengths=lengths, extras={"padded_length": 2})
    assert close(hapo_tlga_advantages(r, no_pad, code_compat_pad_check=True), clean)


# ---- 8.5 adaptive temperature ----------------------------------------------------------------------------


def test_temperature_rows_and_first_step():
    assert close(hapo_temperature(H, entropy_stats(H, None)), [0.95, 0.973138, 0.988431, 1.0, 1.05], 1e-6)
    code = entropy_stats(H, None, code_compat_sign=True)
    assert close(hapo_temperature(H, code), [1.05, 1.026862, 1.011569, 1.0, 1.05], 1e-6)
    # new entropies outside the previous step's range are clamped to ĥ in [-1, 1]
    outside = hapo_temperature(T([1e-4, 50.0]), entropy_stats(H, None), base_temperature=0.8, tau=0.1)
    assert close(outside, [0.72, 0.88])
    assert torch.equal(hapo_temperature(H, None, base_temperature=0.7), torch.full((5,), 0.7))


def test_logits_entropy():
    p = T([[0.25, 0.4, 0.2, 0.15], [1.0, 0.0, 0.0, 0.0]])
    got = logits_entropy(p.clamp_min(1e-30).log())
    expected = -(p[0] * p[0].log()).sum()
    assert close(got, [expected, 0.0], 1e-6)
    assert math.isclose(float(logits_entropy(torch.zeros(1, 8))), math.log(8), rel_tol=1e-6)


def test_preset_params_match_the_signatures():
    algo = yaml.safe_load(preset_path("hapo").read_text())["algorithm"]
    ADVANTAGE_ESTIMATORS.entry(algo["advantage"]["name"]).check_params(algo["advantage"]["params"], where="hapo.yaml")
    POLICY_LOSSES.entry(algo["policy_loss"]["name"]).check_params(algo["policy_loss"]["params"], where="hapo.yaml")
    assert algo["policy_loss"]["params"]["code_compat_sign"] is False
    assert algo["policy_loss"]["params"]["clip_ratio_c"] == 10.0
