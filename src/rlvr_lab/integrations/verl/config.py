"""Config dataclasses that carry rlvr-lab hyperparameters through verl's Hydra configs.

verl builds ``actor_rollout_ref.actor.policy_loss`` into a ``PolicyLossConfig`` dataclass, which
rejects unknown keys. Point its ``_target_`` at :class:`RlvrPolicyLossConfig` to pass parameters::

    actor_rollout_ref.actor.policy_loss._target_=rlvr_lab.integrations.verl.RlvrPolicyLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_llds
    +actor_rollout_ref.actor.policy_loss.llds.lam=0.1

Every field left empty takes the value of the method's preset (``configs/<preset>.yaml``). The
dataclass resolves the method when verl builds it, which ``main_ppo`` does in ``validate_config``
before starting Ray: a method verl cannot feed, an unknown parameter or a component the method does
not have fails there, at start-up, not after the first rollout.

:class:`RlvrAlgoConfig` does the same for ``algorithm`` (estimator parameters such as
``+algorithm.passk.k=8``). verl 0.9 hands the estimator the raw OmegaConf node, so the keys work even
without it; setting ``algorithm._target_`` to it keeps them valid wherever verl builds the dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from verl.trainer.config import AlgoConfig
from verl.workers.config import PolicyLossConfig

# Registers the rlvr_<method> names in this process too, so that the `_target_` line alone is enough
# where entry-point discovery is off (VERL_USE_EXTERNAL_PLUGINS=none) or absent (verl < 0.9).
from rlvr_lab.integrations.verl import plugin  # noqa: F401
from rlvr_lab.integrations.verl.resolve import (
    ESTIMATOR_COMPONENTS,
    LOSS_COMPONENTS,
    PREFIX,
    estimator_plan,
    loss_plan,
)


def _params() -> Any:
    return field(default_factory=dict)


@dataclass
class RlvrPolicyLossConfig(PolicyLossConfig):
    """``actor_rollout_ref.actor.policy_loss`` for an ``rlvr_<preset>`` loss mode.

    One field per loss-side component, each a mapping of that component's keyword parameters (see its
    docstring in ``rlvr_lab.objectives``); only the components of the selected method may be set.
    """

    ppo_clip: dict[str, Any] = _params()  # clip_low, clip_high, clip_ratio_c (None: no dual clip)
    gspo: dict[str, Any] = _params()  # clip_low, clip_high (sequence-level ratio)
    hapo: dict[str, Any] = _params()  # clip_low, clip_high, clip_ratio_c, entropy_pivot, clip_alpha, adv_beta, ...
    clip_cov: dict[str, Any] = _params()  # ratio, lb, ub, seed
    kl_cov: dict[str, Any] = _params()  # frac, coef
    lp_reg: dict[str, Any] = _params()  # rho_neg, rho_pos, coef, kl_type, kl_clamp, rounding, kappa, threshold, fill
    llds: dict[str, Any] = _params()  # lam, gate, norm, preserve, mask_answer, answer_weight, ...
    # The method's aggregation mode (None: the preset's). verl's actor.loss_agg_mode must equal it.
    aggregation: Optional[str] = None

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if not self.loss_mode.startswith(PREFIX):
            raise ValueError(
                f"RlvrPolicyLossConfig is for rlvr_<method> loss modes, got loss_mode={self.loss_mode!r}. If you did "
                "not set it: algorithm.rollout_correction.bypass_mode=true makes verl replace the policy loss with "
                "'bypass_mode'; turn it off to train with an rlvr-lab loss."
            )
        self.plan()  # start-up check: raises for unknown params or a method verl cannot feed

    def overrides(self) -> dict[str, dict[str, Any]]:
        return {name: dict(getattr(self, name)) for name in LOSS_COMPONENTS if getattr(self, name)}

    def plan(self):
        """The resolved :class:`~rlvr_lab.integrations.verl.resolve.LossPlan`."""
        return loss_plan(self.loss_mode, self.overrides(), aggregation=self.aggregation)


@dataclass
class RlvrAlgoConfig(AlgoConfig):
    """``algorithm`` with rlvr-lab estimator parameters: one mapping per estimator or token modifier."""

    grpo: dict[str, Any] = _params()  # std_unbiased, eps
    dr_grpo: dict[str, Any] = _params()
    hapo_tlga: dict[str, Any] = _params()  # std_normalize, eps, fallback_abs, ...
    psr: dict[str, Any] = _params()  # pos_reward, subset (only subset=false runs in verl)
    nsr: dict[str, Any] = _params()  # neg_reward, subset (only subset=false runs in verl)
    w_reinforce: dict[str, Any] = _params()  # lambda_pos, neg_reward, baseline
    passk: dict[str, Any] = _params()  # k, eps
    pkpo: dict[str, Any] = _params()  # k, baseline
    passk_surrogate: dict[str, Any] = _params()  # omega, k, rho_source
    grpo_n: dict[str, Any] = _params()  # mask_positive, drop_positive_from_denominator
    thr: dict[str, Any] = _params()
    nthr: dict[str, Any] = _params()

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        overrides = {name: dict(getattr(self, name)) for name in ESTIMATOR_COMPONENTS if getattr(self, name)}
        if self.adv_estimator.startswith(PREFIX):
            estimator_plan(self.adv_estimator, overrides)
        elif overrides:
            raise ValueError(
                f"algorithm.{', algorithm.'.join(overrides)} are parameters of rlvr-lab estimators, but "
                f"algorithm.adv_estimator={self.adv_estimator!r}"
            )
