"""SPEAR's self-imitation replay buffer (arXiv 2509.22601; spec section 7.3).

The buffer keeps *promising* trajectories (positive on-policy advantage) from recent steps as CPU
tensors, and a bounded history of group-mean rewards that defines a global baseline. When enough
replayable trajectories have piled up it hands back one replay batch, then empties itself:

1. ``add(batch, step=s)`` after the step's advantages are computed: drop entries more than
   ``tolerate_steps`` older than the newest one, push the step's group-mean rewards into the history,
   keep the rows with ``Σ_t A_{i,t} > 0``. Storage is bounded by ``capacity`` (FIFO eviction).
2. ``ready()``: the number of *replayable* entries (reward above the current P50 baseline) exceeds
   ``trigger × buffer_size`` (SPEAR: 1.5 × 2048).
3. ``sample(generator)``: recalibrate advantages ``A = r − b`` with ``b`` = P50 of the history, keep
   ``A ≥ 0``, draw a power-of-two count ``≤ buffer_size`` at random, return it as a :class:`Batch`
   (stored ``old_logprobs``, so the ratio is off-policy), and reset the trajectory store.

The trainer then runs the policy loss on that batch (clip 0.2/0.28, Clip-Cov with the replay
settings, entropy bonus, no KL), scaled by :func:`rlvr_lab.objectives.spear.replay_coef`, with its
own optimiser steps after the on-policy update.

Differences from the official ``TrajectoryBufferBatch`` (documented, deliberate):
* a hard ``capacity`` with FIFO eviction bounds memory (the official store is bounded only by
  staleness and the reset);
* the baseline history is bounded per group entry (``deque``), not per step;
* ``tolerate_steps`` is not silently capped at 10.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from rlvr_lab.objectives.spear import recalibrated_advantages, reward_baseline
from rlvr_lab.types import Batch


@dataclass(frozen=True)
class Trajectory:
    """One stored response with its prompt, unpadded, on the CPU."""

    prompt_ids: torch.Tensor  # (Lp_i,) long, real prompt tokens
    response_ids: torch.Tensor  # (T_i,) long, response up to its last real token
    response_mask: torch.Tensor  # (T_i,) bool, real response tokens (sampled or forced)
    loss_mask: torch.Tensor  # (T_i,) bool, policy tokens
    old_logprobs: torch.Tensor  # (T_i,) float32, behaviour policy at insertion
    advantages: torch.Tensor  # (T_i,) float32, on-policy token advantages at insertion
    reward: float
    step: int
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # 0-d per sequence or (T_i,) per token


def _last_true(x: torch.Tensor) -> int:
    idx = x.nonzero()
    return int(idx.max()) + 1 if idx.numel() else 0


def _cpu(x: torch.Tensor) -> torch.Tensor:
    # clone: a slice would keep the whole batch tensor alive
    return x.detach().to("cpu").clone()


def trajectories_from_batch(batch: Batch, rows: Iterable[int], *, step: int) -> list[Trajectory]:
    """Unpad rows of ``batch`` into :class:`Trajectory` records (needs advantages and old_logprobs)."""
    if batch.advantages is None or batch.old_logprobs is None:
        raise ValueError("the batch needs advantages and old_logprobs before it can be stored")
    lp = batch.response_start
    T = batch.loss_mask.shape[1]
    out = []
    for i in rows:
        prompt_mask = batch.attention_mask[i, :lp].bool()
        resp_mask = batch.attention_mask[i, lp:].bool()
        n = max(_last_true(resp_mask), _last_true(batch.loss_mask[i]))
        extras = {}
        for key, value in batch.extras.items():
            if value.dim() == 1:
                extras[key] = _cpu(value[i])
            elif value.dim() == 2 and value.shape[1] == T:
                extras[key] = _cpu(value[i, :n])
            else:
                raise ValueError(f"extra {key!r} must be (B,) or (B, T), got {tuple(value.shape)}")
        out.append(
            Trajectory(
                prompt_ids=_cpu(batch.input_ids[i, :lp][prompt_mask]),
                response_ids=_cpu(batch.input_ids[i, lp : lp + n]),
                response_mask=_cpu(resp_mask[:n]),
                loss_mask=_cpu(batch.loss_mask[i, :n].bool()),
                old_logprobs=_cpu(batch.old_logprobs[i, :n].float()),
                advantages=_cpu(batch.advantages[i, :n].float()),
                reward=float(batch.rewards[i]),
                step=int(step),
                extras=extras,
            )
        )
    return out


def batch_from_trajectories(
    trajs: list[Trajectory], advantages: torch.Tensor, *, pad_token_id: int
) -> Batch:
    """Left-pad prompts and right-pad responses into a :class:`Batch` (CPU).

    Args:
        trajs: N records; advantages: (N, T_max) token advantages to put on the batch.
    Group ids are ``0..N-1``: replayed samples have no groups.
    """
    N = len(trajs)
    lp = max(1, max(t.prompt_ids.numel() for t in trajs))
    T = max(1, max(t.response_ids.numel() for t in trajs))
    input_ids = torch.full((N, lp + T), pad_token_id, dtype=torch.long)
    attn = torch.zeros(N, lp + T, dtype=torch.bool)
    loss_mask = torch.zeros(N, T, dtype=torch.bool)
    old = torch.zeros(N, T, dtype=torch.float32)
    common = set(trajs[0].extras).intersection(*(t.extras for t in trajs[1:]))
    extras: dict[str, torch.Tensor] = {}
    for i, t in enumerate(trajs):
        p, n = t.prompt_ids.numel(), t.response_ids.numel()
        input_ids[i, lp - p : lp] = t.prompt_ids
        attn[i, lp - p : lp] = True
        input_ids[i, lp : lp + n] = t.response_ids
        attn[i, lp : lp + n] = t.response_mask
        loss_mask[i, :n] = t.loss_mask
        old[i, :n] = t.old_logprobs
    for key in sorted(common):
        first = trajs[0].extras[key]
        if first.dim() == 0:
            extras[key] = torch.stack([t.extras[key] for t in trajs])
        else:
            padded = torch.zeros(N, T, dtype=first.dtype)
            for i, t in enumerate(trajs):
                padded[i, : t.extras[key].numel()] = t.extras[key]
            extras[key] = padded
    return Batch(
        input_ids=input_ids,
        attention_mask=attn,
        response_start=lp,
        loss_mask=loss_mask,
        rewards=torch.tensor([t.reward for t in trajs], dtype=torch.float32),
        group_ids=torch.arange(N),
        advantages=advantages[:, :T] * loss_mask,
        old_logprobs=old,
        extras=extras,
    )


def _floor_power_of_two(n: int) -> int:
    """Largest power of two ≤ n, and 0 for n ≤ 1 (as the official sampler)."""
    return 0 if n <= 1 else 1 << (n.bit_length() - 1)


class TrajectoryBuffer:
    """Bounded store of promising trajectories plus the reward history that sets the replay baseline.

    Deterministic given the ``torch.Generator`` passed to :meth:`sample`.

    Args:
        buffer_size: the most trajectories in one replay batch, and the unit of the trigger (2048).
        trigger: replay when the replayable count exceeds ``trigger × buffer_size`` (1.5).
        tolerate_steps: drop entries more than this many steps older than the newest entry (script: 5).
        capacity: hard bound on stored trajectories, oldest evicted first; default
            ``2·ceil(trigger·buffer_size)``; must exceed ``trigger × buffer_size`` or replay never fires.
        baseline_size: group-mean rewards kept for the baseline (10240).
        percentile: baseline percentile of the history (50: SPEAR's P50).
        advantage_weight: None (SPEAR's setting, ``weight_decay_trajectory_replay = -1``): recalibrate
            ``A = r − b``; a value in (0, 1]: replay the stored advantages scaled by it instead.
        keep_zero: keep recalibrated ``A = 0`` samples (spec and official code) or drop them.
        pad_token_id: pad id of the replay batch.
    """

    def __init__(
        self,
        *,
        buffer_size: int = 2048,
        trigger: float = 1.5,
        tolerate_steps: int = 5,
        capacity: int | None = None,
        baseline_size: int = 10240,
        percentile: float = 50.0,
        advantage_weight: float | None = None,
        keep_zero: bool = True,
        pad_token_id: int = 0,
    ):
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        if trigger <= 0:
            raise ValueError(f"trigger must be > 0, got {trigger}")
        if tolerate_steps < 0:
            raise ValueError(f"tolerate_steps must be >= 0, got {tolerate_steps}")
        threshold = trigger * buffer_size
        capacity = 2 * math.ceil(threshold) if capacity is None else capacity
        if capacity <= threshold:
            raise ValueError(
                f"capacity={capacity} must exceed trigger*buffer_size={threshold}, otherwise replay never triggers"
            )
        if baseline_size < 1:
            raise ValueError(f"baseline_size must be >= 1, got {baseline_size}")
        if advantage_weight is not None and not 0.0 < advantage_weight <= 1.0:
            raise ValueError(f"advantage_weight must be None (recalibrate) or in (0, 1], got {advantage_weight}")
        self.buffer_size = buffer_size
        self.trigger = trigger
        self.tolerate_steps = tolerate_steps
        self.capacity = capacity
        self.percentile = percentile
        self.advantage_weight = advantage_weight
        self.keep_zero = keep_zero
        self.pad_token_id = pad_token_id
        self._store: deque[Trajectory] = deque(maxlen=capacity)
        self._history: deque[float] = deque(maxlen=baseline_size)
        self.num_replays = 0

    # ---- state -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._store)

    @property
    def trajectories(self) -> list[Trajectory]:
        return list(self._store)

    @property
    def history(self) -> torch.Tensor:
        """(H,) float64 group-mean rewards, oldest first."""
        return torch.tensor(list(self._history), dtype=torch.float64)

    def baseline(self) -> float | None:
        """Current replay baseline (P50 of the history), None before the first :meth:`add`."""
        if not self._history:
            return None
        return float(reward_baseline(self.history, percentile=self.percentile))

    def reset(self) -> None:
        """Empty the trajectory store (the reward history is kept, as in the official trainer)."""
        self._store.clear()

    # ---- insert ----------------------------------------------------------------------------------

    def push_group_means(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        """Append the mean reward of each group to the history; returns them, (n_groups,)."""
        _, inverse = torch.unique(group_ids.cpu(), return_inverse=True)
        n = int(inverse.max()) + 1 if inverse.numel() else 0
        sums = torch.zeros(n, dtype=torch.float64).index_add_(0, inverse, rewards.detach().cpu().double())
        means = sums / torch.bincount(inverse, minlength=n).double()
        self._history.extend(means.tolist())
        return means

    def evict_stale(self, newest_step: int | None = None) -> int:
        """Drop entries more than ``tolerate_steps`` older than ``newest_step`` (default: the newest entry)."""
        if not self._store:
            return 0
        newest = max(t.step for t in self._store) if newest_step is None else newest_step
        kept = [t for t in self._store if newest - t.step <= self.tolerate_steps]
        dropped = len(self._store) - len(kept)
        if dropped:
            self._store = deque(kept, maxlen=self.capacity)
        return dropped

    def add(self, batch: Batch, *, step: int) -> dict[str, float]:
        """Store this step's positive-advantage trajectories; call after the step's advantages.

        Order as in the official trainer: evict stale entries, push the group means, insert.
        """
        stale = self.evict_stale()
        self.push_group_means(batch.rewards, batch.group_ids)
        if batch.advantages is None:
            raise ValueError("the batch needs token advantages before it can be stored")
        seq_adv = (batch.advantages.float() * batch.loss_mask.float()).sum(-1)  # (B,) sign of mean_t A
        rows = (seq_adv > 0).nonzero().flatten().tolist()
        before = len(self._store)
        new = trajectories_from_batch(batch, rows, step=step)
        self._store.extend(new)
        evicted = before + len(new) - len(self._store)
        return {
            "spear/buffer_size": float(len(self._store)),
            "spear/buffer_inserted": float(len(new)),
            "spear/buffer_evicted_stale": float(stale),
            "spear/buffer_evicted_capacity": float(evicted),
            "spear/buffer_replayable": float(self.replayable_count()),
        }

    # ---- trigger and replay ----------------------------------------------------------------------

    def replayable_count(self) -> int:
        """Entries that would be replayed now: reward above the baseline (all of them when
        ``advantage_weight`` is set or before any history), as the official ``get_buffer_size``."""
        b = self.baseline()
        if self.advantage_weight is not None or b is None:
            return len(self._store)
        return sum(1 for t in self._store if t.reward > b)

    def ready(self) -> bool:
        """True when the replayable count exceeds ``trigger × buffer_size``."""
        return self.replayable_count() > self.trigger * self.buffer_size

    def sample(
        self, generator: torch.Generator, *, min_size: int = 1, reset: bool = True
    ) -> tuple[Batch | None, dict[str, float]]:
        """A replay batch (CPU) with recalibrated advantages, or None when too few samples remain.

        Keeps ``A ≥ 0`` (recalibration) or all entries (``advantage_weight``), draws a power-of-two
        count ``≤ buffer_size`` uniformly without replacement, and by default empties the store
        (the official trainer resets even when the batch is too small to use).

        Args:
            generator: the only source of randomness.
            min_size: fewer selected samples than this (e.g. data-parallel ranks) gives None.
        """
        trajs = list(self._store)
        metrics: dict[str, float] = {"spear/replay_candidates": float(len(trajs))}
        if reset:
            self.reset()
        if not trajs:
            return None, metrics
        T = max(1, max(t.response_ids.numel() for t in trajs))
        if self.advantage_weight is None:
            rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float64)
            seq_adv, keep, b = recalibrated_advantages(
                rewards, self.history, percentile=self.percentile, keep_zero=self.keep_zero
            )
            token_adv = seq_adv.view(-1, 1).expand(len(trajs), T).clone()
            metrics["spear/replay_baseline"] = float(b)
        else:
            keep = torch.ones(len(trajs), dtype=torch.bool)
            token_adv = torch.zeros(len(trajs), T)
            for i, t in enumerate(trajs):
                token_adv[i, : t.advantages.numel()] = t.advantages * self.advantage_weight
        kept = keep.nonzero().flatten()
        n = min(_floor_power_of_two(kept.numel()), self.buffer_size)
        metrics["spear/replay_kept"] = float(kept.numel())
        metrics["spear/replay_size"] = float(n)
        if n == 0 or n < min_size:
            return None, metrics
        chosen = kept[torch.randperm(kept.numel(), generator=generator)[:n]].sort().values
        batch = batch_from_trajectories(
            [trajs[i] for i in chosen.tolist()], token_adv[chosen], pad_token_id=self.pad_token_id
        )
        self.num_replays += 1
        metrics["spear/replay_adv_mean"] = float(
            (batch.advantages.sum(-1) / batch.loss_mask.sum(-1).clamp_min(1)).mean()
        )
        metrics["spear/replay_count"] = float(self.num_replays)
        return batch, metrics
