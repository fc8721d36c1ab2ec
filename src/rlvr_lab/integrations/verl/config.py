"""Config dataclasses that carry rlvr-lab hyperparameters through verl's Hydra configs.

verl builds ``actor_rollout_ref.actor.policy_loss`` into a ``PolicyLossConfig`` dataclass, which
rejects unknown keys. Point its ``_target_`` at :class:`RlvrPolicyLossConfig` to pass parameters::

    actor_rollout_ref.actor.policy_loss._target_=rlvr_lab.integrations.verl.RlvrPolicyLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_<preset>
    +actor_rollout_ref.actor.policy_loss.<component>.<parameter>=<value>

Every field left empty takes the value of the method's packaged preset (:mod:`rlvr_lab.presets`). The
dataclass resolves the method when verl builds it, which ``main_ppo`` does in ``validate_config``
before starting Ray: a method verl cannot feed, an unknown parameter or a component the method does
not have fails there, at start-up, not after the first rollout.

:class:`RlvrAlgoConfig` does the same for ``algorithm`` (estimator parameters,
``+algorithm.<estimator>.<parameter>=<value>``). verl 0.9 hands the estimator the raw OmegaConf node,
so the keys work even without it; setting ``algorithm._target_`` to it keeps them valid wherever verl
builds the dataclass.

Both classes have one mapping field per registered component of their side, generated from the
registries (:data:`~rlvr_lab.integrations.verl.resolve.LOSS_COMPONENTS`,
:data:`~rlvr_lab.integrations.verl.resolve.ESTIMATOR_COMPONENTS`): a newly registered component gets
its field without an edit here. Each field's ``metadata["params"]`` lists the component's parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from verl.trainer.config import AlgoConfig
from verl.workers.config import PolicyLossConfig

# Registers the rlvr_<method> names in this process too, so that the `_target_` line alone is enough
# where entry-point discovery is off (VERL_USE_EXTERNAL_PLUGINS=none) or absent (verl < 0.9).
from rlvr_lab.integrations.verl import plugin  # noqa: F401
from rlvr_lab.integrations.verl.presets import ESTIMATOR_REGISTRIES, LOSS_REGISTRIES
from rlvr_lab.integrations.verl.resolve import (
    ESTIMATOR_COMPONENTS,
    LOSS_COMPONENTS,
    PREFIX,
    estimator_plan,
    loss_plan,
)
from rlvr_lab.objectives.registry import Registry


def component_fields(registries: tuple[Registry, ...], base: type, extra: tuple[str, ...] = ()) -> list[tuple]:
    """One ``dict`` field per component of ``registries`` (default empty), for ``make_dataclass``.

    A component named like a field of verl's ``base`` (or one of ``extra``) would shadow it: refused.
    """
    taken = {f.name for f in dataclasses.fields(base)} | set(extra)
    out = []
    for registry in registries:
        for name in registry.names():
            if name in taken:
                raise TypeError(f"{registry.kind} {name!r} has the name of a field of verl's {base.__name__}; "
                                "rename the component (its config field would shadow verl's)")
            entry = registry.entry(name)
            meta = {"kind": registry.kind, "params": tuple(entry.params), "summary": entry.summary}
            out.append((name, dict[str, Any], dataclasses.field(default_factory=dict, metadata=meta)))
    return out


def _parent_post_init(cls: type, self: Any) -> None:
    parent = getattr(super(cls, self), "__post_init__", None)
    if parent is not None:
        parent()


class _PolicyLossMethods:
    """The behaviour of :class:`RlvrPolicyLossConfig` (its fields are generated below)."""

    def __post_init__(self) -> None:
        _parent_post_init(_PolicyLossMethods, self)
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


class _AlgoMethods:
    """The behaviour of :class:`RlvrAlgoConfig` (its fields are generated below)."""

    def __post_init__(self) -> None:
        _parent_post_init(_AlgoMethods, self)
        overrides = self.overrides()
        if self.adv_estimator.startswith(PREFIX):
            estimator_plan(self.adv_estimator, overrides)
        elif overrides:
            raise ValueError(
                f"algorithm.{', algorithm.'.join(overrides)} are parameters of rlvr-lab estimators, but "
                f"algorithm.adv_estimator={self.adv_estimator!r}"
            )

    def overrides(self) -> dict[str, dict[str, Any]]:
        return {name: dict(getattr(self, name)) for name in ESTIMATOR_COMPONENTS if getattr(self, name)}


def _config_class(name: str, methods: type, base: type, fields: list[tuple], doc: str) -> type:
    cls = dataclasses.make_dataclass(name, fields, bases=(methods, base), namespace={"__doc__": doc})
    cls.__module__ = __name__  # Hydra's `_target_` and pickling find it here
    return cls


_AGGREGATION = ("aggregation", Optional[str], dataclasses.field(default=None, metadata={
    "help": "The method's aggregation mode (None: the preset's); verl's actor.loss_agg_mode must equal it."}))

RlvrPolicyLossConfig = _config_class(
    "RlvrPolicyLossConfig", _PolicyLossMethods, PolicyLossConfig,
    [*component_fields(LOSS_REGISTRIES, PolicyLossConfig, ("aggregation",)), _AGGREGATION],
    """``actor_rollout_ref.actor.policy_loss`` for an ``rlvr_<preset>`` loss mode.

    One field per loss-side component (policy losses, token-loss overrides, auxiliary losses), each a
    mapping of that component's keyword parameters (``rlvr list`` shows them with their allowed
    values); only the components of the selected method may be set. ``aggregation`` overrides the
    method's aggregation mode.
    """,
)

RlvrAlgoConfig = _config_class(
    "RlvrAlgoConfig", _AlgoMethods, AlgoConfig, component_fields(ESTIMATOR_REGISTRIES, AlgoConfig),
    """``algorithm`` with rlvr-lab estimator parameters: one mapping per advantage estimator or token-advantage
    modifier (``rlvr list`` shows their parameters); only the components of the selected method may be set.
    """,
)
