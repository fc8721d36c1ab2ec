"""TRL's tensors as rlvr-lab's: the input dict as a :class:`~rlvr_lab.types.Batch`, the rewards, the
optimiser step's shared state. Imports no TRL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlvr_lab.objectives import Denominators, broadcast_to_tokens
from rlvr_lab.types import Batch

# Columns this trainer adds to TRL's generation batch. TRL shuffles and splits every (B, ...) tensor
# of that dict in unison, so each column follows its rows into the micro-batches.
REWARDS_KEY = "rlvr_rewards"  # (B,) float32, shaped sequence reward
CORRECT_KEY = "rlvr_correct"  # (B,) bool
GROUP_KEY = "rlvr_group_ids"  # (B,) long, prompt index in the (global) generation batch
KEEP_KEY = "rlvr_keep"  # (B,) bool, False for rows a sample filter dropped or no reward function scored
EXTRA_PREFIX = "rlvr_extra/"  # + name of a per-row method tensor (Batch.extras): action_ids, proxy_logprobs, ...

# Per-token inputs of multimodal models that TRL's forward takes from ``inputs``.
MULTIMODAL_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)


def batch_from_trl(inputs: Mapping[str, Any]) -> Batch:
    """An rlvr-lab :class:`~rlvr_lab.types.Batch` over the rows of a TRL input dict (see the package table).

    ``advantages`` may be TRL's (B,) or this trainer's (B, T); ``old_logprobs`` stays None when TRL
    did not compute it (the caller fills in the current log-probs, detached).
    """
    prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
    B = completion_ids.shape[0]
    mask = inputs["completion_mask"].bool()  # (B, T)
    if inputs.get("tool_mask") is not None:
        mask = mask & inputs["tool_mask"].bool()
    keep = inputs.get(KEEP_KEY)
    if keep is not None:
        mask = mask & keep.bool().unsqueeze(-1)
    advantages = inputs.get("advantages")
    if advantages is not None and advantages.dim() == 1:
        advantages = broadcast_to_tokens(advantages, mask)
    extras = {k[len(EXTRA_PREFIX):]: v for k, v in inputs.items() if k.startswith(EXTRA_PREFIX)}
    if inputs.get(CORRECT_KEY) is not None:
        extras["correct"] = inputs[CORRECT_KEY].bool()
    rewards = inputs.get(REWARDS_KEY)
    group_ids = inputs.get(GROUP_KEY)
    device = completion_ids.device
    return Batch(
        input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
        attention_mask=torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1).bool(),
        response_start=prompt_ids.shape[1],
        loss_mask=mask,
        rewards=torch.zeros(B, device=device) if rewards is None else rewards,
        group_ids=torch.arange(B, device=device) if group_ids is None else group_ids,
        advantages=advantages,
        old_logprobs=inputs.get("old_per_token_logps"),
        ref_logprobs=inputs.get("ref_per_token_logps"),
        sampler_logprobs=inputs.get("sampling_per_token_logps"),
        extras=extras,
    )


def trl_columns(batch: Batch) -> dict[str, Any]:
    """The columns a generation batch carries into TRL's input dict, from this trainer's rows: token
    advantages (TRL's loss accepts (B, T) too), the shaped rewards, ``correct``, group ids, ``keep`` and
    every other per-row method tensor (:func:`batch_from_trl` reads them back)."""
    extras = dict(batch.extras)
    out = {"advantages": batch.advantages, REWARDS_KEY: batch.rewards, CORRECT_KEY: extras.pop("correct"),
           GROUP_KEY: batch.group_ids, KEEP_KEY: extras.pop("keep")}
    out.update({EXTRA_PREFIX + k: v for k, v in extras.items()})
    return out


def rows_of(batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """TRL input dicts with the same columns (micro-batches of one generation) joined row-wise."""
    first = batches[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            out[key] = torch.cat([b[key] for b in batches])
        else:
            out[key] = value
    return out


def combined_rewards(
    rewards_per_func: torch.Tensor, weights: torch.Tensor, *, correct_column: int | None, correct_threshold: float,
    group_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rewards, correct, scorable), each (N,), from TRL's (N, F) per-function rewards (NaN: not scored).

    A row that no function scored gets its group's mean reward, so it does not move the group's
    baseline, and ``scorable`` False, so it never trains.
    """
    scorable = ~torch.isnan(rewards_per_func).all(dim=1)  # (N,)
    total = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)  # (N,)
    total = torch.where(scorable, total, torch.full_like(total, float("nan")))
    grouped = total.view(-1, group_size)  # (P, G)
    fill = torch.nanmean(grouped, dim=1, keepdim=True).nan_to_num(0.0).expand_as(grouped)
    rewards = torch.where(torch.isnan(grouped), fill, grouped).reshape(-1).float()
    source = rewards if correct_column is None else rewards_per_func[:, correct_column].nan_to_num(float("-inf"))
    correct = (source > correct_threshold) & scorable
    return rewards, correct, scorable


@dataclass
class Window:
    """What one optimiser step's micro-batches share: whole-step counts and method state."""

    den: Denominators | None
    extras: dict[str, Any]
    rows: int  # rows of the step on this process
    scale: float  # 1 with whole-step denominators; 1/micro-batches without (spec.global_normalization False)


def join(parts: Sequence[Batch]) -> Batch:
    """Micro-batches of one generation (equal widths) as one detached batch."""
    def cat(get):
        values = [get(p) for p in parts]
        return None if any(v is None for v in values) else torch.cat([v.detach() for v in values])

    names = set.intersection(*(set(p.extras) for p in parts))
    return Batch(
        input_ids=cat(lambda p: p.input_ids), attention_mask=cat(lambda p: p.attention_mask),
        response_start=parts[0].response_start, loss_mask=cat(lambda p: p.loss_mask), rewards=cat(lambda p: p.rewards),
        group_ids=cat(lambda p: p.group_ids), advantages=cat(lambda p: p.advantages),
        old_logprobs=cat(lambda p: p.old_logprobs), ref_logprobs=cat(lambda p: p.ref_logprobs),
        extras={k: cat(lambda p, k=k: p.extras[k]) for k in names},
    )
