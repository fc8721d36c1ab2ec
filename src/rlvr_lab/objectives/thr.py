"""Token influence scores and the NTHR / THR token-advantage modifiers (spec section 4).

NTHR: "Unlikeliness Reward ... Negative Token Hidden Reward", arXiv 2505.18830, sec. 5 and App. 7.4.
THR:  "Token Hidden Reward", arXiv 2510.03669. No THR code or method text was available, so the THR
reweighting below is the spec's inferred generalisation of NTHR (every free choice is a keyword).

Two stages, both without gradient:

1. **Scores** (:func:`token_hidden_reward`, or the one-call driver :func:`compute_token_hidden_reward`).
   For a group with correct responses ``P`` (binary reward), on the group vocabulary ``V*`` (sorted
   unique ids sampled in the group's policy tokens):

       g_{i,k} = e_{y_{i,k}} - π_old(· | s_{i,k})[V*]   prediction error, NOT renormalised on V*
       M+      = Σ_{i∈P} Σ_k g_{i,k} h_{i,k}^T          (|V*|, d)
       s_{j,k} = g_{j,k}^T M+ h_{j,k}                    for every policy token of the group

   ``h`` is the old policy's final hidden state that produced the logits of ``y`` (the input of the
   LM head). The trainer stores ``s`` (B, T) in ``ctx.extras["token_hidden_reward"]``.

2. **Modifiers** ``"nthr"`` and ``"thr"`` in ``TOKEN_ADVANTAGE_MODIFIERS`` read those scores and
   rescale token advantages of mixed groups (0 < |P| < G).

What the trainer must supply for the scores (memory never reaches ``(B, T, V)``):

* ``hidden`` (B, T, d): final hidden states of the old-policy scoring pass (bf16 is fine; products
  run in fp32), row ``t`` being the state that predicted response token ``t``.
* ``sampled_ids`` (B, T) long response tokens, ``loss_mask`` (B, T) bool, ``group_ids`` (B,).
* ``positive`` (B,) bool, the correct responses: :func:`positive_responses` (rewards when they are
  binary, else the task verdict ``correct``; spec rule 11.1).
* the LM head weight (V, d) (and bias) to build V*-probabilities chunk-wise, and optionally the
  old log-probs of the sampled tokens (B, T), which give the softmax normaliser for free so only
  ``(chunk, |V*|)`` logits are formed instead of ``(chunk, V)``.

Scores depend only on rows of the same group, so any call may cover a subset of whole groups; the
driver processes ``groups_per_chunk`` groups at a time, bounding memory by
``groups_per_chunk · G · T · (|V*| + d)`` floats plus ``(|V*|, d)`` per group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.registry import TOKEN_ADVANTAGE_MODIFIERS, Choice, Float, Str

Metrics = dict[str, torch.Tensor]

SCORE_KEY = "token_hidden_reward"  # ctx.extras key of the (B, T) scores
DEFAULT_CHUNK_TOKENS = 1024


# ---- group vocabulary ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupVocabulary:
    """The union of sampled token ids of each group (``V*_x``), padded to a common width ``K``.

    Groups are numbered ``0 .. n_groups-1`` in the sorted order of their ``group_ids``.
    """

    index: torch.Tensor  # (n_groups, K) long: sorted unique token ids of each group, 0-padded
    valid: torch.Tensor  # (n_groups, K) bool: True on real entries of ``index``
    row_group: torch.Tensor  # (B,) long: group number of each sequence
    column: torch.Tensor  # (B, T) long: column of y_{i,t} in its group's row of ``index`` (0 off the mask)

    @property
    def sizes(self) -> torch.Tensor:
        """(n_groups,) long: |V*| of each group."""
        return self.valid.sum(-1)


@torch.no_grad()
def group_vocabulary(sampled_ids: torch.Tensor, loss_mask: torch.Tensor, group_ids: torch.Tensor) -> GroupVocabulary:
    """Per-group vocabulary ``V*`` = sorted unique ids of the group's policy tokens (NTHR App. 7.4).

    Args:
        sampled_ids: (B, T) long response tokens.
        loss_mask: (B, T) bool, policy tokens (tool output and padding are not part of V*).
        group_ids: (B,) prompt id of each sequence; any values, any order.
    Returns:
        :class:`GroupVocabulary`; ``K = max |V*_g|`` (at least 1).
    """
    if sampled_ids.shape != loss_mask.shape or sampled_ids.dim() != 2:
        raise ValueError(f"sampled_ids {tuple(sampled_ids.shape)} and loss_mask {tuple(loss_mask.shape)} must be (B, T)")
    device = sampled_ids.device
    ids = sampled_ids.long()
    mask = loss_mask.bool()
    _, row_group = torch.unique(group_ids, return_inverse=True)  # (B,)
    n_groups = int(row_group.max()) + 1 if row_group.numel() else 0
    width = int(ids[mask].max()) + 1 if mask.any() else 1  # ids are < width on the mask
    keys = row_group.unsqueeze(-1) * width + ids.clamp(0, width - 1)  # (B, T) unique per (group, token)
    uniq = torch.unique(keys[mask])  # (U,) sorted: by group, then token id
    key_group = uniq // width
    sizes = torch.bincount(key_group, minlength=n_groups)  # (n_groups,)
    K = max(int(sizes.max()) if sizes.numel() else 0, 1)
    start = torch.cumsum(sizes, 0) - sizes  # (n_groups,) first entry of each group in ``uniq``
    col = torch.arange(uniq.numel(), device=device) - start[key_group]
    index = torch.zeros(n_groups, K, dtype=torch.long, device=device)
    valid = torch.zeros(n_groups, K, dtype=torch.bool, device=device)
    index[key_group, col] = uniq % width
    valid[key_group, col] = True
    found = torch.searchsorted(uniq, keys).clamp(max=max(uniq.numel() - 1, 0))  # (B, T)
    column = torch.where(mask, found - start[row_group].unsqueeze(-1), torch.zeros_like(found))
    return GroupVocabulary(index=index, valid=valid, row_group=row_group, column=column)


# ---- V*-probabilities ----------------------------------------------------------------------------


@torch.no_grad()
def vstar_probs_from_hidden(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    vocab: GroupVocabulary,
    loss_mask: torch.Tensor,
    *,
    lm_head_bias: torch.Tensor | None = None,
    old_logprobs: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> torch.Tensor:
    """``π_old(v | s_{i,t})`` for ``v`` in the row's group vocabulary, (B, T, K), 0 elsewhere.

    Probabilities are over the full vocabulary and restricted to V* (not renormalised), as NTHR
    defines ``g``. Works one group at a time over chunks of its masked positions, with two ways to
    get the softmax normaliser:

    * ``old_logprobs`` given (B, T), the log-probs of the sampled tokens from the same forward pass and
      temperature that produced ``hidden``: ``log Z = logit_y / temperature - old_logprob_y``; only
      ``(chunk, K)`` logits are formed (against the head rows of V*, ``(K, d)``). Exact up to the
      rounding of the logits when ``hidden`` is the tensor that produced ``old_logprobs``.
    * otherwise: ``(chunk, V)`` logits are formed per chunk for the log-sum-exp (never ``(B, T, V)``).

    Args:
        hidden: (B, T, d) old-policy final hidden states (detached).
        lm_head_weight: (V, d) output embedding; ``lm_head_bias`` (V,) if the head has one.
        vocab: from :func:`group_vocabulary` on the same rows.
        loss_mask: (B, T) bool; other positions get zeros.
    Returns:
        (B, T, K) float32.
    """
    B, T, d = hidden.shape
    K = vocab.index.shape[1]
    out = torch.zeros(B, T, K, dtype=torch.float32, device=hidden.device)
    mask = loss_mask.bool()
    for grp in range(vocab.index.shape[0]):
        cand = vocab.index[grp]  # (K,) token ids of this group's V* (0-padded)
        ok = vocab.valid[grp]  # (K,)
        rows, cols = (mask & (vocab.row_group == grp).unsqueeze(-1)).nonzero(as_tuple=True)
        w_sub = lm_head_weight[cand]  # (K, d): the head restricted to V*
        b_sub = None if lm_head_bias is None else lm_head_bias[cand]
        for lo in range(0, rows.numel(), chunk_tokens):
            r, c = rows[lo : lo + chunk_tokens], cols[lo : lo + chunk_tokens]
            h = hidden[r, c]  # (n, d)
            if old_logprobs is None:
                logits = torch.nn.functional.linear(h, lm_head_weight, lm_head_bias).float() / temperature  # (n, V)
                log_z = torch.logsumexp(logits, dim=-1, keepdim=True)  # (n, 1)
                sub = logits[:, cand]  # (n, K)
            else:
                sub = torch.nn.functional.linear(h, w_sub, b_sub).float() / temperature  # (n, K)
                own = sub.gather(-1, vocab.column[r, c].unsqueeze(-1))  # (n, 1) logit of the sampled token
                log_z = own - old_logprobs[r, c].float().unsqueeze(-1)
            out[r, c] = torch.exp(sub - log_z) * ok
    return out


# ---- scores --------------------------------------------------------------------------------------


def _group_table(row_group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(n_groups, G_max) row ids of each group in row order, -1 padded (ragged groups allowed)."""
    order = torch.argsort(row_group, stable=True)  # rows sorted by group
    sizes = torch.bincount(row_group, minlength=n_groups)
    start = torch.cumsum(sizes, 0) - sizes
    g_sorted = row_group[order]
    slot = torch.arange(order.numel(), device=row_group.device) - start[g_sorted]
    table = torch.full((n_groups, max(int(sizes.max()), 1)), -1, dtype=torch.long, device=row_group.device)
    table[g_sorted, slot] = order
    return table


@torch.no_grad()
def token_hidden_reward(
    hidden: torch.Tensor,
    vstar_probs: torch.Tensor,
    vocab: GroupVocabulary,
    loss_mask: torch.Tensor,
    positive: torch.Tensor,
) -> torch.Tensor:
    """Token influence score ``s_{j,k} = g_{j,k}^T M+ h_{j,k}`` of every policy token (NTHR sec. 5, eq. for s).

    Vectorised over groups (ragged groups are padded); fp32 throughout. Groups without a correct
    response get 0 (``M+ = 0``). See :func:`token_hidden_reward_reference` for the plain loop.

    Args:
        hidden: (B, T, d) old-policy final hidden states (detached; any float dtype).
        vstar_probs: (B, T, K) ``π_old`` over the row's group vocabulary (:func:`vstar_probs_from_hidden`).
        vocab: :class:`GroupVocabulary` of the same rows.
        loss_mask: (B, T) bool.
        positive: (B,) bool, correct responses (the set P).
    Returns:
        (B, T) float32 scores, 0 off the mask.
    """
    B, T, d = hidden.shape
    K = vocab.index.shape[1]
    if vstar_probs.shape != (B, T, K):
        raise ValueError(f"vstar_probs must be (B, T, K)={(B, T, K)}, got {tuple(vstar_probs.shape)}")
    n_groups = vocab.index.shape[0]
    if B == 0 or n_groups == 0 or not bool(loss_mask.any()):
        return torch.zeros(B, T, dtype=torch.float32, device=hidden.device)
    table = _group_table(vocab.row_group, n_groups)  # (n, Gm)
    real = table >= 0
    rows = table.clamp_min(0)
    n, Gm = table.shape
    mask = loss_mask.bool()[rows] & real.unsqueeze(-1)  # (n, Gm, T)
    h = hidden[rows].float()  # (n, Gm, T, d)
    valid = vocab.valid.unsqueeze(1).unsqueeze(1)  # (n, 1, 1, K)
    g = -(vstar_probs[rows].float() * valid)  # (n, Gm, T, K): e_y - π on V*
    g.scatter_add_(-1, vocab.column[rows].unsqueeze(-1), torch.ones(n, Gm, T, 1, device=g.device))
    g = g * mask.unsqueeze(-1)
    pos_tok = (positive.bool()[rows] & real).unsqueeze(-1) & mask  # (n, Gm, T)
    g_flat = g.reshape(n, Gm * T, K)
    h_flat = h.reshape(n, Gm * T, d)
    m_plus = (g_flat * pos_tok.reshape(n, Gm * T, 1)).transpose(1, 2) @ h_flat  # (n, K, d) = Σ_P g h^T
    s = ((g_flat @ m_plus) * h_flat).sum(-1).reshape(n, Gm, T)  # rowsum((G M+) ⊙ H)
    out = torch.zeros(B, T, dtype=torch.float32, device=hidden.device)
    out[table[real]] = s[real]
    return out * loss_mask.to(out.dtype)


@torch.no_grad()
def token_hidden_reward_reference(
    hidden: torch.Tensor,
    probs: torch.Tensor,
    sampled_ids: torch.Tensor,
    loss_mask: torch.Tensor,
    group_ids: torch.Tensor,
    positive: torch.Tensor,
) -> torch.Tensor:
    """Plain-loop reference of the scores in the kernel form (small inputs only, float64).

    ``s_{j,k} = Σ_{i∈P} Σ_{k'} <g_{i,k'}, g_{j,k}> · <h_{i,k'}, h_{j,k}>`` with ``g`` on the group's V*.

    Args:
        hidden: (B, T, d); probs: (B, T, V) full-vocabulary old-policy probabilities;
        sampled_ids, loss_mask: (B, T); group_ids, positive: (B,).
    Returns:
        (B, T) float32.
    """
    B, T, _ = hidden.shape
    h = hidden.double()
    out = torch.zeros(B, T, dtype=torch.float64)
    for grp in sorted(set(group_ids.tolist())):
        members = [i for i in range(B) if int(group_ids[i]) == grp]
        tokens = [(i, t) for i in members for t in range(T) if bool(loss_mask[i, t])]
        vstar = sorted({int(sampled_ids[i, t]) for i, t in tokens})

        def err(i, t):
            y = int(sampled_ids[i, t])
            return torch.tensor([(1.0 if v == y else 0.0) - float(probs[i, t, v]) for v in vstar], dtype=torch.float64)

        pos_tokens = [(i, t) for i, t in tokens if bool(positive[i])]
        for j, k in tokens:
            gj = err(j, k)
            total = 0.0
            for i, t in pos_tokens:
                total += float(err(i, t) @ gj) * float(h[i, t] @ h[j, k])
            out[j, k] = total
    return out.float()


@torch.no_grad()
def compute_token_hidden_reward(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    sampled_ids: torch.Tensor,
    loss_mask: torch.Tensor,
    group_ids: torch.Tensor,
    positive: torch.Tensor,
    *,
    lm_head_bias: torch.Tensor | None = None,
    old_logprobs: torch.Tensor | None = None,
    temperature: float = 1.0,
    groups_per_chunk: int = 1,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    mixed_only: bool = True,
) -> torch.Tensor:
    """One call for the trainer: (B, T) scores, a few whole groups at a time (bounded memory).

    Builds V* (:func:`group_vocabulary`), V*-probabilities (:func:`vstar_probs_from_hidden`) and
    scores (:func:`token_hidden_reward`) for ``groups_per_chunk`` groups at once. With
    ``mixed_only`` (spec 4.1: "only mixed groups are processed") groups with no correct or no
    incorrect response are skipped and score 0; NTHR/THR leave them unchanged anyway.

    Args:
        hidden: (B, T, d) old-policy final hidden states; lm_head_weight: (V, d);
        sampled_ids: (B, T) long; loss_mask: (B, T) bool; group_ids: (B,); positive: (B,) bool;
        old_logprobs: optional (B, T) old log-probs of the sampled tokens (same pass and temperature).
    Returns:
        (B, T) float32, 0 off the mask and in skipped groups.
    """
    if groups_per_chunk < 1:
        raise ValueError(f"groups_per_chunk must be >= 1, got {groups_per_chunk}")
    out = torch.zeros(loss_mask.shape, dtype=torch.float32, device=hidden.device)
    uniq, row_group = torch.unique(group_ids, return_inverse=True)
    pos = positive.bool()
    n_pos = torch.zeros(uniq.numel(), dtype=torch.long, device=pos.device).index_add_(0, row_group, pos.long())
    n_all = torch.bincount(row_group, minlength=uniq.numel())
    keep = (n_pos > 0) & (n_pos < n_all) if mixed_only else n_pos > 0
    todo = keep.nonzero().flatten()
    for lo in range(0, todo.numel(), groups_per_chunk):
        chosen = torch.isin(row_group, todo[lo : lo + groups_per_chunk])
        rows = chosen.nonzero().flatten()
        ids, mask = sampled_ids[rows], loss_mask[rows]
        vocab = group_vocabulary(ids, mask, group_ids[rows])
        probs = vstar_probs_from_hidden(
            hidden[rows], lm_head_weight, vocab, mask, lm_head_bias=lm_head_bias,
            old_logprobs=None if old_logprobs is None else old_logprobs[rows],
            temperature=temperature, chunk_tokens=chunk_tokens,
        )
        out[rows] = token_hidden_reward(hidden[rows], probs, vocab, mask, pos[rows])
    return out


# ---- correct set ---------------------------------------------------------------------------------


def positive_responses(rewards: torch.Tensor | None, correct: torch.Tensor | None) -> torch.Tensor:
    """(B,) bool correct set P for binary-reward methods (spec rule 11.1).

    Rewards in {0, 1}: ``r == 1``. Otherwise (shaping bonuses such as DAPO overlong or SPEAR tool
    calls made them non-binary) the task verdict ``correct`` is used, and it must be given.
    """
    if rewards is not None:
        r = rewards.float()
        if bool(((r == 0) | (r == 1)).all()):
            return r == 1
    if correct is None:
        raise ValueError(
            "NTHR/THR need a binary correct set: rewards are not in {0, 1} (or missing) and ctx.correct is None"
        )
    return correct.bool()


# ---- modifiers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Groups:
    G: int
    P: int
    positive: torch.Tensor  # (P, G) bool
    mask: torch.Tensor  # (P, G, T) bool
    mixed: torch.Tensor  # (P,) bool: 0 < |P| < G
    n_pos: torch.Tensor  # (P,) long


def _groups(advantages: torch.Tensor, loss_mask: torch.Tensor, ctx: StepContext) -> _Groups:
    B, T = advantages.shape
    G = ctx.group_size
    if G is None or G < 1 or B % G:
        raise ValueError(f"ctx.group_size must divide the batch (B={B}), got {G}")
    P = B // G
    positive = positive_responses(ctx.rewards, ctx.correct).to(advantages.device).view(P, G)
    n_pos = positive.sum(-1)
    return _Groups(G=G, P=P, positive=positive, mask=loss_mask.bool().view(P, G, T), mixed=(n_pos > 0) & (n_pos < G),
                   n_pos=n_pos)


def _scores(ctx: StepContext, shape: torch.Size, key: str) -> torch.Tensor:
    s = ctx.extras.get(key)
    if s is None:
        raise ValueError(
            f"NTHR/THR need ctx.extras[{key!r}] (B, T): compute it with "
            "rlvr_lab.objectives.thr.compute_token_hidden_reward from the old-policy pass"
        )
    if s.shape != shape:
        raise ValueError(f"ctx.extras[{key!r}] must be {tuple(shape)}, got {tuple(s.shape)}")
    return s.float()


def _anchor(per_token: torch.Tensor, grp: _Groups, beta_tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """τ = β · min over non-empty correct responses of their token mean; (P,) τ and (P,) has_anchor."""
    m = grp.mask.to(per_token.dtype)
    n_tok = m.sum(-1)  # (P, G)
    seq_mean = (per_token * m).sum(-1) / n_tok.clamp_min(1.0)
    usable = grp.positive & (n_tok > 0)
    low = torch.where(usable, seq_mean, torch.full_like(seq_mean, math.inf)).min(-1).values  # (P,)
    has = usable.any(-1)
    low = torch.where(has, low, torch.zeros_like(low))
    if beta_tau == -math.inf:
        return torch.full_like(low, -math.inf), has
    return beta_tau * low, has


def _above(x: torch.Tensor, tau: torch.Tensor, rtol: float) -> torch.Tensor:
    """``x > τ`` beyond a relative tie tolerance, so the anchor token itself is never selected by rounding
    (errata 15). ``τ = -inf`` selects everything."""
    margin = torch.where(torch.isfinite(tau), rtol * tau.abs(), torch.zeros_like(tau))
    return x > (tau + margin).view(-1, 1, 1)


@TOKEN_ADVANTAGE_MODIFIERS.register(
    "nthr",
    params={"beta_tau": Float(help="β of the threshold τ = β·(weakest correct response's mean score); -inf: all."),
            "eta": Float(ge=0, nullable=True, help="Penalty scale (null: 2|0.5 - |P|/G|)."),
            "rtol": Float(ge=0, help="Relative tie tolerance at the threshold."),
            "score_key": Str(help="ctx.extras key of the (B, T) token scores.")},
    paper="arXiv 2505.18830 (NTHR), sec. 5", summary="selective penalisation of influential negative tokens",
    acts_on=("nthr/num_selected", "negative tokens of mixed groups whose influence score exceeds the threshold"),
    needs=(SCORE_KEY,),
)
@torch.no_grad()
def nthr_advantages(
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext,
    *,
    beta_tau: float = 1.0,
    eta: float | None = None,
    rtol: float = 1e-6,
    score_key: str = SCORE_KEY,
) -> tuple[torch.Tensor, Metrics]:
    """NTHR selective penalisation (arXiv 2505.18830, sec. 5; spec 4.2).

    In each mixed group (0 < |P| < G): ``τ = β · min_{i∈P} mean_k s_{i,k}``; tokens of incorrect
    responses with ``s > τ`` (likely to pull correct responses down) get ``A ← η·A`` with
    ``η = 2·|0.5 − |P|/G|``. Other tokens and other groups are unchanged.

    Reads the scores from ``ctx.extras[score_key]`` (B, T) and the correct set from ``ctx.rewards``
    (when binary) or ``ctx.correct``; groups are contiguous runs of ``ctx.group_size`` rows.

    Args:
        advantages: (B, T) token advantages; loss_mask: (B, T) bool.
        beta_tau: β of the threshold (paper default 1; ablations 0 and 0.1; ``-inf`` selects every
            negative token).
        eta: fixed scale instead of ``2·|0.5 − p|`` (``0`` is the paper's LLD probe); None for the paper's.
        rtol: relative tie tolerance of the strict ``s > τ`` test (errata 15).
    Returns:
        ((B, T) advantages, metrics under ``nthr/``).
    """
    B, T = advantages.shape
    grp = _groups(advantages, loss_mask, ctx)
    s = _scores(ctx, advantages.shape, score_key).to(advantages.device).view(grp.P, grp.G, T)
    tau, has_anchor = _anchor(s, grp, beta_tau)
    ok = (grp.mixed & has_anchor).view(-1, 1, 1)
    selected = ok & ~grp.positive.unsqueeze(-1) & grp.mask & _above(s, tau, rtol)  # (P, G, T)
    if eta is None:
        scale = 2.0 * (0.5 - grp.n_pos.float() / grp.G).abs()  # (P,)
    else:
        scale = torch.full((grp.P,), float(eta), device=advantages.device)
    adv = advantages.view(grp.P, grp.G, T)
    out = torch.where(selected, adv * scale.view(-1, 1, 1).to(adv.dtype), adv).view(B, T)
    neg_tokens = (ok & ~grp.positive.unsqueeze(-1) & grp.mask).sum()
    metrics = {
        "nthr/num_selected": selected.sum().float(),
        "nthr/frac_selected": (selected.sum() / neg_tokens.clamp_min(1)).float(),
        "nthr/frac_mixed_groups": grp.mixed.float().mean(),
        "nthr/eta_mean": (scale * grp.mixed).sum() / grp.mixed.sum().clamp_min(1),
    }
    return out, {k: v.detach() for k, v in metrics.items()}


THR_MODES = ("reweight", "only")


@TOKEN_ADVANTAGE_MODIFIERS.register(
    "thr",
    params={"p": Float(ge=-1, le=1, help="Reweighting strength: > 0 exploits, < 0 explores."),
            "beta_tau": Float(help="β of the NTHR-style anchor threshold."),
            "mode": Choice(*THR_MODES, help="reweight every token, or only the tokens above the threshold."),
            "rtol": Float(ge=0, help="Relative tie tolerance at the threshold."),
            "entropy_top_frac": Float(ge=0, le=1, help="Share of highest-entropy tokens considered."),
            "score_key": Str(help="ctx.extras key of the (B, T) token scores.")},
    paper="arXiv 2510.03669 (THR), sec. 4 (reweighting inferred)", summary="token-hidden-reward reweighting",
    needs=(SCORE_KEY,),
)
@torch.no_grad()
def thr_advantages(
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext,
    *,
    p: float = 0.2,
    beta_tau: float = 1.0,
    mode: str = "reweight",
    rtol: float = 1e-6,
    entropy_top_frac: float = 0.2,
    score_key: str = SCORE_KEY,
) -> tuple[torch.Tensor, Metrics]:
    """THR-guided reweighting (arXiv 2510.03669; spec 4.3). **Inferred**: no official code or method
    text was available; every choice below is the spec's proposal and a keyword.

    In each mixed group: ``THR_{j,k} = A_{j,k} · s_{j,k}`` (inferred definition), dominant tokens
    ``|THR| > τ_THR`` with ``τ_THR = β · min_{i∈P} mean_k |THR_{i,k}|`` (inferred, NTHR-style anchor), then

    * ``mode="reweight"``: ``A' = A·(1 + p·sign(THR))`` on dominant tokens (inferred form);
      ``p > 0`` exploits (amplifies positive-THR tokens, weakens negative ones), ``p < 0`` explores.
    * ``mode="only"``: ``A' = A·1[dominant]`` (the "THR-only" variant; inferred form).

    Groups that are not mixed are unchanged. Scores come from ``ctx.extras[score_key]`` (B, T).

    Args:
        advantages: (B, T); loss_mask: (B, T) bool.
        p: signed reweighting strength in [-1, 1] (magnitude not verified; spec suggests 0.2-0.5).
        beta_tau: β of the anchor (1: spec default; 0: every token with nonzero THR is dominant).
        rtol: relative tie tolerance of ``|THR| > τ`` (errata 15: the anchor token itself ties).
        entropy_top_frac: share of highest-entropy tokens for the overlap metric (needs ctx.old_entropy
            or ctx.entropy; skipped otherwise).
    Returns:
        ((B, T) advantages, metrics under ``thr/``).
    """
    if mode not in THR_MODES:
        raise ValueError(f"unknown THR mode {mode!r}; allowed: {', '.join(THR_MODES)}")
    if not -1.0 <= p <= 1.0:
        raise ValueError(f"p must be in [-1, 1], got {p}")
    B, T = advantages.shape
    grp = _groups(advantages, loss_mask, ctx)
    s = _scores(ctx, advantages.shape, score_key).to(advantages.device).view(grp.P, grp.G, T)
    adv = advantages.view(grp.P, grp.G, T)
    thr = adv.float() * s  # (P, G, T)
    tau, has_anchor = _anchor(thr.abs(), grp, beta_tau)
    ok = (grp.mixed & has_anchor).view(-1, 1, 1)
    in_scope = ok & grp.mask
    dominant = in_scope & _above(thr.abs(), tau, rtol)
    if mode == "reweight":
        factor = torch.where(dominant, 1.0 + p * torch.sign(thr), torch.ones_like(thr))
    else:
        factor = torch.where(in_scope & ~dominant, torch.zeros_like(thr), torch.ones_like(thr))
    out = (adv * factor.to(adv.dtype)).view(B, T)
    n_scope = in_scope.sum().clamp_min(1)
    metrics = {
        "thr/frac_dominant": dominant.sum() / n_scope,
        "thr/frac_pos": (dominant & (thr > 0)).sum() / dominant.sum().clamp_min(1),
        "thr/mean_abs": (thr.abs() * in_scope).sum() / n_scope,
        "thr/frac_mixed_groups": grp.mixed.float().mean(),
    }
    entropy = ctx.old_entropy if ctx.old_entropy is not None else ctx.entropy
    if entropy is not None and bool(loss_mask.any()):
        ent = entropy.to(advantages.device).float()
        valid_ent = ent[loss_mask.bool()]
        k_top = max(1, int(round(entropy_top_frac * valid_ent.numel())))
        cut = torch.topk(valid_ent, k_top).values.min()  # (quantile has an input-size limit)
        high = (ent >= cut).view(grp.P, grp.G, T) & grp.mask
        metrics["thr/high_entropy_overlap"] = (dominant & high).sum() / dominant.sum().clamp_min(1)
    return out, {k: v.float().detach() for k, v in metrics.items()}
