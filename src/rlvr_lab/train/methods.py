"""What the configured token-level methods ask of the trainer, in one place.

The loop (:mod:`rlvr_lab.train.loop`) reads as the algorithm: rollout, score, advantages, update,
log. Each method needs something from one of those stages; :class:`Methods` answers, from the
config and the registries' ``meta``, so the loop never branches on a method's name:

================  ===========================================================  =====================
method            what the trainer provides                                    hook
================  ===========================================================  =====================
LLDS              a start-up warning when it is identically 0 (one mini-batch  ``startup_warnings``
                  and one epoch: the policy never moves before the loss is
                  evaluated); per-action ids; the whole-mini-batch ``|Y_pre|``  ``row_inputs``,
                  for the paper normalisation                                  ``context``
LLDS-MA           fails at start-up: single-turn rollouts have no answer span  ``check_inputs``
                  and no search calls (tool use comes later)
PSR/NSR/GRPO-N    ``sample_filter`` rows removed before the update; the         ``estimator_keep``,
                  remainder of a mini-batch split is dropped, an empty batch   ``modifier_keep``,
                  skips the update (:func:`~rlvr_lab.train.step.policy_update`) ``drop_rows``
Pass@K, PSR/NSR   group metrics once per rollout (registry ``metrics`` hook)    ``estimator_metrics``
Lp-Reg            proxy log-probs, chunk-wise from the old policy's logits      ``chunk_fns``
Clip-Cov          a generator seeded from the run seed and the RL step          ``context``
HAPO              the adaptive sampling temperature                             ``temperature_fn``
THR/NTHR          token hidden reward from the old policy's hidden states       ``token_hidden_reward``
SPEAR             tool-call bonus, group filter, replay buffer and replay loss  :class:`Spear`
================  ===========================================================  =====================

RL steps given to objectives (``ctx.global_step``, SPEAR's schedules) count from 0; the loop's
``step`` counts from 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch

from rlvr_lab.config import AdaptiveTemperatureConfig, Config, NamedComponent, SpearConfig, inert_methods, replay_never_triggers
from rlvr_lab.objectives import (
    ADVANTAGE_ESTIMATORS,
    TOKEN_ADVANTAGE_MODIFIERS,
    StepContext,
)
from rlvr_lab.objectives.entropy_mech import GENERATOR_KEY
from rlvr_lab.objectives.hapo import entropy_stats, hapo_temperature, logits_entropy
from rlvr_lab.objectives.llds import action_ids_from_mask
from rlvr_lab.objectives.registry import Entry, Registry
from rlvr_lab.objectives.spear import replay_coef, toolcall_bonus, toolcall_weight
from rlvr_lab.objectives.thr import SCORE_KEY, compute_token_hidden_reward, positive_responses
from rlvr_lab.train.logprobs import ChunkFn
from rlvr_lab.train.replay import TrajectoryBuffer
from rlvr_lab.train.step import ContextFn, LossSpec
from rlvr_lab.types import Batch

Metrics = dict[str, float]

# Per-row inputs a single-turn rollout can give the objectives (tool-use rollouts add answer_mask,
# valid_searches and tool_calls).
SINGLE_TURN_PROVIDES = frozenset({"action_ids"})
TOOL_USE_PROVIDES = frozenset({"action_ids", "answer_mask", "valid_searches", "tool_calls"})


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) * 7_919 + 104_729  # apart from the rollout seeds


# ---- HAPO adaptive temperature ---------------------------------------------------------------------


class AdaptiveTemperature:
    """HAPO's sampler (arXiv 2509.16591, section 8.5): ``T = T0·(1 + τ·clamp(ĥ, −1, 1))`` per token.

    ĥ is the entropy of the raw logits normalised by :func:`entropy_stats` of the *previous* step's
    old-policy entropies (``update``); before the first update every token gets ``T0``. Those come
    from the trainer's scoring pass at the rollout temperature ``T0`` (the raw logits' entropy for the
    usual ``T0 = 1``). Called by the rollout engine with the logits of the rows still decoding; keeps
    a summary of the temperatures it hands out.
    """

    def __init__(self, cfg: AdaptiveTemperatureConfig, base_temperature: float):
        self.cfg = cfg
        self.base = base_temperature
        self.stats: dict[str, torch.Tensor] | None = None
        self._seen: list[torch.Tensor] = []

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        temps = hapo_temperature(logits_entropy(logits), self.stats, base_temperature=self.base, tau=self.cfg.tau)
        self._seen.append(torch.stack([temps.sum(), temps.min(), temps.max(), temps.new_tensor(float(temps.numel()))]))
        return temps  # (N,)

    def update(self, old_entropy: torch.Tensor, loss_mask: torch.Tensor) -> None:
        self.stats = entropy_stats(
            old_entropy, loss_mask, entropy_pivot=self.cfg.entropy_pivot, code_compat_sign=self.cfg.code_compat_sign
        )

    def metrics(self) -> Metrics:
        """Summary of the temperatures drawn since the last call (tokens of running rows)."""
        if not self._seen:
            return {}
        s = torch.stack(self._seen).cpu()  # (calls, 4): sum, min, max, count
        self._seen = []
        return {
            "hapo/temperature_mean": float(s[:, 0].sum() / s[:, 3].sum().clamp_min(1)),
            "hapo/temperature_min": float(s[:, 1].min()),
            "hapo/temperature_max": float(s[:, 2].max()),
            "hapo/temperature_adapted": float(self.stats is not None),
        }


# ---- SPEAR -------------------------------------------------------------------------------------------


class FixedSchedule:
    """Stands in for the LR scheduler on replay steps: the schedule counts on-policy steps only."""

    def step(self) -> None:
        pass


class Spear:
    """SPEAR (arXiv 2509.22601; spec 7.2-7.3) around one training run. Step order:

    1. ``bonus``: rollout rewards += ``toolcall_bonus(tool_calls, step)`` (0 without tool calls).
    2. ``group_keep`` (optional ``rollout_filter``): the highest reward-std groups train.
    3. ``store`` after the step's advantages: ``buffer.add`` keeps the positive-advantage rows.
    4. after the on-policy update, ``replay_batch``: when the buffer is ready, a recalibrated replay
       batch and ``replay_coef(step)``; the trainer runs its own optimiser steps on it with
       :meth:`replay_spec` (its own policy loss, overrides and entropy bonus, no KL).
    """

    def __init__(self, cfg: SpearConfig, *, pad_token_id: int):
        self.cfg = cfg
        r = cfg.replay
        self.buffer = None if r is None else TrajectoryBuffer(
            buffer_size=r.buffer_size, trigger=r.trigger, tolerate_steps=r.tolerate_steps, capacity=r.capacity,
            baseline_size=r.baseline_size, percentile=r.percentile, advantage_weight=r.advantage_weight,
            keep_zero=r.keep_zero, pad_token_id=pad_token_id,
        )

    def bonus(self, rewards: torch.Tensor, tool_calls: torch.Tensor | None, step: int) -> tuple[torch.Tensor, Metrics]:
        """Rewards (B,) plus the tool-call bonus at RL ``step`` (from 0); the task score is the old reward."""
        t = self.cfg.toolcall
        if t is None:
            return rewards, {}
        calls = torch.zeros_like(rewards) if tool_calls is None else tool_calls.to(rewards.device)
        bonus = toolcall_bonus(calls, step, rewards, per_call=t.per_call, cap=t.cap,
                               schedule_steps=t.schedule_steps, kind=t.kind, posneg=t.posneg)
        weight = toolcall_weight(step, schedule_steps=t.schedule_steps, kind=t.kind)
        return rewards + bonus, {"spear/toolcall_weight": weight, "spear/toolcall_bonus_mean": float(bonus.mean())}

    def group_keep(self, rewards: torch.Tensor) -> torch.Tensor | None:
        """(P, G) bool: the ``ratio`` share of groups with the largest reward std (None: keep all)."""
        f = self.cfg.rollout_filter
        if f is None:
            return None
        P = rewards.shape[0]
        std = rewards.float().std(dim=1, unbiased=False)  # (P,)
        top = torch.sort(std, descending=True, stable=True).indices[: max(1, int(f.ratio * P))]
        keep = torch.zeros(P, dtype=torch.bool, device=rewards.device)
        keep[top] = True
        return keep.unsqueeze(-1).expand_as(rewards)

    def store(self, batch: Batch, step: int) -> Metrics:
        if self.buffer is None:
            return {}
        return self.buffer.add(replace(batch, extras={}), step=step)  # method tensors are not replayed

    def replay_batch(self, step: int, generator: torch.Generator) -> tuple[Batch | None, float, Metrics]:
        """A replay batch when the buffer is ready (None otherwise), and the replay coefficient."""
        if self.buffer is None:
            return None, 0.0, {}
        r = self.cfg.replay
        coef = replay_coef(step, warmup_steps=r.warmup_steps, coef=r.coef)
        metrics = {"spear/replay_coef": coef, "spear/replay_ready": float(self.buffer.ready())}
        if not self.buffer.ready():
            return None, coef, metrics
        batch, sampled = self.buffer.sample(generator)
        metrics.update(sampled)
        if coef == 0.0:  # no gradient to add; stepping would only let Adam's momentum move the weights
            return None, coef, metrics
        return batch, coef, metrics

    def replay_spec(self, base: LossSpec, coef: float) -> LossSpec:
        r = self.cfg.replay
        return replace(
            base, policy_loss=r.policy_loss.name, policy_params=dict(r.policy_loss.params),
            token_overrides=tuple((c.name, dict(c.params)) for c in r.token_overrides), aux_losses=(),
            kl_coef=r.kl_coef, entropy_coef=r.entropy_coef, coef=coef,
        )


# ---- the configured methods --------------------------------------------------------------------


def components(cfg: Config) -> list[tuple[Registry, NamedComponent]]:
    """Every configured objective component with its registry."""
    return [(registry, comp) for _, registry, comp in cfg.algorithm.components()]


def components_needing(cfg: Config, what: str) -> list[tuple[Entry, dict[str, Any]]]:
    """Configured components whose registry entry lists ``what`` in ``meta["needs"]``, with full params."""
    out = []
    for registry, comp in components(cfg):
        entry = registry.entry(comp.name)
        if what in entry.needs:
            out.append((entry, entry.with_defaults(comp.params)))
    return out


def check_inputs(cfg: Config, provides: frozenset[str] = SINGLE_TURN_PROVIDES) -> None:
    """Fail at start-up, not mid-run, when a component needs per-row inputs the rollout cannot give."""
    for where, registry, comp in cfg.algorithm.components():
        entry = registry.entry(comp.name)
        missing = sorted((entry.needs_for(comp.params) & TOOL_USE_PROVIDES) - provides)
        if missing:
            fixes = entry.settings_without(comp.params, set(missing))
            fix = f"set {' or '.join(f'{where}.params.{f}' for f in fixes)}" if fixes else "change its parameters"
            raise ValueError(
                f"{where}: {comp.name!r} with these parameters ({entry.summary}) needs {missing} from the rollout, "
                f"which only tool-use (search) rollouts provide; these rollouts are single-turn. Either {fix}, "
                "or use a tool-use environment."
            )


def startup_warnings(cfg: Config) -> list[str]:
    """Configurations in which a method can have no effect, run anyway because the user set
    ``train.allow_inert_methods`` (config validation refuses them otherwise)."""
    out = [f"{message} It runs anyway (train.allow_inert_methods=true)." for message in inert_methods(cfg)]
    never = replay_never_triggers(cfg)
    return out + ([never] if never else [])


@dataclass
class ExtraUpdate:
    """An optimiser update on data other than the step's rollout (``batch`` None: none this step)."""

    batch: Batch | None = None
    spec: LossSpec | None = None
    minibatches: int = 1
    prefix: str = ""  # namespace of its update metrics
    metrics: Metrics = field(default_factory=dict)


class Methods:
    """Everything method-specific the trainer does, derived once from the config."""

    def __init__(self, cfg: Config, *, pad_token_id: int = 0):
        self.cfg = cfg
        algo = cfg.algorithm
        r = cfg.rollout
        base_t = r.temperature if r.temperature > 0 else 1.0
        self.adaptive = None if r.adaptive_temperature is None else AdaptiveTemperature(r.adaptive_temperature, base_t)
        self.spear = None if algo.spear is None else Spear(algo.spear, pad_token_id=pad_token_id)
        self.idle: dict[str, int] = {}  # acts_on metric -> consecutive steps at 0

    def state_dict(self) -> dict[str, Any]:
        """What changes from step to step (an exact resume restores it): HAPO's entropy statistics, SPEAR's
        replay buffer and baseline history, the inactivity counters. Plain objects, saved with torch.save."""
        return {"adaptive": self.adaptive, "spear": self.spear, "idle": dict(self.idle)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adaptive, self.spear, self.idle = state["adaptive"], state["spear"], dict(state["idle"])

    def _needs(self, what: str) -> list[tuple[Entry, dict[str, Any]]]:
        return components_needing(self.cfg, what)

    # ---- rollout ------------------------------------------------------------------------------

    def temperature_fn(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self.adaptive

    def shape_rewards(
        self, rewards: torch.Tensor, tool_calls: torch.Tensor | None, step: int
    ) -> tuple[torch.Tensor, Metrics]:
        """Rewards (B,) after the intrinsic bonuses (SPEAR's tool-call reward) at RL ``step`` (from 0)."""
        return self.spear.bonus(rewards, tool_calls, step) if self.spear else (rewards, {})

    # ---- old-policy pass ---------------------------------------------------------------------

    def chunk_fns(self, temperature: float) -> dict[str, ChunkFn]:
        """Per-chunk functions of the no-grad old-policy pass: a component with ``meta["proxy_fn"]``
        (Lp-Reg) gets ``proxy_logprobs`` from the full logits, with its ``proxy_params``."""
        fns = {}
        for entry, params in self._needs("proxy_logprobs"):
            proxy = {k: params[k] for k in entry.meta["proxy_params"]}
            fns["proxy_logprobs"] = partial(entry.meta["proxy_fn"], temperature=temperature, **proxy)
        return fns

    @property
    def needs_hidden(self) -> bool:
        return bool(self._needs(SCORE_KEY))

    def row_inputs(self, batch: Batch) -> None:
        """Per-row inputs the rollout did not give: single-turn action ids (one action per response)."""
        if self._needs("action_ids"):
            batch.extras.setdefault("action_ids", action_ids_from_mask(batch.loss_mask))

    def after_old_pass(self, batch: Batch) -> None:
        """The old-policy entropies set the next rollout's adaptive temperature (HAPO)."""
        if self.adaptive is not None:
            self.adaptive.update(batch.extras["old_entropy"], batch.loss_mask)

    @torch.no_grad()
    def token_hidden_reward(self, model, batch: Batch, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        """THR/NTHR scores (B, T) from the old policy's (B, T, d) hidden states, a group at a time."""
        head = model.get_output_embeddings()
        positive = positive_responses(batch.rewards, batch.extras.get("correct"))
        return compute_token_hidden_reward(
            hidden, head.weight, batch.input_ids[:, batch.response_start :], batch.loss_mask, batch.group_ids,
            positive, lm_head_bias=head.bias, old_logprobs=batch.old_logprobs, temperature=temperature,
        )

    # ---- advantages ------------------------------------------------------------------------

    def estimator_keep(self, rewards: torch.Tensor, ctx: StepContext) -> torch.Tensor | None:
        """(P, G) rows the estimator trains on (its ``sample_filter``) and SPEAR's group filter."""
        comp = self.cfg.algorithm.advantage
        f = ADVANTAGE_ESTIMATORS.entry(comp.name).meta.get("sample_filter")
        keep = None if f is None else f(rewards, ctx, **comp.params).bool()
        group = self.spear.group_keep(rewards) if self.spear else None
        return both(keep, group)

    def estimator_metrics(self, rewards, advantages, ctx, keep) -> Metrics:
        comp = self.cfg.algorithm.advantage
        entry = ADVANTAGE_ESTIMATORS.entry(comp.name)
        hook = entry.meta.get("metrics")
        if hook is None:
            return {}
        out = hook(rewards, advantages, ctx, keep=keep, **entry.with_defaults(comp.params))
        return {k: float(v) for k, v in out.items()}

    @staticmethod
    def modifier_keep(
        comp: NamedComponent, adv: torch.Tensor, loss_mask: torch.Tensor, ctx: StepContext
    ) -> torch.Tensor | None:
        """(B,) rows a token modifier keeps (its ``sample_filter`` on the modifier's input), or None."""
        f = TOKEN_ADVANTAGE_MODIFIERS.entry(comp.name).meta.get("sample_filter")
        return None if f is None else f(adv, loss_mask, ctx, **comp.params).bool()

    @staticmethod
    def drop_rows(batch: Batch, keep: torch.Tensor | None) -> tuple[Batch, Metrics]:
        """Remove the rows a sample filter dropped (B,) before the update; an empty result skips it."""
        if keep is None:
            return batch, {}
        metrics = {"filter/kept_rows": float(keep.sum()), "filter/dropped_rows": float((~keep).sum())}
        if bool(keep.all()):
            return batch, metrics
        return batch.select(keep.nonzero().flatten()), metrics

    # ---- update -----------------------------------------------------------------------------

    def context(self, step: int, batch: Batch | None = None) -> ContextFn:
        """Mini-batch-level ``ctx.extras``: a generator seeded from the run seed and the step, shared by
        the step's micro-batches (Clip-Cov's draw); what components compute once over the step's whole
        ``batch`` (their ``step_context`` hook: LLDS-MA's V_s); and what they compute over the whole
        mini-batch (``minibatch_context``: LLDS's ``|Y_pre|`` with the paper norm)."""
        generator = torch.Generator().manual_seed(_step_seed(self.cfg.run.seed, step))
        per_step: dict[str, Any] = {GENERATOR_KEY: generator}
        hooks = []
        for registry, comp in components(self.cfg):
            entry = registry.entry(comp.name)
            params = entry.with_defaults(comp.params)
            if "step_context" in entry.meta and batch is not None:
                per_step.update(entry.meta["step_context"](batch.extras, **params))
            if "minibatch_context" in entry.meta:
                hooks.append(partial(entry.meta["minibatch_context"], **params))

        def extras(mini: Batch) -> dict[str, Any]:
            out = dict(per_step)
            for hook in hooks:
                out.update(hook(mini.advantages, mini.loss_mask))
            return out

        return extras

    def inactivity(self, step: int, record: dict[str, Any]) -> list[str]:
        """Warnings, once each, for components that have acted on nothing for ``observe.inactive_steps``
        consecutive steps (their registry ``acts_on`` metric is 0 in every one of them)."""
        limit, out = self.cfg.observe.inactive_steps, []
        for registry, comp in components(self.cfg):
            acts_on = registry.entry(comp.name).acts_on
            if not limit or acts_on is None or acts_on[0] not in record:
                continue
            key, condition = acts_on
            self.idle[key] = self.idle.get(key, 0) + 1 if record[key] == 0 else 0
            if self.idle[key] == limit:
                out.append(f"step {step}: {comp.name} has changed nothing for {limit} consecutive steps ({key} = 0), "
                           f"so the update is the same as without it. It acts only on {condition}.")
        return out

    # ---- updates on other data ---------------------------------------------------------------------

    def remember(self, batch: Batch, step: int) -> Metrics:
        """Keep what later updates replay (SPEAR: the step's positive-advantage rows), at RL ``step``."""
        return self.spear.store(batch, step) if self.spear else {}

    def extra_update(self, step: int, generator: torch.Generator, base: LossSpec) -> ExtraUpdate:
        """An update on data other than this step's rollout, after the on-policy one: SPEAR's
        self-imitation replay batch with its own loss, scaled by ``replay_coef(step)``; none otherwise."""
        if self.spear is None:
            return ExtraUpdate()
        batch, coef, metrics = self.spear.replay_batch(step, generator)
        if batch is None:
            return ExtraUpdate(metrics=metrics)
        return ExtraUpdate(batch=batch, spec=self.spear.replay_spec(base, coef),
                           minibatches=self.spear.cfg.replay.minibatches, prefix="spear/replay_", metrics=metrics)

    def rollout_metrics(self) -> Metrics:
        return self.adaptive.metrics() if self.adaptive is not None else {}


def both(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """Rows kept by two filters (None means "keep all")."""
    if a is None or b is None:
        return b if a is None else a
    return a & b

