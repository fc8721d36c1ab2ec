"""Clip-Cov and KL-Cov (arXiv 2505.22617): the spec's section 7.4 example, table row 22, errata 5."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.entropy_mech import (
    clip_cov_override,
    clip_cov_select,
    kl_cov_override,
    kl_cov_select,
    selection_count,
    token_covariance,
)
from rlvr_lab.objectives.policy_losses import ppo_clip_loss
from rlvr_lab.objectives.registry import TOKEN_LOSS_OVERRIDES
from rlvr_lab.presets import preset_path

torch.set_num_threads(1)
T = torch.tensor
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# spec 7.4 example, plus a padded position whose values must not enter the means
ADV = T([[1.0, 1.0, -1.0, -1.0, 7.0]])
LOGP = T([[-0.1, -2.0, -0.2, -3.0, -9.0]])
MASK = T([[True, True, True, True, False]])
COV = [1.225, -0.675, -1.125, 1.675, 0.0]


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def test_covariance_example_ignores_padding():
    assert close(token_covariance(ADV, LOGP, MASK), [COV], 1e-6)


def test_selection_count_is_exact_in_float64():
    assert selection_count(T(200), 0.01).item() == 2
    assert selection_count(T(4), 2e-4).item() == 1  # max(1, floor(0.0008))
    assert selection_count(T(0), 0.5).item() == 1


# ---- Clip-Cov ------------------------------------------------------------------------------------


def clip_cov(seed, *, ratio=2e-4, old=None, ctx=None, clip=0.2):
    logp = LOGP.clone().requires_grad_()
    old = LOGP.clone() if old is None else old
    base, _ = ppo_clip_loss(logp, old, ADV, MASK, clip_low=clip, clip_high=clip)
    out, m = clip_cov_override(base, logp, old, ADV, MASK, ctx, ratio=ratio, lb=1.0, ub=5.0, seed=seed)
    return logp, base, out, m


def test_clip_cov_zeroes_one_random_candidate_value_and_gradient():
    seen = set()
    for seed in range(30):
        logp, base, out, m = clip_cov(seed)
        zeroed = (out[0, :4] == 0).nonzero().flatten().tolist()
        assert len(zeroed) == 1 and zeroed[0] in (0, 3)  # candidates: cov in (1, 5)
        seen.add(zeroed[0])
        assert m["clip_cov/num_candidates"].item() == 2 and m["clip_cov/num_zeroed"].item() == 1
        (out * MASK).sum().backward()
        expected_grad = -ADV.clone()  # ratio 1 everywhere: ∂(−A·ratio)/∂logp = −A
        expected_grad[0, zeroed[0]] = 0.0
        expected_grad[0, 4] = 0.0
        assert close(logp.grad, expected_grad)
    assert seen == {0, 3}  # both candidates get drawn across seeds


def test_clip_cov_loss_values_when_every_candidate_is_taken():
    _, base, out, m = clip_cov(0, ratio=0.5)  # max(1, floor(0.5·4)) = 2
    assert close(base[0, :4], [-1.0, -1.0, 1.0, 1.0])
    assert close(out[0, :4], [0.0, -1.0, 1.0, 0.0])
    assert close(m["clip_cov/zeroed_frac"], 0.5)


def test_clip_cov_selection_is_seeded():
    picks = [clip_cov(7)[2][0, :4].tolist() for _ in range(3)]
    assert picks[0] == picks[1] == picks[2]
    gen_a = StepContext(extras={"generator": torch.Generator().manual_seed(11)})
    gen_b = StepContext(extras={"generator": torch.Generator().manual_seed(11)})
    assert torch.equal(clip_cov(None, ctx=gen_a)[2], clip_cov(None, ctx=gen_b)[2])


def test_clip_cov_skips_tokens_the_base_clip_already_clipped():
    old = LOGP.clone()
    old[0, 0] = -0.1 - math.log(1.4)  # token 0: A=+1, ratio 1.4 -> clipped at 1.2
    for seed in range(10):
        _, base, out, m = clip_cov(seed, old=old)
        assert close(base[0, 0], -1.2)
        assert m["clip_cov/num_candidates"].item() == 1
        assert close(out[0, :4], [-1.2, -1.0, 1.0, 0.0])  # always token 3


def test_clip_cov_vectorised_choice_matches_a_plain_loop():
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        cov = torch.randn(3, 8, generator=g) * 3
        eligible = torch.rand(3, 8, generator=g) > 0.3
        keys = torch.rand(3, 8, generator=g)
        ratio = float(torch.rand((), generator=g)) * 0.3
        got = clip_cov_select(cov, eligible, keys, num_valid=T(24), ratio=ratio, lb=0.5, ub=4.0)
        cands = [(float(keys[i, j]), i, j) for i in range(3) for j in range(8)
                 if eligible[i, j] and 0.5 < cov[i, j] < 4.0]
        cands.sort()
        n = max(1, math.floor(ratio * 24))
        expected = torch.zeros(3, 8, dtype=torch.bool)
        for _, i, j in cands[:n]:
            expected[i, j] = True
        assert torch.equal(got, expected)


# ---- KL-Cov --------------------------------------------------------------------------------------


def test_kl_cov_top1_and_unclipped_elsewhere():
    logp = LOGP.clone().requires_grad_()
    old = LOGP.clone()
    old[0, 0] = -0.1 - math.log(1.4)  # token 0: A=+1, ratio 1.4
    old[0, 3] = -3.1  # token 3: A=-1, ratio e^0.1, |logp - old| = 0.1
    base, _ = ppo_clip_loss(logp, old, ADV, MASK, clip_low=0.2, clip_high=0.2)
    assert close(base[0, 0], -1.2)
    out, m = kl_cov_override(base, logp, old, ADV, MASK, frac=2e-3, coef=1.0)
    assert kl_cov_select(token_covariance(ADV, LOGP, MASK), MASK, frac=2e-3).nonzero().tolist() == [[0, 3]]
    # errata 5: unselected tokens get the unclipped surrogate (A=+1, ratio 1.4 -> -1.4)
    assert close(out[0, :4], [-1.4, -1.0, 1.0, math.exp(0.1) + 0.1])
    assert close(out[0, 3], 1.205171)
    (out * MASK).sum().backward()
    assert close(logp.grad[0, :4], [-1.4, -1.0, 1.0, math.exp(0.1) + 1.0])
    assert m["kl_cov/num_selected"].item() == 1


def test_kl_cov_fraction_and_vectorised_topk():
    sel = kl_cov_select(token_covariance(ADV, LOGP, MASK), MASK, frac=0.5)  # 2 tokens
    assert sel.nonzero().tolist() == [[0, 0], [0, 3]]
    g = torch.Generator().manual_seed(2)
    for _ in range(10):
        cov = torch.randn(4, 6, generator=g)
        mask = torch.rand(4, 6, generator=g) > 0.4
        got = kl_cov_select(cov, mask, frac=0.25)
        k = max(1, math.floor(0.25 * int(mask.sum())))
        top = cov[mask].topk(k).values.min()
        assert int(got.sum()) == k and bool((cov[got] >= top).all()) and not (got & ~mask).any()


def test_bad_params_and_presets():
    logp = LOGP.clone()
    with pytest.raises(ValueError, match="lb < ub"):
        clip_cov_override(logp, logp, logp, ADV, MASK, lb=5.0, ub=1.0)
    with pytest.raises(ValueError, match="frac"):
        kl_cov_override(logp, logp, logp, ADV, MASK, frac=2.0)
    presets = (("clip_cov", {"ratio": 2e-4, "lb": 1.0, "ub": 5.0}), ("kl_cov", {"frac": 2e-3, "coef": 1.0}))
    for name, params in presets:
        algo = yaml.safe_load(preset_path(name).read_text())["algorithm"]
        (override,) = algo["token_overrides"]
        assert override == {"name": name, "params": params}
        TOKEN_LOSS_OVERRIDES.entry(name).check_params(override["params"], where=f"{name}.yaml")


def test_clip_cov_seed_is_honoured_over_the_trainers_generator():
    """An explicit seed wins over ctx.extras["generator"] (the trainer always sets one)."""
    def zeroed(seed, gen_seed, step=0):
        ctx = StepContext(global_step=step, extras={"generator": torch.Generator().manual_seed(gen_seed)})
        _, _, out, _ = clip_cov(seed, ctx=ctx)
        return (out == 0).nonzero().flatten().tolist()

    draws = {tuple(zeroed(seed, gen_seed=0)) for seed in range(30)}
    assert len(draws) > 1  # the seed decides, not the trainer's generator (which is the same every time)
    assert zeroed(7, gen_seed=0) == zeroed(7, gen_seed=99)  # ... and the trainer's generator does not
    assert len({tuple(zeroed(None, gen_seed=g)) for g in range(30)}) > 1  # without a seed the generator draws
