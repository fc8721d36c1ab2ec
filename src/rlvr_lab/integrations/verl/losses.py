"""rlvr-lab's policy losses as verl policy-loss functions (``actor_rollout_ref.actor.policy_loss.loss_mode``).

verl 0.9 calls a registered loss once per micro-batch inside the actor worker
(``verl/workers/utils/losses.py::ppo_loss``), with keyword arguments only::

    fn(old_log_prob=, log_prob=, advantages=, response_mask=, loss_agg_mode=, config=, rollout_is_weights=)

and expects ``(scalar loss, {metric name: float})``. The adapter composes the method exactly as the
native trainer's ``train.step.micro_batch_loss`` does (policy loss -> token overrides -> aggregation,
plus auxiliary losses, each normalising itself), with two differences of place, not of maths:

* aggregation goes through verl's ``agg_loss(..., **config.global_batch_info)``, which divides by the
  token/sequence counts of the whole mini-batch over all data-parallel ranks and multiplies by the
  dp size, so micro-batch losses add up (and DDP's gradient mean undoes the dp factor); auxiliary
  losses get the same per-rank denominators (``count / dp_size``) through ``StepContext``;
* the KL-to-reference term and the entropy bonus are added by verl's ``ppo_loss`` outside this
  function (``actor.use_kl_loss``/``kl_loss_coef``/``kl_loss_type``, ``actor.entropy_coeff``); the
  first call warns when they differ from the method's preset.

Rollout-correction importance weights (``rollout_is_weights``, per token) multiply the policy-gradient
matrix before aggregation, as verl's own ``vanilla`` loss does; auxiliary losses are not weighted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from verl.trainer.ppo.core_algos import agg_loss

from rlvr_lab.integrations.verl.resolve import (
    LOSS_COMPONENTS,
    VERL_KL_TYPES,
    LossPlan,
    cache_key,
    field_of,
    loss_plan,
    params_of,
    verl_name,
    warn_once,
)
from rlvr_lab.objectives import AUX_LOSSES, POLICY_LOSSES, TOKEN_LOSS_OVERRIDES, StepContext
from rlvr_lab.objectives.policy_losses import POLICY_METRICS
from rlvr_lab.objectives.llds import action_ids_from_mask
from rlvr_lab.train.step import is_loss_share

_CLIP_KEYS = {"clip_low": "clip_ratio_low", "clip_high": "clip_ratio_high", "clip_ratio_c": "clip_ratio_c"}



def overrides_from(policy_loss_cfg: Any) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Per-component parameter overrides and the aggregation override in ``actor.policy_loss``.

    Works for :class:`~rlvr_lab.integrations.verl.config.RlvrPolicyLossConfig` and for a plain
    mapping that carries the same keys.
    """
    overrides = {name: params_of(field_of(policy_loss_cfg, name)) for name in LOSS_COMPONENTS}
    return {k: v for k, v in overrides.items() if v}, field_of(policy_loss_cfg, "aggregation")


_PLANS: dict[tuple[str, str, str | None], LossPlan] = {}  # resolved once per distinct configuration


def plan_for(name: str, config: Any) -> LossPlan:
    """The resolved method for ``loss_mode=name`` under verl's actor ``config`` (raises if verl cannot run it)."""
    overrides, aggregation = overrides_from(field_of(config, "policy_loss"))
    key = (name, cache_key(overrides), aggregation)
    if key not in _PLANS:
        _PLANS[key] = loss_plan(name, overrides, aggregation=aggregation)
    return _PLANS[key]


def check_actor_config(name: str, plan: LossPlan, config: Any, loss_agg_mode: str) -> None:
    """Refuse an aggregation the method does not use; warn (once) where verl's own terms differ from the preset."""
    if loss_agg_mode != plan.aggregation:
        hint = "" if plan.aggregation_forced else (
            f", or set +actor_rollout_ref.actor.policy_loss.aggregation={loss_agg_mode} (with "
            "actor_rollout_ref.actor.policy_loss._target_=rlvr_lab.integrations.verl.RlvrPolicyLossConfig) "
            "to use another mode on purpose")
        raise ValueError(
            f"{name} aggregates with {plan.aggregation!r} but verl passes loss_agg_mode={loss_agg_mode!r}: set "
            f"actor_rollout_ref.actor.loss_agg_mode={plan.aggregation}{hint}"
        )
    info = field_of(config, "global_batch_info") or {}
    if plan.aggregation == "seq-mean-token-sum-norm" and info.get("loss_scale_factor") is None:
        raise ValueError(
            f"{name} divides each response's token sum by a constant T_norm, but actor.loss_scale_factor is unset, "
            "so verl would use the padded width of each micro-batch (it varies): set "
            "actor_rollout_ref.actor.loss_scale_factor=<data.max_response_length>"
        )
    want_kl, kl_names = plan.kl_coef > 0, VERL_KL_TYPES[plan.kl_kind]
    use_kl = bool(field_of(config, "use_kl_loss"))
    kl_coef, kl_type = float(field_of(config, "kl_loss_coef") or 0.0), field_of(config, "kl_loss_type")
    ent_have = float(field_of(config, "entropy_coeff") or 0.0)
    kl_differs = use_kl != want_kl or (want_kl and (kl_coef != plan.kl_coef or kl_type not in kl_names))
    if kl_differs or ent_have != plan.entropy_coef:
        want = (f"actor_rollout_ref.actor.use_kl_loss={str(want_kl).lower()}"
                + (f" actor_rollout_ref.actor.kl_loss_coef={plan.kl_coef} actor_rollout_ref.actor.kl_loss_type="
                   f"{kl_names[0]}" if want_kl else "")
                + f" actor_rollout_ref.actor.entropy_coeff={plan.entropy_coef}")
        warn_once(f"{name}/kl_entropy", (
            f"{name}: verl adds the KL-to-reference and entropy terms outside the policy loss, and they differ from "
            f"preset {plan.preset} (KL {plan.kl_kind} coef {plan.kl_coef}, entropy bonus {plan.entropy_coef}); "
            f"verl has use_kl_loss={use_kl} kl_loss_coef={kl_coef} kl_loss_type={kl_type} "
            f"entropy_coeff={ent_have}. The preset's values: {want}"))
    ignored = {verl_key: field_of(config, verl_key) for ours, verl_key in _CLIP_KEYS.items()}
    used = {ours: plan.policy_params.get(ours) for ours in _CLIP_KEYS}
    if any(ignored[_CLIP_KEYS[k]] != v for k, v in used.items()):
        warn_once(f"{name}/clip", (
            f"{name} takes its clip range from rlvr-lab's parameters ({plan.policy_loss}: "
            + ", ".join(f"{k}={v}" for k, v in used.items())
            + "); verl's " + ", ".join(f"actor.{k}={v}" for k, v in ignored.items())
            + f" are not used. Change them with +actor_rollout_ref.actor.policy_loss.{plan.policy_loss}.<name>=..."))


def compose(
    plan: LossPlan,
    *,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    global_batch_info: Mapping[str, Any],
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One micro-batch's loss (its share of the global mini-batch loss, times dp size) and verl metrics.

    All tensors (B, T); ``log_prob`` carries the gradient; ``response_mask`` is True on trained tokens.
    """
    mask = response_mask.bool()
    info = dict(global_batch_info)
    dp = int(info.get("dp_size") or 1)
    num_tokens, num_seqs = info.get("batch_num_tokens"), info.get("global_batch_size")
    ctx = StepContext(
        response_lengths=mask.sum(-1),
        action_ids=action_ids_from_mask(mask) if plan.needs_action_ids else None,
        # per-rank share of the global counts: agg_loss's "/ global count * dp_size", for the aux losses
        num_tokens=None if num_tokens is None else float(num_tokens) / dp,
        num_sequences=None if num_seqs is None else float(num_seqs) / dp,
    )
    metrics: dict[str, torch.Tensor] = {}
    pg_mat, extra = POLICY_LOSSES.get(plan.policy_loss)(log_prob, old_log_prob, advantages, mask, ctx,
                                                        **plan.policy_params)
    metrics.update(extra)
    for name, params in plan.token_overrides:
        pg_mat, extra = TOKEN_LOSS_OVERRIDES.get(name)(pg_mat, log_prob, old_log_prob, advantages, mask, ctx, **params)
        metrics.update(extra)
    if rollout_is_weights is not None:
        pg_mat = pg_mat * rollout_is_weights  # (B, T)
    loss = agg_loss(loss_mat=pg_mat, loss_mask=mask, loss_agg_mode=loss_agg_mode, **info)
    local_tokens = float(mask.sum())
    for name, params in plan.aux_losses:
        aux, extra = AUX_LOSSES.get(name)(log_prob, old_log_prob, advantages, mask, ctx, **params)
        loss = loss + aux
        for key, value in extra.items():
            # verl averages loss metrics over micro-batches; report this micro-batch's own token mean
            # rather than its share of the mini-batch (the share would be averaged, not summed)
            if is_loss_share(key) and ctx.num_tokens is not None:
                value = value * ctx.num_tokens / max(local_tokens, 1.0)
            metrics[key] = value
    return loss, verl_metrics(metrics)


def verl_metrics(metrics: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """rlvr-lab names -> verl's: the base terms (``<POLICY_METRICS>/pg_clipfrac``) become
    ``actor/pg_clipfrac`` (verl's own names for the same quantities), a component's metric
    ``<component>/<name>`` becomes ``actor/<component>/<name>``; values as floats."""
    out = {}
    for key, value in metrics.items():
        namespace, _, short = key.rpartition("/")
        out["actor/" + (short if namespace == POLICY_METRICS else key)] = float(value)
    return out


def make_policy_loss(preset: str) -> Callable[..., tuple[torch.Tensor, dict[str, float]]]:
    """The verl policy-loss function of ``preset``, registered as ``rlvr_<preset>``."""
    name = verl_name(preset)

    def policy_loss(
        *,
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str,
        config: Any,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        plan = plan_for(name, config)
        check_actor_config(name, plan, config, loss_agg_mode)
        return compose(
            plan, old_log_prob=old_log_prob, log_prob=log_prob, advantages=advantages, response_mask=response_mask,
            loss_agg_mode=loss_agg_mode, global_batch_info=field_of(config, "global_batch_info") or {},
            rollout_is_weights=rollout_is_weights,
        )

    policy_loss.__name__ = policy_loss.__qualname__ = f"{name}_policy_loss"
    policy_loss.__doc__ = f"rlvr-lab's {preset!r} method (preset {preset}) as a verl policy loss."
    policy_loss.rlvr_lab_preset = preset  # marks the function as ours for the plugin's self-check
    return policy_loss
