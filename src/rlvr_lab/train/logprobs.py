"""Per-token log-probabilities (and entropy) of given tokens under a causal LM.

The vocabulary projection is done a chunk of positions at a time, and under autograd each chunk
is checkpointed: only the final hidden states are kept for backward, so no ``(B, T, V)``
log-softmax copy is ever held (the logits of one chunk live only while that chunk is processed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_TOKENS = 1024


@dataclass
class TokenStats:
    logprobs: torch.Tensor  # (B, T) float32, log π(y_t | prefix); carries grad when requested
    entropy: torch.Tensor | None  # (B, T) float32, entropy of π(· | prefix); None if not requested


def _chunk_stats(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
    temperature: float, with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.nn.functional.linear(hidden, weight, bias).float()  # (N, V)
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    if with_entropy:
        probs = torch.softmax(logits, dim=-1)
        ent = lse - (probs * logits).sum(-1)
    else:
        ent = torch.zeros_like(lse)
    return logp, ent


def token_stats_from_hidden(
    hidden: torch.Tensor,
    lm_head: torch.nn.Linear,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> TokenStats:
    """Log-probs of ``targets`` (B, T) from final hidden states ``hidden`` (B, T, d).

    ``temperature`` divides the logits, matching a sampler that used that temperature.
    """
    B, T, d = hidden.shape
    flat_h = hidden.reshape(B * T, d)
    flat_y = targets.reshape(B * T)
    use_ckpt = torch.is_grad_enabled() and hidden.requires_grad
    logps, ents = [], []
    for lo in range(0, B * T, chunk_tokens):
        args = (flat_h[lo : lo + chunk_tokens], lm_head.weight, lm_head.bias, flat_y[lo : lo + chunk_tokens],
                temperature, with_entropy)
        if use_ckpt:
            lp, en = checkpoint(_chunk_stats, *args, use_reentrant=False)
        else:
            lp, en = _chunk_stats(*args)
        logps.append(lp)
        ents.append(en)
    logp = torch.cat(logps).view(B, T)
    ent = torch.cat(ents).view(B, T) if with_entropy else None
    return TokenStats(logprobs=logp, entropy=ent)


def sequence_token_stats(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> TokenStats:
    """Stats of the response tokens ``input_ids[:, response_start:]`` given everything before them.

    Args:
        input_ids: (B, Lp + T) left-padded prompt then right-padded response.
        attention_mask: (B, Lp + T) bool.
    Returns:
        :class:`TokenStats` with (B, T) tensors aligned with the response tokens.
    """
    positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    out = body(input_ids=input_ids, attention_mask=attention_mask.long(), position_ids=positions, use_cache=False)
    hidden = out.last_hidden_state[:, response_start - 1 : -1]  # (B, T, d): state before each response token
    targets = input_ids[:, response_start:]
    return token_stats_from_hidden(
        hidden, model.get_output_embeddings(), targets,
        temperature=temperature, with_entropy=with_entropy, chunk_tokens=chunk_tokens,
    )
