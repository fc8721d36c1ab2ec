"""Extra, detached inputs that some objectives need beyond sampled-token log-probs.

The trainer fills only what the configured components ask for; every tensor here is detached.
Shapes: ``B`` sequences, ``T`` response positions, ``d`` hidden size, ``K`` group-vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class StepContext:
    rewards: torch.Tensor | None = None  # (B,) sequence rewards after shaping
    correct: torch.Tensor | None = None  # (B,) bool task verdict (binary-reward methods fall back to it)
    group_ids: torch.Tensor | None = None  # (B,) prompt index; groups are contiguous runs of G rows
    group_size: int | None = None  # G
    response_lengths: torch.Tensor | None = None  # (B,) policy tokens per response (loss_mask sum)
    ref_logprobs: torch.Tensor | None = None  # (B, T) frozen reference policy
    entropy: torch.Tensor | None = None  # (B, T) token entropy of the current policy (detached)
    old_entropy: torch.Tensor | None = None  # (B, T) token entropy of the behaviour policy
    proxy_logprobs: torch.Tensor | None = None  # (B, T) Lp-Reg proxy log-prob of the sampled token
    hidden: torch.Tensor | None = None  # (B, T, d) final-layer hidden states of the old policy (THR)
    action_ids: torch.Tensor | None = None  # (B, T) long: 0 off policy tokens, 1.. per contiguous action
    answer_mask: torch.Tensor | None = None  # (B, T) bool: final answer span
    num_tokens: float | None = None  # masked tokens in the whole mini-batch (global normaliser)
    num_sequences: float | None = None  # sequences in the whole mini-batch
    global_step: int = 0  # RL step, from 0
    tool_calls: torch.Tensor | None = None  # (B,) tool calls per response
    valid_searches: torch.Tensor | None = None  # (B,) valid search calls per response
    extras: dict[str, Any] = field(default_factory=dict)  # method-specific state (e.g. HAPO batch statistics)
