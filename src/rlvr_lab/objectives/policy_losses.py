"""Policy-gradient surrogates that return a per-token loss matrix ``(B, T)`` (to be minimised).

Registered losses share one call shape so the trainer can swap them by name:
``fn(policy_logprobs, old_logprobs, advantages, loss_mask, ctx, **params) -> (loss, metrics)``
with all tensors (B, T); ``metrics`` are detached scalars under namespaced keys.
"""

from __future__ import annotations

import torch

from rlvr_lab.objectives.aggregate import masked_mean
from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.registry import POLICY_LOSSES, Float

Metrics = dict[str, torch.Tensor]

# Namespace of the policy-gradient metrics every policy loss shares (``grpo/pg_clipfrac``, ``grpo/ppo_kl``,
# the trainer's ``grpo/pg_loss``): the metric family of the GRPO surrogate, whichever method is configured.
POLICY_METRICS = "grpo"

LOG_RATIO_CLAMP = 20.0
GSPO_LOG_RATIO_CLAMP = 10.0


def clipped_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    clip_ratio_c: float | None = None,
    prefix: str = POLICY_METRICS,
) -> tuple[torch.Tensor, Metrics]:
    """PPO-clip token loss ``max(-A·ratio, -A·clip(ratio, 1-ε_low, 1+ε_high))`` (arXiv 1707.06347, eq. 7).

    Separate ``clip_low``/``clip_high`` give DAPO's clip-higher (arXiv 2503.14476, sec. 3.1).
    ``clip_ratio_c`` enables dual-clip for ``A < 0``: ``min(ℓ, -A·c)`` (arXiv 1912.09729); off by default.

    Args:
        ratio: (B, T) importance ratio, carries the gradient.
        advantages: (B, T) token advantages (detached).
        loss_mask: (B, T) bool, tokens that count (metrics only; the caller aggregates).
    """
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
    unclipped = -advantages * ratio  # (B, T)
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T)
    loss = torch.maximum(unclipped, clipped)
    metrics: Metrics = {f"{prefix}/pg_clipfrac": masked_mean((clipped > unclipped).float(), loss_mask).detach()}
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1, got {clip_ratio_c}")
        dual = -advantages * clip_ratio_c  # (B, T)
        use_dual = (advantages < 0) & (loss > dual)
        loss = torch.where(use_dual, dual, loss)
        metrics[f"{prefix}/pg_clipfrac_lower"] = masked_mean(use_dual.float(), loss_mask).detach()
    return loss, metrics


def _ppo_clip_off_policy(params) -> str | None:
    # On-policy the ratio is 1 everywhere: a symmetric clip is plain GRPO by design, but clip-higher
    # (DAPO) and dual-clip only act on ratios away from 1.
    if params["clip_low"] != params["clip_high"] or params["clip_ratio_c"] is not None:
        return "its asymmetric clip range (clip-higher) and dual clip only act on ratios away from 1"
    return None


@POLICY_LOSSES.register(
    "ppo_clip",
    params={"clip_low": Float(ge=0, help="ε_low: the ratio is clipped below at 1 - clip_low."),
            "clip_high": Float(ge=0, help="ε_high: the ratio is clipped above at 1 + clip_high (DAPO: 0.28)."),
            "clip_ratio_c": Float(gt=1, nullable=True, help="Dual-clip c for A < 0 (null: off).")},
    paper="arXiv 1707.06347 (PPO), eq. 7; clip-higher arXiv 2503.14476 (DAPO), sec. 3.1",
    summary="token-level PPO clipped surrogate",
    off_policy=_ppo_clip_off_policy,
)
def ppo_clip_loss(
    policy_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_ratio_c: float | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Token-level ratio ``exp(logp - logp_old)`` through :func:`clipped_surrogate` (GRPO, DAPO)."""
    log_ratio = (policy_logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, T)
    ratio = torch.exp(log_ratio)
    loss, metrics = clipped_surrogate(
        ratio, advantages, loss_mask, clip_low=clip_low, clip_high=clip_high, clip_ratio_c=clip_ratio_c
    )
    metrics["grpo/ppo_kl"] = masked_mean(-log_ratio, loss_mask).detach()
    return loss, metrics


POLICY_LOSSES.default = "ppo_clip"


@POLICY_LOSSES.register(
    "gspo",
    params={"clip_low": Float(ge=0, help="Lower clip of the sequence ratio (3e-4)."),
            "clip_high": Float(ge=0, help="Upper clip of the sequence ratio (4e-4).")},
    paper="arXiv 2507.18071 (GSPO), eq. 5-7", summary="sequence-level importance ratio, clipped",
    off_policy="its sequence-level ratio is 1 and never clipped, leaving GRPO with seq-mean-token-mean",
    aggregation="seq-mean-token-mean",
)
def gspo_loss(
    policy_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
) -> tuple[torch.Tensor, Metrics]:
    """GSPO-token loss with the sequence-level ratio (arXiv 2507.18071, eqs. 7 and 13; spec 1.5).

    ``log s_i = mean_t (logp - logp_old)`` over the response; each token uses
    ``s_{i,t} = sg[s_i] · π_θ(y_t)/sg[π_θ(y_t)]``, so its value is ``s_i`` and its gradient
    ``s_i ∇logp_t``. Registered with forced ``seq-mean-token-mean`` aggregation.
    """
    m = loss_mask.to(policy_logprobs.dtype)
    lengths = m.sum(-1).clamp_min(1.0)  # (B,)
    seq_log_ratio = ((policy_logprobs - old_logprobs) * m).sum(-1) / lengths  # (B,)
    token_log_ratio = seq_log_ratio.detach().unsqueeze(-1) + policy_logprobs - policy_logprobs.detach()
    ratio = torch.exp(token_log_ratio.clamp(max=GSPO_LOG_RATIO_CLAMP))  # (B, T)
    loss, metrics = clipped_surrogate(ratio, advantages, loss_mask, clip_low=clip_low, clip_high=clip_high)
    metrics["grpo/ppo_kl"] = masked_mean((old_logprobs - policy_logprobs), loss_mask).detach()
    return loss, metrics
