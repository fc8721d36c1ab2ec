"""The methods an engine can select by name, and what each one needs beyond sampled-token log-probs.

One entry per packaged preset that configures an algorithm (:mod:`rlvr_lab.presets`, the same files
the CLI and the TRL adapter read), including the single-component presets of registered estimators.

:func:`requirements` lists, for a resolved :class:`~rlvr_lab.config.AlgorithmConfig`, every input and
trainer feature a method needs, split by where an engine computes it (the policy loss or the
advantage), so an adapter can refuse a method it cannot feed instead of silently running a weaker one.
It reads each component's registry entry (``needs_for``, ``drops``) and never a component's name.

Imports only rlvr-lab (no engine), so the table is usable and testable without verl installed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from rlvr_lab.config import AlgorithmConfig, NamedComponent, load_config
from rlvr_lab.objectives import (
    ADVANTAGE_ESTIMATORS,
    AUX_LOSSES,
    POLICY_LOSSES,
    TOKEN_ADVANTAGE_MODIFIERS,
    TOKEN_LOSS_OVERRIDES,
)
from rlvr_lab.objectives.registry import Entry, Registry
from rlvr_lab.presets import preset_names, preset_path, preset_summary, read_preset


@dataclass(frozen=True)
class Preset:
    """A named method: the ``algorithm`` section of its packaged preset and the mini-batch split it assumes."""

    name: str
    summary: str
    algorithm: Mapping[str, Any]
    minibatches: int = 1  # train.minibatches of the preset (methods that act only off-policy need >= 2)
    config_file: str | None = None  # the packaged preset file (rlvr_lab/presets/<name>.yaml)

    @cached_property
    def algo(self) -> AlgorithmConfig:
        """The validated, resolved algorithm config (names, parameter names and values checked)."""
        return load_config(None, presets=[self.name]).algorithm


def _read(name: str) -> Preset:
    data = read_preset(name)
    return Preset(name, preset_summary(name), data["algorithm"], int(data.get("train", {}).get("minibatches", 1)),
                  preset_path(name).name)


# Every packaged preset that configures an RL algorithm (the warm-start-only presets have no algorithm).
PRESETS: dict[str, Preset] = {name: _read(name) for name in preset_names() if "algorithm" in read_preset(name)}


# ---- what a method needs ------------------------------------------------------------------------

# Inputs a component may need (registry ``needs`` and ``extra_needs``), in words an error message can
# use; the message names the component.
INPUT_DESCRIPTIONS: dict[str, str] = {
    "proxy_logprobs": "the old policy's min-p proxy log-prob of every sampled token, which is computed "
                      "from the full-vocabulary logits in the old-log-prob pass",
    "entropy": "the current policy's per-token entropy (B, T) inside the loss",
    "token_hidden_reward": "the token hidden reward (B, T), computed from the old policy's final hidden states and "
                           "LM-head weights",
    "action_ids": "per-action ids of the response tokens (derived from the response mask)",
    "answer_mask": "a mask of the final answer span, which only tool-use rollouts produce",
    "valid_searches": "the number of valid search calls per response, which only tool-use rollouts produce",
    "mini_batch_preserving_count": "a count of preserved tokens over the whole mini-batch, which a per-micro-batch "
                                   "loss call does not see",
    "global_step": "the RL step number, to seed its random draw",
}

# Which engine stage runs each registry's components.
LOSS_REGISTRIES: tuple[Registry, ...] = (POLICY_LOSSES, TOKEN_LOSS_OVERRIDES, AUX_LOSSES)
ESTIMATOR_REGISTRIES: tuple[Registry, ...] = (ADVANTAGE_ESTIMATORS, TOKEN_ADVANTAGE_MODIFIERS)


@dataclass
class Requirements:
    """Everything a method needs, by the engine stage that must provide it.

    ``*_inputs`` map a component name to the input names it needs (keys of :data:`INPUT_DESCRIPTIONS`);
    ``structural`` holds the names whose need does not depend on parameters (so no setting removes it);
    ``relief`` maps (component, input) -- or (component, ``DROPS_ROWS``) -- to the single parameter
    changes (``key=value``) that remove that need.
    """

    loss_inputs: dict[str, set[str]] = field(default_factory=dict)
    estimator_inputs: dict[str, set[str]] = field(default_factory=dict)
    drops_rows: list[str] = field(default_factory=list)  # components that remove responses before the update
    trainer: list[str] = field(default_factory=list)  # features of the training loop itself (SPEAR, ...)
    structural: set[str] = field(default_factory=set)
    relief: dict[tuple[str, str], list[str]] = field(default_factory=dict)


DROPS_ROWS = "drops_rows"  # the relief key of a sample filter that removes rows


def _components(algo: AlgorithmConfig, registries: tuple[Registry, ...]) -> list[tuple[Entry, NamedComponent]]:
    """The configured components of ``algo`` that live in ``registries``, with their entries, in order."""
    return [(registry.entry(comp.name), comp) for _, registry, comp in algo.components() if registry in registries]


def _yaml(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def relief(entry: Entry, params: Mapping[str, Any], holds: Callable[[Mapping[str, Any]], bool]) -> list[str]:
    """Single parameter changes (``key=value``) after which ``holds(params)`` is False.

    Tried in this order: a parameter set away from its default goes back to it, then a boolean
    parameter is flipped. Empty when no single change does it.
    """
    full, defaults = entry.with_defaults(params), entry.defaults()
    tries = [(k, defaults[k]) for k in full if full[k] != defaults[k]]
    tries += [(k, not v) for k, v in full.items() if isinstance(v, bool) and (k, not v) not in tries]
    return [f"{k}={_yaml(v)}" for k, v in tries if not holds({**full, k: v})]


def requirements(algo: AlgorithmConfig) -> Requirements:
    """What ``algo`` needs beyond sampled-token log-probs, old log-probs, advantages and the response mask.

    Read from each component's registry entry: ``needs_for(params)`` (its inputs with these
    parameters) and ``drops(params)`` (whether its sample filter removes rows).
    """
    req = Requirements()
    for side, registries in ((req.loss_inputs, LOSS_REGISTRIES), (req.estimator_inputs, ESTIMATOR_REGISTRIES)):
        for entry, comp in _components(algo, registries):
            req.structural |= set(entry.needs)
            needs = entry.needs_for(comp.params)
            if needs:
                side.setdefault(comp.name, set()).update(needs)
            for need in needs - set(entry.needs):
                req.relief[(comp.name, need)] = relief(entry, comp.params, lambda p, n=need: n in entry.needs_for(p))
            if entry.drops(comp.params):
                req.drops_rows.append(comp.name)
                req.relief[(comp.name, DROPS_ROWS)] = relief(entry, comp.params, entry.drops)
    if algo.spear is not None:
        req.trainer.append("spear (a replay buffer of past trajectories, replay updates and a tool-call reward "
                           "bonus inside the training loop)")
    if algo.legacy_no_batch_norm:
        req.trainer.append("legacy_no_batch_norm (seq-mean-token-sum-norm without the 1/B factor)")
    return req
