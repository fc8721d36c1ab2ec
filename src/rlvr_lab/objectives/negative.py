"""Negative-sample methods (spec section 6).

* GRPO-N, "only relative negative gradients" (arXiv 2510.04028; spec 6.1): a token-advantage
  modifier that keeps only the negative group-relative advantages.
* PSR / NSR / W-REINFORCE (arXiv 2506.01347; spec 6.2): baseline-free advantages on binary
  outcomes that train on the correct responses only, the incorrect ones only, or both with the
  positive side down-weighted.

Removing responses from the batch. PSR and NSR train on a subset of the batch (the others are
removed, which changes the token-mean denominator), and GRPO-N can optionally drop the responses
it masks from the denominator. Each such component declares a ``sample_filter`` in its registry
entry's ``meta``: a pure function with the component's own call shape and parameters that returns
which responses to keep. The trainer calls it on the same inputs as the component and removes the
rows where it is False before the update (skipping the update when nothing is left):

* estimators (``psr``, ``nsr``): ``keep = meta["sample_filter"](rewards (P, G), ctx, **params) -> (P, G) bool``
* modifier (``grpo_n``): ``keep = meta["sample_filter"](advantages (B, T), loss_mask, ctx, **params) -> (B,) bool``
"""

from __future__ import annotations

import torch

from rlvr_lab.objectives.aggregate import masked_mean
from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.passk import binary_outcomes
from rlvr_lab.objectives.registry import ADVANTAGE_ESTIMATORS, TOKEN_ADVANTAGE_MODIFIERS, Bool, Choice, Float

Metrics = dict[str, torch.Tensor]

W_REINFORCE_BASELINES = ("none", "mean")


def _outcome_metrics_hook(rewards, advantages, ctx, *, keep=None, **_) -> Metrics:
    """Registry ``metrics`` hook (spec 6.2 logging); ``keep`` (P, G) is the estimator's sample filter."""
    return outcome_metrics(rewards, ctx, keep=keep)


# ---- 6.1 GRPO-N ---------------------------------------------------------------------------------


def grpo_n_keep(
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    mask_positive: bool = True,
    drop_positive_from_denominator: bool = False,
) -> torch.Tensor:
    """Rows GRPO-N keeps in the batch, (B, T) -> (B,) bool (the ``sample_filter`` of ``grpo_n``).

    All True unless ``drop_positive_from_denominator``; then responses with a positive advantage
    on any policy token are removed, so their masked tokens leave the loss denominator ([INF],
    spec 6.1's open denominator question). Call it on the modifier's input advantages.
    """
    keep = torch.ones(advantages.shape[0], dtype=torch.bool, device=advantages.device)
    if mask_positive and drop_positive_from_denominator:
        keep = ~((advantages > 0) & loss_mask.bool()).any(dim=-1)
    return keep


@TOKEN_ADVANTAGE_MODIFIERS.register(
    "grpo_n",
    params={"mask_positive": Bool(help="Zero the positive advantages (A' = min(A, 0))."),
            "drop_positive_from_denominator": Bool(help="Remove the positive responses from the batch.")},
    paper="arXiv 2510.04028, sec. 4 (GRPO-N)", summary="keep only negative group-relative advantages",
    sample_filter=grpo_n_keep, drops_if=lambda p: p["mask_positive"] and p["drop_positive_from_denominator"],
)
def grpo_n_advantages(
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    mask_positive: bool = True,
    drop_positive_from_denominator: bool = False,
) -> tuple[torch.Tensor, Metrics]:
    """GRPO-N: ``A' = min(A, 0)`` per token (arXiv 2510.04028; spec 6.1), (B, T) -> (B, T).

    Applied to GRPO advantages this is GRPO-N; to GSPO advantages, GSPO-N. Denominator convention
    ([INF], configurable): by default the masked positive tokens still count in the base method's
    loss denominator (``drop_positive_from_denominator=False``); with True the trainer removes the
    positive responses through :func:`grpo_n_keep` (the registry entry's ``sample_filter``).
    ``mask_positive=False`` leaves the advantages unchanged (ablation switch).

    Metrics: ``grpo_n/frac_masked_tokens`` (policy tokens whose positive advantage was zeroed).
    """
    masked = (advantages > 0) & loss_mask.bool()  # (B, T)
    out = advantages.clamp(max=0.0) if mask_positive else advantages.clone()
    frac = masked_mean(masked.float(), loss_mask) if mask_positive else torch.zeros(())
    return out, {"grpo_n/frac_masked_tokens": frac.detach()}


# ---- 6.2 PSR / NSR / W-REINFORCE ------------------------------------------------------------------


def _check_groups(rewards: torch.Tensor) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (P, G), got shape {tuple(rewards.shape)}")


def psr_keep(
    rewards: torch.Tensor, ctx: StepContext | None = None, *, pos_reward: float = 1.0, subset: bool = True
) -> torch.Tensor:
    """Rows PSR trains on, (P, G) -> (P, G) bool: the correct responses (all rows if not ``subset``)."""
    _check_groups(rewards)
    correct = binary_outcomes(rewards, ctx)
    return correct if subset else torch.ones_like(correct)


@ADVANTAGE_ESTIMATORS.register(
    "psr",
    params={"pos_reward": Float(gt=0, help="Advantage of a correct response."),
            "subset": Bool(help="Remove the incorrect responses from the batch.")},
    paper="arXiv 2506.01347 (PSR), sec. 3", summary="reinforce correct responses only",
    sample_filter=psr_keep, drops_if=lambda p: p["subset"], metrics=_outcome_metrics_hook, binary_outcomes=True,
)
def psr_advantages(
    rewards: torch.Tensor, ctx: StepContext | None = None, *, pos_reward: float = 1.0, subset: bool = True
) -> torch.Tensor:
    """Positive sample reinforcement: ``A = pos_reward`` on correct responses, (P, G) -> (P, G) float32.

    arXiv 2506.01347 (spec 6.2, official ``compute_psr_nsr_outcome_advantage``): no baseline, no
    std. With ``subset`` (default, as the official code) the incorrect responses are removed from
    the batch through :func:`psr_keep` (the ``sample_filter``), which changes the token-mean
    denominator; an empty subset means no update. Without ``subset`` they stay with A = 0.
    """
    _check_groups(rewards)
    correct = binary_outcomes(rewards, ctx)
    return torch.where(correct, pos_reward, 0.0).to(torch.float32)


def nsr_keep(
    rewards: torch.Tensor, ctx: StepContext | None = None, *, neg_reward: float = -1.0, subset: bool = True
) -> torch.Tensor:
    """Rows NSR trains on, (P, G) -> (P, G) bool: the incorrect responses (all rows if not ``subset``)."""
    _check_groups(rewards)
    correct = binary_outcomes(rewards, ctx)
    return ~correct if subset else torch.ones_like(correct)


@ADVANTAGE_ESTIMATORS.register(
    "nsr",
    params={"neg_reward": Float(lt=0, help="Advantage of an incorrect response."),
            "subset": Bool(help="Remove the correct responses from the batch.")},
    paper="arXiv 2506.01347 (NSR), sec. 3", summary="penalise incorrect responses only",
    sample_filter=nsr_keep, drops_if=lambda p: p["subset"], metrics=_outcome_metrics_hook, binary_outcomes=True,
)
def nsr_advantages(
    rewards: torch.Tensor, ctx: StepContext | None = None, *, neg_reward: float = -1.0, subset: bool = True
) -> torch.Tensor:
    """Negative sample reinforcement: ``A = neg_reward`` on incorrect responses, (P, G) -> (P, G) float32.

    arXiv 2506.01347 (spec 6.2): no baseline; all-wrong groups still give a gradient. With
    ``subset`` (default) the correct responses are removed through :func:`nsr_keep`.
    """
    _check_groups(rewards)
    correct = binary_outcomes(rewards, ctx)
    return torch.where(correct, 0.0, neg_reward).to(torch.float32)


@ADVANTAGE_ESTIMATORS.register(
    "w_reinforce",
    params={"lambda_pos": Float(ge=0, help="λ: advantage of a correct response (0.1)."),
            "neg_reward": Float(lt=0, help="Advantage of an incorrect response."),
            "baseline": Choice(*W_REINFORCE_BASELINES, help="Subtract the group mean (inferred option).")},
    paper="arXiv 2506.01347 (W-REINFORCE), sec. 5", summary="weighted REINFORCE, down-weighting positives",
    metrics=_outcome_metrics_hook, binary_outcomes=True,
)
def w_reinforce_advantages(
    rewards: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    lambda_pos: float = 0.1,
    neg_reward: float = -1.0,
    baseline: str = "none",
) -> torch.Tensor:
    """Weighted REINFORCE ``λ·L_PSR + L_NSR``: ``A = lambda_pos`` on correct, ``neg_reward`` on incorrect.

    arXiv 2506.01347 (spec 6.2; λ = 0.1, -1). All responses are kept, so the denominator is the
    base method's. ``baseline``: ``none`` (the paper and code) or ``mean`` (minus the group mean of
    these values; [INF], not in the paper). Returns (P, G) float32.
    """
    _check_groups(rewards)
    if baseline not in W_REINFORCE_BASELINES:
        raise ValueError(f"unknown W-REINFORCE baseline {baseline!r}; allowed: {', '.join(W_REINFORCE_BASELINES)}")
    correct = binary_outcomes(rewards, ctx)
    adv = torch.where(correct, lambda_pos, neg_reward).to(torch.float32)  # (P, G)
    if baseline == "mean":
        adv = adv - adv.mean(dim=-1, keepdim=True)
    return adv


def outcome_metrics(
    rewards: torch.Tensor, ctx: StepContext | None = None, *, keep: torch.Tensor | None = None, prefix: str = "psr_nsr"
) -> Metrics:
    """Spec 6.2 logging, once per rollout batch (counts): ``{prefix}/correct_count``,
    ``incorrect_count``, ``groups_all_correct``, ``groups_all_wrong`` and, with ``keep`` (P, G)
    bool from a ``sample_filter``, ``effective_examples`` (responses left after subsetting).
    """
    _check_groups(rewards)
    correct = binary_outcomes(rewards, ctx)
    out = {
        f"{prefix}/correct_count": correct.sum().float(),
        f"{prefix}/incorrect_count": (~correct).sum().float(),
        f"{prefix}/groups_all_correct": correct.all(dim=-1).sum().float(),
        f"{prefix}/groups_all_wrong": (~correct).all(dim=-1).sum().float(),
    }
    if keep is not None:
        out[f"{prefix}/effective_examples"] = keep.sum().float()
    return {k: v.detach() for k, v in out.items()}
