"""Reducing a per-token loss matrix ``(B, T)`` to a scalar (spec section 1.6).

The loss functions never reduce; the aggregation mode is one argument. To make gradient
accumulation exact, pass the denominators of the *whole* mini-batch (``num_tokens``,
``num_sequences``): each micro-batch then returns its share and the shares add up to the
mini-batch loss. Without them the micro-batch's own counts are used (the reference forks'
behaviour, which is biased under ``token-mean`` when micro-batches differ in length).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvr_lab.objectives.registry import AGGREGATORS

SEQ_TOKEN_EPS = 1e-8


@dataclass(frozen=True)
class Denominators:
    """Global normalisers of one mini-batch: masked tokens and counted sequences."""

    num_tokens: float
    num_sequences: float


def denominators(loss_mask: torch.Tensor, *, exclude_empty_sequences: bool = False) -> Denominators:
    """Token and sequence counts of a whole mini-batch ``loss_mask`` (B, T).

    Empty responses (no masked token) count as sequences unless ``exclude_empty_sequences``
    (rlvr-lab follows verl 0.9.1's trainer; errata 7).
    """
    per_seq = loss_mask.float().sum(-1)  # (B,)
    n_seq = float((per_seq > 0).sum()) if exclude_empty_sequences else float(loss_mask.shape[0])
    return Denominators(num_tokens=float(per_seq.sum()), num_sequences=n_seq)


def _zero_like_graph(loss: torch.Tensor) -> torch.Tensor:
    # Keep the result attached to the graph so a backward call still runs (spec 1.6).
    return (loss * 0.0).sum()


def _seq_denominator(
    loss_mask: torch.Tensor, num_sequences: float | None, exclude_empty_sequences: bool
) -> float:
    if num_sequences is not None:
        return num_sequences
    return denominators(loss_mask, exclude_empty_sequences=exclude_empty_sequences).num_sequences


@AGGREGATORS.register("token-mean")
def token_mean(
    loss: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    num_tokens: float | None = None,
    num_sequences: float | None = None,
    exclude_empty_sequences: bool = False,
    t_norm: float | None = None,
    legacy_no_batch_norm: bool = False,
) -> torch.Tensor:
    """``Σ mℓ / Σ m`` over the mini-batch (DAPO, verl default)."""
    m = loss_mask.to(loss.dtype)
    denom = float(m.sum()) if num_tokens is None else num_tokens
    if denom <= 0:
        return _zero_like_graph(loss)
    return (loss * m).sum() / denom


@AGGREGATORS.register("seq-mean-token-sum")
def seq_mean_token_sum(
    loss: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    num_tokens: float | None = None,
    num_sequences: float | None = None,
    exclude_empty_sequences: bool = False,
    t_norm: float | None = None,
    legacy_no_batch_norm: bool = False,
) -> torch.Tensor:
    """``(1/B) Σ_i Σ_t mℓ``."""
    denom = _seq_denominator(loss_mask, num_sequences, exclude_empty_sequences)
    if denom <= 0:
        return _zero_like_graph(loss)
    return (loss * loss_mask.to(loss.dtype)).sum() / denom


@AGGREGATORS.register("seq-mean-token-mean")
def seq_mean_token_mean(
    loss: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    num_tokens: float | None = None,
    num_sequences: float | None = None,
    exclude_empty_sequences: bool = False,
    t_norm: float | None = None,
    legacy_no_batch_norm: bool = False,
) -> torch.Tensor:
    """``(1/B) Σ_i (Σ_t mℓ)/(Σ_t m + 1e-8)`` (original GRPO, GSPO)."""
    m = loss_mask.to(loss.dtype)
    per_seq = (loss * m).sum(-1) / (m.sum(-1) + SEQ_TOKEN_EPS)  # (B,)
    denom = _seq_denominator(loss_mask, num_sequences, exclude_empty_sequences)
    if denom <= 0:
        return _zero_like_graph(loss)
    return per_seq.sum() / denom


@AGGREGATORS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(
    loss: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    num_tokens: float | None = None,
    num_sequences: float | None = None,
    exclude_empty_sequences: bool = False,
    t_norm: float | None = None,
    legacy_no_batch_norm: bool = False,
) -> torch.Tensor:
    """``(1/B) Σ_i Σ_t mℓ / T_norm`` (Dr.GRPO; errata 1). ``t_norm`` is required.

    ``legacy_no_batch_norm`` drops the ``1/B`` (verl up to 0.8, Lp-Reg-dev, the SPEAR fork).
    """
    if t_norm is None or t_norm <= 0:
        raise ValueError("seq-mean-token-sum-norm needs a positive t_norm (e.g. the max response length)")
    total = (loss * loss_mask.to(loss.dtype)).sum() / t_norm
    if legacy_no_batch_norm:
        return total
    denom = _seq_denominator(loss_mask, num_sequences, exclude_empty_sequences)
    if denom <= 0:
        return _zero_like_graph(loss)
    return total / denom


def aggregate(
    loss: torch.Tensor,
    loss_mask: torch.Tensor,
    mode: str,
    *,
    denominators: Denominators | None = None,
    exclude_empty_sequences: bool = False,
    t_norm: float | None = None,
    legacy_no_batch_norm: bool = False,
) -> torch.Tensor:
    """Reduce ``loss`` (B, T) under ``loss_mask`` (B, T) with the named ``mode``.

    ``denominators`` (from :func:`denominators` on the whole mini-batch) makes micro-batching
    exact: summing the results over the micro-batches gives the mini-batch value.
    """
    fn = AGGREGATORS.get(mode)
    return fn(
        loss,
        loss_mask,
        num_tokens=None if denominators is None else denominators.num_tokens,
        num_sequences=None if denominators is None else denominators.num_sequences,
        exclude_empty_sequences=exclude_empty_sequences,
        t_norm=t_norm,
        legacy_no_batch_norm=legacy_no_batch_norm,
    )


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``mask`` (same shape); 0 when the mask is empty. For metrics."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)
