"""From a verl name (``rlvr_<preset>``) and user overrides to the components the adapter runs.

A :class:`LossPlan` is what ``actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_<preset>`` computes,
an :class:`EstimatorPlan` what ``algorithm.adv_estimator=rlvr_<preset>`` computes. Resolving a plan
also decides whether verl can feed the method; if not, it raises :class:`UnsupportedInVerl` naming
every missing input, so the run stops at start-up (or at the first call) instead of training a
weaker method under the right name.

No verl import here: the checks are plain data and are tested without verl.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rlvr_lab.config import AlgorithmConfig
from rlvr_lab.integrations.verl.presets import (
    DROPS_ROWS,
    ESTIMATOR_REGISTRIES,
    INPUT_DESCRIPTIONS,
    LOSS_REGISTRIES,
    PRESETS,
    Preset,
    Requirements,
    requirements,
)
from rlvr_lab.objectives import AUX_LOSSES, POLICY_LOSSES, TOKEN_LOSS_OVERRIDES
from rlvr_lab.objectives.registry import Registry

PREFIX = "rlvr_"

# What verl 0.9 hands to each hook besides the basics (log-probs, old log-probs, advantages, mask).
# The loss adapter derives action ids from the response mask; the estimator adapter derives response
# lengths and groups from the mask and the ``uid`` index.
LOSS_PROVIDES = frozenset({"action_ids"})
ESTIMATOR_PROVIDES = frozenset()

LOSS_HOOK = ("a verl 0.9 policy loss receives only old_log_prob, log_prob (sampled tokens), advantages, "
             "response_mask and rollout_is_weights")
ESTIMATOR_HOOK = ("a verl 0.9 advantage estimator receives only token_level_rewards, response_mask, the "
                  "group index and the algorithm config")



def _side(registries: tuple[Registry, ...]) -> tuple[str, ...]:
    """Every component registered on one side; a name in two of its registries would make an override
    key ambiguous, so it is refused here, at import."""
    names = [n for registry in registries for n in registry.names()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TypeError(f"component names registered twice on one engine side: {twice}")
    return tuple(names)


# Components whose parameters can be overridden on each side, read from the registries (the config
# dataclasses have one dict field per name).
LOSS_COMPONENTS = _side(LOSS_REGISTRIES)
ESTIMATOR_COMPONENTS = _side(ESTIMATOR_REGISTRIES)

# rlvr-lab KL estimator -> verl's names for it in actor.kl_loss_type, preferred spelling first
# (verl's low_var_kl clamps the log-ratio to ±20 and the value to ±10, as k3 does here).
VERL_KL_TYPES = {"k1": ("kl", "k1"), "k2": ("mse", "k2"), "k3": ("low_var_kl", "k3"), "abs": ("abs",)}


class UnsupportedInVerl(ValueError):
    """The method needs something an unmodified verl 0.9 does not give the hook that runs it."""


def verl_name(preset: str) -> str:
    return PREFIX + preset


def preset_of(name: str) -> Preset:
    """The preset behind a verl name ``rlvr_<preset>``; a clear error for anything else."""
    if not name.startswith(PREFIX) or name[len(PREFIX):] not in PRESETS:
        valid = ", ".join(verl_name(p) for p in PRESETS)
        raise ValueError(f"{name!r} is not an rlvr-lab method; valid: {valid}")
    return PRESETS[name[len(PREFIX):]]


def _component_names(algo: AlgorithmConfig, side: str) -> list[str]:
    if side == "loss":
        return [algo.policy_loss.name, *(c.name for c in algo.token_overrides), *(c.name for c in algo.aux_losses)]
    return [algo.advantage.name, *(c.name for c in algo.token_modifiers)]


def _with_overrides(preset: Preset, overrides: Mapping[str, Mapping[str, Any]], side: str, where: str) -> AlgorithmConfig:
    """The preset's algorithm with ``overrides`` (component name -> params) merged into its components.

    Raises for a component the preset does not have and (through the config's own validation) for a
    parameter the component does not take.
    """
    algo = preset.algo
    present = _component_names(algo, side)
    for name, params in overrides.items():
        if params and name not in present:
            raise ValueError(
                f"{where}.{name}: {verl_name(preset.name)} has no {name!r} component "
                f"(its {side} components: {', '.join(present)})"
            )
    data = algo.model_dump()

    def merge(comp: dict[str, Any]) -> dict[str, Any]:
        extra = dict(overrides.get(comp["name"]) or {})
        return {"name": comp["name"], "params": {**comp["params"], **extra}}

    keys = ("policy_loss", "token_overrides", "aux_losses") if side == "loss" else ("advantage", "token_modifiers")
    for key in keys:
        data[key] = [merge(c) for c in data[key]] if isinstance(data[key], list) else merge(data[key])
    try:
        return AlgorithmConfig.model_validate(data)
    except ValidationError as exc:  # the config's own check names the component and the bad parameter
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ValueError(f"{where}: invalid parameters for {verl_name(preset.name)}: {reasons}") from None


def _describe(missing: Mapping[str, set[str]], req: Requirements) -> list[str]:
    out = []
    for comp, needs in missing.items():
        for need in sorted(needs):
            changes = req.relief.get((comp, need))
            hint = " (not needed with " + " or ".join(f"{comp}.{c}" for c in changes) + ")" if changes else ""
            out.append(f"{comp} needs {INPUT_DESCRIPTIONS.get(need, need)}{hint}")
    return out


def _problems(preset: Preset, algo: AlgorithmConfig, side: str) -> list[str]:
    """Why verl cannot run ``algo`` on ``side`` ('loss' or 'estimator'); empty when it can.

    A side fails for its own missing inputs (with the effective parameters) and for anything the other
    side needs that no parameter can remove (so ``loss_mode=rlvr_thr`` does not quietly run GRPO's loss
    without THR's advantages); trainer features fail both sides.
    """
    req = requirements(algo)
    miss_loss = {c: n - LOSS_PROVIDES for c, n in req.loss_inputs.items() if n - LOSS_PROVIDES}
    miss_est = {c: n - ESTIMATOR_PROVIDES for c, n in req.estimator_inputs.items() if n - ESTIMATOR_PROVIDES}
    own, other = (miss_loss, miss_est) if side == "loss" else (miss_est, miss_loss)
    other_structural = {c: n & req.structural for c, n in other.items() if n & req.structural}
    out = []
    if own:
        out.append(f"{'; '.join(_describe(own, req))} ({LOSS_HOOK if side == 'loss' else ESTIMATOR_HOOK})")
    if other_structural:
        hook = ESTIMATOR_HOOK if side == "loss" else LOSS_HOOK
        out.append(f"the method's other half cannot run either: {'; '.join(_describe(other_structural, req))} ({hook})")
    if side == "estimator":
        for name in req.drops_rows:
            changes = req.relief.get((name, DROPS_ROWS))
            keep = (f" (set {' or '.join(f'+algorithm.{name}.{c}' for c in changes)} to keep them in the batch, "
                    "a different denominator)") if changes else ""
            out.append(
                f"{name} removes responses from the batch before the update, so the loss denominators count only the "
                f"kept ones; a verl advantage estimator cannot remove rows{keep}"
            )
    out.extend(f"it needs {t}, which verl's trainer does not have" for t in req.trainer)
    return out


def _raise(preset: Preset, problems: list[str]) -> None:
    native = f"rlvr-lab's native trainer (`rlvr train <run config> --preset {preset.name}`)"
    raise UnsupportedInVerl(
        f"{verl_name(preset.name)} cannot run in an unmodified verl: " + "; ".join(problems)
        + f". Nothing was degraded silently: use {native}, or pick a method that verl can feed "
        "(docs/scale-out.md lists them)."
    )


@dataclass(frozen=True)
class LossPlan:
    """The loss side of a method, hyperparameters unpacked once (as in ``train.step.LossSpec``)."""

    preset: str
    policy_loss: str
    policy_params: dict[str, Any]
    token_overrides: tuple[tuple[str, dict[str, Any]], ...]
    aux_losses: tuple[tuple[str, dict[str, Any]], ...]
    aggregation: str  # the mode the method uses; verl's actor.loss_agg_mode must equal it
    aggregation_forced: bool  # the policy loss itself fixes the mode (its registry entry's ``aggregation``)
    kl_coef: float
    kl_kind: str
    entropy_coef: float
    minibatches: int

    def components(self) -> list[tuple[Registry, str, dict[str, Any]]]:
        """(registry, name, params) of every component of the plan, in the order they are applied."""
        return [(POLICY_LOSSES, self.policy_loss, self.policy_params),
                *((TOKEN_LOSS_OVERRIDES, n, p) for n, p in self.token_overrides),
                *((AUX_LOSSES, n, p) for n, p in self.aux_losses)]

    @property
    def needs_action_ids(self) -> bool:
        """A component's registry entry asks for per-action ids with these parameters."""
        return any("action_ids" in registry.entry(name).needs_for(params)
                   for registry, name, params in self.components())


def loss_plan(name: str, overrides: Mapping[str, Mapping[str, Any]] | None = None, *,
              aggregation: str | None = None, where: str = "actor_rollout_ref.actor.policy_loss") -> LossPlan:
    """Resolve ``loss_mode=name`` with parameter ``overrides``; :class:`UnsupportedInVerl` if verl cannot feed it."""
    preset = preset_of(name)
    algo = _with_overrides(preset, overrides or {}, "loss", where)
    problems = _problems(preset, algo, "loss")
    if problems:
        _raise(preset, problems)
    forced = "aggregation" in _policy_meta(algo)
    effective = algo.effective_aggregation
    if aggregation is not None and aggregation != effective:
        if forced:
            raise ValueError(f"{where}.aggregation={aggregation!r}: the {algo.policy_loss.name} loss always "
                             f"aggregates with {effective!r}")
        effective = aggregation
    return LossPlan(
        preset=preset.name,
        policy_loss=algo.policy_loss.name,
        policy_params=dict(algo.policy_loss.params),
        token_overrides=tuple((c.name, dict(c.params)) for c in algo.token_overrides),
        aux_losses=tuple((c.name, dict(c.params)) for c in algo.aux_losses),
        aggregation=effective,
        aggregation_forced=forced,
        kl_coef=algo.kl.coef,
        kl_kind=algo.kl.kind,
        entropy_coef=algo.entropy_coef,
        minibatches=preset.minibatches,
    )


def _policy_meta(algo: AlgorithmConfig) -> Mapping[str, Any]:
    return POLICY_LOSSES.entry(algo.policy_loss.name).meta


@dataclass(frozen=True)
class EstimatorPlan:
    """The advantage side of a method."""

    preset: str
    advantage: str
    advantage_params: dict[str, Any]
    token_modifiers: tuple[tuple[str, dict[str, Any]], ...]
    dynamic_sampling: bool  # the preset filters all-equal groups (verl: algorithm.filter_groups)
    overlong: bool  # the preset adds DAPO's soft overlong penalty to the reward


def estimator_plan(name: str, overrides: Mapping[str, Mapping[str, Any]] | None = None, *,
                   where: str = "algorithm") -> EstimatorPlan:
    """Resolve ``adv_estimator=name`` with parameter ``overrides``; :class:`UnsupportedInVerl` if verl cannot feed it."""
    preset = preset_of(name)
    algo = _with_overrides(preset, overrides or {}, "estimator", where)
    problems = _problems(preset, algo, "estimator")
    if problems:
        _raise(preset, problems)
    return EstimatorPlan(
        preset=preset.name,
        advantage=algo.advantage.name,
        advantage_params=dict(algo.advantage.params),
        token_modifiers=tuple((c.name, dict(c.params)) for c in algo.token_modifiers),
        dynamic_sampling=algo.dynamic_sampling.enabled,
        overlong=algo.overlong is not None,
    )


def verl_support() -> dict[str, tuple[list[str], list[str]]]:
    """Per preset with default parameters: (loss-side problems, estimator-side problems); both empty = runs."""
    return {name: (_problems(p, p.algo, "loss"), _problems(p, p.algo, "estimator")) for name, p in PRESETS.items()}


# ---- reading verl's configs (dataclass, OmegaConf or dict) ---------------------------------------

logger = logging.getLogger("rlvr_lab.integrations.verl")
_WARNED: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """A WARNING the first time ``key`` is seen in this process (verl runs one process per GPU)."""
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(message)


def field_of(cfg: Any, name: str) -> Any:
    """``cfg.name`` of a dataclass config, ``cfg.get(name)`` of an OmegaConf/dict one; None if absent."""
    if cfg is None:
        return None
    getter = getattr(cfg, "get", None)
    return getter(name) if callable(getter) else getattr(cfg, name, None)


def params_of(value: Any) -> dict[str, Any]:
    """A component's parameter mapping (dict or OmegaConf node) as a plain dict."""
    return {} if value is None else {str(k): v for k, v in value.items()}


def cache_key(overrides: Mapping[str, Mapping[str, Any]]) -> str:
    """A stable text key of ``overrides`` (values may be unhashable), for caching resolved plans."""
    return repr(sorted((name, sorted(params.items())) for name, params in overrides.items()))
