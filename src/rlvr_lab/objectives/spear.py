"""SPEAR schedules and replay-advantage recalibration (arXiv 2509.22601; spec sections 7.2-7.3).

SPEAR ("self-imitation with progressive exploration") balances two curricula:

* an intrinsic tool-call reward that decays with a cosine schedule (skill-level exploration first),
* a self-imitation replay loss whose coefficient warms up with the mirrored cosine (exploitation later).

The replay buffer itself holds trajectories, so it lives in :mod:`rlvr_lab.train.replay`; this module
has the pure maths it uses. The formulas were read from the official code (TencentYoutuResearch/SPEAR:
``recipe/spear/reward.py``, ``ray_trainer_hybrid.py::TrajectoryBufferBatch``, ``dp_actor.py``).
"""

from __future__ import annotations

import math

import torch

TOOLCALL_KINDS = ("cosine", "constant", "none")


def toolcall_weight(step: int, *, schedule_steps: int = 200, kind: str = "cosine") -> float:
    """Curriculum weight ``w(step)`` of the tool-call bonus (spec 7.2).

    ``cosine``: ``(cos(π·step/T) + 1)/2`` for ``step ≤ T``, 0 after; ``constant``: 1; ``none``: 0.
    """
    if kind not in TOOLCALL_KINDS:
        raise ValueError(f"unknown tool-call schedule {kind!r}; allowed: {', '.join(TOOLCALL_KINDS)}")
    if kind == "constant":
        return 1.0
    if kind == "none":
        return 0.0
    if schedule_steps <= 0:
        raise ValueError(f"schedule_steps must be > 0 for the cosine schedule, got {schedule_steps}")
    if step > schedule_steps:
        return 0.0
    return (math.cos(math.pi * step / schedule_steps) + 1.0) / 2.0


def toolcall_bonus(
    tool_calls: torch.Tensor,
    step: int,
    task_scores: torch.Tensor | None = None,
    *,
    per_call: float = 0.1,
    cap: float = 1.0,
    schedule_steps: int = 200,
    kind: str = "cosine",
    posneg: bool = False,
) -> torch.Tensor:
    """Intrinsic tool-call reward ``min(cap, per_call·n_calls) · w(step)``, added to ``r_i`` (spec 7.2).

    With ``posneg`` (the ``..._posneg_decay_qwen3`` variant of SPEAR's ``recipe/spear/reward.py``):
    responses whose task score is ``≤ 0`` get ``min(cap, per_call·n)·w``, the others ``1[n > 0]·w``;
    ``task_scores`` is then required.

    Args:
        tool_calls: (B,) tool calls (ALFWorld/WebShop: environment steps) per response.
        step: RL step, from 0.
        task_scores: (B,) task scores, only for ``posneg``.
    Returns:
        (B,) float32 bonus (≥ 0).
    """
    w = toolcall_weight(step, schedule_steps=schedule_steps, kind=kind)
    n = tool_calls.float()
    count = (per_call * n).clamp(max=cap)
    if not posneg:
        return count * w
    if task_scores is None:
        raise ValueError("posneg tool-call bonus needs task_scores")
    return torch.where(task_scores.to(n.device).float() <= 0, count, (n > 0).float()) * w


def replay_coef(step: int, *, warmup_steps: int = 100, coef: float = 1.0) -> float:
    """Replay-loss coefficient ``c·(1 − cos(π·step/T))/2`` for ``step ≤ T``, then ``c`` (spec 7.3, ``dp_actor.py``)."""
    if warmup_steps <= 0 or step > warmup_steps:
        return float(coef)
    return coef * (1.0 - math.cos(math.pi * step / warmup_steps)) / 2.0


def reward_baseline(history: torch.Tensor, *, percentile: float = 50.0) -> torch.Tensor:
    """Global replay baseline: the ``percentile`` of past group-mean rewards (SPEAR: P50), a 0-d tensor.

    Linear interpolation between order statistics (as ``numpy.percentile``).

    Args:
        history: (H,) group-mean rewards of recent rollouts (H ≥ 1).
    Returns:
        0-d float64 tensor.
    """
    if history.numel() == 0:
        raise ValueError("the reward history is empty: push at least one rollout's group means first")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    x = torch.sort(history.double().flatten()).values
    pos = percentile / 100.0 * (x.numel() - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, x.numel() - 1)
    return x[lo] + (pos - lo) * (x[hi] - x[lo])


def recalibrated_advantages(
    rewards: torch.Tensor,
    history: torch.Tensor,
    *,
    percentile: float = 50.0,
    keep_zero: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Advantages of replayed trajectories against the global baseline, ``A_i = r_i − b`` (spec 7.3).

    No std normalisation (SPEAR runs Dr.GRPO-style). Only samples with ``A ≥ 0`` are kept, as the spec
    and the official code (``advantages.mean(-1) >= 0``) do; ``keep_zero=False`` keeps ``A > 0`` only
    (a zero advantage gives no policy gradient but still counts in the loss normaliser).

    Args:
        rewards: (N,) stored rewards of the candidate trajectories.
        history: (H,) group-mean rewards (see :func:`reward_baseline`).
    Returns:
        (advantages (N,) float32, keep (N,) bool, baseline 0-d tensor).
    """
    b = reward_baseline(history, percentile=percentile)
    adv = rewards.double() - b.to(rewards.device)  # float64 so a reward equal to b gives exactly 0
    keep = adv >= 0 if keep_zero else adv > 0
    return adv.float(), keep, b.float()
