"""Per-step training signals: likelihood displacement, entropy, low-probability tokens.

Pure functions of detached tensors that the trainer calls once per optimiser step. Each returns a
``dict[str, float]`` under namespaced keys (spec section 0.7), ready for a metric sink. They call
``.item()`` (one host sync per key) because their output goes straight to logging, not into a loss;
objectives keep returning tensors.

A statistic that is undefined on a batch (no correct response, no token with negative advantage, an
all-padding batch) is left out of the dict rather than filled with a placeholder, so a plot shows a
gap, never a fake 0. Counts (``lld/num_correct``, ...) are always present.

Sign convention (spec section 2.3, paper Def. 4.1): every ``*_delta`` here is ``after − before``,
i.e. ``log π_new − log π_old``. **Negative means the likelihood fell** (displacement). This is the
opposite sign of the LLDS loss's per-token ``Δ = old − new`` (spec 2.1, ``objectives/llds.py``).
"""

from __future__ import annotations

import torch

Metrics = dict[str, float]

# Lp-Reg's fixed proxy threshold τ = 0.02 (spec 5.1): below it a sampled token is a "spark" that
# entropy-collapsed policies stop producing and that negative gradients push down first.
DEFAULT_LOW_PROB_THRESHOLD = 0.02


def _check_bt(name: str, x: torch.Tensor, shape: torch.Size) -> None:
    if x.shape != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)} (B, T) like loss_mask")


def likelihood_displacement(
    old_logprobs: torch.Tensor,
    new_logprobs: torch.Tensor,
    loss_mask: torch.Tensor,
    correct: torch.Tensor,
    advantages: torch.Tensor,
) -> Metrics:
    """Likelihood of correct/incorrect responses and of positive/negative-advantage tokens, before and after an update.

    Args:
        old_logprobs: (B, T) log-probs of the sampled tokens under the policy *before* the update
            (``π_old``, the rollout policy).
        new_logprobs: (B, T) log-probs of the same tokens *after* the update (``π_new``, re-scored).
        loss_mask: (B, T) bool or {0,1}; True where the token is a trained (sampled) token.
        correct: (B,) bool; True when the verifier accepted the response.
        advantages: (B, T) token advantages used by the update.

    Sequence log-likelihood is the masked *sum* over tokens (spec 2.3: "for a whole response it is the
    sum over actions"); a response with no trained token is left out of the sequence statistics.
    Token statistics are masked per-token means over tokens with ``A > 0`` (``pos``) or ``A < 0``
    (``neg``); ``A == 0`` tokens are in neither.

    Returns (all floats; ``delta = after − before``, negative = likelihood fell):
        ``lld/correct_logp_{before,after,delta}``, ``lld/incorrect_logp_{before,after,delta}``:
            mean sequence log-likelihood of correct / incorrect responses.
        ``lld/correct_logp_per_token``, ``lld/incorrect_logp_per_token``: mean token log-prob over the
            trained tokens of correct / incorrect responses before the update (see :func:`response_likelihood`).
        ``logp/pos_mean``, ``logp/neg_mean``: old-policy per-token log-prob means on A>0 / A<0 tokens
            (the always-logged names of spec 0.7).
        ``lld/pos_token_logp_{after,delta}``, ``lld/neg_token_logp_{after,delta}``: the same tokens after the update.
        ``lld/frac_correct_fell``: share of correct responses with ``delta < 0`` (paper §5.3 reports the
            share with Δ < 0; strict, so an update that did not move the policy reports 0, not 1).
        ``lld/num_correct``, ``lld/num_incorrect``: non-empty responses in each set (counts).
    """
    shape = loss_mask.shape
    if loss_mask.dim() != 2:
        raise ValueError(f"loss_mask must be (B, T), got shape {tuple(shape)}")
    _check_bt("old_logprobs", old_logprobs, shape)
    _check_bt("new_logprobs", new_logprobs, shape)
    _check_bt("advantages", advantages, shape)
    if correct.shape != shape[:1]:
        raise ValueError(f"correct has shape {tuple(correct.shape)}, expected ({shape[0]},)")

    with torch.no_grad():
        mask = loss_mask.to(old_logprobs.dtype)  # (B,T)
        old = old_logprobs.detach().to(mask.dtype) * mask  # (B,T), 0 off the mask
        new = new_logprobs.detach().to(mask.dtype) * mask  # (B,T)
        seq_old = old.sum(-1)  # (B,)
        seq_new = new.sum(-1)  # (B,)
        n_tokens = mask.sum(-1)  # (B,)
        nonempty = n_tokens > 0  # (B,)
        is_correct = correct.to(torch.bool) & nonempty  # (B,)
        is_incorrect = ~correct.to(torch.bool) & nonempty  # (B,)

        out: Metrics = {}
        for name, rows in (("correct", is_correct), ("incorrect", is_incorrect)):
            n = rows.sum()
            out[f"lld/num_{name}"] = float(n.item())
            if n.item() > 0:
                before = seq_old[rows].mean()
                after = seq_new[rows].mean()
                out[f"lld/{name}_logp_before"] = before.item()
                out[f"lld/{name}_logp_after"] = after.item()
                out[f"lld/{name}_logp_delta"] = (after - before).item()
                out[f"lld/{name}_logp_per_token"] = (seq_old[rows].sum() / n_tokens[rows].sum()).item()
        if is_correct.any():
            fell = (seq_new - seq_old)[is_correct] < 0  # (N+,)
            out["lld/frac_correct_fell"] = fell.float().mean().item()

        adv = advantages.detach()
        for name, sel in (("pos", adv > 0), ("neg", adv < 0)):
            m = mask * sel.to(mask.dtype)  # (B,T)
            n = m.sum()
            if n.item() > 0:
                before = (old * m).sum() / n
                after = (new * m).sum() / n
                out[f"logp/{name}_mean"] = before.item()
                out[f"lld/{name}_token_logp_after"] = after.item()
                out[f"lld/{name}_token_logp_delta"] = (after - before).item()
    return out


def response_likelihood(logprobs: torch.Tensor, loss_mask: torch.Tensor, correct: torch.Tensor) -> Metrics:
    """Mean log-likelihood of correct and of incorrect responses under one policy, per response and per token.

    Args:
        logprobs: (B, T) log-probs of the sampled tokens (the rollout policy's ``old_logprobs``).
        loss_mask: (B, T) bool or {0,1}; True on trained tokens.
        correct: (B,) bool.

    The "before" half of :func:`likelihood_displacement`, cheap enough for every step (no extra
    forward pass), so the phase detector sees the likelihood series at every step. Returns
    (absent when a set is empty, except the counts):
        ``lld/{correct,incorrect}_logp_before``: mean sequence log-likelihood (sum over the response's tokens).
        ``lld/{correct,incorrect}_logp_per_token``: mean token log-prob over all trained tokens of the set's
            responses (pooled: total log-likelihood / total tokens). Unlike the sequence sum it does not fall
            when responses get longer at unchanged per-token likelihood, so the phase detector reads this one.
        ``lld/num_{correct,incorrect}``: non-empty responses in each set (counts).
    """
    _check_bt("logprobs", logprobs, loss_mask.shape)
    if correct.shape != loss_mask.shape[:1]:
        raise ValueError(f"correct has shape {tuple(correct.shape)}, expected ({loss_mask.shape[0]},)")
    with torch.no_grad():
        mask = loss_mask.to(torch.float32)
        seq = (logprobs.detach().float() * mask).sum(-1)  # (B,)
        n_tokens = mask.sum(-1)  # (B,)
        nonempty = n_tokens > 0
        out: Metrics = {}
        for name, rows in (("correct", correct.bool() & nonempty), ("incorrect", ~correct.bool() & nonempty)):
            n = int(rows.sum().item())
            out[f"lld/num_{name}"] = float(n)
            if n:
                out[f"lld/{name}_logp_before"] = seq[rows].mean().item()
                out[f"lld/{name}_logp_per_token"] = (seq[rows].sum() / n_tokens[rows].sum()).item()
    return out


def kl_to_reference(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, loss_mask: torch.Tensor) -> Metrics:
    """Token-mean KL(π‖π_ref) of the policy that sampled the tokens to the frozen reference.

    Args:
        logprobs: (B, T) log-probs of the sampled tokens under the sampling policy π (``old_logprobs``).
        ref_logprobs: (B, T) log-probs of the same tokens under π_ref.
        loss_mask: (B, T) bool or {0,1}.

    Uses Schulman's unbiased, non-negative k3 estimator with samples from π:
    ``r − 1 − log r`` with ``r = π_ref/π`` (http://joschu.net/blog/kl-approx.html). Returns ``kl/ref``
    (absent when no token counts).
    """
    _check_bt("ref_logprobs", ref_logprobs, loss_mask.shape)
    return _k3_mean(logprobs, ref_logprobs, loss_mask, "kl/ref")


def _k3_mean(sample_logprobs: torch.Tensor, other_logprobs: torch.Tensor, loss_mask: torch.Tensor, key: str) -> Metrics:
    """Masked token mean of the k3 estimate of KL(sampler‖other), samples from the sampler."""
    _check_bt("logprobs", sample_logprobs, loss_mask.shape)
    with torch.no_grad():
        mask = loss_mask.to(torch.bool)
        if not mask.any():
            return {}
        log_r = (other_logprobs.detach().float() - sample_logprobs.detach().float()).clamp(-20.0, 20.0)[mask]
        return {key: (log_r.exp() - 1.0 - log_r).mean().item()}


def probe_drift(
    ref_logprobs: torch.Tensor, logprobs: torch.Tensor, loss_mask: torch.Tensor, correct: torch.Tensor
) -> Metrics:
    """Likelihood of a fixed probe set's stored responses now, against when the probes were made.

    Args:
        ref_logprobs: (B, T) log-probs of the stored response tokens under the policy that made the
            probe set (the reference: the policy at the start of RL).
        logprobs: (B, T) the same tokens under the current policy.
        loss_mask: (B, T) bool or {0,1}; True on the probe responses' sampled tokens.
        correct: (B,) bool, the verifier's verdict on each stored response.

    Because the responses never change, the series is comparable across steps and, with a shared probe
    file, across runs (spec 2.3's likelihood measurement on a fixed set). Returns (deltas are
    ``now − reference``, negative = the likelihood fell):
        ``probe/{correct,incorrect}_logp``: mean sequence log-likelihood of correct / incorrect responses;
        ``probe/{correct,incorrect}_logp_delta``; ``probe/frac_correct_fell`` (strictly fell);
        ``probe/{correct,incorrect}_logp_per_token``: pooled mean token log-prob of the set's responses now;
        ``probe/kl_ref``: token-mean k3 estimate of KL(π_ref‖π), unbiased when the probe responses were
            sampled from π_ref (probes made in this run), a likelihood-ratio drift measure otherwise.
    """
    shape = loss_mask.shape
    _check_bt("ref_logprobs", ref_logprobs, shape)
    _check_bt("logprobs", logprobs, shape)
    with torch.no_grad():
        mask = loss_mask.to(torch.float32)
        ref_seq = (ref_logprobs.detach().float() * mask).sum(-1)  # (B,)
        now_seq = (logprobs.detach().float() * mask).sum(-1)  # (B,)
        n_tokens = mask.sum(-1)  # (B,)
        nonempty = n_tokens > 0
        out: Metrics = {}
        for name, rows in (("correct", correct.bool() & nonempty), ("incorrect", ~correct.bool() & nonempty)):
            if rows.any():
                out[f"probe/{name}_logp"] = now_seq[rows].mean().item()
                out[f"probe/{name}_logp_delta"] = (now_seq[rows] - ref_seq[rows]).mean().item()
                out[f"probe/{name}_logp_per_token"] = (now_seq[rows].sum() / n_tokens[rows].sum()).item()
        rows = correct.bool() & nonempty
        if rows.any():
            out["probe/frac_correct_fell"] = (now_seq[rows] < ref_seq[rows]).float().mean().item()
        out.update(_k3_mean(ref_logprobs, logprobs, loss_mask, "probe/kl_ref"))
    return out


def entropy_summary(entropy: torch.Tensor, loss_mask: torch.Tensor) -> Metrics:
    """Mean and spread of the per-token policy entropy over trained tokens.

    Args:
        entropy: (B, T) entropy of the policy's next-token distribution at each position (nats).
        loss_mask: (B, T) bool or {0,1}; True where the token counts.

    Returns ``policy/entropy`` (token mean, the spec 0.7 name) and ``policy/entropy_p{10,50,90}``
    (linear-interpolation quantiles over the masked tokens). Empty dict when no token counts.
    """
    _check_bt("entropy", entropy, loss_mask.shape)
    with torch.no_grad():
        values = entropy.detach()[loss_mask.to(torch.bool)].float()  # (N,)
        if values.numel() == 0:
            return {}
        # torch.quantile refuses inputs above 2**24 elements; a sort is as cheap and has no limit.
        q = _quantiles(values, (0.1, 0.5, 0.9))
        return {
            "policy/entropy": values.mean().item(),
            "policy/entropy_p10": q[0],
            "policy/entropy_p50": q[1],
            "policy/entropy_p90": q[2],
        }


def _quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> list[float]:
    """Quantiles of a 1-D tensor with linear interpolation (numpy's default "linear" method)."""
    s, _ = torch.sort(values)
    n = s.numel()
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        out.append((s[lo] + (s[hi] - s[lo]) * frac).item())
    return out


def low_probability_tokens(
    logprobs: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    threshold: float = DEFAULT_LOW_PROB_THRESHOLD,
) -> Metrics:
    """Count and probability mass of sampled tokens whose probability is below ``threshold``.

    Args:
        logprobs: (B, T) log-probs of the sampled tokens (usually the rollout policy's, ``old_logprobs``).
        loss_mask: (B, T) bool or {0,1}; True where the token counts.
        threshold: probability cut-off in (0, 1]; default 0.02, Lp-Reg's fixed proxy threshold (spec 5.1).

    Returns:
        ``tokens/low_prob_count``: number of masked tokens with ``p < threshold`` (a count).
        ``tokens/low_prob_frac``: that count over the number of masked tokens (absent when there are none).
        ``tokens/low_prob_mass``: sum of ``p`` over those tokens (a sum, not a mean; divide by the count
            for the mean probability of a low-probability token).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    _check_bt("logprobs", logprobs, loss_mask.shape)
    with torch.no_grad():
        mask = loss_mask.to(torch.bool)
        probs = logprobs.detach().float().exp()  # (B,T)
        low = mask & (probs < threshold)  # (B,T)
        n_tokens = mask.sum()
        out: Metrics = {
            "tokens/low_prob_count": float(low.sum().item()),
            "tokens/low_prob_mass": (probs * low).sum().item(),
        }
        if n_tokens.item() > 0:
            out["tokens/low_prob_frac"] = (low.sum() / n_tokens).item()
    return out
