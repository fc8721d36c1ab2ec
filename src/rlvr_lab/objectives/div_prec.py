"""Diversity-or-Precision next-token objective (arXiv 2512.22955; spec section 9, errata 6 and 16).

A supervised (pre-/mid-training or warm-start) loss on ground-truth tokens, not an RL loss. The
paper reads cross-entropy as a one-step policy gradient with reward ``1[a = x]/π(a)`` and
generalises the reward: a power ``β`` on the ground-truth reward (β < 0 precision, β > 0
diversity) and constant rewards for the other tokens, ``λ_top`` inside the top-k and ``λ_tail``
outside it. The exact expectation over the vocabulary is taken (no sampling).

The surrogate with that gradient is [INF, spec 9.1; the paper states the gradient, not a loss]

    w(a) = sg( π(a)^{1 − (1−π(a))^β} )   a = x          (clamped to <= w_max)
         = sg( π(a)·λ_top )              a in TopK_k(π), a != x
         = sg( π(a)·λ_tail )             otherwise
    ℓ = − Σ_a w(a)·log π(a),     ∂ℓ/∂z_j = −w(j) + π(j)·Σ_a w(a)

β = 0, λ_top = λ_tail = 0 is exactly cross-entropy. The paper reports β=−0.25 and
(λ_tail, k)=(−0.1, 100) as two separate alternatives (errata 16): the defaults here are the
precision prior (β=−0.25, no λ); ``configs/div_prec_tail.yaml`` holds the other one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

Metrics = dict[str, torch.Tensor]

ONE_MINUS_P_FLOOR = 1e-6  # spec 9.1 edge note: clamp 1 − π before the power
IGNORE_INDEX = -100


def div_prec_target_weight(target_prob: torch.Tensor, *, beta: float, w_max: float) -> torch.Tensor:
    """Ground-truth weight ``π^{1 − (1−π)^β}`` clamped to ``w_max``, (N,) -> (N,), detached float32.

    For −1 < β < 0 the weight stays below 1.141 (maximum at β=−0.25) and tends to 1 at both ends;
    it tends to e at β=−1 and is unbounded only for β < −1, which is what ``w_max`` guards (errata 6).
    """
    p = target_prob.detach().float()
    one_minus = (1.0 - p).clamp_min(ONE_MINUS_P_FLOOR)
    exponent = 1.0 - one_minus.pow(beta)  # exactly 0 when beta == 0
    log_w = exponent * torch.log(p.clamp_min(torch.finfo(torch.float32).tiny))
    return torch.exp(log_w).clamp_max(w_max)


def _chunk_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    beta: float,
    lambda_top: float,
    lambda_tail: float,
    k: int,
    w_max: float,
    ignore_index: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-row loss (N,) and detached metric *sums* over the valid rows of one chunk."""
    z = logits.float()  # (N, V)
    logp = F.log_softmax(z, dim=-1)  # (N, V)
    valid = targets != ignore_index  # (N,)
    tgt = torch.where(valid, targets, torch.zeros_like(targets)).long()
    logp_x = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (N,)
    w_x = div_prec_target_weight(logp_x.exp(), beta=beta, w_max=w_max)  # (N,)
    loss = -w_x * logp_x
    V = z.shape[-1]
    kk = min(int(k), V)
    with torch.no_grad():
        probs = logp.detach().exp()  # (N, V)
        top_vals, top_idx = logp.detach().topk(kk, dim=-1) if kk > 0 else (logp[:, :0], None)
    if lambda_top != 0.0 or lambda_tail != 0.0:
        with torch.no_grad():
            lam = torch.full_like(probs, lambda_tail)
            if top_idx is not None and lambda_top != lambda_tail:
                lam.scatter_(-1, top_idx, lambda_top)
            w_other = probs * lam
            w_other.scatter_(-1, tgt.unsqueeze(-1), 0.0)  # the ground truth has its own weight
        # where(): a -inf log-prob (masked vocabulary) with weight 0 must add 0, not nan
        other = torch.where(w_other != 0, w_other * logp, torch.zeros_like(logp)).sum(-1)  # (N,)
        loss = loss - other
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    with torch.no_grad():
        vf = valid.float()
        plogp = torch.where(probs > 0, probs * logp.detach(), torch.zeros_like(probs))
        sums = {
            "div_prec/loss": (loss.detach() * vf).sum(),
            "div_prec/ce": (-logp_x.detach() * vf).sum(),
            "div_prec/entropy": (-plogp.sum(-1) * vf).sum(),
            "div_prec/topk_mass": (top_vals.exp().sum(-1) * vf).sum(),
            "div_prec/target_prob": (logp_x.detach().exp() * vf).sum(),
            "div_prec/target_weight": (w_x * vf).sum(),
            "div_prec/num_tokens": vf.sum(),
        }
    return loss, sums


def _means(sums: dict[str, torch.Tensor]) -> Metrics:
    n = sums["div_prec/num_tokens"]
    out = {key: value / n.clamp_min(1.0) for key, value in sums.items() if key != "div_prec/num_tokens"}
    out["div_prec/num_tokens"] = n
    return out


def _check(k: int, w_max: float) -> None:
    if k < 0:
        raise ValueError(f"div_prec k must be >= 0, got {k}")
    if w_max <= 0:
        raise ValueError(f"div_prec w_max must be > 0, got {w_max}")


def div_prec_token_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    beta: float = -0.25,
    lambda_top: float = 0.0,
    lambda_tail: float = 0.0,
    k: int = 100,
    w_max: float = 10.0,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, Metrics]:
    """Diversity-or-Precision loss per position (arXiv 2512.22955; spec 9.1), (N, V), (N,) -> (N,).

    Weights are detached and everything is computed in float32 whatever the logits' dtype. The
    function only sees one chunk of positions, so a caller that chunks (or uses
    :func:`div_prec_chunked_loss`) never holds a (B, T, V) tensor. Rows whose target is
    ``ignore_index`` get loss 0 and are left out of the metrics.

    Args:
        logits: (N, V), with grad.
        targets: (N,) long ground-truth tokens.
        beta: power on the ground-truth reward; 0 is CE, < 0 precision, > 0 diversity.
        lambda_top: reward of non-target tokens in the top-``k`` of π (> 0: local diversity).
        lambda_tail: reward of the tokens outside the top-``k`` (< 0: local precision).
        k: top-k size (clamped to V).
        w_max: upper bound of the ground-truth weight (a guard for β < −1; errata 6).
    Returns:
        ``(loss (N,), metrics)`` with means over valid rows: ``div_prec/loss``, ``div_prec/ce``
        (plain cross-entropy, for comparison), ``div_prec/entropy``, ``div_prec/topk_mass``,
        ``div_prec/target_prob``, ``div_prec/target_weight``, and the count ``div_prec/num_tokens``.
    """
    _check(k, w_max)
    loss, sums = _chunk_loss(logits, targets, beta, lambda_top, lambda_tail, k, w_max, ignore_index)
    return loss, _means(sums)


def div_prec_chunked_loss(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    lm_head_bias: torch.Tensor | None = None,
    chunk_tokens: int = 1024,
    beta: float = -0.25,
    lambda_top: float = 0.0,
    lambda_tail: float = 0.0,
    k: int = 100,
    w_max: float = 10.0,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, Metrics]:
    """:func:`div_prec_token_loss` from final hidden states, ``chunk_tokens`` positions at a time.

    Each chunk's projection and loss are checkpointed, so only ``hidden`` (N, d) is kept for
    backward and the logits of one chunk exist only while that chunk is processed.

    Args:
        hidden: (N, d) final hidden states (flattened positions), with grad.
        lm_head_weight: (V, d) output embedding; ``lm_head_bias`` (V,) or None.
        targets: (N,) long.
    Returns:
        ``(loss (N,), metrics)`` as :func:`div_prec_token_loss`, metrics over all chunks.
    """
    _check(k, w_max)
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")

    def run(h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = F.linear(h, lm_head_weight, lm_head_bias)  # (n, V), this chunk only
        return _chunk_loss(logits, y, beta, lambda_top, lambda_tail, k, w_max, ignore_index)

    use_ckpt = torch.is_grad_enabled() and (hidden.requires_grad or lm_head_weight.requires_grad)
    losses, totals = [], {}
    for lo in range(0, hidden.shape[0], chunk_tokens):
        h, y = hidden[lo : lo + chunk_tokens], targets[lo : lo + chunk_tokens]
        loss, sums = checkpoint(run, h, y, use_reentrant=False) if use_ckpt else run(h, y)
        losses.append(loss)
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + value.detach()
    if not losses:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, {"div_prec/num_tokens": empty.sum()}
    return torch.cat(losses), _means(totals)
