"""Lastde and Lastde++: training-free detection of machine-generated text from its token log-probabilities.

arXiv 2410.06072 (Xu et al., "Training-free LLM-generated Text Detection by Mining Token Probability
Sequences", ICLR 2025). A scoring (proxy) model reads the candidate text once and gives the token
probability sequence (TPS) ``l_t = log p(x_{t+1} | x_{<=t})``. Lastde combines a global statistic of the
TPS (its mean) with a local one (how diverse the *shapes* of short stretches of it are, across time
scales):

1. Orbits: the sliding windows ``o_i = (u_i, ..., u_{i+s-1})`` of a sequence ``u`` (stride 1).
2. The cosine similarity of each pair of consecutive orbits, ``c_i = cos(o_i, o_{i+1})``.
3. A histogram of the ``c_i`` over ``[-1, 1]`` in ``eps`` equal bins, normalised to ``q``.
4. Diversity entropy ``DE(u) = -(1 / ln eps) sum_b q_b ln q_b`` (``0 ln 0 = 0``), in ``[0, 1]``.
5. Multiscale: ``u^(tau)`` is the *overlapping* moving average of the TPS with window ``tau``, for
   ``tau = 1..tau_max``; MDE is the sample standard deviation (ddof 1) of ``DE(u^(1)), ..., DE(u^(tau_max))``.
6. ``Lastde = mean_t(l_t) / MDE``; higher means more likely machine-generated.

Lastde++ normalises Lastde the way Fast-DetectGPT (arXiv 2310.05130) normalises the log-likelihood: at
each position, ``n_samples`` tokens are drawn from the reference model's conditional distribution given
the *original* prefix (one forward pass, no regeneration), their log-probabilities under the scoring
model form ``n_samples`` alternative TPSs, and ``Lastde++ = (Lastde(x) - mean_j Lastde(x~_j)) /
std_j Lastde(x~_j)``.

Fidelity to the official implementation (TrustMedia-zju/Lastde_Detector, ``fastMDE.py`` and
``lastde_doubleplus.py``), whose numbers the unit tests reproduce: float32 throughout; the cosine
similarity of two orbits uses a norm floor of 1e-8, so two all-zero orbits have cosine 0; the histogram
follows ``torch.histc`` (bin ``floor((c + 1) * eps / 2)``, a value of exactly 1 goes in the last bin);
``eps = int(eps_mult * n)`` with ``n`` the length of the TPS. One deliberate difference: cosines are
clamped to ``[-1, 1]`` before binning, where ``torch.histc`` would silently drop a rounding overshoot such
as ``1.0000001`` (the cosine of two parallel orbits) from the histogram.

Shapes: every statistic accepts one sequence ``(L,)`` or a batch of sequences as columns ``(L, S)`` and
returns ``()`` or ``(S,)``. The column layout lets Lastde++ score all its samples with one histogram per
scale (a scatter-add over ``(S, eps)`` bins) instead of one per sample.

Importing this module loads torch only; the model helpers at the end take an already-built model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

COSINE_EPS = 1e-8
"""Norm floor of the orbit cosine similarity (the official code's ``cosine_similarity`` default)."""

LASTDE_DEFAULTS = {"s": 3, "eps_mult": 10.0, "tau_max": 5}
"""``get_lastde`` in the official code's white-box setting (arXiv 2410.06072, Sec. 4 / shell scripts)."""
LASTDE_PP_DEFAULTS = {"s": 4, "eps_mult": 8.0, "tau_max": 15, "n_samples": 100}
"""``lastde_doubleplus.py`` argparse defaults, also used by both of its shell scripts."""


# ----------------------------------------------------------------------------- diversity entropy and MDE


def _columns(u: torch.Tensor | Sequence[float]) -> tuple[torch.Tensor, bool]:
    """``u`` as a float32 ``(L, S)`` matrix, and whether it was one sequence ``(L,)``."""
    u = torch.as_tensor(u)
    if u.ndim == 1:
        return u.to(torch.float32).unsqueeze(1), True
    if u.ndim == 2:
        return u.to(torch.float32), False
    raise ValueError(f"expected a sequence (L,) or sequences as columns (L, S), got shape {tuple(u.shape)}")


def _check_eps(eps: int) -> None:
    if not isinstance(eps, int) or isinstance(eps, bool) or eps < 2:
        raise ValueError(f"eps (number of histogram bins) must be an int >= 2, got {eps!r}")


def orbit_cosines(u: torch.Tensor, s: int) -> torch.Tensor:
    """Cosine similarity of consecutive orbits (length-``s`` sliding windows) of each column.

    Args:
        u: ``(L, S)`` sequences as columns.
        s: embedding (orbit) size, ``1 <= s < L``.

    Returns:
        ``(L - s, S)`` cosines in ``[-1, 1]``. Two orbits of which one is all zeros give 0 (norm floor).
    """
    if s < 1:
        raise ValueError(f"embedding size s must be >= 1, got {s}")
    if u.shape[0] < s + 1:
        raise ValueError(f"a sequence of length {u.shape[0]} has no pair of orbits of size {s} "
                         f"(needs length >= {s + 1})")
    orbits = u.unfold(0, s, 1)  # (L - s + 1, S, s)
    cosines = F.cosine_similarity(orbits[:-1], orbits[1:], dim=-1, eps=COSINE_EPS)  # (L - s, S)
    return cosines.clamp(-1.0, 1.0)  # a rounding overshoot stays in the last bin (module docstring)


def bin_counts(values: torch.Tensor, eps: int) -> torch.Tensor:
    """Histogram of each column of ``values`` over ``[-1, 1]`` in ``eps`` equal-width bins.

    The bin of ``v`` is ``int((v + 1) * eps / 2)`` computed in float32, as ``torch.histc`` computes it
    (``(v - min) * bins / (max - min)``, truncated), and ``v == 1`` goes in the last bin. Values outside
    ``[-1, 1]`` are not counted (``orbit_cosines`` never produces any).

    Args:
        values: ``(m, S)`` float32.
        eps: number of bins.

    Returns:
        ``(S, eps)`` float32 counts; ``bin_counts(v, eps)[j]`` equals ``torch.histc(v[:, j], eps, -1, 1)``.
    """
    _check_eps(eps)
    values = values.to(torch.float32)
    inside = (values >= -1.0) & (values <= 1.0)
    index = ((values - (-1.0)) * eps / 2.0).to(torch.int64).clamp(0, eps - 1)  # (m, S)
    counts = torch.zeros(values.shape[1], eps, dtype=torch.float32, device=values.device)  # (S, eps)
    counts.scatter_add_(1, index.T, inside.T.to(torch.float32))
    return counts


def _entropy_from_counts(counts: torch.Tensor, eps: int) -> torch.Tensor:
    """``-(1 / ln eps) sum_b q_b ln q_b`` per row of ``(S, eps)`` counts; 0 for a row without any count
    (the official code's ``nansum`` of ``0/0``)."""
    q = counts / counts.sum(dim=1, keepdim=True)  # (S, eps); NaN rows where nothing was counted
    plogq = torch.where(counts > 0, q * torch.log(q), torch.zeros_like(q))
    log_eps = torch.log(torch.tensor(float(eps), dtype=torch.float32, device=counts.device))
    return (-1.0 / log_eps) * plogq.sum(dim=1)  # (S,)


def diversity_entropy(u: torch.Tensor | Sequence[float], s: int, eps: int) -> torch.Tensor:
    """Diversity entropy DE of a sequence (arXiv 2410.06072, Sec. 3; module docstring steps 1-4).

    Args:
        u: ``(L,)`` one sequence or ``(L, S)`` sequences as columns; ``L >= s + 1``.
        s: orbit size.
        eps: histogram bins over ``[-1, 1]`` (an int >= 2).

    Returns:
        ``()`` or ``(S,)`` float32 values in ``[0, 1]``.
    """
    _check_eps(eps)
    columns, single = _columns(u)
    de = _entropy_from_counts(bin_counts(orbit_cosines(columns, s), eps), eps)  # (S,)
    return de[0] if single else de


def moving_average(u: torch.Tensor, tau: int) -> torch.Tensor:
    """Overlapping moving average with window ``tau`` of each column: ``(L, S) -> (L - tau + 1, S)``.

    This is the official code's "tau-scale" sequence (``unfold(tau, 1).mean``), not the non-overlapping
    coarse-graining of classical multiscale entropy.
    """
    if not 1 <= tau <= u.shape[0]:
        raise ValueError(f"moving-average window tau must be in [1, {u.shape[0]}], got {tau}")
    return u.unfold(0, tau, 1).mean(dim=-1)  # (L - tau + 1, S, tau) -> (L - tau + 1, S)


def min_tokens(s: int, tau_max: int) -> int:
    """Shortest TPS that MDE accepts: at the coarsest scale (length ``n - tau_max + 1``) there must be at
    least one pair of orbits of size ``s``, i.e. ``n >= tau_max + s``."""
    return tau_max + s


def mde(u: torch.Tensor | Sequence[float], s: int, eps: int, tau_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiscale diversity entropy (arXiv 2410.06072, Sec. 3.2; "Agg-MDE" with the std aggregator).

    Args:
        u: ``(L,)`` one sequence or ``(L, S)`` sequences as columns, ``L >= tau_max + s``.
        s: orbit size.
        eps: histogram bins (an int >= 2; callers scoring a TPS use ``int(eps_mult * L)``).
        tau_max: coarsest moving-average window (``tau = 1..tau_max``), at least 2 so the std is defined.

    Returns:
        ``(std, de)``: ``std`` of shape ``()`` or ``(S,)`` is the sample standard deviation (ddof 1) over
        scales; ``de`` of shape ``(tau_max,)`` or ``(tau_max, S)`` holds ``DE(u^(tau))`` per scale.
    """
    _check_eps(eps)
    if tau_max < 2:
        raise ValueError(f"tau_max must be >= 2 (the std over scales needs two scales), got {tau_max}")
    columns, single = _columns(u)
    if columns.shape[0] < min_tokens(s, tau_max):
        raise ValueError(f"a sequence of length {columns.shape[0]} is too short for s={s}, tau_max={tau_max} "
                         f"(needs length >= tau_max + s = {min_tokens(s, tau_max)})")
    per_scale = []
    for tau in range(1, tau_max + 1):
        cosines = orbit_cosines(moving_average(columns, tau), s)  # (L - tau + 1 - s, S)
        per_scale.append(_entropy_from_counts(bin_counts(cosines, eps), eps))  # (S,)
    de = torch.stack(per_scale, dim=0)  # (tau_max, S)
    std = de.std(dim=0)  # (S,), unbiased as torch.std in the official code
    return (std[0], de[:, 0]) if single else (std, de)


# ----------------------------------------------------------------------------- scores


def lastde(logp: torch.Tensor | Sequence[float], s: int = 3, eps_mult: float = 10.0, tau_max: int = 5) -> torch.Tensor:
    """Lastde score ``mean(logp) / MDE(logp)`` (arXiv 2410.06072, Eq. for the final score; ``get_lastde``).

    Args:
        logp: ``(n,)`` token log-probabilities of one text, or ``(n, S)`` of S texts of equal length.
        s: orbit size. eps_mult: bins per token, ``eps = int(eps_mult * n)``. tau_max: coarsest scale.
        Defaults: the official white-box setting (s=3, eps=10n, tau'=5).

    Returns:
        ``()`` or ``(S,)`` float32; higher means more machine-like. When MDE is 0 (the same DE at every
        scale) the division gives ``-inf`` (``+inf`` for a positive mean, NaN for a zero one); callers
        count such scores as undefined.

    Raises:
        ValueError: ``n < tau_max + s`` or an ``eps`` below 2.
    """
    columns, single = _columns(logp)
    n = columns.shape[0]
    eps = int(eps_mult * n)
    if eps < 2:
        raise ValueError(f"eps = int(eps_mult * n) = int({eps_mult} * {n}) = {eps}; need at least 2 bins")
    std, _ = mde(columns, s, eps, tau_max)  # (S,)
    score = columns.mean(dim=0) / std  # (S,)
    return score[0] if single else score


def gather_logprobs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)`` read at ``token_ids``: ``(n, V), (n,) -> (n,)`` or ``(n, V), (n, S) -> (n, S)``.

    The log-softmax is taken in float32 over the full vocabulary.
    """
    logprobs = torch.log_softmax(logits.to(torch.float32), dim=-1)  # (n, V)
    if token_ids.ndim == 1:
        return logprobs.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)  # (n,)
    return logprobs.gather(-1, token_ids)  # (n, S)


def sample_tokens(ref_logits: torch.Tensor, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n_samples`` tokens independently at every position from ``softmax(ref_logits)``.

    The Fast-DetectGPT sampling (arXiv 2310.05130, Sec. 3) that Lastde++ reuses: position ``t`` is
    sampled given the *original* prefix, so one forward pass gives all samples.

    Args:
        ref_logits: ``(n, V)`` reference-model logits. n_samples: draws per position.
        generator: a ``torch.Generator`` on ``ref_logits``' device, for reproducible draws.

    Returns:
        ``(n, n_samples)`` int64 token ids.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    probs = torch.softmax(ref_logits.to(torch.float32), dim=-1)  # (n, V)
    return torch.multinomial(probs, n_samples, replacement=True, generator=generator)  # (n, n_samples)


def lastde_pp_from_logprobs(
    logp: torch.Tensor,
    sample_logp: torch.Tensor,
    *,
    s: int = 4,
    eps_mult: float = 8.0,
    tau_max: int = 15,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Lastde++ from an observed TPS and its sampled alternatives (arXiv 2410.06072, Sec. 3.3).

    Args:
        logp: ``(n,)`` scoring-model log-probabilities of the observed tokens.
        sample_logp: ``(n, S)`` scoring-model log-probabilities of S sampled tokens per position, ``S >= 2``.
        s, eps_mult, tau_max: as :func:`lastde`, with ``eps = int(eps_mult * n)`` shared by all sequences.

    Returns:
        ``(score, metrics)``: the z-score ``(Lastde(x) - mean) / std`` over the samples (unbiased std),
        and detached ``lastde_pp/observed``, ``lastde_pp/sample_mean``, ``lastde_pp/sample_std`` and
        ``lastde_pp/nonfinite_samples``.

    A sample whose own Lastde is undefined (MDE = 0: a sampled TPS so flat that every orbit cosine falls
    in one bin at every scale, which happens with near-uniform models) is left out of the mean and std
    and counted in ``lastde_pp/nonfinite_samples``; the official code would return NaN for the whole
    text. With fewer than two finite samples the score is NaN.
    """
    if sample_logp.ndim != 2 or sample_logp.shape[0] != logp.shape[0] or sample_logp.shape[1] < 2:
        raise ValueError(f"sample_logp must be (n, S) with n = {logp.shape[0]} and S >= 2, "
                         f"got {tuple(sample_logp.shape)}")
    observed = lastde(logp, s=s, eps_mult=eps_mult, tau_max=tau_max)  # ()
    sampled = lastde(sample_logp, s=s, eps_mult=eps_mult, tau_max=tau_max)  # (S,)
    finite = sampled[torch.isfinite(sampled)]  # (S',)
    mean, std = finite.mean(), finite.std()  # NaN when S' < 2
    score = (observed - mean) / std
    return score, {"lastde_pp/observed": observed.detach(), "lastde_pp/sample_mean": mean.detach(),
                   "lastde_pp/sample_std": std.detach(),
                   "lastde_pp/nonfinite_samples": torch.tensor(sampled.numel() - finite.numel())}


def lastde_pp(
    ref_logits: torch.Tensor,
    score_logits: torch.Tensor,
    labels: torch.Tensor,
    n_samples: int = 100,
    s: int = 4,
    eps_mult: float = 8.0,
    tau_max: int = 15,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Lastde++ of one text (``get_sampling_discrepancy`` of the official ``lastde_doubleplus.py``).

    Args:
        ref_logits: ``(n, V)`` reference-model logits; position ``t`` predicts ``labels[t]``. Pass the
            scoring model's own logits for the white-box ("same proxy") setting.
        score_logits: ``(n, V')`` scoring-model logits; a vocabulary-size mismatch keeps the first
            ``min(V, V')`` entries of both, as the official code does.
        labels: ``(n,)`` observed token ids.
        n_samples: sampled alternatives per position (at least 2).
        s, eps_mult, tau_max: Lastde settings; defaults are the official Lastde++ ones (4, 8n, 15).
        generator: makes the sampling reproducible.

    Returns:
        ``()`` float32 z-score; higher means more machine-like.
    """
    if ref_logits.ndim != 2 or score_logits.ndim != 2 or labels.ndim != 1:
        raise ValueError("expected ref_logits (n, V), score_logits (n, V') and labels (n,), got shapes "
                         f"{tuple(ref_logits.shape)}, {tuple(score_logits.shape)}, {tuple(labels.shape)}")
    if not ref_logits.shape[0] == score_logits.shape[0] == labels.shape[0]:
        raise ValueError(f"position counts differ: {ref_logits.shape[0]}, {score_logits.shape[0]}, {labels.shape[0]}")
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 (the z-score needs a std), got {n_samples}")
    vocab = min(ref_logits.shape[-1], score_logits.shape[-1])
    ref_logits, score_logits = ref_logits[:, :vocab], score_logits[:, :vocab]
    samples = sample_tokens(ref_logits, n_samples, generator)  # (n, S)
    logp = gather_logprobs(score_logits, labels)  # (n,)
    sample_logp = gather_logprobs(score_logits, samples)  # (n, S)
    score, _ = lastde_pp_from_logprobs(logp, sample_logp, s=s, eps_mult=eps_mult, tau_max=tau_max)
    return score


def token_ranks(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rank of each observed token in its next-token distribution, 1 = most likely: ``(n, V), (n,) -> (n,)``.

    ``1 + #{v : logit_v > logit_label}``: a token tied with others gets the best rank of the tie.
    """
    observed = logits.gather(-1, labels.unsqueeze(-1))  # (n, 1)
    return (logits > observed).sum(dim=-1) + 1  # (n,)


def log_likelihood(logp: torch.Tensor) -> torch.Tensor:
    """Mean token log-likelihood ``mean_t l_t`` (the "Likelihood" baseline; higher = more machine-like)."""
    return logp.to(torch.float32).mean(dim=0)


def log_rank(ranks: torch.Tensor) -> torch.Tensor:
    """Log-rank score ``-mean_t log rank_t`` (Mitchell et al., arXiv 2301.11305, "LogRank"), negated so
    that, like every score here, higher means more machine-like."""
    return -torch.log(ranks.to(torch.float32)).mean(dim=0)


# ----------------------------------------------------------------------------- reading a text with a model


def score_windows(n_ids: int, max_context: int, carry: int) -> list[tuple[int, int, int]]:
    """How a sequence of ``n_ids`` tokens is read by a model that sees at most ``max_context`` at a time.

    Targets ``1..n_ids-1`` (token ``t`` predicted from tokens ``< t``; token 0 is context only) are cut
    into non-overlapping blocks. The first window is ``ids[0:max_context]``; every later one starts
    ``carry`` tokens before its first target, so each scored token after the first window has at least
    ``carry`` tokens of context carried over from the previous window, and no token is scored twice.

    Returns:
        ``(context_start, first_target, end)`` per window: the model reads ``ids[context_start:end]`` and
        the targets ``first_target..end-1`` are scored. Empty when ``n_ids < 2``.
    """
    if max_context < 2:
        raise ValueError(f"max_context must be >= 2, got {max_context}")
    if not 1 <= carry < max_context:
        raise ValueError(f"carry must be in [1, max_context - 1] = [1, {max_context - 1}], got {carry}")
    windows = []
    first_target, context_start = 1, 0
    while first_target < n_ids:
        end = min(context_start + max_context, n_ids)
        windows.append((context_start, first_target, end))
        first_target, context_start = end, end - carry
    return windows


@dataclass
class TokenStats:
    """What one forward reading of a text gives, per scored position (targets ``1..N-1`` of its ids)."""

    logp: torch.Tensor
    """``(n,)`` float32 ``log p(x_t | x_<t)`` of the observed tokens (the TPS)."""
    rank: torch.Tensor
    """``(n,)`` int64 rank of the observed token, 1 = most likely (:func:`token_ranks`)."""
    sample_logp: torch.Tensor | None
    """``(n, S)`` float32 log-probabilities of S tokens sampled at each position from the same model, or
    None when no samples were asked for (the white-box Lastde++ reference = scoring model)."""
    windows: int
    """Number of model windows the text needed (1 when it fits the context)."""


def token_statistics(
    model: Any,
    sequences: Sequence[Sequence[int]],
    *,
    n_samples: int = 0,
    generators: Sequence[Sequence[torch.Generator]] | None = None,
    max_context: int | None = None,
    carry: int | None = None,
    pad_id: int = 0,
    batch_size: int = 8,
) -> list[TokenStats]:
    """Read token-id sequences with a causal LM and return each one's :class:`TokenStats`.

    Args:
        model: a causal LM called as ``model(input_ids=, attention_mask=).logits`` (``(B, T, V)``).
        sequences: token ids per text (with whatever special tokens the tokenizer adds).
        n_samples: tokens sampled per position for Lastde++ (0: none).
        generators: per sequence, one ``torch.Generator`` per window (:func:`score_windows`), so the draws
            do not depend on how texts are batched. Required when ``n_samples > 0``.
        max_context: longest window; default ``model.config.max_position_embeddings``.
        carry: prefix carried into each later window; default ``max_context // 2``.
        pad_id: id used to right-pad a batch (masked out, never read).
        batch_size: windows per forward pass.

    Returns:
        One :class:`TokenStats` per sequence, ``n = len(ids) - 1`` positions each (0 when ``len(ids) < 2``).
    """
    if max_context is None:
        max_context = int(getattr(model.config, "max_position_embeddings", 2048))
    carry = max_context // 2 if carry is None else carry
    plans = [score_windows(len(ids), max_context, carry) for ids in sequences]
    if n_samples > 0:
        if generators is None or any(len(g) < len(p) for g, p in zip(generators, plans)):
            raise ValueError("n_samples > 0 needs one generator per window of every sequence")
    rows = [(i, w) for i, plan in enumerate(plans) for w in range(len(plan))]
    rows.sort(key=lambda row: -(plans[row[0]][row[1]][2] - plans[row[0]][row[1]][0]))  # long rows together
    parts: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
    device = next(model.parameters()).device
    for begin in range(0, len(rows), batch_size):
        batch = rows[begin:begin + batch_size]
        spans = [plans[i][w] for i, w in batch]
        width = max(end - start for start, _, end in spans)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T), right-padded
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
        for row, ((i, _), (start, _, end)) in enumerate(zip(batch, spans)):
            input_ids[row, :end - start] = torch.as_tensor(list(sequences[i][start:end]), dtype=torch.long)
            attention_mask[row, :end - start] = 1
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits  # (B, T, V)
        for row, ((i, w), (start, first, end)) in enumerate(zip(batch, spans)):
            # position j of the window predicts ids[start + j + 1]: targets first..end-1 sit at j = t - start - 1
            row_logits = logits[row, first - start - 1:end - start - 1].to(torch.float32)  # (m, V)
            targets = input_ids[row, first - start:end - start].to(device)  # (m,)
            logprobs = torch.log_softmax(row_logits, dim=-1)  # (m, V)
            logp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (m,)
            rank = token_ranks(logprobs, targets)  # (m,)
            sample_logp = None
            if n_samples > 0:
                assert generators is not None
                drawn = torch.multinomial(logprobs.exp(), n_samples, replacement=True,
                                          generator=generators[i][w])  # (m, S)
                sample_logp = logprobs.gather(-1, drawn).cpu()  # (m, S)
            parts[(i, w)] = (logp.cpu(), rank.cpu(), sample_logp)
    stats = []
    for i, plan in enumerate(plans):
        pieces = [parts[(i, w)] for w in range(len(plan))]
        if not pieces:
            empty = torch.zeros(0)
            stats.append(TokenStats(empty, empty.long(), torch.zeros(0, n_samples) if n_samples else None, 0))
            continue
        stats.append(TokenStats(
            logp=torch.cat([p[0] for p in pieces]),
            rank=torch.cat([p[1] for p in pieces]),
            sample_logp=torch.cat([p[2] for p in pieces]) if n_samples > 0 else None,  # type: ignore[misc]
            windows=len(plan),
        ))
    return stats


def token_logprobs(model: Any, input_ids: Sequence[int] | torch.Tensor, *, max_context: int | None = None,
                   carry: int | None = None) -> torch.Tensor:
    """``(n,)`` TPS ``log p(x_{t+1} | x_{<=t})`` of one token sequence (labels ``ids[1:]``, logits ``[:-1]``,
    as arXiv 2410.06072's code reads a text); one forward pass when the text fits the model's context,
    otherwise the windows of :func:`score_windows`."""
    ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
    return token_statistics(model, [ids], max_context=max_context, carry=carry)[0].logp


def seeded_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded from ``(seed, *keys)``: independent streams per text and window that
    do not depend on batching or on which other texts are scored."""
    mixed = seed & 0xFFFFFFFF
    for key in keys:  # splitmix-style mixing keeps nearby keys far apart
        mixed = (mixed * 0x9E3779B97F4A7C15 + key + 1) % (1 << 63)
        mixed ^= mixed >> 31
    generator = torch.Generator(device=device)
    generator.manual_seed(mixed)
    return generator


__all__ = [
    "COSINE_EPS",
    "LASTDE_DEFAULTS",
    "LASTDE_PP_DEFAULTS",
    "TokenStats",
    "bin_counts",
    "diversity_entropy",
    "gather_logprobs",
    "lastde",
    "lastde_pp",
    "lastde_pp_from_logprobs",
    "log_likelihood",
    "log_rank",
    "mde",
    "min_tokens",
    "moving_average",
    "orbit_cosines",
    "sample_tokens",
    "score_windows",
    "seeded_generator",
    "token_logprobs",
    "token_ranks",
    "token_statistics",
]
