"""Lp-Reg: low-probability regularisation toward a min-p proxy (arXiv 2510.03222; spec section 5).

Two pieces, used at two places of the step:

1. :func:`lp_reg_proxy_logprobs` runs in the trainer's no-grad pass over the *old* policy
   (the same pass that gives ``old_logprobs``), one chunk of positions at a time:
   ``fn(logits_chunk (N, V), targets_chunk (N,)) -> (N,)``. Only the proxy log-prob of the sampled
   token is kept; the trainer stores the (B, T) result in ``ctx.proxy_logprobs``.
2. The ``TOKEN_LOSS_OVERRIDES`` entry ``"lp_reg"`` picks the lowest-probability negative-advantage
   tokens of the micro-batch that the proxy rates higher than the policy does, and replaces their
   loss by the unclipped surrogate plus ``coef`` times a KL term toward the proxy (k3 by default),
   which pulls those "spark" tokens back up instead of pushing them toward zero.

The override is applied after Clip-Cov and KL-Cov; on a token that KL-Cov also selected, Lp-Reg's
value wins (spec 11.3).
"""

from __future__ import annotations

import math

import torch

from rlvr_lab.objectives.aggregate import masked_mean
from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.entropy_mech import rank_select, token_ratio
from rlvr_lab.objectives.kl import KL_KINDS, kl_estimate
from rlvr_lab.objectives.registry import TOKEN_LOSS_OVERRIDES, Choice, Float

Metrics = dict[str, torch.Tensor]

# Logit given to filtered tokens by the "hard" proxy (Lp-Reg-dev sets them to -1e4): a filtered
# sampled token then has proxy log-prob ≈ -1e4/T and is never regularised.
FILTERED_LOGIT = -1.0e4
THRESHOLDS = ("minp", "fixed")
FILLS = ("hard", "soft")
ROUNDINGS = ("floor", "ceil")


def _check_proxy_params(kappa: float, threshold: str, fill: str) -> None:
    if threshold not in THRESHOLDS:
        raise ValueError(f"unknown Lp-Reg threshold {threshold!r}; valid: {', '.join(THRESHOLDS)}")
    if fill not in FILLS:
        raise ValueError(f"unknown Lp-Reg fill {fill!r}; valid: {', '.join(FILLS)}")
    if not 0.0 < kappa <= 1.0:
        raise ValueError(f"Lp-Reg kappa must be in (0, 1], got {kappa}")


@torch.no_grad()
def lp_reg_proxy_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    kappa: float = 0.02,
    threshold: str = "minp",
    fill: str = "hard",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-prob of the sampled token under the min-p proxy of the old policy (spec 5.1), (N, V), (N,) -> (N,).

    arXiv 2510.03222 (the proxy distribution; Lp-Reg-dev's ``minp_old_log_prob`` path):

        p1 = softmax(z)                        thresholds use T = 1, as in the code
        keep(v) = p1(v) >= kappa · max p1      threshold="minp" (dynamic, default)
                = p1(v) >= kappa               threshold="fixed" (kappa is then the fixed τ)
        z~(v) = z(v) if keep(v) else -1e4      fill="hard"; fill="soft" uses min_v z(v) instead
        proxy = softmax(z~ / T),  returned: log proxy(y)

    Both tests are done in log space (``z - max z >= log kappa``; ``z - logsumexp z >= log kappa``),
    which is the same set without exponentiating the vocabulary.

    Filtered sampled tokens: with ``fill="hard"`` the value is the code's ``-1e4/T - logsumexp``
    (finite, about -1e4/T), not ``-inf``, so the regulariser stays finite and such a token is never
    selected (``logp < logp_proxy`` is false).

    Args:
        logits: (N, V) raw old-policy logits (NOT divided by the temperature), any float dtype;
            computed in float32. Called chunk-wise, so no (B, T, V) tensor is needed.
        targets: (N,) long, the sampled tokens.
        temperature: the rollout temperature T (the proxy is renormalised at T).
    Returns:
        (N,) float32 proxy log-probs, no grad.
    """
    _check_proxy_params(kappa, threshold, fill)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits.float()  # (N, V)
    log_kappa = math.log(kappa)
    if threshold == "minp":
        keep = z - z.max(dim=-1, keepdim=True).values >= log_kappa  # (N, V)
    else:
        keep = z - torch.logsumexp(z, dim=-1, keepdim=True) >= log_kappa
    if fill == "hard":
        filler = torch.full_like(z[:, :1], FILTERED_LOGIT)
    else:
        filler = z.min(dim=-1, keepdim=True).values
    z_proxy = torch.where(keep, z, filler) / temperature  # (N, V)
    picked = z_proxy.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)  # (N,)
    return picked - torch.logsumexp(z_proxy, dim=-1)


def _selection_size(num: torch.Tensor, rho: float, rounding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_sel, active) for one sign branch. float64 so that 0.01·200 is exactly 2."""
    scaled = num.to(torch.float64) * rho
    if rounding == "floor":
        # Lp-Reg-dev: n = max(1, floor(ρ|N|)) and nothing is selected unless n > 1 (errata 13).
        n = torch.floor(scaled).clamp_min(1).to(torch.int64)
        return n, n > 1
    n = torch.ceil(scaled).to(torch.int64)
    return n, n >= 1


@torch.no_grad()
def lp_reg_select(
    policy_logprobs: torch.Tensor,
    proxy_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    rho_neg: float = 0.01,
    rho_pos: float = 0.0,
    rounding: str = "floor",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tokens Lp-Reg regularises (spec 5.2), all (B, T) -> two (B, T) bool masks.

    For the negative branch (A < 0) and, separately, the positive one (A > 0):
    ``S`` = the ``n_sel`` valid tokens of that sign with the smallest current ``logp``, and the
    regularised set ``S' = {t in S : logp_t < logp_proxy_t}`` (the proxy gives the token more mass).
    ``n_sel = max(1, floor(ρ·|N|))`` and selection happens only if ``n_sel > 1`` (``rounding="floor"``,
    the code's behaviour: with ρ=0.01 a micro-batch needs 200 negative tokens); ``rounding="ceil"``
    uses ``ceil(ρ·|N|)`` and selects whenever that is >= 1 [INF, offered by the spec as an option].

    The scope is whatever the tensors cover: the trainer calls this per micro-batch (the reference
    behaviour); passing a whole mini-batch gives the "minibatch" scope.

    Returns:
        ``(selected, regularized)``: S and S' of both branches together.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown Lp-Reg rounding {rounding!r}; valid: {', '.join(ROUNDINGS)}")
    if not (0.0 <= rho_neg <= 1.0 and 0.0 <= rho_pos <= 1.0):
        raise ValueError(f"rho_neg and rho_pos must be in [0, 1], got {rho_neg}, {rho_pos}")
    m = loss_mask.bool()
    logp = policy_logprobs.detach()
    selected = torch.zeros_like(m)
    for sign_mask, rho in ((advantages < 0, rho_neg), (advantages > 0, rho_pos)):
        if rho <= 0.0:
            continue
        candidates = m & sign_mask
        n_sel, active = _selection_size(candidates.sum(), rho, rounding)
        selected |= rank_select(logp, candidates, n_sel, largest=False) & active
    regularized = selected & (logp < proxy_logprobs)
    return selected, regularized


def lp_reg_token_loss(
    policy_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    proxy_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    coef: float = 1.0,
    kl_type: str = "k3",
    kl_clamp: float | None = 10.0,
) -> torch.Tensor:
    """Lp-Reg's loss on a regularised token: ``−A·ratio + coef·KL(logp, logp_proxy)``, (B, T) -> (B, T).

    The surrogate is unclipped (Lp-Reg-dev ``compute_policy_loss_lp_reg``). With ``kl_type="k3"``
    (verl "low_var_kl") the term is ``exp(lp_proxy − lp) − (lp_proxy − lp) − 1``, clamped to ±10:
    the code's estimator of KL(π_θ‖π_proxy) at the sampled token, although the paper describes the
    regulariser as a forward KL toward the proxy (spec 5.2 flags the naming). Its gradient in
    ``logp`` is ``1 − π_proxy/π_θ < 0`` where the proxy is larger, so minimising it raises the token.
    """
    if kl_type not in KL_KINDS:
        raise ValueError(f"unknown Lp-Reg kl_type {kl_type!r}; valid: {', '.join(KL_KINDS)}")
    ratio = token_ratio(policy_logprobs, old_logprobs)
    kl = kl_estimate(policy_logprobs, proxy_logprobs, kind=kl_type, clamp=kl_clamp)
    return -advantages * ratio + coef * kl


@TOKEN_LOSS_OVERRIDES.register(
    "lp_reg",
    params={"rho_neg": Float(ge=0, le=1, help="Share of negative-advantage tokens selected (lowest probability)."),
            "rho_pos": Float(ge=0, le=1, help="Share of positive-advantage tokens selected."),
            "coef": Float(ge=0, help="Weight of the KL to the proxy."),
            "kl_type": Choice(*KL_KINDS, help="KL estimator toward the proxy."),
            "kl_clamp": Float(gt=0, nullable=True, help="Clamp of the per-token KL estimate."),
            "rounding": Choice(*ROUNDINGS, help="How rho·N becomes a token count."),
            "kappa": Float(gt=0, le=1, help="min-p κ of the proxy."),
            "threshold": Choice(*THRESHOLDS, help="minp: κ·max prob; fixed: κ."),
            "fill": Choice(*FILLS, help="How the proxy treats tokens below the threshold.")},
    paper="arXiv 2510.03222 (Lp-Reg), sec. 3", summary="low-probability tokens regularised toward a min-p proxy",
    acts_on=("lp_reg/num_regularized", "the rho lowest-probability tokens of a sign (so at least 1/rho such tokens per "
             "micro-batch) that the min-p proxy keeps (probability >= kappa x the most likely token's)"),
    needs=("proxy_logprobs",),
    proxy_fn=lp_reg_proxy_logprobs,
    proxy_params=("kappa", "threshold", "fill"),
)
def lp_reg_override(
    loss: torch.Tensor,
    policy_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    rho_neg: float = 0.01,
    rho_pos: float = 0.0,
    coef: float = 1.0,
    kl_type: str = "k3",
    kl_clamp: float | None = 10.0,
    rounding: str = "floor",
    kappa: float = 0.02,
    threshold: str = "minp",
    fill: str = "hard",
) -> tuple[torch.Tensor, Metrics]:
    """Lp-Reg token replacement (arXiv 2510.03222; spec 5.2): selected tokens get :func:`lp_reg_token_loss`.

    Reads ``ctx.proxy_logprobs`` (B, T), built by the trainer from the old policy's logits with
    :func:`lp_reg_proxy_logprobs`. ``kappa``, ``threshold`` and ``fill`` are the proxy's parameters:
    they live here so one YAML entry configures the method, the registry entry lists them under
    ``meta["proxy_params"]`` for the trainer's old-policy pass, and they are only validated here.
    The base loss should be ``ppo_clip`` with ``clip_low=1.0, clip_high=9.0`` and no dual clip
    (the Lp-Reg recipe; errata 3).

    Args:
        loss: (B, T) per-token loss so far; unselected tokens keep it.
        policy_logprobs: (B, T) current policy, carries grad. The other tensors are (B, T), detached.
    Returns:
        ((B, T) loss, metrics ``lp_reg/*``).
    """
    _check_proxy_params(kappa, threshold, fill)
    if ctx is None or ctx.proxy_logprobs is None:
        raise ValueError(
            "lp_reg needs ctx.proxy_logprobs (B, T) from lp_reg_proxy_logprobs on the old policy's logits"
        )
    proxy = ctx.proxy_logprobs.to(policy_logprobs.dtype)
    m = loss_mask.bool()
    selected, regularized = lp_reg_select(
        policy_logprobs, proxy, advantages, m, rho_neg=rho_neg, rho_pos=rho_pos, rounding=rounding
    )
    reg_loss = lp_reg_token_loss(
        policy_logprobs, old_logprobs, proxy, advantages, coef=coef, kl_type=kl_type, kl_clamp=kl_clamp
    )
    out = torch.where(regularized, reg_loss.to(loss.dtype), loss)
    with torch.no_grad():
        kl = kl_estimate(policy_logprobs.detach(), proxy, kind=kl_type, clamp=kl_clamp)
        metrics: Metrics = {
            "lp_reg/num_negative": (m & (advantages < 0)).sum().float(),
            "lp_reg/num_selected": selected.sum().float(),
            "lp_reg/num_regularized": regularized.sum().float(),
            "lp_reg/kl_mean": masked_mean(kl, regularized),
            "lp_reg/below_proxy_frac": masked_mean((policy_logprobs.detach() < proxy).float(), m),
        }
    return out, metrics
