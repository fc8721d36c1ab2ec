"""Supervised warm-start: teach the answer format (and some of the task) before RL.

The objective is next-token cross-entropy or, selectable by config, the Diversity-or-Precision
loss (arXiv 2512.22955; spec section 9), computed a chunk of positions at a time from the final
hidden states so that no ``(B, T, V)`` tensor is kept for backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from rlvr_lab.objectives import masked_mean
from rlvr_lab.objectives.div_prec import IGNORE_INDEX, div_prec_chunked_loss
from rlvr_lab.train.batching import supervised_batch
from rlvr_lab.train.logprobs import response_hidden, sequence_token_stats
from rlvr_lab.types import Batch
from rlvr_lab.train.optim import build_optimizer, build_scheduler, clip_and_step


# examples -> (target token ids, per-token loss mask or None for "train on every target token")
TargetFn = Callable[[Sequence[Mapping[str, Any]]], tuple[list[list[int]], list[list[bool]] | None]]


def sft_targets(tokenizer, examples: Sequence[Mapping[str, Any]], template: str) -> list[list[int]]:
    """Token ids of ``template.format(answer=...)`` followed by EOS, per example."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [tokenizer.encode(template.format(answer=ex["answer"]), add_special_tokens=False) + eos for ex in examples]


def template_targets(tokenizer, template: str) -> TargetFn:
    return lambda examples: (sft_targets(tokenizer, examples, template), None)


def cross_entropy_loss(model, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean next-token cross-entropy over the target tokens."""
    stats = sequence_token_stats(model, batch.input_ids, batch.attention_mask, batch.response_start)
    return -masked_mean(stats.logprobs, batch.loss_mask), {}


def div_prec_loss(model, batch: Batch, **params) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Diversity-or-Precision loss (arXiv 2512.22955), mean over the target tokens, and its metrics."""
    hidden = response_hidden(model, batch.input_ids, batch.attention_mask, batch.response_start)  # (B, T, d)
    targets = batch.input_ids[:, batch.response_start :].masked_fill(~batch.loss_mask, IGNORE_INDEX)  # (B, T)
    head = model.get_output_embeddings()
    per_token, metrics = div_prec_chunked_loss(
        hidden.reshape(-1, hidden.shape[-1]), head.weight, targets.reshape(-1), lm_head_bias=head.bias, **params
    )  # (B*T,), 0 on ignored positions
    return per_token.sum() / batch.loss_mask.sum().clamp_min(1), metrics


SFT_LOSSES = {"cross_entropy": cross_entropy_loss, "div_prec": div_prec_loss}


def forvalue_select(
    model,
    tokenizer,
    render: Callable[[Mapping[str, Any]], str],
    pool: Sequence[Mapping[str, Any]],
    val: Sequence[Mapping[str, Any]],
    *,
    fraction: float,
    target_template: str,
    targets: TargetFn | None = None,
    batch_size: int = 8,
    vocab: str = "all",
) -> tuple[list[int], list[float]]:
    """The ``ceil(fraction · len(pool))`` warm-start examples of ``pool`` with the highest For-Value scores
    (arXiv 2508.10180) against the mean of ``val``, under ``model`` as it is now (before the warm-start).

    Each example becomes the prompt and target tokens :func:`supervised_warmstart` would train on (a
    demonstration's loss mask included), so the score is the alignment of exactly that sample's last-layer
    gradient with the validation samples'. Returns the kept positions of ``pool`` in pool order (ties
    broken by position) and every example's score.
    """
    from rlvr_lab.analysis.value import Sample, ValueSettings, score_token_samples

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not pool or not val:
        raise ValueError(f"need warm-start and validation examples, got {len(pool)} and {len(val)}")
    targets = targets or template_targets(tokenizer, target_template)

    def samples(examples: Sequence[Mapping[str, Any]]) -> list[Sample]:
        prompts = [tokenizer.encode(render(ex), add_special_tokens=False) for ex in examples]
        ids, masks = targets(examples)
        out = []
        for i, (p, y) in enumerate(zip(prompts, ids)):
            # as in supervised_warmstart: a mask shorter than the target leaves the rest of it counted
            mask = None if masks is None else ([bool(m) for m in masks[i]] + [True] * len(y))[: len(y)]
            out.append(Sample(p, list(y), mask))
        return out

    settings = ValueSettings(batch_size=batch_size, vocab=vocab, top_k=0)  # type: ignore[arg-type]
    scores = [float(x) for x in score_token_samples(model, samples(pool), samples(val), settings)]
    ranked = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
    return sorted(ranked[: math.ceil(fraction * len(pool))]), scores


def supervised_warmstart(
    model,
    tokenizer,
    render: Callable[[Mapping[str, Any]], str],
    next_examples: Callable[[int, int], list[Mapping[str, Any]]],
    *,
    steps: int,
    batch_size: int,
    optim,
    target_template: str,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    loss: str = "cross_entropy",
    loss_params: Mapping[str, Any] | None = None,
    targets: TargetFn | None = None,
) -> list[dict[str, float]]:
    """``steps`` steps of the ``loss`` objective (a name in :data:`SFT_LOSSES`) on ``target_template`` responses.

    ``next_examples(step, n)`` returns the examples of a step; ``render`` turns one into the prompt.
    The record of each step has ``sft/loss`` plus the objective's own metrics (``div_prec/*``).
    ``targets`` replaces the template with demonstrations that may mask tokens out of the loss (tool
    output inside a multi-turn demonstration).
    """
    targets = targets or template_targets(tokenizer, target_template)
    loss_fn = SFT_LOSSES[loss]
    optimizer = build_optimizer(model, lr=optim.lr, weight_decay=optim.weight_decay, betas=optim.betas,
                                name=optim.name)
    scheduler = build_scheduler(optimizer, warmup_steps=optim.warmup_steps, total_steps=steps, schedule=optim.schedule)
    pad = tokenizer.pad_token_id
    history = []
    model.train()
    for step in range(steps):
        examples = next_examples(step, batch_size)
        prompts = [tokenizer.encode(render(ex), add_special_tokens=False) for ex in examples]
        ids, masks = targets(examples)
        batch = supervised_batch(prompts, ids, pad)
        if masks is not None:
            for i, mask in enumerate(masks):
                batch.loss_mask[i, : len(mask)] &= torch.as_tensor(mask, dtype=torch.bool)
        batch = batch.to(next(model.parameters()).device)
        value, metrics = loss_fn(model, batch, **(loss_params or {}))
        value.backward()
        grad_norm, _ = clip_and_step(model, optimizer, scheduler, optim.max_grad_norm)
        record = {"sft/loss": value.item(), "sft/grad_norm": grad_norm, "sft/lr": scheduler.get_last_lr()[0]}
        record.update({k: float(v) for k, v in metrics.items()})
        history.append(record)
        if on_step is not None:
            on_step(step, record)
    model.eval()
    return history
