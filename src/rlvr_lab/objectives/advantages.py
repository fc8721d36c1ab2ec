"""Group-relative advantage estimators: sequence rewards ``(P, G)`` -> advantages ``(P, G)``.

Groups are dense ``(P, G)`` tensors (one row per prompt). Ragged groups are not supported here;
pad them to ``G`` or use a dedicated function. Registered estimators share the call shape
``fn(rewards (P, G), ctx: StepContext | None, **params) -> (P, G)``.
"""

from __future__ import annotations

import torch

from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.registry import ADVANTAGE_ESTIMATORS, Bool, Float


def group_advantages(
    rewards: torch.Tensor,
    *,
    std_normalize: bool = True,
    std_unbiased: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO advantage ``(r - mean_g) / (std_g + eps)``; Dr.GRPO when ``std_normalize`` is False.

    GRPO: arXiv 2402.03300 (sec. 4.1.2); Dr.GRPO (no std division): arXiv 2503.20783 (sec. 3.2).

    Args:
        rewards: (P, G) float, one row per prompt group.
        std_normalize: divide by the group std (GRPO) or not (Dr.GRPO).
        std_unbiased: N-1 std (verl, Search-R1) or population std (HAPO).
        eps: added to the std; 1e-6 as in verl (TRL uses 1e-4).

    Returns:
        (P, G) float32 advantages. All-equal groups give exactly 0. A singleton group (G=1) uses
        mean 0 and std 1, so its advantage equals its reward (verl's convention).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (P, G), got shape {tuple(rewards.shape)}")
    r = rewards.float()
    if r.shape[1] == 1:
        return r.clone()
    centred = r - r.mean(dim=1, keepdim=True)  # (P, G)
    if not std_normalize:
        return centred
    std = r.std(dim=1, unbiased=std_unbiased, keepdim=True)  # (P, 1)
    return centred / (std + eps)


@ADVANTAGE_ESTIMATORS.register(
    "grpo",
    params={"std_unbiased": Bool(help="Unbiased (n-1) group std, as verl; false: population std."),
            "eps": Float(ge=0, help="Added to the group std before dividing.")},
    paper="arXiv 2402.03300 (GRPO), eq. 3", summary="group z-score of the rewards", group_relative=True,
)
def grpo_advantages(
    rewards: torch.Tensor, ctx: StepContext | None = None, *, std_unbiased: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Group z-score advantage, (P, G) -> (P, G). See :func:`group_advantages`."""
    return group_advantages(rewards, std_normalize=True, std_unbiased=std_unbiased, eps=eps)


ADVANTAGE_ESTIMATORS.default = "grpo"


@ADVANTAGE_ESTIMATORS.register(
    "dr_grpo", paper="arXiv 2503.20783 (Dr.GRPO), sec. 3.2", summary="group-centred reward, no std division",
    group_relative=True,
)
def dr_grpo_advantages(rewards: torch.Tensor, ctx: StepContext | None = None) -> torch.Tensor:
    """Dr.GRPO: group-centred reward without std division (arXiv 2503.20783), (P, G) -> (P, G)."""
    return group_advantages(rewards, std_normalize=False)


def broadcast_to_tokens(seq_advantages: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Sequence advantages (B,) -> token advantages (B, T), zero off ``loss_mask``."""
    return seq_advantages.float().unsqueeze(-1) * loss_mask.float()
