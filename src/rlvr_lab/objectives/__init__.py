"""Pure tensor maths of the objectives: advantages, ratios, KL, aggregation, policy losses.

Importing this package loads only torch and the standard library (no transformers, vLLM or verl).
Components are looked up by name in the registries (``POLICY_LOSSES.get("ppo_clip")``).
"""

from rlvr_lab.objectives.advantages import (
    broadcast_to_tokens,
    dr_grpo_advantages,
    group_advantages,
    grpo_advantages,
)
from rlvr_lab.objectives.aggregate import Denominators, aggregate, denominators, masked_mean
from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.kl import KL_KINDS, kl_estimate
from rlvr_lab.objectives.policy_losses import clipped_surrogate, gspo_loss, ppo_clip_loss
from rlvr_lab.objectives.registry import (
    ADVANTAGE_ESTIMATORS,
    AGGREGATORS,
    AUX_LOSSES,
    POLICY_LOSSES,
    TOKEN_ADVANTAGE_MODIFIERS,
    TOKEN_LOSS_OVERRIDES,
    Registry,
    UnknownNameError,
)
from rlvr_lab.objectives.shaping import informative_groups, overlong_penalty

# Token-level methods: importing each module registers its components by name.
from rlvr_lab.objectives import div_prec, entropy_mech, hapo, llds, lp_reg, negative, passk, spear, thr  # noqa: E402,F401

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATORS",
    "AUX_LOSSES",
    "KL_KINDS",
    "POLICY_LOSSES",
    "TOKEN_ADVANTAGE_MODIFIERS",
    "TOKEN_LOSS_OVERRIDES",
    "Denominators",
    "Registry",
    "StepContext",
    "UnknownNameError",
    "aggregate",
    "broadcast_to_tokens",
    "clipped_surrogate",
    "denominators",
    "dr_grpo_advantages",
    "group_advantages",
    "grpo_advantages",
    "gspo_loss",
    "informative_groups",
    "kl_estimate",
    "masked_mean",
    "overlong_penalty",
    "ppo_clip_loss",
]
