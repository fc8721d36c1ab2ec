"""Reward shaping and group filtering from DAPO (arXiv 2503.14476, sec. 3.2 and 3.4)."""

from __future__ import annotations

import torch


def overlong_penalty(
    lengths: torch.Tensor, *, max_len: int, cache_len: int, factor: float = 1.0
) -> torch.Tensor:
    """Soft overlong punishment (DAPO, arXiv 2503.14476, eq. 13), times ``factor``:

    0 up to ``L_max - L_cache`` tokens, then ``((L_max - L_cache) - |y|) / L_cache`` (linear down to
    -1 at ``L_max``), and exactly -1 beyond ``L_max``: the penalty never falls below ``-factor``.

    Args:
        lengths: (B,) response lengths in tokens.
    Returns:
        (B,) float32 penalties (<= 0), to be added to the sequence reward.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(f"need 0 < cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}")
    expected = max_len - cache_len
    ramp = (-(lengths.float() - expected) / cache_len).clamp(min=-1.0, max=0.0)  # (B,) in [-1, 0]
    return ramp * factor


def informative_groups(rewards: torch.Tensor, *, atol: float = 0.0) -> torch.Tensor:
    """DAPO dynamic sampling filter: True for groups whose rewards are not all equal.

    Args:
        rewards: (P, G) group metric (reward or accuracy).
    Returns:
        (P,) bool. All-correct and all-wrong groups (zero std) give no GRPO gradient and are dropped.
    """
    spread = rewards.max(dim=1).values - rewards.min(dim=1).values  # (P,)
    return spread > atol
