"""Covariance-based token regularisation: Clip-Cov and KL-Cov (spec section 7.4, errata 5).

From "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models"
(arXiv 2505.22617, the "Clip-Cov" and "KL-Cov" methods; PRIME-RL/Entropy-Mechanism-of-RL recipes).
The tokens whose log-probability co-varies most with their advantage drive the entropy collapse;
both methods act on a small share of them:

* Clip-Cov zeroes the loss (value and gradient) of a random few tokens whose covariance lies in
  ``(lb, ub)``.
* KL-Cov adds ``coef·|logp − logp_old|`` to the top-covariance tokens and uses the *unclipped*
  surrogate ``−A·ratio`` everywhere else: it replaces the base clip (errata 5).

Both are registered as ``TOKEN_LOSS_OVERRIDES`` with the call shape
``fn(loss (B, T), policy_logprobs, old_logprobs, advantages, loss_mask, ctx, **params) -> (loss, metrics)``.
"""

from __future__ import annotations

import torch

from rlvr_lab.objectives.aggregate import masked_mean
from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.policy_losses import LOG_RATIO_CLAMP
from rlvr_lab.objectives.registry import TOKEN_LOSS_OVERRIDES, Float, Int

Metrics = dict[str, torch.Tensor]

# ctx.extras key of an optional torch.Generator that makes stochastic token selection reproducible.
GENERATOR_KEY = "generator"
# Relative tolerance when deciding from the loss matrix that the base clip took its clipped branch.
_CLIPPED_RTOL = 1e-6


def token_ratio(policy_logprobs: torch.Tensor, old_logprobs: torch.Tensor) -> torch.Tensor:
    """``exp(logp − logp_old)`` with the log-ratio clamped to ±20, as in ``ppo_clip``; (B, T) -> (B, T)."""
    return torch.exp((policy_logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def selection_count(num_eligible: torch.Tensor, fraction: float) -> torch.Tensor:
    """``max(1, floor(fraction · num_eligible))`` as a 0-d int64 tensor.

    Computed in float64 so that, e.g., ``0.01 · 200`` is exactly 2 (in float32 it is 1.99999996,
    whose floor would silently drop a token).
    """
    return torch.floor(num_eligible.to(torch.float64) * fraction).clamp_min(1).to(torch.int64)


def rank_select(
    scores: torch.Tensor, candidates: torch.Tensor, n: torch.Tensor | int, *, largest: bool
) -> torch.Tensor:
    """Bool mask of the ``n`` candidates with the largest (or smallest) ``scores``; same shape as ``scores``.

    Vectorised "top-k among candidates" without a host sync: non-candidates are pushed to the end
    of a stable sort and a token is chosen when its rank is below ``n``. Fewer than ``n`` candidates
    selects them all. Ties are broken by position (row-major), which a stable sort makes deterministic.
    """
    flat = scores.detach().reshape(-1).float()
    cand = candidates.reshape(-1)
    fill = float("-inf") if largest else float("inf")
    keyed = torch.where(cand, flat, torch.full_like(flat, fill))
    order = torch.sort(keyed, descending=largest, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return (cand & (ranks < n)).view(scores.shape)


@torch.no_grad()
def token_covariance(
    advantages: torch.Tensor, policy_logprobs: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """Centred per-token covariance ``(A − mean A)·(logp − mean logp)`` over ``loss_mask``; (B, T) -> (B, T).

    arXiv 2505.22617 (the covariance term of its entropy-change estimate); both means run
    over the valid tokens of the tensor given (the micro-batch). Detached; 0 off the mask.
    """
    m = loss_mask.bool()
    a = advantages.float()
    lp = policy_logprobs.detach().float()
    a_c = a - masked_mean(a, m)
    lp_c = lp - masked_mean(lp, m)
    return torch.where(m, a_c * lp_c, torch.zeros_like(a))


def uniform_keys(shape: torch.Size, device: torch.device, ctx: StepContext | None, seed: int | None) -> torch.Tensor:
    """Uniform [0, 1) keys of ``shape`` for random token selection.

    Source of randomness, first match wins: an explicit ``seed`` (a fresh generator seeded with
    ``seed`` and ``ctx.global_step``, so each RL step draws differently but reproducibly, whatever
    the trainer), then ``ctx.extras["generator"]`` (the trainer's, seeded from the run seed and the
    step), then torch's global RNG.
    """
    gen = None
    if seed is not None:
        step = 0 if ctx is None else int(ctx.global_step)
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + step)
    elif ctx is not None:
        gen = ctx.extras.get(GENERATOR_KEY)
    if gen is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=gen, device=gen.device).to(device)


@torch.no_grad()
def clip_cov_select(
    cov: torch.Tensor,
    eligible: torch.Tensor,
    keys: torch.Tensor,
    *,
    num_valid: torch.Tensor,
    ratio: float,
    lb: float,
    ub: float,
) -> torch.Tensor:
    """Clip-Cov token choice (spec 7.4): a uniform random subset of the tokens with ``lb < cov < ub``.

    Args:
        cov: (B, T) covariance from :func:`token_covariance`.
        eligible: (B, T) bool, valid tokens not already clipped by the base loss.
        keys: (B, T) uniform keys; the candidates with the smallest keys are taken, which is a
            uniformly random subset.
        num_valid: 0-d count of valid tokens; ``max(1, floor(ratio·num_valid))`` tokens are taken
            (all candidates if there are fewer).
    Returns:
        (B, T) bool, the tokens whose loss is zeroed.
    """
    candidates = eligible & (cov > lb) & (cov < ub)
    return rank_select(keys, candidates, selection_count(num_valid, ratio), largest=False)


def _clipped_by_base(loss: torch.Tensor, unclipped: torch.Tensor) -> torch.Tensor:
    # The PPO loss is max(unclipped, clipped): the clipped branch won where it exceeds −A·ratio.
    loss, unclipped = loss.detach(), unclipped.detach()
    return loss > unclipped + _CLIPPED_RTOL * (1.0 + unclipped.abs())


@TOKEN_LOSS_OVERRIDES.register(
    "clip_cov",
    params={"ratio": Float(ge=0, le=1, help="Share of valid tokens whose loss is zeroed (2e-4)."),
            "lb": Float(help="Lower bound of the covariance window."),
            "ub": Float(help="Upper bound of the covariance window (must exceed lb)."),
            "seed": Int(nullable=True, help="Fixed seed of the token draw (null: the run seed and RL step).")},
    paper="arXiv 2505.22617 (Entropy Mechanism), sec. 4, Clip-Cov",
    summary="zero the loss of a few random high-covariance tokens",
    extra_needs=lambda p: {"global_step"} if p["seed"] is not None else set(),
    acts_on=("clip_cov/num_zeroed", "unclipped tokens whose centred advantage x centred log-prob lies in (lb, ub); "
             "the window (1, 5) is calibrated on 7B-32B models, a small or flat policy may have none"),
)
def clip_cov_override(
    loss: torch.Tensor,
    policy_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    ratio: float = 2e-4,
    lb: float = 1.0,
    ub: float = 5.0,
    seed: int | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Clip-Cov (arXiv 2505.22617, "Clip-Cov"; spec 7.4): zero the loss of a few high-covariance tokens.

    Candidates are valid tokens that the base loss did not clip, with ``lb < cov < ub``;
    ``max(1, floor(ratio·N_valid))`` of them are drawn uniformly at random (seeded through
    ``ctx.extras["generator"]`` or ``seed``) and their loss becomes 0 with no gradient.

    "Clipped by the base loss" is read off the loss matrix: the token's loss exceeds the unclipped
    surrogate ``−A·ratio``. That holds for a token-ratio base (``ppo_clip``, any clip range); do not
    combine Clip-Cov with a base that changes the ratio or the advantage (GSPO, HAPO).

    Args:
        loss: (B, T) base per-token loss. The other tensors are (B, T); ``policy_logprobs`` carries grad.
    Returns:
        ((B, T) loss, metrics ``clip_cov/*``).
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"clip_cov ratio must be in [0, 1], got {ratio}")
    if lb >= ub:
        raise ValueError(f"clip_cov needs lb < ub, got lb={lb}, ub={ub}")
    m = loss_mask.bool()
    with torch.no_grad():
        unclipped = -advantages * token_ratio(policy_logprobs, old_logprobs)
        eligible = m & ~_clipped_by_base(loss, unclipped)
        cov = token_covariance(advantages, policy_logprobs, m)
        keys = uniform_keys(loss.shape, loss.device, ctx, seed)
        zeroed = clip_cov_select(cov, eligible, keys, num_valid=m.sum(), ratio=ratio, lb=lb, ub=ub)
    out = loss.masked_fill(zeroed, 0.0)
    candidates = eligible & (cov > lb) & (cov < ub)
    metrics: Metrics = {
        "clip_cov/num_candidates": candidates.sum().float(),
        "clip_cov/num_zeroed": zeroed.sum().float(),
        "clip_cov/zeroed_frac": masked_mean(zeroed.float(), m),
    }
    return out, metrics


@torch.no_grad()
def kl_cov_select(cov: torch.Tensor, loss_mask: torch.Tensor, *, frac: float) -> torch.Tensor:
    """KL-Cov token choice (spec 7.4): the ``max(1, floor(frac·N_valid))`` valid tokens of largest cov.

    (B, T) cov and mask -> (B, T) bool.
    """
    m = loss_mask.bool()
    return rank_select(cov, m, selection_count(m.sum(), frac), largest=True)


@TOKEN_LOSS_OVERRIDES.register(
    "kl_cov",
    params={"frac": Float(ge=0, le=1, help="Share of valid tokens with the largest covariance (2e-3)."),
            "coef": Float(ge=0, help="Weight of |logp - logp_old| on the selected tokens.")},
    paper="arXiv 2505.22617 (Entropy Mechanism), sec. 4, KL-Cov",
    summary="|log-ratio| penalty on the top-covariance tokens",
    off_policy="its |logp - logp_old| penalty is 0 with a 0 gradient, and its unclipped surrogate equals the clipped one",
)
def kl_cov_override(
    loss: torch.Tensor,
    policy_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    frac: float = 2e-3,
    coef: float = 1.0,
) -> tuple[torch.Tensor, Metrics]:
    """KL-Cov (arXiv 2505.22617, "KL-Cov"; spec 7.4): a |log-ratio| penalty on the top-covariance tokens.

    Selected tokens: ``−A·ratio + coef·|logp − logp_old|``; every other token: the unclipped
    ``−A·ratio`` (errata 5: KL-Cov replaces the base clip, so the incoming ``loss`` values are
    discarded; an earlier override in the list, e.g. Clip-Cov, is overwritten too). ``frac`` is a
    fraction (2e-3 = PRIME's ``k_percent=0.2``). Selection is deterministic (top-k, ties by position).

    Args:
        loss: (B, T) base per-token loss (only its shape, dtype and device are used).
    Returns:
        ((B, T) loss, metrics ``kl_cov/*``).
    """
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"kl_cov frac must be in [0, 1], got {frac}")
    m = loss_mask.bool()
    cov = token_covariance(advantages, policy_logprobs, m)
    selected = kl_cov_select(cov, m, frac=frac)
    ratio = token_ratio(policy_logprobs, old_logprobs)  # (B, T)
    unclipped = (-advantages * ratio).to(loss.dtype)
    abs_kl = (policy_logprobs - old_logprobs).abs()  # (B, T)
    out = torch.where(selected, unclipped + coef * abs_kl, unclipped)
    metrics: Metrics = {
        "kl_cov/num_selected": selected.sum().float(),
        "kl_cov/ppo_kl_abs": masked_mean(abs_kl.detach(), m),
        "kl_cov/selected_abs_kl": masked_mean(abs_kl.detach(), selected),
    }
    return out, metrics
