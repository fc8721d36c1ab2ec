"""Negative-sample methods (spec section 6): GRPO-N (6.1) and PSR / NSR / W-REINFORCE (6.2), with the
spec's example r = [1, 0, 0, 1] (table row 19) and the subsetting filters."""

from pathlib import Path

import pytest
import torch

from rlvr_lab.objectives import (
    ADVANTAGE_ESTIMATORS,
    TOKEN_ADVANTAGE_MODIFIERS,
    StepContext,
    aggregate,
    broadcast_to_tokens,
    group_advantages,
)
from rlvr_lab.objectives.negative import (
    grpo_n_advantages,
    grpo_n_keep,
    nsr_advantages,
    nsr_keep,
    outcome_metrics,
    psr_advantages,
    psr_keep,
    w_reinforce_advantages,
)

torch.set_num_threads(1)
T = torch.tensor
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
R = T([[1.0, 0.0, 0.0, 1.0]])


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def test_registered_names_and_filters():
    for name in ("psr", "nsr", "w_reinforce"):
        assert name in ADVANTAGE_ESTIMATORS
    assert ADVANTAGE_ESTIMATORS.entry("psr").meta["sample_filter"] is psr_keep
    assert ADVANTAGE_ESTIMATORS.entry("nsr").meta["sample_filter"] is nsr_keep
    assert "sample_filter" not in ADVANTAGE_ESTIMATORS.entry("w_reinforce").meta
    assert TOKEN_ADVANTAGE_MODIFIERS.entry("grpo_n").meta["sample_filter"] is grpo_n_keep


# ---- 6.2 ----------------------------------------------------------------------------------------------


def test_w_reinforce_spec_values():
    assert close(w_reinforce_advantages(R), [[0.1, -1.0, -1.0, 0.1]])
    # no baseline: all-correct and all-wrong groups still give a gradient
    assert close(w_reinforce_advantages(T([[1.0, 1.0], [0.0, 0.0]])), [[0.1, 0.1], [-1.0, -1.0]])
    assert close(w_reinforce_advantages(R, lambda_pos=0.5, neg_reward=-2.0), [[0.5, -2.0, -2.0, 0.5]])
    assert close(w_reinforce_advantages(R, baseline="mean"), [[0.55, -0.55, -0.55, 0.55]])
    with pytest.raises(ValueError, match="none"):
        w_reinforce_advantages(R, baseline="rloo")


def test_psr_and_nsr_values_and_subsets():
    assert close(psr_advantages(R), [[1.0, 0.0, 0.0, 1.0]])
    assert torch.equal(psr_keep(R), T([[True, False, False, True]]))
    assert close(nsr_advantages(R), [[0.0, -1.0, -1.0, 0.0]])
    assert torch.equal(nsr_keep(R), T([[False, True, True, False]]))
    # without subsetting every response stays (the excluded ones with A = 0)
    assert psr_keep(R, subset=False).all() and nsr_keep(R, subset=False).all()
    # W-REINFORCE = λ·PSR + NSR advantage by advantage
    assert close(0.1 * psr_advantages(R) + nsr_advantages(R), w_reinforce_advantages(R))


def test_subsetting_changes_the_token_mean_denominator():
    # the same per-token loss on all four responses of 2 tokens; NSR keeps the two incorrect ones
    loss, mask = torch.ones(4, 2), torch.ones(4, 2, dtype=torch.bool)
    adv = broadcast_to_tokens(nsr_advantages(R).view(-1), mask)
    pg = -adv * loss
    kept = nsr_keep(R).view(-1)
    assert close(aggregate(pg, mask, "token-mean"), 0.5)  # zero-advantage rows in the denominator
    assert close(aggregate(pg[kept], mask[kept], "token-mean"), 1.0)  # removed, as in the reference code


def test_non_binary_rewards_use_the_task_verdict():
    shaped = T([[1.1, -0.2, 0.0, 0.9]])
    ctx = StepContext(correct=T([True, False, False, False]))
    assert close(w_reinforce_advantages(shaped, ctx), [[0.1, -1.0, -1.0, -1.0]])
    assert close(w_reinforce_advantages(shaped), [[0.1, -1.0, -1.0, 0.1]])  # fallback: rewards > 0
    assert torch.equal(nsr_keep(shaped, ctx), T([[False, True, True, True]]))


def test_outcome_metrics():
    r = T([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    m = outcome_metrics(r, keep=psr_keep(r), prefix="psr")
    assert [m[f"psr/{k}"].item() for k in ("correct_count", "incorrect_count", "groups_all_correct",
                                             "groups_all_wrong", "effective_examples")] == [6, 6, 1, 1, 6]


# ---- 6.1 ----------------------------------------------------------------------------------------------


def test_grpo_n_spec_values():
    seq = group_advantages(R)  # [0.866024, -0.866024, -0.866024, 0.866024]
    mask = T([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]]).bool()
    adv = broadcast_to_tokens(seq.view(-1), mask)
    out, metrics = grpo_n_advantages(adv, mask, StepContext())
    assert close(out[:, 0], [0.0, -0.866024, -0.866024, 0.0])
    assert close(out, adv.clamp(max=0))
    assert close(metrics["grpo_n/frac_masked_tokens"], 4 / 8)
    same, _ = grpo_n_advantages(adv, mask, StepContext(), mask_positive=False)
    assert torch.equal(same, adv)


def test_grpo_n_denominator_flag():
    seq = group_advantages(T([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))  # second group: A = 0
    mask = torch.ones(8, 2, dtype=torch.bool)
    adv = broadcast_to_tokens(seq.view(-1), mask)
    # default: the masked positive responses stay (their tokens count in the denominator)
    assert grpo_n_keep(adv, mask).all()
    keep = grpo_n_keep(adv, mask, drop_positive_from_denominator=True)
    assert torch.equal(keep, T([False, True, True, False, True, True, True, True]))  # A = 0 rows stay
    out, _ = grpo_n_advantages(adv, mask, None, drop_positive_from_denominator=True)
    pg = -out  # ratio 1
    assert close(aggregate(pg, mask, "token-mean"), 2 * 2 * 0.866024 / 16)
    assert close(aggregate(pg[keep], mask[keep], "token-mean"), 2 * 2 * 0.866024 / 12)


def test_presets_validate():
    from rlvr_lab.config import load_config

    def algo(preset):
        return load_config(CONFIGS / "demo.yaml", presets=[preset]).algorithm

    w = algo("w_reinforce").advantage
    assert w.name == "w_reinforce" and (w.params["lambda_pos"], w.params["neg_reward"]) == (0.1, -1.0)
    assert algo("nsr").advantage.name == "nsr" and algo("psr").advantage.name == "psr"
    (mod,) = algo("grpo_n").token_modifiers
    assert mod.name == "grpo_n" and mod.params["drop_positive_from_denominator"] is False
