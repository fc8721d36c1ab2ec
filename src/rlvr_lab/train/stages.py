"""The stages of one RL step that every trainer shares: reward shaping, advantages, the old-policy pass.

The native loop (:mod:`rlvr_lab.train.loop`) and the TRL adapter (:mod:`rlvr_lab.integrations.trl`)
call these same functions, so a method behaves the same whichever trainer runs it. Each stage reads
the method declarations through :class:`~rlvr_lab.train.methods.Methods`; none names a method.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rlvr_lab.config import Config
from rlvr_lab.objectives import ADVANTAGE_ESTIMATORS, TOKEN_ADVANTAGE_MODIFIERS, StepContext, broadcast_to_tokens
from rlvr_lab.objectives import overlong_penalty
from rlvr_lab.objectives.thr import SCORE_KEY
from rlvr_lab.train.methods import Methods, both
from rlvr_lab.train.step import score_tokens
from rlvr_lab.types import Batch

Metrics = dict[str, float]


def shape_rewards(
    cfg: Config, methods: Methods, rewards: torch.Tensor, response_lengths: torch.Tensor, *, step: int,
    tool_calls: torch.Tensor | None = None, invalid_actions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Sequence rewards (B,) after shaping, at RL ``step`` (from 0): DAPO's soft overlong punishment
    (arXiv 2503.14476, eq. 13), the invalid-action penalty of tool use, and the methods' intrinsic
    bonuses (SPEAR's tool-call reward). ``response_lengths`` (B,) count every response token."""
    metrics: Metrics = {}
    ol = cfg.algorithm.overlong
    if ol is not None:
        penalty = overlong_penalty(response_lengths.cpu(), max_len=ol.max_len, cache_len=ol.cache_len,
                                   factor=ol.factor).to(rewards.device)
        rewards = rewards + penalty
        metrics["dapo/overlong_reward"] = float(penalty.mean())
        metrics["dapo/overlong_ratio"] = float((penalty < 0).float().mean())
    weight = cfg.search.invalid_action_penalty
    if invalid_actions is not None and weight > 0:
        rewards = rewards - weight * invalid_actions.to(rewards.device)
        metrics["search/invalid_action_penalty"] = float((weight * invalid_actions).mean())
    rewards, bonus = methods.shape_rewards(rewards, tool_calls, step)
    return rewards, {**metrics, **bonus}


def sequence_advantages(
    cfg: Config, methods: Methods, rewards: torch.Tensor, ctx: StepContext
) -> tuple[torch.Tensor, torch.Tensor | None, Metrics]:
    """The estimator's (P, G) sequence advantages of (P, G) rewards, the rows its sample filter keeps
    ((P, G) bool, or None: all) and its group metrics."""
    comp = cfg.algorithm.advantage
    seq_adv = ADVANTAGE_ESTIMATORS.get(comp.name)(rewards, ctx, **comp.params)  # (P, G)
    keep = methods.estimator_keep(rewards, ctx)
    return seq_adv, keep, methods.estimator_metrics(rewards, seq_adv, ctx, keep)


def token_advantages(
    cfg: Config, methods: Methods, seq_adv: torch.Tensor, loss_mask: torch.Tensor, ctx: StepContext,
    keep: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, Metrics]:
    """(B,) sequence advantages broadcast to the (B, T) policy tokens, then each token modifier in order
    (GRPO-N, NTHR/THR); returns the token advantages, the rows kept by every sample filter so far
    ((B,) bool or None: all) and the modifiers' metrics."""
    adv = broadcast_to_tokens(seq_adv.to(loss_mask.device), loss_mask)  # (B, T)
    metrics: Metrics = {}
    for comp in cfg.algorithm.token_modifiers:
        keep = both(keep, methods.modifier_keep(comp, adv, loss_mask, ctx))
        adv, extra = TOKEN_ADVANTAGE_MODIFIERS.get(comp.name)(adv, loss_mask, ctx, **comp.params)
        metrics.update({k: float(v) for k, v in extra.items()})
    return adv, keep, metrics


@torch.no_grad()
def old_policy_pass(
    model, batch: Batch, methods: Methods, *, temperature: float, micro_batch_size: int, share_prompts: bool = True,
    keep_logprobs: bool = True,
) -> None:
    """The behaviour policy's log-probs, entropies and the method extras the configured components need
    (Lp-Reg's proxy log-probs from the full logits, THR/NTHR's token hidden reward from the final hidden
    states), written into ``batch``. ``keep_logprobs=False`` leaves ``batch.old_logprobs`` as the caller
    set it (an engine with its own old log-probs, or None for on-policy); THR then scores with the
    caller's log-probs where they exist."""
    old = score_tokens(
        model, batch, temperature=temperature, micro_batch_size=micro_batch_size, with_entropy=True,
        chunk_fns=methods.chunk_fns(temperature), with_hidden=methods.needs_hidden, share_prompts=share_prompts,
    )
    if keep_logprobs:
        batch.old_logprobs = old.logprobs
    batch.extras["old_entropy"] = old.entropy
    batch.extras.update(old.extras)  # (B, T) each
    if old.hidden is not None:
        logprobs = old.logprobs if batch.old_logprobs is None else batch.old_logprobs
        scored = replace(batch, old_logprobs=logprobs)
        batch.extras[SCORE_KEY] = methods.token_hidden_reward(model, scored, old.hidden, temperature)
