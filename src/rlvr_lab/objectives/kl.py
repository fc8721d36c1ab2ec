"""KL estimators between the policy and a reference, per token (spec section 1.2).

With ``log r = ref_logprobs - policy_logprobs`` on tokens sampled from the policy
(J. Schulman, "Approximating KL divergence", 2020):

* ``k1 = -log r``           unbiased, high variance, can be negative (verl "kl")
* ``k2 = 0.5 (log r)^2``    biased, low variance (verl "mse")
* ``k3 = r - log r - 1``    unbiased and non-negative (verl "low_var_kl"), clamped to [-10, 10]
* ``abs = |log r|``
"""

from __future__ import annotations

import torch

KL_KINDS = ("k1", "k2", "k3", "abs")
LOG_RATIO_CLAMP = 20.0


def kl_estimate(
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    *,
    kind: str = "k3",
    clamp: float | None = 10.0,
) -> torch.Tensor:
    """Per-token KL(π_θ‖π_ref) estimate, (B, T) -> (B, T); gradient flows through ``policy_logprobs``.

    ``clamp`` bounds the result to [-clamp, clamp] (verl clamps k3 to [-10, 10]); ``None`` disables it.
    The log-ratio itself is clamped to ±20 before exponentiation for numerical safety.
    """
    log_r = (ref_logprobs - policy_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, T)
    if kind == "k1":
        kl = -log_r
    elif kind == "k2":
        kl = 0.5 * log_r.square()
    elif kind == "k3":
        kl = torch.exp(log_r) - log_r - 1.0
    elif kind == "abs":
        kl = log_r.abs()
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; valid: {', '.join(KL_KINDS)}")
    if clamp is not None:
        kl = kl.clamp(-clamp, clamp)
    return kl
