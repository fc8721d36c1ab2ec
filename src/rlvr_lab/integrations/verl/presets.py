"""The methods an engine can select by name, and what each one needs beyond sampled-token log-probs.

One entry per preset in ``configs/`` (the ``algorithm:`` section, copied verbatim; a test checks the
copies against the YAML files), plus two single-component presets for registered estimators that no
YAML file uses on its own (``hapo_tlga``, ``passk_surrogate``). The copies exist because an installed
wheel does not ship ``configs/``.

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

from rlvr_lab.config import AlgorithmConfig, NamedComponent
from rlvr_lab.objectives import (
    ADVANTAGE_ESTIMATORS,
    AUX_LOSSES,
    POLICY_LOSSES,
    TOKEN_ADVANTAGE_MODIFIERS,
    TOKEN_LOSS_OVERRIDES,
)
from rlvr_lab.objectives.registry import Registry
from rlvr_lab.train.methods import with_defaults  # also annotates the registries' ``needs`` (THR, LLDS)

_PPO_CLIP = {"name": "ppo_clip", "params": {"clip_low": 0.2, "clip_high": 0.2, "clip_ratio_c": None}}
_GRPO_ADV = {"name": "grpo", "params": {"std_unbiased": True, "eps": 1.0e-6}}


@dataclass(frozen=True)
class Preset:
    """A named method: the ``algorithm`` section of its config and the mini-batch split it assumes."""

    name: str
    summary: str
    algorithm: Mapping[str, Any]
    minibatches: int = 1  # train.minibatches of the preset (LLDS needs >= 2; GSPO uses 4)
    config_file: str | None = None  # configs/<file> it mirrors; None for a single-component preset

    @cached_property
    def algo(self) -> AlgorithmConfig:
        """The validated algorithm config (registry names and parameter names checked)."""
        return AlgorithmConfig.model_validate(dict(self.algorithm))


def _preset(name: str, summary: str, algorithm: dict[str, Any], *, minibatches: int = 1,
            config_file: str | None = "") -> Preset:
    return Preset(name, summary, algorithm, minibatches, f"{name}.yaml" if config_file == "" else config_file)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("grpo", "GRPO: group z-score advantage, symmetric PPO clip, token-mean", {
        "advantage": _GRPO_ADV, "policy_loss": _PPO_CLIP, "aggregation": "token-mean",
        "kl": {"coef": 0.0, "kind": "k3"}, "entropy_coef": 0.0}),
    _preset("dapo", "DAPO: clip-higher 0.2/0.28, token-mean, dynamic sampling, soft overlong penalty", {
        "advantage": {"name": "grpo", "params": {}},
        "policy_loss": {"name": "ppo_clip", "params": {"clip_low": 0.2, "clip_high": 0.28}},
        "aggregation": "token-mean", "kl": {"coef": 0.0},
        "dynamic_sampling": {"enabled": True, "max_gen_batches": 10},
        "overlong": {"max_len": 12, "cache_len": 4, "factor": 1.0}}),
    _preset("dr_grpo", "Dr.GRPO: no std division, constant-length normalisation", {
        "advantage": {"name": "dr_grpo", "params": {}},
        "policy_loss": {"name": "ppo_clip", "params": {"clip_low": 0.2, "clip_high": 0.2}},
        "aggregation": "seq-mean-token-sum-norm", "t_norm": None, "kl": {"coef": 0.0}}),
    _preset("gspo", "GSPO: sequence-level ratio, tiny clip range, seq-mean-token-mean", {
        "advantage": {"name": "grpo", "params": {}},
        "policy_loss": {"name": "gspo", "params": {"clip_low": 3.0e-4, "clip_high": 4.0e-4}},
        "aggregation": "seq-mean-token-mean", "kl": {"coef": 0.0}}, minibatches=4),
    _preset("grpo_n", "GRPO-N: GRPO keeping only the negative advantages", {
        "advantage": _GRPO_ADV, "policy_loss": _PPO_CLIP,
        "token_modifiers": [{"name": "grpo_n", "params": {"mask_positive": True,
                                                          "drop_positive_from_denominator": False}}],
        "aggregation": "token-mean", "kl": {"coef": 0.0, "kind": "k3"}, "entropy_coef": 0.0}),
    _preset("clip_cov", "Clip-Cov: zero the loss of a few high-covariance tokens", {
        "advantage": {"name": "grpo", "params": {}},
        "policy_loss": {"name": "ppo_clip", "params": {"clip_low": 1.0, "clip_high": 1.0, "clip_ratio_c": None}},
        "token_overrides": [{"name": "clip_cov", "params": {"ratio": 2.0e-4, "lb": 1.0, "ub": 5.0}}],
        "aggregation": "token-mean", "kl": {"coef": 0.0}, "entropy_coef": 0.0}),
    _preset("kl_cov", "KL-Cov: |log-ratio| penalty on the top-covariance tokens", {
        "advantage": {"name": "grpo", "params": {}}, "policy_loss": _PPO_CLIP,
        "token_overrides": [{"name": "kl_cov", "params": {"frac": 2.0e-3, "coef": 1.0}}],
        "aggregation": "token-mean", "kl": {"coef": 0.0}, "entropy_coef": 0.0}),
    _preset("llds", "GRPO + LLDS likelihood-preservation regulariser (action gate, lambda 0.2)", {
        "advantage": _GRPO_ADV, "policy_loss": _PPO_CLIP, "aggregation": "token-mean",
        "aux_losses": [{"name": "llds", "params": {"lam": 0.2, "gate": "action", "norm": "code",
                                                   "preserve": "adv>=0", "mask_answer": False}}],
        "kl": {"coef": 0.001, "kind": "k3"}, "entropy_coef": 0.001}, minibatches=2),
    _preset("llds_ma", "LLDS-MA: LLDS with the answer span down-weighted (tool-use rollouts)", {
        "advantage": _GRPO_ADV, "policy_loss": _PPO_CLIP, "aggregation": "token-mean",
        "aux_losses": [{"name": "llds", "params": {
            "lam": 0.2, "gate": "action", "norm": "code", "preserve": "adv>=0", "mask_answer": True,
            "answer_weight": "paper", "valid_search_target": 2.0}}],
        "kl": {"coef": 0.001, "kind": "k3"}, "entropy_coef": 0.001}, minibatches=2),
    _preset("lp_reg", "Lp-Reg: low-probability negative tokens regularised toward a min-p proxy", {
        "advantage": {"name": "grpo", "params": {}},
        "policy_loss": {"name": "ppo_clip", "params": {"clip_low": 1.0, "clip_high": 9.0, "clip_ratio_c": None}},
        "token_overrides": [{"name": "lp_reg", "params": {
            "rho_neg": 0.01, "rho_pos": 0.0, "coef": 1.0, "kl_type": "k3", "rounding": "floor",
            "kappa": 0.02, "threshold": "minp", "fill": "hard"}}],
        "aggregation": "token-mean", "kl": {"coef": 0.0}, "entropy_coef": 0.0}),
    _preset("hapo", "HAPO: entropy-adaptive clipping and advantage redistribution", {
        "advantage": {"name": "hapo_tlga", "params": {"std_normalize": True, "eps": 1.0e-6, "fallback_abs": 5.0}},
        "policy_loss": {"name": "hapo", "params": {
            "clip_low": 0.2, "clip_high": 0.2, "clip_ratio_c": 10.0, "entropy_pivot": 0.8,
            "clip_alpha": 1.0, "adv_beta": 1.0, "code_compat_sign": False}},
        "aggregation": "token-mean", "kl": {"coef": 0.0}, "entropy_coef": 0.0,
        "dynamic_sampling": {"enabled": True, "max_gen_batches": 16}}),
    _preset("nthr", "NTHR: selective penalisation of negative tokens by token hidden reward", {
        "advantage": {"name": "grpo", "params": {}},
        "policy_loss": {"name": "ppo_clip", "params": {"clip_low": 0.2, "clip_high": 0.2}},
        "token_modifiers": [{"name": "nthr", "params": {"beta_tau": 1.0, "eta": None}}],
        "aggregation": "token-mean", "kl": {"coef": 1.0e-4, "kind": "k3"},
        "dynamic_sampling": {"enabled": True, "max_gen_batches": 10}}),
    _preset("thr", "THR: token-hidden-reward reweighting of the advantages", {
        "advantage": {"name": "grpo", "params": {}},
        "policy_loss": {"name": "ppo_clip", "params": {"clip_low": 0.2, "clip_high": 0.2}},
        "token_modifiers": [{"name": "thr", "params": {"p": 0.2, "beta_tau": 1.0, "mode": "reweight"}}],
        "aggregation": "token-mean", "kl": {"coef": 1.0e-4, "kind": "k3"},
        "dynamic_sampling": {"enabled": True, "max_gen_batches": 10}}),
    _preset("passk", "Pass@K-GRPO: closed-form Pass@K advantages on binary outcomes (k=4)", {
        "advantage": {"name": "passk", "params": {"k": 4, "eps": 1.0e-6}}, "policy_loss": _PPO_CLIP,
        "aggregation": "token-mean", "kl": {"coef": 0.0, "kind": "k3"}, "entropy_coef": 0.0}),
    _preset("pkpo", "PKPO: unbiased per-sample Pass@K rewards as advantages (k=4)", {
        "advantage": {"name": "pkpo", "params": {"k": 4, "baseline": "none"}}, "policy_loss": _PPO_CLIP,
        "aggregation": "token-mean", "kl": {"coef": 0.0, "kind": "k3"}, "entropy_coef": 0.0}),
    _preset("psr", "PSR: A=+1 on correct responses, the incorrect ones removed", {
        "advantage": {"name": "psr", "params": {"pos_reward": 1.0, "subset": True}}, "policy_loss": _PPO_CLIP,
        "aggregation": "token-mean", "kl": {"coef": 0.0, "kind": "k3"}, "entropy_coef": 0.0}),
    _preset("nsr", "NSR: A=-1 on incorrect responses, the correct ones removed", {
        "advantage": {"name": "nsr", "params": {"neg_reward": -1.0, "subset": True}}, "policy_loss": _PPO_CLIP,
        "aggregation": "token-mean", "kl": {"coef": 0.0, "kind": "k3"}, "entropy_coef": 0.0}),
    _preset("w_reinforce", "W-REINFORCE: A=+0.1 on correct, -1 on incorrect responses", {
        "advantage": {"name": "w_reinforce", "params": {"lambda_pos": 0.1, "neg_reward": -1.0, "baseline": "none"}},
        "policy_loss": _PPO_CLIP, "aggregation": "token-mean", "kl": {"coef": 0.0, "kind": "k3"},
        "entropy_coef": 0.0}),
    _preset("spear", "SPEAR: self-imitation replay and tool-call bonus on a Dr.GRPO-style base", {
        "advantage": {"name": "dr_grpo", "params": {}},
        "policy_loss": {"name": "ppo_clip", "params": {"clip_low": 0.2, "clip_high": 0.28, "clip_ratio_c": None}},
        "aggregation": "seq-mean-token-sum-norm", "t_norm": None, "legacy_no_batch_norm": True,
        "kl": {"coef": 0.0}, "entropy_coef": 0.001,
        "spear": {
            "toolcall": {"kind": "cosine", "per_call": 0.1, "cap": 1.0, "schedule_steps": 200},
            "replay": {
                "buffer_size": 2048, "trigger": 1.5, "tolerate_steps": 5, "baseline_size": 10240,
                "percentile": 50, "advantage_weight": None, "coef": 1.0, "warmup_steps": 100,
                "policy_loss": {"name": "ppo_clip", "params": {"clip_low": 0.2, "clip_high": 0.28,
                                                               "clip_ratio_c": None}},
                "token_overrides": [{"name": "clip_cov", "params": {"ratio": 0.02, "lb": 2.0, "ub": 60.0}}],
                "entropy_coef": 0.001, "kl_coef": 0.0},
            "rollout_filter": {"type": "std", "ratio": 0.75}}}),
    # Registered estimators that no YAML preset uses on its own, with GRPO's loss and their defaults.
    _preset("hapo_tlga", "HAPO's token-level group average advantage with GRPO's loss", {
        "advantage": {"name": "hapo_tlga", "params": {}}, "policy_loss": _PPO_CLIP,
        "aggregation": "token-mean"}, config_file=None),
    _preset("passk_surrogate", "Pass@K surrogate-reward advantages (omega=grpo by default) with GRPO's loss", {
        "advantage": {"name": "passk_surrogate", "params": {}}, "policy_loss": _PPO_CLIP,
        "aggregation": "token-mean"}, config_file=None),
)}


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
    return set(registry.entry(comp.name).meta.get("needs", ()))


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
