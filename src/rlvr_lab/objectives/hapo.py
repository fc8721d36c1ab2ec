"""HAPO: Heterogeneous Adaptive Policy Optimization (arXiv 2509.16591; spec section 8).

Four entropy-driven pieces, all keyed on the normalised token entropy ĥ in [-1, 1] (spec 8.1):

* ``hapo_tlga`` (``ADVANTAGE_ESTIMATORS``): token-level group average advantage (8.2).
* ``hapo`` (``POLICY_LOSSES``, needs the current entropy): asymmetric adaptive clipping (8.3) and
  differential advantage redistribution (8.4), then the PPO loss with dual clip.
* :func:`hapo_temperature` for the sampler: per-step temperature from the entropy of the raw
  logits, using :func:`entropy_stats` of the previous step's old-policy entropies (8.5).

The released code computes ``scale_neg = 1/min(h)`` (a negative number), which makes every ĥ >= 0
and silences the low-entropy branches. The signed version (the one the sampler's clamp to [-1, 1]
implies) is the default; ``code_compat_sign=True`` reproduces the release (spec 8.1).
"""

from __future__ import annotations

import torch

from rlvr_lab.objectives.advantages import group_advantages
from rlvr_lab.objectives.aggregate import masked_mean
from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.policy_losses import LOG_RATIO_CLAMP
from rlvr_lab.objectives.registry import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, Bool, Float

Metrics = dict[str, torch.Tensor]

ENTROPY_FLOOR = 1e-8
# Stand-in for an absent max(h > 0) or min(h < 0) (the released code uses 1e-8 for the former).
_EMPTY_SCALE = 1e-8
# ctx.extras key of the padded response width, used only by hapo_tlga's code_compat_pad_check.
PADDED_LENGTH_KEY = "padded_length"


# ---- 8.1 entropy normalisation ---------------------------------------------------------------


@torch.no_grad()
def logits_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy ``−Σ_v π log π`` of ``softmax(logits)`` in float32, (N, V) -> (N,). For the sampler."""
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1)
    return lse - (torch.softmax(z, dim=-1) * z).sum(-1)


@torch.no_grad()
def entropy_stats(
    entropies: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    entropy_pivot: float = 0.8,
    code_compat_sign: bool = False,
) -> dict[str, torch.Tensor]:
    """Statistics of ĥ over the valid tokens (HAPO ``compute_entropy_h``; spec 8.1), any shape -> 0-d tensors.

        e     = log(max(H, 1e-8))
        pivot = sorted(e)[round(q·(N−1))]      q = entropy_pivot, Python (half-to-even) rounding
        std   = sqrt(mean((e − pivot)^2))      RMS around the pivot, not around the mean
        h     = (e − pivot)/std
        scale_pos = 1/max(h[h > 0]);  scale_neg = 1/|min(h[h < 0])|  (code: 1/min(h), negative)

    Returns:
        dict with ``pivot``, ``std``, ``scale_pos``, ``scale_neg`` (float32, on the input's device).
        With no valid token: pivot 0, std 1 and both scales 0, so every ĥ is 0.
    """
    e = torch.log(entropies.detach().float().clamp_min(ENTROPY_FLOOR))
    valid = e[mask.bool()] if mask is not None else e.reshape(-1)  # (N,)
    n = valid.numel()
    zero = torch.zeros((), device=e.device)
    if n == 0:
        return {"pivot": zero, "std": zero + 1.0, "scale_pos": zero, "scale_neg": zero}
    pivot = torch.sort(valid).values[round(entropy_pivot * (n - 1))]
    std = torch.sqrt(((valid - pivot) ** 2).mean())
    std = torch.where(std > 0, std, torch.ones_like(std))  # all equal: every h is 0 anyway
    h = (valid - pivot) / std
    max_pos = torch.where(h > 0, h, torch.zeros_like(h)).max().clamp_min(_EMPTY_SCALE)
    min_neg = torch.where(h < 0, h, torch.zeros_like(h)).min().clamp_max(-_EMPTY_SCALE)
    scale_neg = 1.0 / min_neg if code_compat_sign else 1.0 / min_neg.abs()
    return {"pivot": pivot, "std": std, "scale_pos": 1.0 / max_pos, "scale_neg": scale_neg}


def normalized_entropy(entropies: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """ĥ of each entropy under ``stats`` from :func:`entropy_stats`; same shape, detached.

    ``ĥ = h·scale_pos`` where ``h > 0``, else ``h·scale_neg``; on the tokens the stats came from
    this lies in [-1, 1] (in [0, 1] with ``code_compat_sign``). New tokens may fall outside.
    """
    e = torch.log(entropies.detach().float().clamp_min(ENTROPY_FLOOR))
    h = (e - stats["pivot"]) / stats["std"]
    return torch.where(h > 0, h * stats["scale_pos"], h * stats["scale_neg"])


# ---- 8.2 token-level group average advantage --------------------------------------------------


@ADVANTAGE_ESTIMATORS.register(
    "hapo_tlga",
    params={"std_normalize": Bool(help="Divide by the group's token-level std."),
            "eps": Float(ge=0, help="Added to the std before dividing."),
            "fallback_abs": Float(gt=0, help="|A| given to a group whose std is 0 but whose rewards are not all equal."),
            "fallback_std_unbiased": Bool(help="Unbiased std in the fallback."),
            "code_compat_pad_check": Bool(help="The released code's padding check.")},
    paper="arXiv 2509.16591 (HAPO), sec. 3.1 (TLGA)", summary="token-level group average advantage",
    group_relative=True,
)
@torch.no_grad()
def hapo_tlga_advantages(
    rewards: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    std_normalize: bool = True,
    eps: float = 1e-6,
    fallback_abs: float = 5.0,
    fallback_std_unbiased: bool = True,
    code_compat_pad_check: bool = False,
) -> torch.Tensor:
    """Token-level group average advantage (HAPO ``compute_hapo_outcome_advantage``; spec 8.2), (P, G) -> (P, G).

    Every valid token of the group counts once, so the group mean and std are length-weighted:

        μ_g = Σ L_i r_i / Σ L_i,   σ_g = sqrt(Σ L_i (r_i − μ_g)^2 / Σ L_i)   (population, over tokens)
        A_i = (r_i − μ_g)/(σ_g + eps)          (r_i − μ_g without ``std_normalize``)

    If any |A_i| of a group reaches ``fallback_abs`` the whole group falls back to the standard GRPO
    advantage (spec 1.1, ``fallback_std_unbiased``). A group with no valid token also uses GRPO.

    ``code_compat_pad_check`` reproduces the release's quirk of scanning padded positions, whose
    value is ``(0 − μ_g)/σ_g``: a group with any response shorter than the padded width
    (``ctx.extras["padded_length"]``, default the longest response of the batch) also falls back
    when ``|μ_g|/(σ_g + eps) >= fallback_abs``.

    Needs ``ctx.response_lengths`` (B,) = (P·G,), the policy tokens per response, rows in group order.
    """
    if ctx is None or ctx.response_lengths is None:
        raise ValueError("hapo_tlga needs ctx.response_lengths (B,), the policy-token count of each response")
    r = rewards.float()
    if r.dim() != 2:
        raise ValueError(f"rewards must be (P, G), got shape {tuple(r.shape)}")
    lengths = ctx.response_lengths.to(r.device).float().reshape(r.shape)  # (P, G)
    total = lengths.sum(dim=1, keepdim=True)  # (P, 1)
    weights = lengths / total.clamp_min(1.0)
    mu = (weights * r).sum(dim=1, keepdim=True)  # (P, 1)
    sigma = torch.sqrt((weights * (r - mu) ** 2).sum(dim=1, keepdim=True))
    centred = r - mu
    adv = centred / (sigma + eps) if std_normalize else centred
    fallback = (adv.abs() >= fallback_abs).any(dim=1, keepdim=True) | (total <= 0)  # (P, 1)
    if code_compat_pad_check:
        width = ctx.extras.get(PADDED_LENGTH_KEY, ctx.response_lengths.max())
        padded = (lengths < float(width)).any(dim=1, keepdim=True)
        pad_value = mu / (sigma + eps) if std_normalize else mu
        fallback |= padded & (pad_value.abs() >= fallback_abs)
    grpo = group_advantages(r, std_normalize=std_normalize, std_unbiased=fallback_std_unbiased, eps=eps)
    return torch.where(fallback, grpo, adv)


# ---- 8.3 / 8.4 adaptive clipping and advantage redistribution ------------------------------------


def adaptive_clip_ranges(
    hhat: torch.Tensor, *, clip_low: float, clip_high: float, clip_alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric adaptive clipping (HAPO ``ada_clip``; spec 8.3), (B, T) -> two (B, T) tensors.

    ``ε_low' = ε_low·(1 − α·ĥ)`` where ĥ <= 0 (low entropy may fall further), ``ε_high' =
    ε_high·(1 + α·ĥ)`` where ĥ > 0 (high entropy may rise further); the other side stays put.
    """
    eps_low = torch.where(hhat <= 0, clip_low * (1.0 - clip_alpha * hhat), torch.full_like(hhat, clip_low))
    eps_high = torch.where(hhat > 0, clip_high * (1.0 + clip_alpha * hhat), torch.full_like(hhat, clip_high))
    return eps_low, eps_high


@torch.no_grad()
def redistribute_advantages(
    advantages: torch.Tensor,
    hhat: torch.Tensor,
    ratio: torch.Tensor,
    eps_low: torch.Tensor,
    eps_high: torch.Tensor,
    *,
    adv_beta: float,
) -> torch.Tensor:
    """Differential advantage redistribution (HAPO ``ada_advantage``; spec 8.4), all (B, T) -> (B, T).

        neutral = 1 − ε_low'/2 < ratio < 1 + ε_high'/2
        A_ent   = A·(1 + β·ĥ)
        A'      = (neutral ? A : A_ent)  if ĥ > 0,   (neutral ? A_ent : A)  otherwise
    """
    ratio = ratio.detach()
    neutral = (ratio > 1.0 - eps_low / 2) & (ratio < 1.0 + eps_high / 2)
    a_ent = advantages * (1.0 + adv_beta * hhat)
    high = hhat > 0
    return torch.where(high, torch.where(neutral, advantages, a_ent), torch.where(neutral, a_ent, advantages))


def per_token_clipped_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: torch.Tensor,
    eps_high: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    clip_ratio_c: float | None,
) -> tuple[torch.Tensor, Metrics]:
    """:func:`~rlvr_lab.objectives.policy_losses.clipped_surrogate` with per-token ε tensors, (B, T) -> (B, T).

    A separate function because ``clipped_surrogate`` takes scalar clip ranges; with constant ε the
    two agree exactly (tested). Dual clip ``min(ℓ, −A·c)`` for A < 0 when ``clip_ratio_c`` is set.
    """
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = (clipped > unclipped).float()
    metrics: Metrics = {
        "grpo/pg_clipfrac": masked_mean(is_clipped, loss_mask).detach(),
        "hapo/pg_clipfrac_count": (is_clipped * loss_mask.float()).sum().detach(),
    }
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1, got {clip_ratio_c}")
        dual = -advantages * clip_ratio_c
        use_dual = (advantages < 0) & (loss > dual)
        loss = torch.where(use_dual, dual, loss)
        metrics["grpo/pg_clipfrac_lower"] = masked_mean(use_dual.float(), loss_mask).detach()
    return loss, metrics


@POLICY_LOSSES.register(
    "hapo",
    params={"clip_low": Float(ge=0), "clip_high": Float(ge=0),
            "clip_ratio_c": Float(gt=1, nullable=True, help="Dual-clip c for A < 0 (null: off)."),
            "entropy_pivot": Float(ge=0, le=1, help="Quantile of the log-entropies used as the pivot of ĥ."),
            "clip_alpha": Float(ge=0, help="α of the adaptive clip."),
            "adv_beta": Float(ge=0, help="β of the advantage redistribution."),
            "code_compat_sign": Bool(help="The released code's sign of scale_neg (every ĥ >= 0).")},
    paper="arXiv 2509.16591 (HAPO), sec. 3.2-3.3", summary="entropy-adaptive clip and advantage redistribution",
    needs=("entropy",),
    off_policy="its adaptive clip never binds and every token sits in the neutral zone of the redistribution "
    "(only the low-entropy reweighting remains)",
)
def hapo_loss(
    policy_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_ratio_c: float | None = 10.0,
    entropy_pivot: float = 0.8,
    clip_alpha: float = 1.0,
    adv_beta: float = 1.0,
    code_compat_sign: bool = False,
) -> tuple[torch.Tensor, Metrics]:
    """HAPO token loss (arXiv 2509.16591; spec 8.3-8.4): adaptive clip, redistributed advantage, dual clip.

    ĥ comes from ``ctx.entropy`` (the current policy's token entropy, detached) with statistics over
    the valid tokens of this micro-batch, as in the released code. Then, under no grad, ε' (8.3)
    and A' (8.4, using the current ratio and ε'); the loss is
    ``max(−A'·ratio, −A'·clip(ratio, 1−ε_low', 1+ε_high'))`` with dual clip ``c`` for A' < 0.
    ``clip_alpha=0, adv_beta=0`` gives ``ppo_clip`` exactly.

    Args: all (B, T); ``policy_logprobs`` carries grad.
    Returns:
        ((B, T) loss, metrics ``grpo/pg_clipfrac``, ``grpo/ppo_kl``, ``hapo/*``).
    """
    if ctx is None or ctx.entropy is None:
        raise ValueError("the hapo loss needs ctx.entropy (B, T), the current policy's token entropy")
    m = loss_mask.bool()
    log_ratio = (policy_logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)  # (B, T)
    with torch.no_grad():
        stats = entropy_stats(ctx.entropy, m, entropy_pivot=entropy_pivot, code_compat_sign=code_compat_sign)
        hhat = torch.where(m, normalized_entropy(ctx.entropy, stats), torch.zeros_like(ratio))
        eps_low, eps_high = adaptive_clip_ranges(hhat, clip_low=clip_low, clip_high=clip_high, clip_alpha=clip_alpha)
        adv = redistribute_advantages(advantages, hhat, ratio, eps_low, eps_high, adv_beta=adv_beta)
    loss, metrics = per_token_clipped_surrogate(ratio, adv, eps_low, eps_high, m, clip_ratio_c=clip_ratio_c)
    with torch.no_grad():
        lengths = m.float().sum(-1)  # (B,)
        seq_adv = (advantages * m).sum(-1)  # sign of the sequence advantage
        metrics.update({
            "grpo/ppo_kl": masked_mean(-log_ratio.detach(), m),
            "hapo/hhat_mean": masked_mean(hhat, m),
            "hapo/eps_low_mean": masked_mean(eps_low, m),
            "hapo/eps_high_mean": masked_mean(eps_high, m),
            "hapo/adv_shift_abs_mean": masked_mean((adv - advantages).abs(), m),
            "hapo/log_entropy_pivot": stats["pivot"],
            "hapo/avg_pos_len": masked_mean(lengths, seq_adv > 0),
            "hapo/avg_neg_len": masked_mean(lengths, seq_adv < 0),
        })
    return loss, metrics


# ---- 8.5 adaptive temperature -------------------------------------------------------------------


@torch.no_grad()
def hapo_temperature(
    entropy_of_logits: torch.Tensor,
    stats: dict[str, torch.Tensor] | None,
    *,
    base_temperature: float = 1.0,
    tau: float = 0.05,
) -> torch.Tensor:
    """Per-position sampling temperature ``T0·(1 + τ·clamp(ĥ, −1, 1))`` (HAPO sampler; spec 8.5), (N,) -> (N,).

    Args:
        entropy_of_logits: (N,) entropy of the raw (temperature-free) next-token logits, e.g.
            :func:`logits_entropy`.
        stats: :func:`entropy_stats` of the previous training step's old-policy entropies (its sign
            convention travels in ``scale_neg``); ``None`` at step 1, which returns ``T0`` everywhere.
    """
    if stats is None:
        return torch.full_like(entropy_of_logits, base_temperature, dtype=torch.float32)
    hhat = normalized_entropy(entropy_of_logits, stats).clamp(-1.0, 1.0)
    return base_temperature * (1.0 + tau * hhat)
