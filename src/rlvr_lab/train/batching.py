"""Turning generations and supervised pairs into :class:`~rlvr_lab.types.Batch` tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlvr_lab.types import Batch, Generation


def batch_from_generation(gen: Generation, rewards: torch.Tensor, group_ids: torch.Tensor) -> Batch:
    """Prompt and response side by side; ``loss_mask`` is the engine's sampled mask, nothing else.
    The sampler's entropies, when it reported them, go to ``extras["sampler_entropy"]``."""
    extras = {} if gen.sampler_entropy is None else {"sampler_entropy": gen.sampler_entropy}
    return Batch(
        input_ids=torch.cat([gen.prompt_ids, gen.response_ids], dim=1),
        attention_mask=torch.cat([gen.prompt_mask, gen.response_mask], dim=1),
        response_start=gen.prompt_ids.shape[1],
        loss_mask=gen.loss_mask,
        rewards=rewards.float(),
        group_ids=group_ids.long(),
        sampler_logprobs=gen.sampler_logprobs,
        extras=extras,
    )


def _pad_left(x: torch.Tensor, width: int, value) -> torch.Tensor:
    return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)


def _pad_right(x: torch.Tensor, width: int, value) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def concat_batches(batches: Sequence[Batch], pad_id: int) -> Batch:
    """Stack batches whose prompt and response widths differ (prompts re-padded on the left,
    responses on the right). Optional per-token fields must be present on all or none."""
    if len(batches) == 1:
        return batches[0]
    lp = max(b.response_start for b in batches)
    t = max(b.input_ids.shape[1] - b.response_start for b in batches)

    def join(get, value, dtype=None):
        parts = []
        for b in batches:
            x = get(b)
            if x is None:
                return None
            prompt, resp = x[:, : b.response_start], x[:, b.response_start :]
            parts.append(torch.cat([_pad_left(prompt, lp, value), _pad_right(resp, t, value)], dim=1))
        return torch.cat(parts)

    def join_tokens(get, value):
        parts = [get(b) for b in batches]
        if any(p is None for p in parts):
            return None
        return torch.cat([_pad_right(p, t, value) for p in parts])

    return Batch(
        input_ids=join(lambda b: b.input_ids, pad_id),
        attention_mask=join(lambda b: b.attention_mask, False),
        response_start=lp,
        loss_mask=join_tokens(lambda b: b.loss_mask, False),
        rewards=torch.cat([b.rewards for b in batches]),
        group_ids=torch.cat([b.group_ids for b in batches]),
        advantages=join_tokens(lambda b: b.advantages, 0.0),
        old_logprobs=join_tokens(lambda b: b.old_logprobs, 0.0),
        ref_logprobs=join_tokens(lambda b: b.ref_logprobs, 0.0),
        sampler_logprobs=join_tokens(lambda b: b.sampler_logprobs, 0.0),
        extras={key: _join_extra([b.extras[key] for b in batches], t) for key in batches[0].extras},
    )


def _join_extra(parts: list[torch.Tensor], t: int) -> torch.Tensor:
    """Per-sequence (B,) extras are stacked; per-token (B, T) ones are right-padded with zeros first."""
    if parts[0].dim() == 1:
        return torch.cat(parts)
    return torch.cat([_pad_right(p, t, 0) for p in parts])


def supervised_batch(prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Prompts left-padded and targets right-padded, loss on every target token (warm-start)."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    lp = max(len(p) for p in prompts)
    t = max(len(y) for y in targets)
    B = len(prompts)
    ids = torch.full((B, lp + t), pad_id, dtype=torch.long)
    attn = torch.zeros(B, lp + t, dtype=torch.bool)
    for i, (p, y) in enumerate(zip(prompts, targets)):
        ids[i, lp - len(p) : lp] = torch.as_tensor(p, dtype=torch.long)
        ids[i, lp : lp + len(y)] = torch.as_tensor(y, dtype=torch.long)
        attn[i, lp - len(p) : lp + len(y)] = True
    return Batch(
        input_ids=ids,
        attention_mask=attn,
        response_start=lp,
        loss_mask=attn[:, lp:].clone(),
        rewards=torch.zeros(B),
        group_ids=torch.arange(B),
    )
