"""The methods an engine can select by name, and what each one needs beyond sampled-token log-probs.

One entry per packaged preset (:mod:`rlvr_lab.presets`, the same files the CLI and the TRL adapter
read), including the single-component presets for registered estimators (``hapo_tlga``,
``passk_surrogate``).

:func:`requirements` lists, for a resolved :class:`~rlvr_lab.config.AlgorithmConfig`, every input and
trainer feature a method needs, split by where an engine computes it (the policy loss or the
advantage), so an adapter can refuse a method it cannot feed instead of silently running a weaker one.

Imports only rlvr-lab (no engine), so the table is usable and testable without verl installed.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from rlvr_lab.objectives.registry import Registry
from rlvr_lab.presets import preset_names, preset_path, preset_summary, read_preset
from rlvr_lab.train.methods import with_defaults

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

# Inputs a component may need, in words an error message can use.
INPUT_DESCRIPTIONS: dict[str, str] = {
    "proxy_logprobs": "the old policy's min-p proxy log-prob of every sampled token (Lp-Reg), which is computed "
                      "from the full-vocabulary logits in the old-log-prob pass",
    "entropy": "the current policy's per-token entropy (B, T) inside the loss (HAPO's adaptive clip)",
    "token_hidden_reward": "the token hidden reward (B, T) of THR/NTHR, computed from the old policy's final "
                           "hidden states and LM-head weights",
    "action_ids": "per-action ids of the response tokens (derived from the response mask)",
    "answer_mask": "a mask of the final answer span (LLDS-MA), which only tool-use rollouts produce",
    "valid_searches": "the number of valid search calls per response (LLDS-MA)",
    "mini_batch_preserving_count": "LLDS norm=paper's |Y_pre| over the whole mini-batch, which a per-micro-batch "
                                   "loss call does not see",
    "global_step": "the RL step number (Clip-Cov with a fixed seed draws its tokens from seed and step; leave "
                   "seed unset to draw from torch's RNG)",
}


@dataclass
class Requirements:
    """Everything a method needs, by the engine stage that must provide it.

    ``*_inputs`` map a component name to the input names it needs (keys of :data:`INPUT_DESCRIPTIONS`);
    ``structural`` holds the names whose need does not depend on parameters (so no setting removes it).
    """

    loss_inputs: dict[str, set[str]] = field(default_factory=dict)
    estimator_inputs: dict[str, set[str]] = field(default_factory=dict)
    drops_rows: list[str] = field(default_factory=list)  # components that remove responses before the update
    trainer: list[str] = field(default_factory=list)  # features of the training loop itself (SPEAR, ...)
    structural: set[str] = field(default_factory=set)


def _declared(registry: Registry, comp: NamedComponent) -> set[str]:
    return set(registry.entry(comp.name).needs)


def requirements(algo: AlgorithmConfig) -> Requirements:
    """What ``algo`` needs beyond sampled-token log-probs, old log-probs, advantages and the response mask."""
    req = Requirements()
    for registry, comp in ((POLICY_LOSSES, algo.policy_loss),
                           *((TOKEN_LOSS_OVERRIDES, c) for c in algo.token_overrides),
                           *((AUX_LOSSES, c) for c in algo.aux_losses)):
        needs = _declared(registry, comp)
        req.structural |= needs
        params = with_defaults(registry.entry(comp.name), dict(comp.params))
        if comp.name == "llds":
            if params["mask_answer"]:
                needs |= {"answer_mask", "valid_searches"}
            if params["norm"] == "paper":
                needs.add("mini_batch_preserving_count")
        if comp.name == "clip_cov" and params["seed"] is not None:
            needs.add("global_step")
        if needs:
            req.loss_inputs.setdefault(comp.name, set()).update(needs)
    for registry, comp in ((ADVANTAGE_ESTIMATORS, algo.advantage),
                           *((TOKEN_ADVANTAGE_MODIFIERS, c) for c in algo.token_modifiers)):
        needs = _declared(registry, comp)
        req.structural |= needs
        if needs:
            req.estimator_inputs.setdefault(comp.name, set()).update(needs)
        params = with_defaults(registry.entry(comp.name), dict(comp.params))
        if drops_rows(comp.name, params):
            req.drops_rows.append(comp.name)
    if algo.spear is not None:
        req.trainer.append("spear (a replay buffer of past trajectories, replay updates and a tool-call reward "
                           "bonus inside the training loop)")
    if algo.legacy_no_batch_norm:
        req.trainer.append("legacy_no_batch_norm (seq-mean-token-sum-norm without the 1/B factor)")
    return req


def drops_rows(name: str, params: Mapping[str, Any]) -> bool:
    """True when the component's ``sample_filter`` removes responses with these parameters (PSR/NSR
    ``subset``, GRPO-N ``drop_positive_from_denominator``): the loss denominators then count only the rest."""
    if name in ("psr", "nsr"):
        return bool(params["subset"])
    if name == "grpo_n":
        return bool(params["mask_positive"] and params["drop_positive_from_denominator"])
    return False
