"""Log-probability of answer strings as continuations of a prompt, under a Hugging Face causal LM.

``P(l | x) = prod_t p(l_t | x, l_<t)`` is the probability that the model continues prompt ``x`` with the
tokens of ``l`` (the "all tokens" sequence score of arXiv 2305.14596); the "first token" variant keeps
``p(l_1 | x)`` only. One forward pass over ``prompt + continuation`` gives every factor.

Tokenisation at the boundary. Tokenisers merge characters across the prompt/continuation boundary
differently from how they split each part alone, so the continuation's tokens are found as follows:

1. tokenise the prompt (with the tokenizer's default special tokens, e.g. a BOS) and ``prompt +
   continuation`` the same way;
2. if the prompt's tokens are a prefix of the full sequence's, the continuation is the rest of the full
   sequence: exactly what the model would read had the text been written in one piece (the usual case:
   our continuations start with a space, which BPE tokenisers keep at the start of a word);
3. otherwise (a merge across the boundary), the continuation is tokenised on its own, without special
   tokens, and appended to the prompt's tokens, so the prompt is always conditioned on as tokenised alone
   and the score is still a product over the continuation's tokens only.

Batching. The prompt is tokenised once per question and shared by its continuations; the sequences of a
batch are left-padded, with explicit position ids so that padding changes nothing, and only the trailing
positions that predict continuation tokens go through the log-softmax (in float32). When every
continuation of a question is a single token (the letters " A", " B", ... of the enumerated format under
a BPE tokenizer), one forward of the prompt reads all of them from the next-token distribution.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ContinuationScore:
    """How likely one continuation is after one prompt. Log-probabilities are natural logs, <= 0."""

    logprob: float
    """``sum_t log p(l_t | x, l_<t)`` over the continuation's tokens ("all tokens")."""
    first_logprob: float
    """``log p(l_1 | x)``, the first continuation token only ("first token")."""
    n_tokens: int
    """Number of continuation tokens."""
    prefix_split: bool
    """True when the tokens were read off ``tokenize(prompt + continuation)`` (step 2 of the module
    docstring), False when the continuation was tokenised on its own (step 3)."""


ScoreCache = dict[tuple[str, str], ContinuationScore]
"""Scores already computed, keyed by ``(prompt, continuation)``. Valid for one model and tokenizer only."""


def split_continuation(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    continuation: str,
    prompt_ids: Sequence[int] | None = None,
) -> tuple[list[int], list[int], bool]:
    """``(prompt_ids, continuation_ids, prefix_split)`` by the boundary rule of the module docstring.

    ``prompt_ids`` may be passed when already known (they must be ``tokenizer(prompt)``'s). Raises
    ValueError when the prompt or the continuation has no tokens.
    """
    if prompt_ids is None:
        prompt_ids = _encode(tokenizer, prompt, special=True)
    prompt_ids = list(prompt_ids)
    if not prompt_ids:
        raise ValueError(f"prompt {prompt!r} has no tokens; a continuation needs at least one token of context")
    full_ids = _encode(tokenizer, prompt + continuation, special=True)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        continuation_ids, prefix_split = full_ids[len(prompt_ids):], True
    else:
        continuation_ids, prefix_split = _encode(tokenizer, continuation, special=False), False
    if not continuation_ids:
        raise ValueError(f"continuation {continuation!r} has no tokens after prompt {prompt[-40:]!r}")
    return prompt_ids, continuation_ids, prefix_split


def score_continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[str]],
    *,
    batch_size: int = 8,
    cache: ScoreCache | None = None,
) -> list[list[ContinuationScore]]:
    """Score ``continuations[q][j]`` after ``prompts[q]`` for every question ``q``.

    Args:
        model: a causal LM (``logits`` of shape ``(B, T, V)``); evaluated on its own device, no gradients.
        tokenizer: its tokenizer.
        prompts: ``(Q,)`` prompts.
        continuations: ``(Q, m_q)`` continuations per prompt (any number per question).
        batch_size: sequences per forward pass (a question whose continuations are all single tokens
            takes one sequence, otherwise one per continuation).
        cache: optional :data:`ScoreCache`; pairs found there are not recomputed, new ones are added.

    Returns:
        ``(Q, m_q)`` :class:`ContinuationScore` in the order given.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"got {len(prompts)} prompts but {len(continuations)} lists of continuations")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    cache = {} if cache is None else cache
    rows: list[_Row] = []
    pending: dict[tuple[str, str], tuple[int, bool]] = {}  # (prompt, continuation) -> (n_tokens, prefix_split)
    for prompt, options in zip(prompts, continuations):
        todo = [c for c in dict.fromkeys(options) if (prompt, c) not in cache and (prompt, c) not in pending]
        if not todo:
            continue
        prompt_ids = _encode(tokenizer, prompt, special=True)
        splits = [split_continuation(tokenizer, prompt, c, prompt_ids) for c in todo]
        for c, (_, ids, prefix_split) in zip(todo, splits):
            pending[(prompt, c)] = (len(ids), prefix_split)
        if all(len(ids) == 1 for _, ids, _ in splits):
            last = len(prompt_ids) - 1  # one forward of the prompt: every option is a next token
            rows.append(_Row(prompt_ids, [(last, ids[0], (prompt, c)) for c, (_, ids, _) in zip(todo, splits)]))
        else:
            for c, (_, ids, _) in zip(todo, splits):
                start = len(prompt_ids) - 1
                rows.append(_Row(prompt_ids + ids, [(start + k, tok, (prompt, c)) for k, tok in enumerate(ids)]))

    token_logprobs: dict[tuple[str, str], list[float]] = {key: [] for key in pending}
    rows.sort(key=lambda row: -len(row.input_ids))  # similar lengths share a batch: less padding
    for begin in range(0, len(rows), batch_size):
        batch = rows[begin:begin + batch_size]
        for row, values in zip(batch, _target_logprobs(model, tokenizer, batch)):
            for (_, _, key), value in zip(row.targets, values):
                token_logprobs[key].append(value)  # a row's targets run in token order
    for key, (n_tokens, prefix_split) in pending.items():
        values = token_logprobs[key]
        cache[key] = ContinuationScore(logprob=float(sum(values)), first_logprob=values[0], n_tokens=n_tokens,
                                       prefix_split=prefix_split)
    return [[cache[(prompt, c)] for c in options] for prompt, options in zip(prompts, continuations)]


@dataclass
class _Row:
    """One sequence of a batch and the log-probabilities to read from it."""

    input_ids: list[int]
    targets: list[tuple[int, int, tuple[str, str]]]
    """``(position, token id, owner)``: read ``log p(token | input_ids[:position + 1])`` for ``owner``."""


def _target_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Sequence[_Row]
) -> list[list[float]]:
    """One forward pass over ``rows``; ``out[r][k]`` is the log-probability of ``rows[r].targets[k]``."""
    import torch

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(row.input_ids) for row in rows)
    # trailing columns that hold a target position in some row (all rows end at column width - 1)
    keep = max(len(row.input_ids) - min(pos for pos, _, _ in row.targets) for row in rows)

    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T), left-padded
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for r, row in enumerate(rows):
        input_ids[r, width - len(row.input_ids):] = torch.tensor(row.input_ids, dtype=torch.long)
        attention_mask[r, width - len(row.input_ids):] = 1
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)  # (B, T): 0 at each row's first token

    kwargs: dict[str, Any] = {"attention_mask": attention_mask.to(device), "use_cache": False}
    accepted = _forward_parameters(model)
    if "position_ids" in accepted:
        kwargs["position_ids"] = position_ids.to(device)
    if "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = keep
    with torch.inference_mode():
        logits = model(input_ids=input_ids.to(device), **kwargs).logits[:, -keep:]  # (B, keep, V)
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B, keep, V), float32 whatever the model dtype

    index_rows, index_cols, index_tokens = [], [], []
    for r, row in enumerate(rows):
        for pos, token, _ in row.targets:
            index_rows.append(r)
            index_cols.append(keep - len(row.input_ids) + pos)  # column of `pos` among the kept ones
            index_tokens.append(token)
    picked = logprobs[torch.tensor(index_rows), torch.tensor(index_cols), torch.tensor(index_tokens)].tolist()
    out: list[list[float]] = []
    for row in rows:
        out.append(picked[: len(row.targets)])
        picked = picked[len(row.targets):]
    return out


def _forward_parameters(model: PreTrainedModel) -> set[str]:
    """Named parameters of ``model.forward``: ``position_ids`` and ``logits_to_keep`` are passed only when
    the model declares them (``**kwargs`` alone is not trusted to accept them)."""
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def logprobs_to_probs(logprobs: Sequence[float]) -> list[float]:
    """``exp`` of each log-probability, clipped to at most 1 (float rounding can leave a log-prob a hair
    above 0)."""
    return [min(1.0, math.exp(value)) for value in logprobs]
