"""Extra, detached inputs that some objectives need beyond sampled-token log-probs.

The trainer fills what the configured components ask for; everything here is detached.
Fields are added as methods arrive (entropy for HAPO, proxy log-probs for Lp-Reg, hidden states
for THR, action ids and answer masks for LLDS), all optional.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepContext:
    rewards: torch.Tensor | None = None  # (B,) sequence rewards
    group_ids: torch.Tensor | None = None  # (B,) prompt index
    ref_logprobs: torch.Tensor | None = None  # (B, T) frozen reference policy
    entropy: torch.Tensor | None = None  # (B, T) current-policy token entropy (detached)
    action_ids: torch.Tensor | None = None  # (B, T) long, 0 off policy tokens, 1.. per action
    answer_mask: torch.Tensor | None = None  # (B, T) bool, final answer span
    global_step: int = 0
