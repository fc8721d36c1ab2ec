"""Pass@K advantage shaping (arXiv 2510.23049, "two sides of the same coin"; spec section 3).

Three estimators over binary outcomes, all ``(P, G) -> (P, G)`` with groups as rows:

* ``passk``: closed-form Pass@K-GRPO advantages (Chen et al., arXiv 2508.10751; spec 3.1).
* ``pkpo``: PKPO's unbiased per-sample Pass@K rewards (Walder & Karkhanis, arXiv 2505.15201; spec 3.2).
* ``passk_surrogate``: the surrogate-reward recipe ``A+ = (1-ρ̂)ω(ρ̂)``, ``A- = -ρ̂ω(ρ̂)`` (spec 3.3,
  errata 4), which covers REINFORCE, GRPO, Pass@K and GRPO with hard-example up-weighting.

Outcomes are binary. When the rewards are not all in {0, 1} (shaping bonuses), the task verdict
``ctx.correct`` is used if given, else ``rewards > 0`` (composition rule 11.1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.registry import ADVANTAGE_ESTIMATORS, Choice, Float, Int

Metrics = dict[str, torch.Tensor]
OmegaFn = Callable[[torch.Tensor], torch.Tensor]

OMEGAS = ("reinforce", "grpo", "passk", "hard_example")
RHO_SOURCES = ("empirical", "passk")
PKPO_BASELINES = ("none", "mean")


def _k_within_group(params, cfg) -> str | None:
    """Registry ``check_config`` hook: Pass@K over a group of G needs k <= G."""
    G = cfg.train.group_size
    return None if params["k"] <= G else f"k={params['k']} exceeds the group size train.group_size={G}"


def _passk_metrics_hook(rewards, advantages, ctx, *, keep=None, k: int = 4, **_) -> Metrics:
    """Registry ``metrics`` hook (spec 3 logging); skipped when ``k`` exceeds the group size."""
    if k > rewards.shape[1]:
        return {}
    return passk_group_metrics(rewards, advantages, ctx, k=k)


def binary_outcomes(rewards: torch.Tensor, ctx: StepContext | None = None) -> torch.Tensor:
    """Correct/incorrect per response, (P, G) float -> (P, G) bool (composition rule 11.1).

    Rewards that are all 0 or 1 are their own verdict. Otherwise ``ctx.correct`` (B,) is used when
    the trainer provides it (rows in the same order as ``rewards.reshape(-1)``), else ``rewards > 0``.
    """
    if bool(((rewards == 0) | (rewards == 1)).all()):
        return rewards > 0
    if ctx is not None and ctx.correct is not None:
        return ctx.correct.bool().reshape(rewards.shape).to(rewards.device)
    return rewards > 0


def _check_k(k: int, n: int) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"Pass@K needs 1 <= k <= group size, got k={k}, group size {n}")


def comb_ratio(a: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """``C(a, k) / C(n, k)`` elementwise for integer-valued ``a`` (float64), 0 when ``a < k``.

    Written as ``Π_{j<k} (a-j)/(n-j)``; a non-positive factor means fewer than k items, so every
    factor is clamped at 0 (this also covers ``a < 0``, the spec's ``C(a, b) = 0`` guard). Needs k <= n.
    """
    j = torch.arange(k, dtype=torch.float64, device=a.device)  # (k,)
    factors = ((a.double().unsqueeze(-1) - j) / (n - j)).clamp_min(0.0)  # (..., k)
    return factors.prod(dim=-1)  # empty product (k = 0) is 1


def passk_group_terms(correct_count: torch.Tensor, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass@k of each group and the miss probability of an incorrect response's k-subsets.

    Args:
        correct_count: (P,) number of correct responses c per group (float or long).
    Returns:
        rho (P,) float64 ``1 - C(n-c, k)/C(n, k)`` (unbiased pass@k), and
        q (P,) float64 ``C(n-c-1, k-1)/C(n-1, k-1)`` (share of the k-subsets holding a given
        incorrect response that hold no correct one). Spec 3.1.
    """
    c = correct_count.double()
    rho = 1.0 - comb_ratio(n - c, n, k)
    q = comb_ratio(n - c - 1, n - 1, k - 1)
    return rho, q


@ADVANTAGE_ESTIMATORS.register(
    "passk",
    params={"k": Int(ge=1, help="K of Pass@K; must not exceed the group size."),
            "eps": Float(ge=0, help="Added to the std before dividing.")},
    paper="arXiv 2508.10751 (closed form), arXiv 2510.23049", summary="analytic Pass@K-GRPO advantages",
    metrics=_passk_metrics_hook, binary_outcomes=True, group_relative=True, check_config=_k_within_group,
)
def passk_advantages(
    rewards: torch.Tensor, ctx: StepContext | None = None, *, k: int = 4, eps: float = 1e-6
) -> torch.Tensor:
    """Closed-form Pass@K-GRPO advantages, (P, G) -> (P, G) float32 (arXiv 2508.10751; spec 3.1).

    With n = G, c correct and ``σ = sqrt(ρ(1-ρ))``:
    ``A+ = (1-ρ)/(σ+eps)`` on correct responses, ``A- = (1-ρ-q)/(σ+eps)`` on incorrect ones
    (see :func:`passk_group_terms`). Each group is zero-mean. Groups with c = 0 (ρ = 0) or
    c > n-k (every k-subset holds a correct response, ρ = 1) get exactly 0. k = 1 is GRPO with the
    population std.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (P, G), got shape {tuple(rewards.shape)}")
    n = rewards.shape[1]
    _check_k(k, n)
    correct = binary_outcomes(rewards, ctx)  # (P, G)
    c = correct.sum(-1)  # (P,)
    rho, q = passk_group_terms(c, n, k)
    sigma = torch.sqrt((rho * (1.0 - rho)).clamp_min(0.0))  # (P,)
    a_pos = (1.0 - rho) / (sigma + eps)
    a_neg = (1.0 - rho - q) / (sigma + eps)
    adv = torch.where(correct, a_pos.unsqueeze(-1), a_neg.unsqueeze(-1))  # (P, G)
    degenerate = (c == 0) | (c > n - k)  # ρ ∈ {0, 1}: no signal
    adv = torch.where(degenerate.unsqueeze(-1), torch.zeros_like(adv), adv)
    return adv.to(torch.float32)


@ADVANTAGE_ESTIMATORS.register(
    "pkpo",
    params={"k": Int(ge=1, help="K of Pass@K; must not exceed the group size."),
            "baseline": Choice(*PKPO_BASELINES, help="Subtract the group mean of the rewards.")},
    paper="arXiv 2505.15201 (PKPO), sec. 3", summary="unbiased per-sample Pass@K rewards",
    metrics=_passk_metrics_hook, binary_outcomes=True, check_config=_k_within_group,
)
def pkpo_advantages(
    rewards: torch.Tensor, ctx: StepContext | None = None, *, k: int = 4, baseline: str = "none"
) -> torch.Tensor:
    """PKPO unbiased per-sample Pass@K rewards, (P, G) -> (P, G) float32 (arXiv 2505.15201; spec 3.2).

    ``r+ = k/n`` on correct responses and ``r- = (k/n)(1 - q)`` on incorrect ones, so that
    ``Σ_i r_i ∇log π(y_i)`` is an unbiased estimate of ``∇ pass@k``. ``baseline``:

    * ``none`` (default, the spec's REINFORCE view): the rewards themselves.
    * ``mean``: minus the group mean; this equals ``(k/n)·σ·A_passk`` (the Chen advantages up to
      eps), the "same direction up to a per-group positive scale" statement of spec 3.2.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (P, G), got shape {tuple(rewards.shape)}")
    if baseline not in PKPO_BASELINES:
        raise ValueError(f"unknown PKPO baseline {baseline!r}; allowed: {', '.join(PKPO_BASELINES)}")
    n = rewards.shape[1]
    _check_k(k, n)
    correct = binary_outcomes(rewards, ctx)
    _, q = passk_group_terms(correct.sum(-1), n, k)
    r_pos = torch.full_like(q, k / n)  # (P,)
    r_neg = (k / n) * (1.0 - q)
    r = torch.where(correct, r_pos.unsqueeze(-1), r_neg.unsqueeze(-1))  # (P, G) float64
    if baseline == "mean":
        r = r - r.mean(dim=-1, keepdim=True)
    return r.to(torch.float32)


def surrogate_weight(rho: torch.Tensor, *, omega: str = "grpo", k: int = 4) -> torch.Tensor:
    """ω(ρ) = F'(ρ) of the surrogate reward F for a named method (spec 3.3 table; [INF]).

    ``reinforce`` 1; ``grpo`` 1/sqrt(ρ(1-ρ)); ``passk`` K(1-ρ)^(K-1); ``hard_example``
    sqrt((1-ρ)/ρ) = (1-ρ)·ω_grpo (GRPO advantages up-weighted by the failure rate). Needs 0 < ρ < 1.
    """
    if omega == "reinforce":
        return torch.ones_like(rho)
    if omega == "grpo":
        return 1.0 / torch.sqrt(rho * (1.0 - rho))
    if omega == "passk":
        return k * (1.0 - rho) ** (k - 1)
    if omega == "hard_example":
        return torch.sqrt((1.0 - rho) / rho)
    raise ValueError(f"unknown surrogate omega {omega!r}; allowed: {', '.join(OMEGAS)} or a callable")


def surrogate_value(rho: torch.Tensor | float, *, omega: str = "grpo", k: int = 4) -> torch.Tensor:
    """F(ρ), the surrogate reward whose derivative is :func:`surrogate_weight` (spec 3.3; [INF]).

    ``reinforce`` ρ; ``grpo`` 2·arcsin(√ρ); ``passk`` 1-(1-ρ)^K; ``hard_example``
    arcsin(√ρ) + sqrt(ρ(1-ρ)) = ½·F_grpo + sqrt(ρ(1-ρ)) (errata 4: 1.037897 at ρ = 0.3).
    """
    rho = torch.as_tensor(rho, dtype=torch.float64)
    if omega == "reinforce":
        return rho.clone()
    if omega == "grpo":
        return 2.0 * torch.asin(torch.sqrt(rho))
    if omega == "passk":
        return 1.0 - (1.0 - rho) ** k
    if omega == "hard_example":
        return torch.asin(torch.sqrt(rho)) + torch.sqrt(rho * (1.0 - rho))
    raise ValueError(f"unknown surrogate omega {omega!r}; allowed: {', '.join(OMEGAS)}")


@ADVANTAGE_ESTIMATORS.register(
    "passk_surrogate",
    params={"omega": Choice(*OMEGAS, help="ω, the derivative of the surrogate reward (a callable in Python)."),
            "k": Int(ge=1, help="K used by omega=passk and rho_source=passk."),
            "rho_source": Choice(*RHO_SOURCES, help="ρ̂ as the group's success rate or its pass@k.")},
    paper="arXiv 2510.23049, sec. 3 (formulas inferred)", summary="surrogate-reward advantages (1-ρ)ω(ρ), -ρω(ρ)",
    metrics=_passk_metrics_hook, binary_outcomes=True, group_relative=True,
)
def surrogate_advantages(
    rewards: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    omega: str | OmegaFn = "grpo",
    k: int = 4,
    rho_source: str = "empirical",
) -> torch.Tensor:
    """Surrogate-reward advantages ``A+ = (1-ρ̂)ω(ρ̂)``, ``A- = -ρ̂ω(ρ̂)``, (P, G) -> (P, G) float32.

    Spec 3.3 (formulas [INF]; the 2510.23049 framework): the mean update of a zero-mean binary
    advantage is ``ω(ρ̂)·ρ̂(1-ρ̂)(∇̂+ - ∇̂-)``, gradient ascent on a surrogate F with F' = ω.
    ``omega`` is a name from :data:`OMEGAS` (see :func:`surrogate_weight`) or a callable
    ``ρ (P,) float64 -> ω (P,)``; ``omega="hard_example"`` is GRPO with hard-example up-weighting
    by ``1-ρ̂``, i.e. the surrogate ``½·F_GRPO + sqrt(ρ(1-ρ))`` (errata 4). ``k`` is the K of
    ``omega="passk"`` and of ``rho_source="passk"``.

    ``rho_source``: ``empirical`` (default) ρ̂ = c/n, which makes every group zero-mean;
    ``passk`` uses the group's unbiased pass@k ρ of spec 3.1 instead ([INF], "combined Pass@K
    variants"; the group is then not zero-mean in general). ρ̂ ∈ {0, 1} gives A = 0 (ω may be infinite).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (P, G), got shape {tuple(rewards.shape)}")
    n = rewards.shape[1]
    correct = binary_outcomes(rewards, ctx)
    c = correct.sum(-1).double()  # (P,)
    if rho_source == "empirical":
        rho = c / n
    elif rho_source == "passk":
        _check_k(k, n)
        rho, _ = passk_group_terms(c, n, k)
    else:
        raise ValueError(f"unknown rho_source {rho_source!r}; allowed: {', '.join(RHO_SOURCES)}")
    degenerate = (rho <= 0.0) | (rho >= 1.0)  # (P,)
    safe_rho = torch.where(degenerate, torch.full_like(rho, 0.5), rho)  # keeps ω finite before masking
    w = omega(safe_rho) if callable(omega) else surrogate_weight(safe_rho, omega=omega, k=k)
    w = torch.as_tensor(w, dtype=torch.float64, device=rho.device)
    a_pos = (1.0 - safe_rho) * w
    a_neg = -safe_rho * w
    adv = torch.where(correct, a_pos.unsqueeze(-1), a_neg.unsqueeze(-1))  # (P, G)
    adv = torch.where(degenerate.unsqueeze(-1), torch.zeros_like(adv), adv)
    return adv.to(torch.float32)


def passk_group_metrics(
    rewards: torch.Tensor, advantages: torch.Tensor, ctx: StepContext | None = None, *, k: int = 4
) -> Metrics:
    """Spec 3 logging, once per rollout batch: ``passk/rho_mean`` (unbiased pass@k of the groups),
    ``passk/frac_zero_adv_groups``, ``passk/adv_pos_abs_mean`` and ``passk/adv_neg_abs_mean``.

    Args:
        rewards: (P, G) rewards; advantages: (P, G) sequence advantages of any Pass@K estimator.
    """
    n = rewards.shape[1]
    _check_k(k, n)
    correct = binary_outcomes(rewards, ctx)
    rho, _ = passk_group_terms(correct.sum(-1), n, k)
    zero = (advantages == 0).all(dim=-1)  # (P,)
    pos, neg = advantages[correct], advantages[~correct]
    return {
        "passk/rho_mean": rho.mean().float().detach(),
        "passk/frac_zero_adv_groups": zero.float().mean().detach(),
        "passk/adv_pos_abs_mean": (pos.abs().sum() / max(pos.numel(), 1)).float().detach(),
        "passk/adv_neg_abs_mean": (neg.abs().sum() / max(neg.numel(), 1)).float().detach(),
    }

