"""rlvr-lab's advantage estimators (and token-advantage modifiers) as verl estimators (``algorithm.adv_estimator``).

verl 0.9 calls a registered estimator in the driver, in ``ray_trainer.compute_advantage``, as
``fn(token_level_rewards=(B, L), response_mask=(B, L), config=<algorithm config>, index=<uid per row>)``
(plus ``reward_baselines`` when present, unused here) and stores the returned ``(advantages, returns)``.

The adapter does what the native ``Trainer.advantages`` does: sequence rewards (the token-level rewards
summed over the response) -> dense ``(P, G)`` groups -> the estimator -> broadcast over the response
tokens -> the token modifiers in order. verl may reorder rows (``trainer.balance_batch``), so groups
are rebuilt from the ``uid`` index and the result is put back in verl's row order.

Not carried over: the estimators' ``metrics`` hooks (group counts); verl has no channel for metrics
from an estimator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from rlvr_lab.integrations.verl.resolve import (
    ESTIMATOR_COMPONENTS,
    EstimatorPlan,
    cache_key,
    estimator_plan,
    field_of,
    params_of,
    verl_name,
    warn_once,
)
from rlvr_lab.objectives import ADVANTAGE_ESTIMATORS, TOKEN_ADVANTAGE_MODIFIERS, StepContext, broadcast_to_tokens

_PLANS: dict[tuple[str, str], EstimatorPlan] = {}  # resolved once per distinct configuration


def plan_for(name: str, config: Any) -> EstimatorPlan:
    """The resolved advantage side of ``adv_estimator=name`` with overrides from ``algorithm.<component>``."""
    overrides = {c: params_of(field_of(config, c)) for c in ESTIMATOR_COMPONENTS}
    overrides = {k: v for k, v in overrides.items() if v}
    key = (name, cache_key(overrides))
    if key not in _PLANS:
        _PLANS[key] = estimator_plan(name, overrides)
    return _PLANS[key]


def group_order(index: Sequence[Any]) -> tuple[torch.Tensor, int]:
    """Row order that makes groups contiguous, and the group size G.

    ``index`` holds one group id (verl's ``uid``) per row; groups keep their first-appearance order and
    their rows keep the batch order. Returns ``(order (P*G,) long, G)``; ragged groups are refused
    because the estimators work on dense ``(P, G)`` tensors.
    """
    groups: dict[Any, list[int]] = {}
    for row, uid in enumerate(index):
        groups.setdefault(uid, []).append(row)
    sizes = {len(rows) for rows in groups.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"rlvr-lab estimators need groups of equal size (every prompt with rollout.n responses); got group sizes "
            f"{sorted(sizes)}. Filters that drop single responses are not supported."
        )
    return torch.tensor([row for rows in groups.values() for row in rows], dtype=torch.long), sizes.pop()


def _check_trainer_settings(name: str, plan: EstimatorPlan, config: Any, rewards: torch.Tensor) -> None:
    filter_groups = field_of(config, "filter_groups")
    if plan.dynamic_sampling and not field_of(filter_groups, "enable"):
        warn_once(f"{name}/filter_groups", (
            f"{name}: preset {plan.preset} drops groups whose rewards are all equal (DAPO dynamic sampling) but "
            "verl's algorithm.filter_groups.enable is false; set algorithm.filter_groups.enable=true "
            "algorithm.filter_groups.metric=reward algorithm.filter_groups.max_num_gen_batches=10"))
    entry = ADVANTAGE_ESTIMATORS.entry(plan.advantage)
    # verl's flag is read only by its built-in estimator; an rlvr-lab estimator's scaling is one of its
    # own parameters (or its definition), so the flag changes nothing for any of them: say so whenever set.
    if field_of(config, "norm_adv_by_std_in_grpo") is False:
        own = ", ".join(f"{k}={v!r}" for k, v in entry.with_defaults(plan.advantage_params).items()) or "none"
        warn_once(f"{name}/norm_adv", (
            f"{name}: algorithm.norm_adv_by_std_in_grpo=false is read only by verl's built-in GRPO estimator and "
            f"changes nothing here: {plan.advantage} ({entry.summary}) scales its advantages by its own definition "
            f"and parameters ({own}). For an advantage without the group-std division, pick a method whose "
            "estimator does not divide by it (`rlvr list` describes each estimator)."))
    if entry.meta.get("binary_outcomes") and not bool(((rewards == 0) | (rewards == 1)).all()):
        warn_once(f"{name}/binary", (
            f"{name}: {plan.advantage} needs a binary outcome but the rewards are not all 0 or 1; verl passes no "
            "task verdict, so a response counts as correct when its reward is > 0 (rlvr-lab's rule without a "
            "verdict). Make the reward binary if shaping terms can make a correct response's reward <= 0."))


def _refuse_dropped_rows(name: str, component: str, keep: torch.Tensor | None) -> None:
    # Safety net behind the start-up check (the registry's Entry.drops): a sample filter that removes rows
    # would change the loss denominators, which an estimator cannot do.
    if keep is not None and not bool(keep.all()):
        raise ValueError(
            f"{name}: {component} removes {int((~keep).sum())} responses from the batch before the update; a verl "
            "advantage estimator cannot remove rows (see docs/scale-out.md)"
        )


def compute(
    name: str, plan: EstimatorPlan, token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
    index: Sequence[Any], config: Any = None,
) -> torch.Tensor:
    """Token advantages (B, L) in verl's row order."""
    mask = response_mask.bool()
    scores = token_level_rewards.sum(-1).float()  # (B,) sequence reward, as verl's grpo
    order, G = group_order(index)
    order = order.to(scores.device)
    _check_trainer_settings(name, plan, config, scores)
    m = mask[order]  # (B, L) grouped
    rewards = scores[order]  # (B,) grouped
    ctx = StepContext(
        rewards=rewards,
        group_ids=torch.arange(len(rewards) // G, device=rewards.device).repeat_interleave(G),
        group_size=G,
        response_lengths=m.sum(-1),
    )
    entry = ADVANTAGE_ESTIMATORS.entry(plan.advantage)
    grouped = rewards.view(-1, G)  # (P, G)
    seq_adv = entry.fn(grouped, ctx, **plan.advantage_params)  # (P, G)
    sample_filter = entry.meta.get("sample_filter")
    if sample_filter is not None:
        _refuse_dropped_rows(name, plan.advantage, sample_filter(grouped, ctx, **plan.advantage_params))
    adv = broadcast_to_tokens(seq_adv.reshape(-1), m)  # (B, L)
    for comp, params in plan.token_modifiers:
        entry = TOKEN_ADVANTAGE_MODIFIERS.entry(comp)
        sample_filter = entry.meta.get("sample_filter")
        if sample_filter is not None:
            _refuse_dropped_rows(name, comp, sample_filter(adv, m, ctx, **params))
        adv, _ = entry.fn(adv, m, ctx, **params)
    out = torch.empty_like(adv)
    out[order] = adv
    return out


def make_estimator(preset: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The verl advantage estimator of ``preset``, registered as ``rlvr_<preset>``."""
    name = verl_name(preset)

    def estimator(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        config: Any = None,
        index: Sequence[Any] | None = None,
        **unused: Any,  # reward_baselines (ReMax) and whatever a later verl adds for its own estimators
    ) -> tuple[torch.Tensor, torch.Tensor]:
        plan = plan_for(name, config)
        if index is None:
            raise ValueError(f"{name} needs the group index (verl's non_tensor_batch['uid']) to form groups")
        adv = compute(name, plan, token_level_rewards, response_mask, index, config)
        return adv, adv  # returns = advantages for outcome-reward estimators, as verl's grpo

    estimator.__name__ = estimator.__qualname__ = f"{name}_advantage"
    estimator.__doc__ = f"rlvr-lab's {preset!r} method (preset {preset}) as a verl advantage estimator."
    estimator.rlvr_lab_preset = preset
    return estimator
