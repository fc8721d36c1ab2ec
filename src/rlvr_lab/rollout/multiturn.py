"""Multi-turn rollouts: the policy writes a turn, a tool answers with forced tokens, until done.

The loop of Search-R1 (arXiv 2503.09516; spec section 10.2), batched: every turn, all sequences
still running are decoded together (each from its whole context so far); a sequence that stops on a
stop string hands its turn to the tool at once, on a worker thread, while the others keep decoding,
so a slow tool call overlaps the decode instead of stalling it. The tool's reply is appended as
*forced* tokens (``sampled_mask`` False: never trained on, masked from every loss and statistic) and
the sequence goes on to its next turn. After ``max_turns`` tool replies one final turn is decoded
with no tool call (as in Search-R1).

The sampled ids and the sampler's log-probs of every model turn are kept as they were sampled (the
text is not re-tokenised), so ``old_logprobs`` match the behaviour policy. Each model turn gets its
own action id (1, 2, ...; 0 on forced tokens), for LLDS's action-level gate (arXiv 2512.04220).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from rlvr_lab.rollout.engine import RolloutEngine, TemperatureFn, cut_at_stop
from rlvr_lab.rollout.sampling import SamplingParams
from rlvr_lab.types import Generation


@dataclass(frozen=True)
class ToolReply:
    """The environment's answer to one finished model turn."""

    observation: str = ""
    """Text appended as forced tokens before the next turn ("" for none)."""
    done: bool = False
    """The episode is over (a final answer was given)."""
    counts: Mapping[str, float] = field(default_factory=dict)
    """Per-turn counts summed per sequence, e.g. ``{"search": 1, "valid_search": 1}``."""


class ToolEnv(Protocol):
    """What a multi-turn rollout needs from a tool environment. ``reply`` runs on worker threads."""

    def reply(self, turn_text: str) -> ToolReply: ...

    def final_reply(self, turn_text: str) -> ToolReply:
        """The counts of the last turn, whose tool call (if any) is not executed."""
        ...

    def observation_ids(self, text: str) -> list[int]: ...


@dataclass
class MultiTurnGeneration(Generation):
    """A :class:`Generation` whose responses interleave model turns and forced tool output."""

    action_ids: torch.Tensor | None = None  # (B, T) long: model turn 1, 2, ... on sampled tokens, 0 elsewhere
    answer_mask: torch.Tensor | None = None  # (B, T) bool: the final answer span of the last model turn
    turns: torch.Tensor | None = None  # (B,) long: model turns taken
    counts: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B,) float, summed tool counts


@dataclass
class _Row:
    ids: list[int] = field(default_factory=list)
    sampled: list[bool] = field(default_factory=list)
    logp: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    action: list[int] = field(default_factory=list)
    last_turn: tuple[int, int] = (0, 0)  # token span of the latest model turn
    last_text: str = ""
    truncated: bool = False

    def extend(self, ids: list[int], *, logp: list[float] | None = None, entropy: list[float] | None = None,
               action: int = 0) -> None:
        self.ids += ids
        self.sampled += [logp is not None] * len(ids)
        self.logp += logp if logp is not None else [0.0] * len(ids)
        self.entropy += entropy if entropy is not None else [0.0] * len(ids)
        self.action += [action] * len(ids)


def multi_turn_generate(
    engine: RolloutEngine,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    tool: ToolEnv,
    *,
    max_turns: int,
    seed: int = 0,
    temperature_fn: TemperatureFn | None = None,
    answer_marker: str | None = "<answer>",
    workers: int = 8,
) -> MultiTurnGeneration:
    """Roll out ``prompts`` (token ids; repeat a prompt G times for a group) for up to ``max_turns`` tool calls.

    ``params.max_new_tokens`` bounds each model turn; ``params.stop_strings`` end a turn (Search-R1:
    ``</search>``, ``</answer>``). A sequence whose context would not fit the model's positions for
    another turn stops there, marked ``truncated``. ``answer_marker`` locates the final answer span in
    the last model turn (``answer_mask``, for LLDS-MA); None leaves it all False.
    """
    if max_turns < 0:
        raise ValueError(f"max_turns must be >= 0, got {max_turns}")
    tokenizer = engine.tokenizer
    rows = [_Row() for _ in prompts]
    counts: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(prompts))
    max_pos = getattr(engine.model.config, "max_position_embeddings", None)
    active = list(range(len(prompts)))

    def turn_text(ids: list[int]) -> str:
        return cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), params.stop_strings)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for turn in range(max_turns + 1):
            final = turn == max_turns
            if max_pos is not None:  # stop the rows whose next turn would not fit
                fits = [i for i in active if len(prompts[i]) + len(rows[i].ids) + params.max_new_tokens <= max_pos]
                for i in set(active) - set(fits):
                    rows[i].truncated = True
                active = fits
            if not active:
                break
            pending: dict[int, Future] = {}

            def on_finish(j: int, ids: list[int], pending=pending, final=final) -> None:
                if not final:  # start the tool call now; the other rows keep decoding
                    pending[j] = pool.submit(tool.reply, turn_text(ids))

            gen = engine.generate(
                [list(prompts[i]) + rows[i].ids for i in active], params, seed=seed * 7919 + turn,
                temperature_fn=temperature_fn, on_finish=on_finish,
            )
            next_active = []
            for j, i in enumerate(active):
                row = rows[i]
                keep = gen.response_mask[j]
                start = len(row.ids)
                ent = None if gen.sampler_entropy is None else gen.sampler_entropy[j][keep].tolist()
                row.extend(gen.response_ids[j][keep].tolist(), logp=gen.sampler_logprobs[j][keep].tolist(),
                           entropy=ent, action=turn + 1)
                row.last_turn, row.last_text = (start, len(row.ids)), gen.texts[j]
                if final:
                    row.truncated = bool(gen.truncated[j])
                    for name, value in tool.final_reply(gen.texts[j]).counts.items():
                        counts[name][i] += value
                    continue
                if j not in pending:  # cut by the token limit: no stop string, the tool still answers
                    pending[j] = pool.submit(tool.reply, gen.texts[j])
                next_active.append((i, j))
            active = []
            for i, j in next_active:
                reply = pending[j].result()
                for name, value in reply.counts.items():
                    counts[name][i] += value
                if reply.done:
                    continue
                if reply.observation:
                    rows[i].extend(tool.observation_ids(reply.observation))
                active.append(i)
    return _assemble(engine, prompts, rows, counts, answer_marker, with_entropy=params.report_entropy)


def _assemble(
    engine: RolloutEngine, prompts: Sequence[Sequence[int]], rows: list[_Row], counts: dict[str, list[float]],
    answer_marker: str | None, *, with_entropy: bool = False,
) -> MultiTurnGeneration:
    prompt_ids, prompt_mask = engine.left_pad(prompts)
    B, T = len(rows), max(1, max(len(r.ids) for r in rows))
    ids = torch.full((B, T), engine.pad_id, dtype=torch.long)
    valid = torch.zeros(B, T, dtype=torch.bool)
    sampled = torch.zeros(B, T, dtype=torch.bool)
    logp = torch.zeros(B, T)
    entropy = torch.zeros(B, T)
    action = torch.zeros(B, T, dtype=torch.long)
    answer = torch.zeros(B, T, dtype=torch.bool)
    for i, row in enumerate(rows):
        n = len(row.ids)
        ids[i, :n] = torch.as_tensor(row.ids, dtype=torch.long)
        valid[i, :n] = True
        sampled[i, :n] = torch.as_tensor(row.sampled, dtype=torch.bool)
        logp[i, :n] = torch.as_tensor(row.logp)
        entropy[i, :n] = torch.as_tensor(row.entropy)
        action[i, :n] = torch.as_tensor(row.action, dtype=torch.long)
        if answer_marker and answer_marker in row.last_text:
            lo = _marker_start(engine.tokenizer, row.ids, row.last_turn, answer_marker)
            answer[i, lo : row.last_turn[1]] = True
    texts = [engine.tokenizer.decode(r.ids, skip_special_tokens=True) for r in rows]
    device = prompt_ids.device
    return MultiTurnGeneration(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=ids.to(device), response_mask=valid.to(device),
        sampled_mask=sampled.to(device), sampler_logprobs=logp.to(device),
        truncated=torch.tensor([r.truncated for r in rows], device=device), texts=texts,
        sampler_entropy=entropy.to(device) if with_entropy else None,
        action_ids=action.to(device), answer_mask=answer.to(device),
        turns=torch.tensor([max(r.action, default=0) for r in rows], device=device),
        counts={name: torch.tensor(values) for name, values in counts.items()},
    )


def _marker_start(tokenizer, ids: list[int], span: tuple[int, int], marker: str) -> int:
    """First token of the last occurrence of ``marker`` within ``ids[span]``: the shortest suffix of
    the span whose text contains the marker starts there (one decode per answer token)."""
    lo, hi = span
    for k in range(hi - 1, lo - 1, -1):
        if marker in tokenizer.decode(ids[k:hi], skip_special_tokens=True):
            return k
    return lo


def with_turn_limit(params: SamplingParams, stop_strings: Sequence[str]) -> SamplingParams:
    """``params`` with ``stop_strings`` added (the tags that end a model turn)."""
    return replace(params, stop_strings=tuple(dict.fromkeys((*params.stop_strings, *stop_strings))))
