"""Data passed between the stages of a training step.

Shapes use the notation of the algorithms spec: ``B`` sequences, ``T`` padded response length,
``Lp`` padded prompt length, ``P`` prompts and ``G`` responses per prompt (``B = P * G``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Score:
    """What a verifier says about one response.

    ``value`` is the reward. ``correct`` is the task verdict when the verifier has one (a format
    reward has none). ``error`` is set when the verifier raised or ran out of time: the value is
    then 0.0 *and* the error is counted by the metrics, so a broken verifier is never a silent zero.
    ``parts`` keeps each component of a weighted combination, by name.
    """

    value: float
    correct: bool | None = None
    error: str | None = None
    parts: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Generation:
    """A batch of sampled continuations, as returned by the rollout engine.

    Every response position is either *sampled* by the policy or *forced* (tool output, injected
    text). Only the engine decides this, and ``loss_mask`` is derived from nothing else.
    """

    prompt_ids: torch.Tensor  # (B, Lp) long, left-padded with the pad id
    prompt_mask: torch.Tensor  # (B, Lp) bool, True on real prompt tokens
    response_ids: torch.Tensor  # (B, T) long, right-padded with the pad id
    response_mask: torch.Tensor  # (B, T) bool, True on every real response token (sampled or forced)
    sampled_mask: torch.Tensor  # (B, T) bool, True where the policy sampled the token
    sampler_logprobs: torch.Tensor  # (B, T) float32, log-prob under the sampling distribution; 0 elsewhere
    truncated: torch.Tensor  # (B,) bool, True when the response hit max_new_tokens without stopping
    texts: list[str] = field(default_factory=list)  # decoded responses (stop string included)
    # (B, T) float32 entropy of the tempered distribution at each sampled position, 0 elsewhere;
    # None unless SamplingParams.report_entropy
    sampler_entropy: torch.Tensor | None = None

    @property
    def loss_mask(self) -> torch.Tensor:
        """(B, T) bool: the tokens that train. Sampled tokens only."""
        return self.sampled_mask & self.response_mask

    @property
    def response_lengths(self) -> torch.Tensor:
        """(B,) long: real response tokens per sequence."""
        return self.response_mask.sum(-1)

    def __len__(self) -> int:
        return self.response_ids.shape[0]


@dataclass
class Batch:
    """One rollout batch made ready for the update: tensors for ``B = P * G`` sequences.

    ``input_ids`` holds prompt and response together so one forward pass scores all response tokens;
    ``response_start`` is the column of the first response token (prompts are left-padded to the
    same length ``Lp``).
    """

    input_ids: torch.Tensor  # (B, Lp + T) long
    attention_mask: torch.Tensor  # (B, Lp + T) bool
    response_start: int  # = Lp
    loss_mask: torch.Tensor  # (B, T) bool
    rewards: torch.Tensor  # (B,) float32
    group_ids: torch.Tensor  # (B,) long, prompt index of each sequence
    advantages: torch.Tensor | None = None  # (B, T) float32, token advantages (0 off the loss mask)
    old_logprobs: torch.Tensor | None = None  # (B, T) float32, behaviour policy, recomputed by the trainer
    ref_logprobs: torch.Tensor | None = None  # (B, T) float32, frozen reference policy
    sampler_logprobs: torch.Tensor | None = None  # (B, T) float32, as reported by the sampler
    # Method-specific per-sequence (B,) or per-token (B, T) tensors, by name (e.g. "proxy_logprobs",
    # "action_ids", "answer_mask", "old_entropy"); rows follow the batch through select/to.
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor) -> "Batch":
        """Rows ``index`` of every tensor field (for mini- and micro-batches)."""
        return self._map(lambda x: x[index])

    def to(self, device) -> "Batch":
        return self._map(lambda x: x.to(device))

    def _map(self, fn) -> "Batch":
        def pick(x):
            return None if x is None else fn(x)

        return Batch(
            input_ids=fn(self.input_ids),
            attention_mask=fn(self.attention_mask),
            response_start=self.response_start,
            loss_mask=fn(self.loss_mask),
            rewards=fn(self.rewards),
            group_ids=fn(self.group_ids),
            advantages=pick(self.advantages),
            old_logprobs=pick(self.old_logprobs),
            ref_logprobs=pick(self.ref_logprobs),
            sampler_logprobs=pick(self.sampler_logprobs),
            extras={k: fn(v) for k, v in self.extras.items()},
        )
