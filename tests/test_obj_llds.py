"""LLDS (spec section 2, arXiv 2512.04220): hand-computed values of the 2.2 worked example, the gate
fast path against a plain loop, LLDS-MA, micro-batch additivity and the gradient direction on a bandit."""

from pathlib import Path

import pytest
import torch

from rlvr_lab.objectives import AUX_LOSSES, StepContext
from rlvr_lab.objectives.llds import (
    action_ids_from_mask,
    llds_answer_coef,
    llds_loss,
    llds_num_preserving,
)

torch.set_num_threads(1)
T = torch.tensor
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def spec_example(requires_grad=False):
    """Spec 2.2: response 0 (A >= 0) has positions [a, a, a, obs, obs, b, b] with Δ = old - new =
    [0.2, -0.1, 0.05, ·, ·, -0.3, 0.1]; response 1 (A < 0) has 5 policy tokens. The observation
    and negative-response displacements are large and positive, so any leak shows in the value."""
    policy = torch.zeros(2, 7, requires_grad=requires_grad)
    old = T([[0.2, -0.1, 0.05, 5.0, 5.0, -0.3, 0.1], [0.5, 0.5, 0.5, 0.5, 0.5, 9.0, 9.0]])
    mask = T([[1, 1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 0, 0]]).bool()
    adv = T([[1.0] * 7, [-1.0] * 7]) * mask
    actions = T([[1, 1, 1, 0, 0, 2, 2], [1, 1, 1, 1, 1, 0, 0]])
    return policy, old, adv, mask, StepContext(action_ids=actions)


@pytest.mark.parametrize("gate, numerator", [("action", 0.25), ("response", 0.0), ("token", 0.35)])
def test_spec_numerators_and_both_normalisations(gate, numerator):
    policy, old, adv, mask, ctx = spec_example()
    # code norm with λ = 1 over a single "token" gives the bare numerator
    bare = StepContext(action_ids=ctx.action_ids, num_tokens=1.0)
    raw, _ = llds_loss(policy, old, adv, mask, bare, lam=1.0, gate=gate)
    assert close(raw, numerator)
    # paper norm: |Y_pre| = 1 response with 5 policy tokens: 0.05 / 0 / 0.07
    paper, _ = llds_loss(policy, old, adv, mask, ctx, lam=1.0, gate=gate, norm="paper")
    assert close(paper, numerator / 5)


def test_spec_lambda_values_code_is_default():
    policy, old, adv, mask, ctx = spec_example()
    code, metrics = llds_loss(policy, old, adv, mask, ctx)  # defaults: λ=0.2, action gate, code norm
    assert close(code, 0.005)  # 0.2 · 0.25 / 10 policy tokens in the micro-batch
    assert close(metrics["llds/loss"], 0.005)
    paper, _ = llds_loss(policy, old, adv, mask, ctx, norm="paper")
    assert close(paper, 0.01)  # errata 14: the paper form is 2x larger on this example
    assert close(metrics["llds/frac_gated"], 0.5)  # action a on, action b off
    assert close(metrics["llds/mean_reduce_chunk"], 1.0)
    assert close(metrics["llds/frac_preserving"], 0.5)
    assert close(metrics["llds/mean_pos_displacement"], 0.35 / 5)
    assert all(not v.requires_grad for v in metrics.values())


def test_spec_gradient_action_gate_code_norm():
    policy, old, adv, mask, ctx = spec_example(requires_grad=True)
    loss, _ = llds_loss(policy, old, adv, mask, ctx)
    loss.backward()
    expected = torch.zeros(2, 7)
    expected[0, 0] = expected[0, 2] = -0.02  # -λ/10 on the displaced tokens of the gated action
    assert close(policy.grad, expected)


def test_without_action_ids_the_response_is_one_action():
    policy, old, adv, mask, _ = spec_example()
    loss, _ = llds_loss(policy, old, adv, mask, None, lam=1.0)
    assert close(loss, 0.0)  # the response sum is -0.05, so the single gate is off
    # splitting at the observation tokens recovers the per-action gate
    derived = action_ids_from_mask(mask)
    assert torch.equal(derived, T([[1, 1, 1, 0, 0, 2, 2], [1, 1, 1, 1, 1, 0, 0]]))
    loss, _ = llds_loss(policy, old, adv, mask, StepContext(action_ids=derived, num_tokens=1.0), lam=1.0)
    assert close(loss, 0.25)


def test_zero_advantage_responses_are_preserved_unless_strict():
    policy, old, adv, mask, ctx = spec_example()
    adv = adv.clone()
    adv[0] = 0.0  # an all-equal group: A = 0 ("untrained responses") is regularised by default
    loss, _ = llds_loss(policy, old, adv, mask, ctx, lam=1.0, norm="paper")
    assert close(loss, 0.05)
    strict, _ = llds_loss(policy, old, adv, mask, ctx, lam=1.0, norm="paper", preserve="adv>0")
    assert close(strict, 0.0)


def test_identically_zero_on_policy_and_helper():
    policy, _, adv, mask, ctx = spec_example(requires_grad=True)
    loss, _ = llds_loss(policy, policy.detach().clone(), adv, mask, ctx)
    loss.backward()
    assert loss.item() == 0.0 and policy.grad.abs().sum().item() == 0.0
    assert "identically 0" in AUX_LOSSES.entry("llds").inert_without_off_policy({})


def _loop_action_gate(delta, mask, adv, actions):
    """Plain-loop reference of the A-gate numerator: Σ over (row, action) of gate · Σ max(0, Δ)."""
    total = 0.0
    for i in range(delta.shape[0]):
        ids = {int(a) for a, m, A in zip(actions[i], mask[i], adv[i]) if m and A >= 0 and a > 0}
        for a in ids:
            toks = [t for t in range(delta.shape[1]) if mask[i, t] and adv[i, t] >= 0 and actions[i, t] == a]
            if sum(float(delta[i, t]) for t in toks) > 0:
                total += sum(max(float(delta[i, t]), 0.0) for t in toks)
    return total


def test_vectorised_action_gate_matches_plain_loop():
    g = torch.Generator().manual_seed(0)
    B, Tn = 6, 12
    for _ in range(5):
        mask = torch.rand(B, Tn, generator=g) > 0.3
        adv = torch.where(torch.rand(B, 1, generator=g) > 0.4, 1.0, -1.0).expand(B, Tn) * mask
        actions = action_ids_from_mask(mask)
        policy = torch.randn(B, Tn, generator=g) * 0.1
        old = torch.randn(B, Tn, generator=g) * 0.1
        loss, _ = llds_loss(policy, old, adv, mask, StepContext(action_ids=actions, num_tokens=1.0), lam=1.0)
        assert close(loss, _loop_action_gate(old - policy, mask, adv, actions), 1e-5)


def test_micro_batches_add_up_to_the_mini_batch_loss():
    g = torch.Generator().manual_seed(1)
    B, Tn = 8, 6
    mask = torch.rand(B, Tn, generator=g) > 0.2
    adv = torch.where(torch.rand(B, 1, generator=g) > 0.5, 1.0, -1.0).expand(B, Tn) * mask
    policy, old = torch.randn(B, Tn, generator=g) * 0.2, torch.randn(B, Tn, generator=g) * 0.2
    ctx_full = StepContext(action_ids=action_ids_from_mask(mask))
    n_tok = float(mask.sum())
    n_pre = llds_num_preserving(adv, mask)
    for norm, extras in (("code", {}), ("paper", {"llds_num_preserving": n_pre})):
        full, _ = llds_loss(policy, old, adv, mask, ctx_full, norm=norm)
        parts = 0.0
        for lo in (0, 3, 5):
            hi = {0: 3, 3: 5, 5: 8}[lo]
            ctx = StepContext(action_ids=ctx_full.action_ids[lo:hi], num_tokens=n_tok, extras=extras)
            part, _ = llds_loss(policy[lo:hi], old[lo:hi], adv[lo:hi], mask[lo:hi], ctx, norm=norm)
            parts = parts + part
        assert close(parts, full, 1e-6)


def test_llds_ma_answer_span_ramp():
    policy, old, adv, mask, ctx = spec_example()
    answer = torch.zeros(2, 7, dtype=torch.bool)
    answer[0, 2] = True  # the Δ = 0.05 token of the gated action
    for v_mean, beta in ((0.0, 0.0), (1.0, 0.5), (2.0, 1.0), (3.0, 1.0)):
        c = StepContext(action_ids=ctx.action_ids, answer_mask=answer, valid_searches=T([v_mean, v_mean]))
        loss, m = llds_loss(policy, old, adv, mask, c, mask_answer=True)
        assert close(loss, 0.2 * (0.2 + beta * 0.05) / 10)  # paper ramp β_ans = min(V_s/2, 1)
        assert close(m["llds/answer_coef"], 0.2 * beta)
    # a step-level mean from the trainer wins over the micro-batch's own valid_searches
    c = StepContext(action_ids=ctx.action_ids, answer_mask=answer, valid_searches=T([0.0, 0.0]),
                    extras={"llds_valid_search_mean": 1.0})
    loss, _ = llds_loss(policy, old, adv, mask, c, mask_answer=True)
    assert close(loss, 0.0045)
    # official-code weights: λ_ans·max(V-1, 0) capped at λ, or the fixed λ_ans
    assert close(llds_answer_coef(1.5, lam=0.2, answer_weight="code_adaptive", lam_ans=0.2), 0.1)
    assert close(llds_answer_coef(5.0, lam=0.2, answer_weight="code_adaptive", lam_ans=0.2), 0.2)
    assert close(llds_answer_coef(0.0, lam=0.2, answer_weight="code_fixed", lam_ans=0.1), 0.1)
    with pytest.raises(ValueError, match="answer_mask"):
        llds_loss(policy, old, adv, mask, ctx, mask_answer=True)
    with pytest.raises(ValueError, match="valid searches"):
        llds_loss(policy, old, adv, mask, StepContext(answer_mask=answer), mask_answer=True)


def test_bad_names_fail_loudly():
    policy, old, adv, mask, ctx = spec_example()
    for kw, word in (({"gate": "chunk"}, "action"), ({"norm": "verl"}, "paper"), ({"preserve": "A>0"}, "adv>=0")):
        with pytest.raises(ValueError, match=word):
            llds_loss(policy, old, adv, mask, ctx, **kw)


def test_bandit_gradient_restores_a_displaced_preserved_response():
    """Softmax bandit over 3 arms; each response repeats one arm twice. Response 0 (A >= 0, arm 0)
    lost likelihood since the snapshot (0.6 -> 0.4); response 1 (A >= 0, arm 1) gained (0.2 -> 0.4);
    response 2 (A < 0, arm 2) lost likelihood but is not preserved."""
    theta = torch.log(T([0.4, 0.4, 0.2])).requires_grad_(True)
    arms = T([[0, 0], [1, 1], [2, 2]])
    old = torch.log(T([[0.6, 0.6], [0.2, 0.2], [0.5, 0.5]]))
    adv = T([[1.0, 1.0], [0.0, 0.0], [-1.0, -1.0]])
    mask = torch.ones(3, 2, dtype=torch.bool)

    def policy_logprobs(th):
        return torch.log_softmax(th, -1)[arms]  # (3, 2)

    lp = policy_logprobs(theta)
    lp.retain_grad()
    loss, _ = llds_loss(lp, old, adv, mask)
    loss.backward()
    assert (lp.grad[0] < 0).all()  # minimising pushes the displaced preserved tokens up
    assert lp.grad[1].abs().sum().item() == 0.0  # likelihood rose: no LLDS gradient
    assert lp.grad[2].abs().sum().item() == 0.0  # negative advantage: not in the preserving set
    with torch.no_grad():
        stepped = theta - 1.0 * theta.grad
        before, after = policy_logprobs(theta)[0, 0], policy_logprobs(stepped)[0, 0]
        new_loss, _ = llds_loss(policy_logprobs(stepped), old, adv, mask)
    assert after > before
    assert new_loss < loss


def test_presets_validate():
    from rlvr_lab.config import inert_methods, load_config

    cfg = load_config(CONFIGS / "demo.yaml", presets=["llds"])
    (aux,) = cfg.algorithm.aux_losses
    assert aux.name == "llds" and aux.params["lam"] == 0.2 and aux.params["norm"] == "code"
    assert cfg.train.minibatches > 1 and inert_methods(cfg) == []
    one_step = load_config(CONFIGS / "demo.yaml", presets=["llds"],
                           overrides=["train.minibatches=1", "train.allow_inert_methods=true"])
    assert any("'llds'" in reason for reason in inert_methods(one_step))
    ma = load_config(CONFIGS / "demo.yaml", presets=["llds_ma"]).algorithm.aux_losses[0]
    assert ma.params["mask_answer"] is True and ma.params["answer_weight"] == "paper"
