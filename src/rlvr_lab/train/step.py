"""One policy-gradient update over a rollout batch: the composable GRPO-family step.

Order of stages (spec section 0.4): token advantages are ready on the batch; for each micro-batch
the policy log-probs are computed with gradient, the configured policy loss gives a ``(B, T)``
matrix, the aggregator reduces it with whole-mini-batch denominators, and the auxiliary terms
(KL to the reference, entropy bonus) are added, each with its own normalisation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from rlvr_lab.objectives import (
    AUX_LOSSES,
    POLICY_LOSSES,
    TOKEN_LOSS_OVERRIDES,
    Denominators,
    StepContext,
    aggregate,
    denominators,
    kl_estimate,
    masked_mean,
)
from rlvr_lab.train.logprobs import sequence_token_stats
from rlvr_lab.types import Batch


@dataclass(frozen=True)
class LossSpec:
    """The maths of the update, unpacked once from the config (hyperparameters as plain values)."""

    policy_loss: str = "ppo_clip"
    policy_params: dict = field(default_factory=dict)
    aggregation: str = "token-mean"
    t_norm: float | None = None
    global_normalization: bool = True
    exclude_empty_sequences: bool = False
    legacy_no_batch_norm: bool = False
    kl_coef: float = 0.0
    kl_kind: str = "k3"
    kl_clamp: float | None = 10.0
    entropy_coef: float = 0.0
    temperature: float = 1.0
    token_overrides: tuple[tuple[str, dict], ...] = ()  # (name, params), applied in order
    aux_losses: tuple[tuple[str, dict], ...] = ()  # (name, params), each adds its own scalar

    @property
    def needs_current_entropy(self) -> bool:
        """Entropy of the current policy: for the entropy bonus or a component that declares it."""
        return self.entropy_coef > 0 or any(
            "entropy" in registry.entry(name).meta.get("needs", ())
            for registry, comps in ((TOKEN_LOSS_OVERRIDES, self.token_overrides), (AUX_LOSSES, self.aux_losses),
                                    (POLICY_LOSSES, ((self.policy_loss, {}),)))
            for name, _ in comps
        )

    def aggregate(self, loss: torch.Tensor, mask: torch.Tensor, den: Denominators | None) -> torch.Tensor:
        return aggregate(
            loss,
            mask,
            self.aggregation,
            denominators=den,
            exclude_empty_sequences=self.exclude_empty_sequences,
            t_norm=self.t_norm,
            legacy_no_batch_norm=self.legacy_no_batch_norm,
        )


def micro_batch_loss(
    model, mb: Batch, spec: LossSpec, den: Denominators | None, scale: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of one micro-batch (already scaled to its share of the mini-batch) and its metrics."""
    stats = sequence_token_stats(
        model,
        mb.input_ids,
        mb.attention_mask,
        mb.response_start,
        temperature=spec.temperature,
        with_entropy=spec.needs_current_entropy,
    )
    logp = stats.logprobs  # (b, T)
    mask = mb.loss_mask
    ctx = step_context(mb, den, entropy=None if stats.entropy is None else stats.entropy.detach())
    loss_fn = POLICY_LOSSES.get(spec.policy_loss)
    pg_mat, metrics = loss_fn(logp, mb.old_logprobs, mb.advantages, mask, ctx, **spec.policy_params)
    for name, params in spec.token_overrides:
        pg_mat, extra = TOKEN_LOSS_OVERRIDES.get(name)(pg_mat, logp, mb.old_logprobs, mb.advantages, mask, ctx, **params)
        metrics.update(extra)
    pg_loss = spec.aggregate(pg_mat, mask, den) * scale
    total = pg_loss
    metrics["grpo/pg_loss"] = pg_loss.detach()
    if spec.kl_coef > 0:
        if mb.ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs reference log-probs on the batch")
        kl = kl_estimate(logp, mb.ref_logprobs, kind=spec.kl_kind, clamp=spec.kl_clamp)
        kl_loss = spec.aggregate(kl, mask, den) * scale
        total = total + spec.kl_coef * kl_loss
        metrics["grpo/kl_loss"] = kl_loss.detach()
    if spec.entropy_coef > 0:
        ent_loss = spec.aggregate(stats.entropy, mask, den) * scale
        total = total - spec.entropy_coef * ent_loss
        metrics["policy/entropy_bonus"] = ent_loss.detach()
    for name, params in spec.aux_losses:
        # each auxiliary loss owns its normalisation, using the whole-mini-batch counts in ctx
        aux, extra = AUX_LOSSES.get(name)(logp, mb.old_logprobs, mb.advantages, mask, ctx, **params)
        total = total + aux * scale
        metrics.update(extra)
    return total, metrics


def step_context(mb: Batch, den: Denominators | None, *, entropy: torch.Tensor | None) -> StepContext:
    """Detached side inputs of one micro-batch for the objectives."""
    extras = mb.extras
    return StepContext(
        rewards=mb.rewards,
        correct=extras.get("correct"),
        group_ids=mb.group_ids,
        response_lengths=mb.loss_mask.sum(-1),
        ref_logprobs=mb.ref_logprobs,
        entropy=entropy,
        old_entropy=extras.get("old_entropy"),
        proxy_logprobs=extras.get("proxy_logprobs"),
        action_ids=extras.get("action_ids"),
        answer_mask=extras.get("answer_mask"),
        num_tokens=None if den is None else den.num_tokens,
        num_sequences=None if den is None else den.num_sequences,
        tool_calls=extras.get("tool_calls"),
        valid_searches=extras.get("valid_searches"),
    )


def minibatch_update(
    model, optimizer, scheduler, mini: Batch, spec: LossSpec, *, micro_batch_size: int,
    max_grad_norm: float | None,
) -> dict[str, float]:
    """One optimiser step over ``mini`` with gradient accumulation across micro-batches.

    With ``global_normalization`` the denominators are counted over the whole mini-batch, so the
    accumulated gradient equals the gradient of the mini-batch loss whatever the micro-batch size.
    Otherwise each micro-batch normalises itself and the results are averaged (the reference forks).
    """
    from rlvr_lab.train.optim import clip_and_step

    n = len(mini)
    starts = list(range(0, n, micro_batch_size))
    den = denominators(mini.loss_mask, exclude_empty_sequences=spec.exclude_empty_sequences) if spec.global_normalization else None
    scale = 1.0 if spec.global_normalization else 1.0 / len(starts)
    sums: dict[str, float] = defaultdict(float)
    for lo in starts:
        mb = mini.select(torch.arange(lo, min(lo + micro_batch_size, n)))
        loss, metrics = micro_batch_loss(model, mb, spec, den, scale)
        loss.backward()
        weight = len(mb) / n
        for key, value in metrics.items():
            # losses are already shares of the mini-batch loss; rates are averaged by size
            sums[key] += float(value) if key.endswith("_loss") or key.endswith("_bonus") else float(value) * weight
    grad_norm, stepped = clip_and_step(model, optimizer, scheduler, max_grad_norm)
    sums["policy/grad_norm"] = grad_norm
    sums["policy/skipped_steps"] = float(not stepped)
    return dict(sums)


@torch.no_grad()
def score_tokens(model, batch: Batch, *, temperature: float, micro_batch_size: int, with_entropy: bool):
    """Log-probs (and entropy) of the batch's response tokens without gradient, (B, T) each."""
    was_training = model.training
    model.eval()
    logps, ents = [], []
    for lo in range(0, len(batch), micro_batch_size):
        mb = batch.select(torch.arange(lo, min(lo + micro_batch_size, len(batch))))
        stats = sequence_token_stats(
            model, mb.input_ids, mb.attention_mask, mb.response_start,
            temperature=temperature, with_entropy=with_entropy,
        )
        logps.append(stats.logprobs)
        if with_entropy:
            ents.append(stats.entropy)
    model.train(was_training)
    return torch.cat(logps), (torch.cat(ents) if with_entropy else None)


def policy_update(
    model, optimizer, scheduler, batch: Batch, spec: LossSpec, *, minibatches: int, epochs: int,
    micro_batch_size: int, max_grad_norm: float | None, generator: torch.Generator,
) -> dict[str, float]:
    """All optimiser steps for one rollout batch: ``epochs`` passes of ``minibatches`` shuffled mini-batches.

    After the first optimiser step the policy differs from ``old_logprobs``: that is what makes
    the ratio, the clip and the off-policy methods meaningful.
    """
    model.train()
    per_step: list[dict[str, float]] = []
    size = len(batch) // minibatches
    for _ in range(epochs):
        order = torch.randperm(len(batch), generator=generator)
        for m in range(minibatches):
            mini = batch.select(order[m * size : (m + 1) * size])
            per_step.append(
                minibatch_update(
                    model, optimizer, scheduler, mini, spec,
                    micro_batch_size=micro_batch_size, max_grad_norm=max_grad_norm,
                )
            )
    model.eval()
    keys = set().union(*per_step)
    out = {k: sum(s.get(k, 0.0) for s in per_step) / len(per_step) for k in keys}
    out["policy/optimizer_steps"] = float(len(per_step))
    out["policy/skipped_steps"] = sum(s.get("policy/skipped_steps", 0.0) for s in per_step)
    return out


def token_summary(batch: Batch, entropy: torch.Tensor | None) -> dict[str, float]:
    """Rollout-level token metrics: old-policy log-prob on positive/negative-advantage tokens, entropy."""
    mask = batch.loss_mask
    out: dict[str, float] = {}
    if batch.old_logprobs is not None and batch.advantages is not None:
        out["logp/pos_mean"] = float(masked_mean(batch.old_logprobs, mask & (batch.advantages > 0)))
        out["logp/neg_mean"] = float(masked_mean(batch.old_logprobs, mask & (batch.advantages < 0)))
    if entropy is not None:
        out["policy/entropy"] = float(masked_mean(entropy, mask))
    return out
