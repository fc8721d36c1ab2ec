"""For-Value: forward-only data valuation (Deng et al., arXiv 2508.10180).

A sample's value is read off one forward pass. At every response position ``t`` the model gives

* ``h_t`` (d,): the last hidden state that predicts token ``y_t``, i.e. the LM head's input (after the
  final norm);
* ``α_t = e_{y_t} − p_t`` (|V|,): the prediction error, one-hot of the observed token minus the predicted
  distribution (the official code's ``pb_diff``).

The sample's representation is the ``|V| × d`` matrix ``G = Σ_t α_t h_tᵀ``, which is minus the gradient of
the summed next-token cross-entropy with respect to the unembedding matrix (``∂CE/∂W = Σ_t (p_t − e_y) h_tᵀ``),
so no backward pass is needed. The value of a training sample ``i`` for a validation sample ``v`` is the
Frobenius inner product (arXiv 2508.10180, Eq. 1 as implemented in the official code)::

    s(i, v) = ⟨G_i, G_v⟩_F = Σ_t Σ_τ ⟨h_{i,t}, h_{v,τ}⟩ · ⟨α_{i,t}, α_{v,τ}⟩

and training samples are ranked by ``s`` against the validation mean ``Ḡ = (1/N) Σ_v G_v`` (the selection
script) or against each validation sample (influence / mislabel evaluation). Higher means more aligned with
the validation data. The approximate variant replaces the double sum by the product of sums
``(Σ_t h_t)ᵀ(Σ_τ h'_τ) · (Σ_t α_t)ᵀ(Σ_τ α'_τ)``.

Vocabulary restriction (the official code's options): ``G`` keeps only some rows (vocabulary ids). The
probabilities are always normalised over the *full* vocabulary (a log-sum-exp over every logit); only the
rows that are kept change. A score uses the ids present in both representations (their intersection).

* ``vocab_ids=None``: every id (the exact gradient inner product);
* a LongTensor: a fixed set (``total_unique`` in the official code: every id occurring in the inputs);
* ``"topk"``: the union over the batch of the ``prediction_topk`` most probable ids at each kept position
  (``topk_unique``);
* ``topk_abs=k`` (applied after the above): the union over the batch of the ``k`` largest ``|α_t|`` entries
  at each kept position;
* ``keep_ratio=r``: only the ``ceil(r · n)`` positions with the lowest probability of the observed token
  (at least one) count (``--lowest_likelihood_ratio``; validation references use 1).

Importing this module loads torch only (no transformers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Union

import torch

VocabSpec = Union[None, torch.Tensor, Literal["topk"]]
"""Which vocabulary rows a representation keeps: None (all), a LongTensor of ids, or ``"topk"``."""

Representation = tuple[torch.Tensor, torch.Tensor]
"""``(G (|V'|, d), vocab_ids (|V'|,) sorted LongTensor)``."""

REDUCTIONS = ("mean", "pairwise")


@dataclass(frozen=True)
class ForValueFactors:
    """A representation kept in factored form: ``G = alphaᵀ hidden`` is never built unless asked for.

    ``hidden`` (n, d) and ``alpha`` (n, |V'|) hold the ``n`` kept positions; ``vocab_ids`` (|V'|,) are the
    sorted vocabulary ids of ``alpha``'s columns. ``n = 0`` is an empty response: every score with it is 0.
    """

    hidden: torch.Tensor  # (n, d) h_t, the LM head's input at the position predicting y_t
    alpha: torch.Tensor  # (n, |V'|) e_{y_t} − p_t on the kept vocabulary ids
    vocab_ids: torch.Tensor  # (|V'|,) sorted, unique, long

    @property
    def n_positions(self) -> int:
        return self.hidden.shape[0]

    def matrix(self) -> torch.Tensor:
        """``G = Σ_t α_t h_tᵀ`` (|V'|, d)."""
        return self.alpha.T @ self.hidden

    def representation(self) -> Representation:
        return self.matrix(), self.vocab_ids


# ---- building representations -------------------------------------------------------------------------------


def prediction_errors(logits: torch.Tensor, targets: torch.Tensor, vocab_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``α = e_y − p`` on the columns ``vocab_ids`` (all when None), ``p`` normalised over the full vocabulary.

    Args:
        logits: (N, V) raw logits.
        targets: (N,) observed token ids.
        vocab_ids: (K,) sorted ids to keep, or None for all V.
    Returns:
        (N, K) in at least float32; NaN and ±inf become 0 (as the official code does).
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (N, 1) over the FULL vocabulary
    if vocab_ids is None:
        alpha = -torch.exp(logits - lse)  # (N, V)
        alpha[torch.arange(targets.shape[0], device=targets.device), targets] += 1.0  # + e_y, no (N, V) one-hot
    else:
        alpha = (targets.unsqueeze(-1) == vocab_ids.unsqueeze(0)).to(logits.dtype)  # (N, K) one-hot on the kept ids
        alpha -= torch.exp(logits.index_select(-1, vocab_ids) - lse)
    return torch.nan_to_num(alpha, nan=0.0, posinf=0.0, neginf=0.0)


def lowest_likelihood_mask(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, keep_ratio: float
) -> torch.Tensor:
    """Per row, the ``ceil(keep_ratio · n)`` positions of ``mask`` (at least one when ``n > 0``) whose observed
    token is least likely. Shapes: logits (B, N, V), targets (B, N), mask (B, N) bool -> (B, N) bool."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    if keep_ratio == 1.0:
        return mask
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (B, N)
    logp = logp.masked_fill(~mask, float("inf"))
    counts = mask.sum(-1)  # (B,)
    keep = torch.ceil(counts.double() * keep_ratio).long()
    keep = torch.where(counts > 0, keep.clamp(min=1), keep)
    ranks = torch.empty_like(targets)
    order = torch.argsort(logp, dim=-1, stable=True)
    ranks.scatter_(-1, order, torch.arange(targets.shape[-1], device=targets.device).expand_as(order))
    return (ranks < keep.unsqueeze(-1)) & mask


def batch_vocabulary(logits: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted union of the ``k`` most probable ids at the positions of ``mask``. logits (B, N, V), mask (B, N)."""
    if k <= 0:
        raise ValueError(f"prediction_topk must be > 0, got {k}")
    kept = logits[mask]  # (M, V)
    if kept.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=logits.device)
    top = torch.topk(kept, k=min(k, logits.shape[-1]), dim=-1).indices
    return torch.unique(top.reshape(-1), sorted=True)


def forvalue_factors(
    hidden: torch.Tensor,
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    vocab_ids: VocabSpec = None,
    prediction_topk: int = 32,
    keep_ratio: float = 1.0,
    topk_abs: int | None = None,
) -> list[ForValueFactors]:
    """Factored For-Value representations of a batch whose positions are already aligned: row ``t`` of
    ``hidden`` and ``logits`` predicts ``targets[:, t]`` (see :func:`forvalue_repr` for the shifting form).

    Args:
        hidden: (B, N, d) last hidden states (LM head inputs).
        logits: (B, N, V) logits over the full vocabulary.
        targets: (B, N) observed ids.
        mask: (B, N) bool, True where the position counts (response tokens).
        vocab_ids, prediction_topk, keep_ratio, topk_abs: the restrictions of the module docstring; the
            ``"topk"`` and ``topk_abs`` unions are taken over this batch.
    Returns:
        B :class:`ForValueFactors`, all on the same vocabulary ids.
    """
    if not (hidden.dim() == 3 and logits.dim() == 3 and hidden.shape[:2] == logits.shape[:2] == targets.shape == mask.shape):
        raise ValueError(f"need hidden (B, N, d), logits (B, N, V), targets and mask (B, N); got {tuple(hidden.shape)}, "
                         f"{tuple(logits.shape)}, {tuple(targets.shape)}, {tuple(mask.shape)}")
    if topk_abs is not None and topk_abs <= 0:
        raise ValueError(f"topk_abs must be > 0 or None, got {topk_abs}")
    V = logits.shape[-1]
    mask = mask.bool()
    keep = lowest_likelihood_mask(logits, targets, mask, keep_ratio)  # (B, N)
    if isinstance(vocab_ids, str):
        if vocab_ids != "topk":
            raise ValueError(f"vocab_ids must be None, a LongTensor of ids or 'topk', got {vocab_ids!r}")
        ids: torch.Tensor | None = batch_vocabulary(logits, keep, prediction_topk)
    elif vocab_ids is None:
        ids = None
    else:
        ids = torch.unique(torch.as_tensor(vocab_ids, dtype=torch.long, device=logits.device), sorted=True)
        if ids.numel() and (ids[0] < 0 or ids[-1] >= V):
            raise ValueError(f"vocab_ids must lie in [0, {V}), got ids from {int(ids[0])} to {int(ids[-1])}")
    hidden = torch.nan_to_num(hidden.to(torch.promote_types(hidden.dtype, torch.float32)), nan=0.0, posinf=0.0, neginf=0.0)
    alphas = [prediction_errors(logits[b][keep[b]], targets[b][keep[b]], ids) for b in range(hidden.shape[0])]  # (n_b, K)
    if ids is None:
        ids = torch.arange(V, device=logits.device)
    if topk_abs is not None and ids.numel() > topk_abs:
        rows = torch.cat(alphas)  # (M, K)
        if rows.shape[0] == 0:
            cols = ids.new_empty(0)
        else:
            cols = torch.unique(torch.topk(rows.abs(), k=topk_abs, dim=-1).indices.reshape(-1), sorted=True)
        alphas = [a.index_select(-1, cols) for a in alphas]
        ids = ids.index_select(0, cols)
    return [ForValueFactors(hidden[b][keep[b]], alphas[b], ids) for b in range(hidden.shape[0])]


def forvalue_repr(
    hidden: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    *,
    vocab_ids: VocabSpec = None,
    prediction_topk: int = 32,
    keep_ratio: float = 1.0,
    topk_abs: int | None = None,
) -> Representation:
    """``G = Σ_t α_t h_tᵀ`` of one sequence, with the usual causal shift: position ``t − 1`` predicts ``labels[t]``.

    Args:
        hidden: (T, d) last hidden states of the sequence.
        logits: (T, V) its logits.
        labels: (T,) its token ids.
        mask: (T,) bool, True on the tokens that count (the response); ``mask[0]`` is ignored (no position
            predicts the first token).
        vocab_ids, prediction_topk, keep_ratio, topk_abs: see the module docstring (unions over this sequence).
    Returns:
        ``(G (|V'|, d), vocab_ids (|V'|,))``; an empty response gives ``G`` with no nonzero contribution
        (zero rows, or all zeros on the fixed ids), so every score with it is 0.
    """
    if hidden.dim() != 2 or logits.dim() != 2 or not (hidden.shape[0] == logits.shape[0] == labels.shape[0] == mask.shape[0]):
        raise ValueError(f"need hidden (T, d), logits (T, V), labels and mask (T,); got {tuple(hidden.shape)}, "
                         f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(mask.shape)}")
    factors = forvalue_factors(hidden[None, :-1], logits[None, :-1], labels[None, 1:], mask[None, 1:].bool(),
                               vocab_ids=vocab_ids, prediction_topk=prediction_topk, keep_ratio=keep_ratio,
                               topk_abs=topk_abs)[0]
    return factors.representation()


# ---- scores ---------------------------------------------------------------------------------------------------


def _common(ids_a: torch.Tensor, ids_b: torch.Tensor) -> tuple[torch.Tensor | slice, torch.Tensor | slice]:
    """Indexers selecting the shared ids of two sorted unique id vectors, in the same order (whole-axis
    slices, which copy nothing, when the two are equal: the usual case with the full vocabulary)."""
    if ids_a.shape == ids_b.shape and torch.equal(ids_a, ids_b):
        return slice(None), slice(None)
    return torch.isin(ids_a, ids_b), torch.isin(ids_b, ids_a)


def forvalue_score(G_a: torch.Tensor, ids_a: torch.Tensor, G_b: torch.Tensor, ids_b: torch.Tensor) -> torch.Tensor:
    """``⟨G_a, G_b⟩_F`` over the vocabulary ids both keep (arXiv 2508.10180, Eq. 1). G (|V'|, d) -> scalar."""
    in_a, in_b = _common(ids_a, ids_b)
    return (G_a[in_a] * G_b[in_b]).sum()


def forvalue_score_double_sum(a: ForValueFactors, b: ForValueFactors) -> torch.Tensor:
    """The same score as :func:`forvalue_score`, as ``Σ_t Σ_τ ⟨h_t, h'_τ⟩⟨α_t, α'_τ⟩`` over shared ids.

    Costs ``n_a · n_b · (d + |V'|)`` and never builds a ``|V'| × d`` matrix: cheaper than the Frobenius form
    (``(n_a + n_b) · |V'| · d``) for short sequences over a large vocabulary.
    """
    in_a, in_b = _common(a.vocab_ids, b.vocab_ids)
    hh = a.hidden @ b.hidden.T  # (n_a, n_b)
    aa = a.alpha[:, in_a] @ b.alpha[:, in_b].T  # (n_a, n_b)
    return (hh * aa).sum()


def double_sum_is_cheaper(n_a: int, n_b: int, n_ids: int, d: int) -> bool:
    """Whether the double sum takes fewer multiply-adds than building both G and taking their inner product."""
    return n_a * n_b * (d + n_ids) < (n_a + n_b + 1) * n_ids * d


def forvalue_score_factors(
    a: ForValueFactors, b: ForValueFactors, *, method: Literal["auto", "frobenius", "double_sum"] = "auto"
) -> torch.Tensor:
    """Score of two factored representations, by the cheaper exact form unless ``method`` names one."""
    if method == "auto":
        in_a, _ = _common(a.vocab_ids, b.vocab_ids)
        n_ids = a.vocab_ids.numel() if isinstance(in_a, slice) else int(in_a.sum())
        method = "double_sum" if double_sum_is_cheaper(a.n_positions, b.n_positions, n_ids, a.hidden.shape[-1]) else "frobenius"
    if method == "double_sum":
        return forvalue_score_double_sum(a, b)
    if method == "frobenius":
        return forvalue_score(a.matrix(), a.vocab_ids, b.matrix(), b.vocab_ids)
    raise ValueError(f"method must be auto, frobenius or double_sum, got {method!r}")


def forvalue_approx(
    h_a: torch.Tensor,
    alpha_a: torch.Tensor,
    h_b: torch.Tensor,
    alpha_b: torch.Tensor,
    ids_a: torch.Tensor | None = None,
    ids_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Approximate For-Value (official ``--approximate_proposed``): ``(Σ_t h_t)ᵀ(Σ_τ h'_τ) · (Σ_t α_t)ᵀ(Σ_τ α'_τ)``.

    h (n, d), alpha (n, |V'|); ``ids_a``/``ids_b`` name alpha's columns when the two differ (None: the same
    columns). Exact when each sample has a single position.
    """
    sum_a, sum_b = alpha_a.sum(0), alpha_b.sum(0)  # (|V'|,)
    if ids_a is not None or ids_b is not None:
        if ids_a is None or ids_b is None:
            raise ValueError("give both ids_a and ids_b, or neither")
        in_a, in_b = _common(ids_a, ids_b)
        sum_a, sum_b = sum_a[in_a], sum_b[in_b]
    return (h_a.sum(0) @ h_b.sum(0)) * (sum_a @ sum_b)


def score_against_mean(train: ForValueFactors, mean_G: torch.Tensor, mean_ids: torch.Tensor) -> torch.Tensor:
    """``⟨G_train, Ḡ⟩`` as ``Σ_t α_tᵀ (Ḡ h_t)`` over shared ids, without building ``G_train`` (scalar)."""
    in_t, in_m = _common(train.vocab_ids, mean_ids)
    projected = train.hidden @ mean_G[in_m].T  # (n, |common|): (Ḡ h_t) on the shared ids
    return (projected * train.alpha[:, in_t]).sum()


class MeanRepresentation:
    """Running mean ``Ḡ = (1/N) Σ_v G_v`` of representations that may keep different vocabulary ids (a row
    absent from ``G_v`` counts as zero). Memory: one ``|∪ ids| × d`` matrix."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None  # (|ids|, d) sum of the G added so far
        self.ids: torch.Tensor | None = None  # (|ids|,) sorted union of their ids
        self.count = 0

    def add(self, G: torch.Tensor, ids: torch.Tensor) -> None:
        """Add one ``G (|V'|, d)`` with its sorted ids."""
        if self.total is None:
            self.total, self.ids = G.clone(), ids.clone()
        elif torch.equal(ids, self.ids):
            self.total += G
        else:
            union = torch.unique(torch.cat([self.ids, ids]), sorted=True)
            total = self.total.new_zeros(union.shape[0], G.shape[1])
            total.index_add_(0, torch.searchsorted(union, self.ids), self.total)
            total.index_add_(0, torch.searchsorted(union, ids), G)
            self.total, self.ids = total, union
        self.count += 1

    def add_factors(self, factors: ForValueFactors) -> None:
        self.add(factors.matrix(), factors.vocab_ids)

    def mean(self) -> Representation:
        if self.total is None or self.count == 0:
            raise ValueError("no representation was added")
        return self.total / self.count, self.ids


def _as_factors_or_repr(x: ForValueFactors | Representation) -> ForValueFactors | Representation:
    if isinstance(x, ForValueFactors) or (isinstance(x, tuple) and len(x) == 2):
        return x
    raise TypeError(f"expected ForValueFactors or a (G, vocab_ids) pair, got {type(x).__name__}")


def forvalue_rank(
    train: Sequence[ForValueFactors | Representation],
    val: Sequence[ForValueFactors | Representation],
    *,
    reduce: Literal["mean", "pairwise"] = "mean",
) -> torch.Tensor:
    """Scores of training samples against validation samples.

    Args:
        train: N_train representations (``ForValueFactors`` or ``(G, ids)`` pairs).
        val: N_val representations, N_val >= 1.
        reduce: ``"mean"``: score against the validation mean ``Ḡ`` (the selection rule of the official code),
            (N_train,); ``"pairwise"``: every pair, (N_train, N_val). By linearity the mean score is the row
            mean of the pairwise one.
    Returns:
        The scores; higher is more valuable. Rank with ``scores.argsort(descending=True)``.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if not val:
        raise ValueError("need at least one validation representation")
    train = [_as_factors_or_repr(x) for x in train]
    val = [_as_factors_or_repr(x) for x in val]
    if reduce == "mean":
        acc = MeanRepresentation()
        for v in val:
            acc.add(*(v.representation() if isinstance(v, ForValueFactors) else v))
        mean_G, mean_ids = acc.mean()
        out = [score_against_mean(x, mean_G, mean_ids) if isinstance(x, ForValueFactors)
               else forvalue_score(x[0], x[1], mean_G, mean_ids) for x in train]
        return torch.stack(out) if out else mean_G.new_zeros(0)
    rows = []
    for x in train:
        row = []
        for v in val:
            if isinstance(x, ForValueFactors) and isinstance(v, ForValueFactors):
                row.append(forvalue_score_factors(x, v))
            else:
                xa = x.representation() if isinstance(x, ForValueFactors) else x
                va = v.representation() if isinstance(v, ForValueFactors) else v
                row.append(forvalue_score(xa[0], xa[1], va[0], va[1]))
        rows.append(torch.stack(row))
    return torch.stack(rows) if rows else torch.zeros(0, len(val))
