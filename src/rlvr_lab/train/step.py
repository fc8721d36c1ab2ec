"""One policy-gradient update over a rollout batch: the composable GRPO-family step.

Order of stages (spec section 0.4): token advantages are ready on the batch; for each micro-batch
the policy log-probs are computed with gradient, the configured policy loss gives a ``(B, T)``
matrix, the aggregator reduces it with whole-mini-batch denominators, and the auxiliary terms
(KL to the reference, entropy bonus) are added, each with its own normalisation.

Method state that is not a per-row tensor (the Clip-Cov generator, LLDS's whole-mini-batch
``|Y_pre|``) enters through a *context function* ``context(mini) -> dict`` called once per
mini-batch; its result is merged into ``StepContext.extras`` of every micro-batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from rlvr_lab.diagnostics.grads import GradGroups
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
from rlvr_lab.train.logprobs import ChunkFn, TokenStats, sequence_token_stats
from rlvr_lab.types import Batch

ContextFn = Callable[[Batch], dict[str, Any]]  # mini-batch -> extra ctx.extras (method state)


@dataclass(frozen=True)
class LossSpec:
    """The maths of the update, unpacked once from the config (hyperparameters as plain values)."""

    policy_loss: str = field(default_factory=lambda: POLICY_LOSSES.default)
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
    coef: float = 1.0  # weight of the whole loss (SPEAR replay coefficient); logged losses stay unweighted
    # not maths but how it is computed: run each distinct prompt of a micro-batch once (same result)
    share_prompts: bool = True

    @property
    def needs_current_entropy(self) -> bool:
        """Entropy of the current policy: for the entropy bonus or a component that declares it."""
        return self.entropy_coef > 0 or any(
            "entropy" in registry.entry(name).needs
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
    model, mb: Batch, spec: LossSpec, den: Denominators | None, scale: float = 1.0,
    extras: dict[str, Any] | None = None, global_step: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of one micro-batch (already scaled to its share of the mini-batch) and its metrics.

    ``extras`` (mini-batch-level method state) is merged into ``ctx.extras``; ``global_step`` is the
    RL step from 0.
    """
    stats = sequence_token_stats(
        model,
        mb.input_ids,
        mb.attention_mask,
        mb.response_start,
        temperature=spec.temperature,
        with_entropy=spec.needs_current_entropy,
        share_prompts=spec.share_prompts,
    )
    return loss_from_logprobs(stats.logprobs, stats.entropy, mb, spec, den, scale=scale, extras=extras,
                              global_step=global_step)


def loss_from_logprobs(
    logprobs: torch.Tensor, entropy: torch.Tensor | None, mb: Batch, spec: LossSpec, den: Denominators | None,
    *, scale: float = 1.0, extras: dict[str, Any] | None = None, global_step: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The composed loss of one micro-batch from its current-policy (B, T) ``logprobs`` (with grad) and
    ``entropy`` (B, T, or None): policy loss -> token overrides -> aggregation with ``den`` -> KL to the
    reference -> entropy bonus -> auxiliary losses, all times ``spec.coef``.

    Engines that run their own forward pass (the TRL adapter) call this directly. ``mb.old_logprobs``
    None means the rollout policy is the current one (old = current, detached).
    """
    logp = logprobs  # (b, T)
    old = logp.detach() if mb.old_logprobs is None else mb.old_logprobs
    mask = mb.loss_mask
    ctx = step_context(mb, den, entropy=None if entropy is None else entropy.detach(), extras=extras,
                       global_step=global_step)
    loss_fn = POLICY_LOSSES.get(spec.policy_loss)
    pg_mat, metrics = loss_fn(logp, old, mb.advantages, mask, ctx, **spec.policy_params)
    for name, params in spec.token_overrides:
        pg_mat, extra = TOKEN_LOSS_OVERRIDES.get(name)(pg_mat, logp, old, mb.advantages, mask, ctx, **params)
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
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs the current policy's entropy")
        ent_loss = spec.aggregate(entropy, mask, den) * scale
        total = total - spec.entropy_coef * ent_loss
        metrics["policy/entropy_bonus"] = ent_loss.detach()
    for name, params in spec.aux_losses:
        # each auxiliary loss owns its normalisation, using the whole-mini-batch counts in ctx
        aux, extra = AUX_LOSSES.get(name)(logp, old, mb.advantages, mask, ctx, **params)
        total = total + aux * scale
        # its loss metric becomes this micro-batch's share, like grpo/pg_loss, so shares add up
        metrics.update({k: v * scale if is_loss_share(k) else v for k, v in extra.items()})
    return total * spec.coef, metrics


def step_context(
    mb: Batch, den: Denominators | None, *, entropy: torch.Tensor | None,
    extras: dict[str, Any] | None = None, global_step: int = 0,
) -> StepContext:
    """Detached side inputs of one micro-batch for the objectives.

    ``ctx.extras`` holds the batch's per-row method tensors (``mb.extras``, e.g. THR scores) plus
    the mini-batch-level ``extras``.
    """
    rows = mb.extras
    return StepContext(
        rewards=mb.rewards,
        correct=rows.get("correct"),
        group_ids=mb.group_ids,
        response_lengths=mb.loss_mask.sum(-1),
        ref_logprobs=mb.ref_logprobs,
        entropy=entropy,
        old_entropy=rows.get("old_entropy"),
        proxy_logprobs=rows.get("proxy_logprobs"),
        action_ids=rows.get("action_ids"),
        answer_mask=rows.get("answer_mask"),
        num_tokens=None if den is None else den.num_tokens,
        num_sequences=None if den is None else den.num_sequences,
        global_step=global_step,
        tool_calls=rows.get("tool_calls"),
        valid_searches=rows.get("valid_searches"),
        extras={**rows, **(extras or {})},
    )


# How a micro-batch metric combines into its mini-batch value (spec 0.7: "a mean over the optimiser
# step's micro-batches unless it is a count"), matched on the name after the namespace. Loss shares
# and counts are summed; everything else is a rate, averaged with weights proportional to size.
LOSS_SHARE_NAMES = ("loss",)  # `llds/loss`
LOSS_SHARE_SUFFIXES = ("_loss", "_bonus")  # `grpo/pg_loss`, `grpo/kl_loss`, `policy/entropy_bonus`
COUNT_PREFIXES = ("num_",)  # `lp_reg/num_selected`, `clip_cov/num_zeroed`
COUNT_SUFFIXES = ("_count",)  # `hapo/pg_clipfrac_count`


def _name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def is_loss_share(key: str) -> bool:
    """A micro-batch's share of the mini-batch loss (it is scaled so that the shares add up)."""
    return _name(key) in LOSS_SHARE_NAMES or _name(key).endswith(LOSS_SHARE_SUFFIXES)


def is_count(key: str) -> bool:
    return _name(key).startswith(COUNT_PREFIXES) or _name(key).endswith(COUNT_SUFFIXES)


def is_summed_metric(key: str) -> bool:
    """True for loss shares and counts (summed over micro-batches); rates are size-weighted means."""
    return is_loss_share(key) or is_count(key)


def accumulate_metrics(sums: dict[str, float], metrics: Mapping[str, Any], weight: float) -> None:
    """Add one micro-batch's ``metrics`` into ``sums``: loss shares and counts are summed, rates are
    weighted by ``weight`` (the micro-batch's share of the rows), so the result describes the whole batch."""
    for key, value in metrics.items():
        sums[key] = sums.get(key, 0.0) + (float(value) if is_summed_metric(key) else float(value) * weight)


def minibatch_update(
    model, optimizer, scheduler, mini: Batch, spec: LossSpec, *, micro_batch_size: int,
    max_grad_norm: float | None, context: ContextFn | None = None, global_step: int = 0,
    grad_groups: GradGroups | None = None,
) -> dict[str, float]:
    """One optimiser step over ``mini`` with gradient accumulation across micro-batches.

    With ``global_normalization`` the denominators are counted over the whole mini-batch, so the
    accumulated gradient equals the gradient of the mini-batch loss whatever the micro-batch size.
    Otherwise each micro-batch normalises itself and the results are averaged (the reference forks).
    ``context(mini)`` gives the mini-batch-level ``ctx.extras`` (see the module docstring);
    ``grad_groups`` adds the pre-clip gradient norm of each layer group (``grad_norm/<group>``).
    """
    from rlvr_lab.train.optim import clip_and_step

    n = len(mini)
    starts = list(range(0, n, micro_batch_size))
    den = denominators(mini.loss_mask, exclude_empty_sequences=spec.exclude_empty_sequences) if spec.global_normalization else None
    scale = 1.0 if spec.global_normalization else 1.0 / len(starts)
    extras = context(mini) if context is not None else {}
    sums: dict[str, float] = defaultdict(float)
    for lo in starts:
        mb = mini.select(torch.arange(lo, min(lo + micro_batch_size, n)))
        loss, metrics = micro_batch_loss(model, mb, spec, den, scale, extras, global_step)
        loss.backward()
        accumulate_metrics(sums, metrics, len(mb) / n)
    if grad_groups is not None:
        sums.update(grad_groups.norms())
    grad_norm, stepped = clip_and_step(model, optimizer, scheduler, max_grad_norm)
    sums["policy/grad_norm"] = grad_norm
    sums["policy/skipped_steps"] = float(not stepped)
    return dict(sums)


@torch.no_grad()
def score_tokens(
    model, batch: Batch, *, temperature: float, micro_batch_size: int, with_entropy: bool,
    chunk_fns: Mapping[str, ChunkFn] | None = None, with_hidden: bool = False, share_prompts: bool = True,
) -> TokenStats:
    """Stats of the batch's response tokens without gradient, micro-batch by micro-batch.

    Returns (B, T) log-probs, entropy if asked, one (B, T) tensor per chunk function (e.g. Lp-Reg's
    proxy log-prob, computed chunk-wise from the full logits, which are never kept), and the
    (B, T, d) final hidden states if asked (THR/NTHR).
    """
    was_training = model.training
    model.eval()
    parts: list[TokenStats] = []
    for lo in range(0, len(batch), micro_batch_size):
        mb = batch.select(torch.arange(lo, min(lo + micro_batch_size, len(batch))))
        parts.append(sequence_token_stats(
            model, mb.input_ids, mb.attention_mask, mb.response_start,
            temperature=temperature, with_entropy=with_entropy, chunk_fns=chunk_fns, with_hidden=with_hidden,
            share_prompts=share_prompts,
        ))
    model.train(was_training)
    return TokenStats(
        logprobs=torch.cat([p.logprobs for p in parts]),
        entropy=torch.cat([p.entropy for p in parts]) if with_entropy else None,
        extras={k: torch.cat([p.extras[k] for p in parts]) for k in parts[0].extras},
        hidden=torch.cat([p.hidden for p in parts]) if with_hidden else None,
    )


def policy_update(
    model, optimizer, scheduler, batch: Batch, spec: LossSpec, *, minibatches: int, epochs: int,
    micro_batch_size: int, max_grad_norm: float | None, generator: torch.Generator,
    context: ContextFn | None = None, global_step: int = 0, grad_groups: GradGroups | None = None,
    shuffle: str = "rows",
) -> dict[str, float]:
    """All optimiser steps for one rollout batch: ``epochs`` passes of ``minibatches`` shuffled mini-batches.

    ``shuffle="rows"`` draws each mini-batch from all rows; ``"groups"`` shuffles whole groups
    (``batch.group_ids``) and cuts the shuffled rows into contiguous mini-batches, so a mini-batch
    holds the G responses of few prompts (verl's unshuffled split is group-aligned the same way) and
    the prompt-shared forward runs each prompt once for the whole group.

    After the first optimiser step the policy differs from ``old_logprobs``: that is what makes
    the ratio, the clip and the off-policy methods meaningful.

    Mini-batches have ``len(batch) // minibatches`` rows; when a sample filter left a batch whose
    size is not a multiple of ``minibatches``, the remainder rows (chosen at random by the shuffle)
    are dropped from that epoch and counted in ``policy/dropped_rows``. With fewer rows than
    mini-batches there is no update (``policy/skipped_updates``).
    """
    size = len(batch) // minibatches
    if size == 0:
        return {"policy/skipped_updates": 1.0, "policy/optimizer_steps": 0.0}
    model.train()
    per_step: list[dict[str, float]] = []
    for _ in range(epochs):
        order = shuffled_rows(batch.group_ids, generator, by_group=shuffle == "groups")
        for m in range(minibatches):
            mini = batch.select(order[m * size : (m + 1) * size])
            per_step.append(
                minibatch_update(
                    model, optimizer, scheduler, mini, spec, micro_batch_size=micro_batch_size,
                    max_grad_norm=max_grad_norm, context=context, global_step=global_step,
                    grad_groups=grad_groups,
                )
            )
    model.eval()
    keys = set().union(*per_step)
    out = {k: sum(s.get(k, 0.0) for s in per_step) / len(per_step) for k in keys}
    out["policy/optimizer_steps"] = float(len(per_step))
    out["policy/skipped_steps"] = sum(s.get("policy/skipped_steps", 0.0) for s in per_step)
    out["policy/dropped_rows"] = float(len(batch) - size * minibatches)
    return out


def shuffled_rows(group_ids: torch.Tensor, generator: torch.Generator, *, by_group: bool) -> torch.Tensor:
    """A random order of the rows (B,): uniform over rows, or whole groups in random order with each
    group's rows kept together."""
    if not by_group:
        return torch.randperm(len(group_ids), generator=generator)
    groups, inverse = torch.unique(group_ids.cpu(), return_inverse=True)
    rank = torch.empty(len(groups), dtype=torch.long)
    rank[torch.randperm(len(groups), generator=generator)] = torch.arange(len(groups))
    # stable sort by the group's random rank: rows of one group stay adjacent, in their original order
    return torch.sort(rank[inverse], stable=True).indices


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
