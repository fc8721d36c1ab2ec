"""Supervised warm-start: teach the answer format (and some of the task) before RL."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from rlvr_lab.objectives import masked_mean
from rlvr_lab.train.batching import supervised_batch
from rlvr_lab.train.logprobs import sequence_token_stats
from rlvr_lab.train.optim import build_optimizer, build_scheduler, clip_and_step


def sft_targets(tokenizer, examples: Sequence[Mapping[str, Any]], template: str) -> list[list[int]]:
    """Token ids of ``template.format(answer=...)`` followed by EOS, per example."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [tokenizer.encode(template.format(answer=ex["answer"]), add_special_tokens=False) + eos for ex in examples]


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
) -> list[dict[str, float]]:
    """``steps`` steps of next-token cross-entropy on ``target_template`` responses.

    ``next_examples(step, n)`` returns the examples of a step; ``render`` turns one into the prompt.
    """
    optimizer = build_optimizer(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, betas=optim.betas)
    scheduler = build_scheduler(optimizer, warmup_steps=optim.warmup_steps, total_steps=steps, schedule=optim.schedule)
    pad = tokenizer.pad_token_id
    history = []
    model.train()
    for step in range(steps):
        examples = next_examples(step, batch_size)
        prompts = [tokenizer.encode(render(ex), add_special_tokens=False) for ex in examples]
        batch = supervised_batch(prompts, sft_targets(tokenizer, examples, target_template), pad)
        batch = batch.to(next(model.parameters()).device)
        stats = sequence_token_stats(model, batch.input_ids, batch.attention_mask, batch.response_start)
        loss = -masked_mean(stats.logprobs, batch.loss_mask)
        loss.backward()
        grad_norm, _ = clip_and_step(model, optimizer, scheduler, optim.max_grad_norm)
        record = {"sft/loss": loss.item(), "sft/grad_norm": grad_norm, "sft/lr": scheduler.get_last_lr()[0]}
        history.append(record)
        if on_step is not None:
            on_step(step, record)
    model.eval()
    return history
