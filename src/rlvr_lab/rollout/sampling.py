"""Next-token sampling from a batch of logits: temperature, top-k, top-p, greedy.

The temperature is one number for the batch (``SamplingParams.temperature``) or, for an adaptive
sampler such as HAPO's (arXiv 2509.16591, section 8.5), one per row; either way the returned
log-probs are those of the distribution each token was actually drawn from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token.

    ``temperature == 0`` is greedy decoding. ``top_k == 0`` and ``top_p == 1`` disable those filters.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop_strings: tuple[str, ...] = ()
    # also report each sampled position's entropy of the tempered, unfiltered distribution (the
    # old-policy entropy when the trainer takes its old log-probs from the sampler)
    report_entropy: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop_strings, str) or any(not isinstance(x, str) or not x for x in self.stop_strings):
            raise ValueError(f"stop_strings must be a sequence of non-empty strings, got {self.stop_strings!r}")
        for name in ("top_k", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if not math.isfinite(self.temperature) or not math.isfinite(self.top_p):
            raise ValueError(f"temperature and top_p must be finite, got {self.temperature}, {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _scale(x: torch.Tensor, params: SamplingParams, temperature: torch.Tensor | None) -> torch.Tensor:
    """Logits divided by the per-row ``temperature`` (N,) when given, else by ``params.temperature``."""
    if temperature is not None:
        return x / temperature.to(x.device, torch.float32).unsqueeze(-1)  # (N, V)
    if params.temperature not in (0.0, 1.0):
        return x / params.temperature
    return x


def filtered_logprobs(
    logits: torch.Tensor, params: SamplingParams, temperature: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-probs of the distribution actually sampled from, (N, V) float32 -> (N, V) float32.

    Temperature scaling, then top-k, then top-p (nucleus) renormalisation; filtered tokens get -inf.
    ``temperature`` (N,) > 0, when given, replaces ``params.temperature`` row by row.
    """
    x = _scale(logits.float(), params, temperature)
    if params.top_k and params.top_k < x.shape[-1]:
        kth = torch.topk(x, params.top_k, dim=-1).values[..., -1:]  # (N, 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        # drop a token when the mass strictly before it already reaches top_p (the first token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return torch.log_softmax(x, dim=-1)


def tempered_entropy(
    logits: torch.Tensor, params: SamplingParams, temperature: torch.Tensor | None = None
) -> torch.Tensor:
    """(N,) entropy of softmax(logits / temperature) before top-k/top-p (unscaled for greedy decoding):
    what a recomputing old-policy pass at that temperature would give."""
    x = logits.float() if params.greedy else _scale(logits.float(), params, temperature)
    return torch.logsumexp(x, dim=-1) - (torch.softmax(x, dim=-1) * x).sum(-1)


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from (N, V) probabilities by inverting the CDF with one uniform per row.

    ``torch.multinomial`` spends one random number per vocabulary entry; this spends one per row
    (about 30x faster for a 49k vocabulary). The CDF is accumulated in float64; zero-probability
    entries are never drawn because the uniform lies in (0, total].
    """
    cdf = probs.double().cumsum(-1)  # (N, V)
    u = (1.0 - torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=torch.float64))
    return torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(-1).clamp_max(probs.shape[-1] - 1)


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    temperature: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row.

    Args:
        logits: (N, V) next-token logits.
        temperature: optional (N,) per-row temperature (> 0) replacing ``params.temperature``;
            ignored for greedy decoding.
    Returns:
        tokens (N,) long and their log-probs (N,) float32 under the sampling distribution (for
        greedy decoding: under the unscaled model distribution).
    """
    x = logits.float()
    if params.greedy:
        tokens = x.argmax(dim=-1)
        return tokens, x.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)
    if params.top_k == 0 and params.top_p >= 1.0:
        # plain temperature sampling: one softmax pass, no full log-softmax copy (the hot path)
        probs = torch.softmax(_scale(x, params, temperature), dim=-1)  # (N, V)
        tokens = sample_categorical(probs, generator)
        return tokens, probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).log()
    logp = filtered_logprobs(x, params, temperature)
    tokens = sample_categorical(logp.exp(), generator)
    return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
