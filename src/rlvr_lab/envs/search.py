"""A Search-R1-style environment: the policy thinks, searches a retriever, reads, answers.

Protocol (arXiv 2503.09516; spec section 10): a model turn ends at ``</search>`` or ``</answer>``.
The first ``<search>…</search>`` or ``<answer>…</answer>`` block of the turn is its action:

* ``answer``: the episode ends (the verifier scores the last answer of the whole response);
* ``search`` with a usable query: the top-k passages come back as a forced
  ``<information>…</information>`` block; a failed retrieval comes back as a block saying so;
* anything else is an invalid action, answered by a fixed message (forced, never trained on).

Malformed tags have defined outcomes: an unclosed ``<search>`` (no block at all), an empty query and a
query holding a protocol tag (``<search><answer>x</answer></search>``) are invalid actions; an empty
``<answer></answer>`` is an answer (scored wrong by the verifier).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvr_lab.envs.retrievers import RETRIEVAL_FAILED, Retriever, information_observation, safe_search
from rlvr_lab.models.chat import render_prompt
from rlvr_lab.rewards import Verifier, score_batch
from rlvr_lab.rewards.qa import PROTOCOL_TAGS
from rlvr_lab.rollout.multiturn import ToolReply, multi_turn_generate, with_turn_limit
from rlvr_lab.types import Generation, Score

TURN_STOPS = ("</search>", "</answer>")

# The task description of Search-R1's base prompt (spec 10.1), in our own words.
SEARCH_INSTRUCTION = (
    "Answer the question. Think inside <think> and </think> whenever you get new information. "
    "If you need knowledge you lack, search for it with <search> query </search>; the top results come back "
    "between <information> and </information>. Search as often as you need. When you know the answer, give it "
    "inside <answer> and </answer> with no explanation, for example <answer> Beijing </answer>. Question: "
)

INVALID_ACTION = (
    "\nMy previous action is invalid. To search, I should put the query between <search> and </search>. "
    "To give the final answer, I should put it between <answer> and </answer>. Let me try again.\n"
)

_ACTION_OPEN = re.compile(r"<(search|answer)>")

# More characters than any one token of the vocabularies in use spans (a few dozen at most), so cutting an
# observation at max_obs_tokens times this leaves its first max_obs_tokens tokens as they were.
_MAX_CHARS_PER_TOKEN = 64


def parse_action(text: str) -> tuple[str, str]:
    """``(kind, content)`` of a model turn: kind ``search``, ``answer`` or ``invalid``; content stripped.

    The first complete block wins (Search-R1's parser). A search whose query is empty or holds a
    protocol tag is ``invalid`` (its content is still returned, for logging).
    """
    block = _first_block(text)
    if block is None:
        return "invalid", ""
    kind, content = block[0], block[1].strip()
    if kind == "search" and (not content or any(f"<{t}>" in content or f"</{t}>" in content for t in PROTOCOL_TAGS)):
        return "invalid", content
    return kind, content


def _first_block(text: str) -> tuple[str, str] | None:
    """``(kind, raw content)`` of the first ``<search>…</search>`` or ``<answer>…</answer>``, or None.

    What ``re.search(r"<(search|answer)>(.*?)</\\1>", text, re.DOTALL)`` finds, in linear time: that
    regex rescans the rest of the text from every unclosed opening tag (15 s for 100 kB of ``<search>``).
    Once one opening tag of a kind has no close after it, no later one of that kind has either.
    """
    unclosed: set[str] = set()
    for opening in _ACTION_OPEN.finditer(text):
        kind = opening.group(1)
        if kind in unclosed:
            continue
        end = text.find(f"</{kind}>", opening.end())
        if end != -1:
            return kind, text[opening.end() : end]
        unclosed.add(kind)
        if len(unclosed) == 2:
            break
    return None


@dataclass
class SearchEnv:
    """Renders Search-R1 prompts, answers model turns with retrieval, scores whole responses."""

    tokenizer: Any
    verifier: Verifier
    retriever: Retriever
    top_k: int = 3
    max_turns: int = 2
    max_obs_tokens: int = 500
    instruction: str = SEARCH_INSTRUCTION
    invalid_message: str = INVALID_ACTION
    system_prompt: str | None = None
    use_chat_template: bool = True
    timeout_s: float = 5.0
    isolation: str = "thread"  # rlvr_lab.rewards.safe: thread or process
    _demos: dict = field(default_factory=dict, init=False, repr=False)

    def render(self, example: Mapping[str, Any]) -> str:
        return render_prompt(self.tokenizer, f"{self.instruction}{example['question']}", system=self.system_prompt,
                             use_chat_template=self.use_chat_template)

    def reply(self, turn_text: str) -> ToolReply:
        """The environment's answer to one model turn (thread-safe; runs on the rollout's workers)."""
        kind, content = parse_action(turn_text)
        if kind == "answer":
            return ToolReply(done=True, counts={"answered": 1.0})
        if kind == "invalid":
            return ToolReply(observation=self.invalid_message, counts={"invalid_action": 1.0})
        t0 = time.perf_counter()
        (text,) = safe_search(self.retriever, [content], self.top_k)
        seconds = time.perf_counter() - t0
        failed = text == RETRIEVAL_FAILED
        return ToolReply(observation=information_observation(self._truncate(text)),
                         counts={"tool_calls": 1.0, "valid_search": 1.0, "failed_search": float(failed),
                                 "tool_seconds": seconds})

    def final_reply(self, turn_text: str) -> ToolReply:
        """The last turn's action, counted but not executed (a search there is ``unexecuted_search``)."""
        kind, _ = parse_action(turn_text)
        name = {"answer": "answered", "invalid": "invalid_action", "search": "unexecuted_search"}[kind]
        return ToolReply(done=True, counts={name: 1.0})

    def _truncate(self, text: str) -> str:
        """At most ``max_obs_tokens`` tokens of passage text (cut before wrapping, so the closing tag survives).

        Characters far past the budget are dropped before encoding: a 10 MB answer took the character
        tokenizer 40 s to encode in full, and only its first ``max_obs_tokens`` tokens are ever kept.
        """
        text = text[: self.max_obs_tokens * _MAX_CHARS_PER_TOKEN]
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= self.max_obs_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_obs_tokens], skip_special_tokens=True)

    def observation_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def demonstration(self, example: Mapping[str, Any]) -> tuple[list[int], list[bool]]:
        """A supervised trajectory for the warm-start: a search for each of the example's ``queries``
        (default: the question) with the real retriever's observations, then the answer, then EOS.
        The observations are masked out of the loss, as in RL. Cached per example (the retriever is fixed)."""
        key = (example["question"], tuple(example.get("queries") or ()), example["answers"][0])
        if key not in self._demos:
            self._demos[key] = self._demonstration(example)
        ids, mask = self._demos[key]
        return list(ids), list(mask)

    def _demonstration(self, example: Mapping[str, Any]) -> tuple[list[int], list[bool]]:
        ids: list[int] = []
        mask: list[bool] = []

        def add(text: str, trained: bool) -> None:
            new = self.tokenizer.encode(text, add_special_tokens=False)
            ids.extend(new)
            mask.extend([trained] * len(new))

        for query in list(example.get("queries") or [example["question"]])[: self.max_turns]:
            add(f"<search>{query}</search>", True)
            add(self.reply(f"<search>{query}</search>").observation, False)
        add(f"<answer>{example['answers'][0]}</answer>", True)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
            mask.append(True)
        return ids, mask

    def generate(self, engine, prompts: Sequence[Sequence[int]], params, *, seed: int = 0, temperature_fn=None) -> Generation:
        """Multi-turn rollouts of ``prompts`` (see :func:`rlvr_lab.rollout.multiturn.multi_turn_generate`)."""
        return multi_turn_generate(
            engine, prompts, with_turn_limit(params, TURN_STOPS), self, max_turns=self.max_turns,
            seed=seed, temperature_fn=temperature_fn,
        )

    def score(self, texts: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> list[Score]:
        return score_batch(self.verifier, texts, examples, timeout_s=self.timeout_s, isolation=self.isolation)
