"""Per-token log-probabilities (and entropy) of given tokens under a causal LM.

The vocabulary projection is done a chunk of positions at a time, and under autograd each chunk
is checkpointed: only the final hidden states are kept for backward, so no ``(B, T, V)``
log-softmax copy is ever held (the logits of one chunk live only while that chunk is processed).

Methods that need more than the sampled token's log-prob from the full distribution (Lp-Reg's
proxy log-prob) pass *chunk functions* ``fn(logits (N, V), targets (N,)) -> (N,)``: each sees one
chunk's raw logits and only its ``(N,)`` result is kept, so the result is ``(B, T)``, never
``(B, T, V)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch.utils.checkpoint import checkpoint

from rlvr_lab.rollout.engine import cache_kwarg, distinct_rows

DEFAULT_CHUNK_TOKENS = 1024

# fn(raw logits (N, V) of one chunk, not divided by the temperature, targets (N,) long) -> (N,)
ChunkFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TokenStats:
    logprobs: torch.Tensor  # (B, T) float32, log π(y_t | prefix); carries grad when requested
    entropy: torch.Tensor | None  # (B, T) float32, entropy of π(· | prefix); None if not requested
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, T) per chunk function, no grad
    hidden: torch.Tensor | None = None  # (B, T, d) detached final hidden states; None if not requested


def _chunk_stats(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
    temperature: float, with_entropy: bool, fns: tuple[ChunkFn, ...] = (),
) -> tuple[torch.Tensor, ...]:
    logits = torch.nn.functional.linear(hidden, weight, bias).float()  # (N, V)
    with torch.no_grad():
        extras = tuple(fn(logits.detach(), targets) for fn in fns)  # each (N,)
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    if with_entropy:
        probs = torch.softmax(logits, dim=-1)
        ent = lse - (probs * logits).sum(-1)
    else:
        ent = torch.zeros_like(lse)
    return (logp, ent, *extras)


def token_stats_from_hidden(
    hidden: torch.Tensor,
    lm_head: torch.nn.Linear,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    chunk_fns: Mapping[str, ChunkFn] | None = None,
    valid: torch.Tensor | None = None,
) -> TokenStats:
    """Log-probs of ``targets`` (B, T) from final hidden states ``hidden`` (B, T, d).

    ``valid`` (B, T) bool marks the positions to score (a batch's right padding is not): the output
    layer and its softmax run on those only, and every other position gets 0 in every returned tensor
    (when none is valid, all are scored). With a large vocabulary and responses of uneven length this
    skips much of the output layer's work.

    ``temperature`` divides the logits, matching a sampler that used that temperature.
    ``chunk_fns`` (name -> fn) are evaluated on each chunk's raw logits without gradient; their
    ``(N,)`` results are returned as ``(B, T)`` tensors in ``TokenStats.extras``. They are meant for
    the no-grad old-policy pass and are refused under autograd (a checkpointed chunk would run them
    twice).
    """
    B, T, d = hidden.shape
    flat_h = hidden.reshape(B * T, d)
    flat_y = targets.reshape(B * T)
    rows = None  # the scored positions of the flat (B * T) layout, when not all are
    # (none valid: all positions, so that a loss over nothing still has a graph to go back through)
    if valid is not None and bool(valid.any()) and not bool(valid.all()):
        rows = valid.reshape(B * T).nonzero().squeeze(1)
        flat_h, flat_y = flat_h.index_select(0, rows), flat_y.index_select(0, rows)
    n_scored = flat_h.shape[0]
    use_ckpt = torch.is_grad_enabled() and hidden.requires_grad
    names = tuple(chunk_fns or {})
    fns = tuple((chunk_fns or {})[n] for n in names)
    if use_ckpt and fns:
        raise ValueError(f"chunk functions {names} run only in a no-grad pass")
    parts: list[tuple[torch.Tensor, ...]] = []
    for lo in range(0, n_scored, chunk_tokens):
        args = (flat_h[lo : lo + chunk_tokens], lm_head.weight, lm_head.bias, flat_y[lo : lo + chunk_tokens],
                temperature, with_entropy, fns)
        parts.append(checkpoint(_chunk_stats, *args, use_reentrant=False) if use_ckpt else _chunk_stats(*args))
    columns = [torch.cat(col) for col in zip(*parts)] if parts else [hidden.new_zeros(n_scored)] * (2 + len(fns))
    if rows is not None:  # back to (B * T), 0 off the scored positions (differentiable in the scored ones)
        columns = [c.new_zeros(B * T).index_put((rows,), c) for c in columns]
    columns = [c.view(B, T) for c in columns]
    return TokenStats(
        logprobs=columns[0],
        entropy=columns[1] if with_entropy else None,
        extras=dict(zip(names, columns[2:])),
    )


def response_hidden(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int, *, share_prompts: bool = False,
) -> torch.Tensor:
    """Final hidden states that predict the response tokens ``input_ids[:, response_start:]``.

    With ``share_prompts`` each distinct prompt of the batch is run once: its keys and values are
    computed on the distinct prompts, gathered to every row that repeats it, and the responses are
    run on top of them. The result (and, under autograd, the gradient, which flows back through the
    gather into the shared prompt pass) equals the plain full-sequence pass up to float rounding, at a
    fraction of the cost when a group repeats one long prompt G times. Batches without repeated
    prompts take the plain pass.

    Args:
        input_ids: (B, Lp + T) left-padded prompt then right-padded response.
        attention_mask: (B, Lp + T) bool.
    Returns:
        (B, T, d): row ``t`` is the state before response token ``t`` (the LM head's input).
    """
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # (B, Lp + T)
    shared = distinct_rows(input_ids[:, :response_start]) if share_prompts and input_ids.shape[1] > response_start else None
    if shared is None:
        out = body(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False)
        return out.last_hidden_state[:, response_start - 1 : -1]
    first, inverse = shared
    name = cache_kwarg(body)
    prompt = body(input_ids=input_ids[first, :response_start], attention_mask=mask[first, :response_start],
                  position_ids=positions[first, :response_start], use_cache=True)  # U rows
    cache = getattr(prompt, "cache", None)
    if cache is None:
        cache = prompt.past_key_values
    cache.batch_select_indices(inverse)  # (U, ...) -> (B, ...) keys and values, differentiable gather
    out = body(input_ids=input_ids[:, response_start:], attention_mask=mask, position_ids=positions[:, response_start:],
               use_cache=True, **{name: cache})
    last_prompt = prompt.last_hidden_state[:, -1:].index_select(0, inverse)  # (B, 1, d) predicts token 0
    return torch.cat([last_prompt, out.last_hidden_state[:, :-1]], dim=1)


def sequence_token_stats(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    chunk_fns: Mapping[str, ChunkFn] | None = None,
    with_hidden: bool = False,
    share_prompts: bool = False,
) -> TokenStats:
    """Stats of the response tokens ``input_ids[:, response_start:]`` given everything before them.

    Args:
        input_ids: (B, Lp + T) left-padded prompt then right-padded response.
        attention_mask: (B, Lp + T) bool.
        chunk_fns: see :func:`token_stats_from_hidden` (no-grad passes only).
        with_hidden: also return the detached (B, T, d) final hidden states (THR/NTHR scores).
        share_prompts: run each distinct prompt once (see :func:`response_hidden`).
    Returns:
        :class:`TokenStats` with (B, T) tensors aligned with the response tokens, 0 at the responses'
        right padding (the output layer does not run there).
    """
    hidden = response_hidden(model, input_ids, attention_mask, response_start, share_prompts=share_prompts)  # (B, T, d)
    stats = token_stats_from_hidden(
        hidden, model.get_output_embeddings(), input_ids[:, response_start:],
        temperature=temperature, with_entropy=with_entropy, chunk_tokens=chunk_tokens, chunk_fns=chunk_fns,
        valid=attention_mask[:, response_start:].bool(),
    )
    if with_hidden:
        stats.hidden = hidden.detach()
    return stats
