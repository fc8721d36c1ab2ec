"""reasoning-gym tasks as deterministic sources of ``{"question", "answer", "metadata"}`` examples.

reasoning-gym generates item ``i`` of a dataset from ``random.Random(seed + i)`` (nearly every task
does), so two datasets whose seeds differ by less than their size share most of their items, only
shifted. ``split_train_eval`` therefore gives the eval set a seed past the train set's range; equal
questions can still occur by chance when a task has few distinct questions, and ``overlap`` counts
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlvr_lab.rewards.verifiers import Verifier, create_reasoning_gym_dataset, reasoning_gym_verifier


class ReasoningGymTask:
    """``size`` examples of the reasoning-gym task ``name``, fixed by ``seed``.

    ``config`` holds the task's own config fields (e.g. ``{"min_terms": 2}`` for ``chain_sum``);
    an unknown task, an unknown field, or a rejected value raises ValueError saying what is allowed.
    """

    def __init__(self, name: str, *, seed: int, size: int, config: Mapping[str, Any] | None = None) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.name, self.seed, self.size = name, seed, size
        self.config = dict(config or {})
        self._dataset = create_reasoning_gym_dataset(name, config=self.config, seed=seed, size=size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Example ``index`` as ``{"question": str, "answer": str, "metadata": dict}``."""
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} examples of {self.name!r}")
        entry = self._dataset[index % self.size]
        return {"question": entry["question"], "answer": entry["answer"], "metadata": entry["metadata"]}

    def examples(self, n: int, offset: int = 0) -> list[dict[str, Any]]:
        """``n`` examples from ``offset`` on, wrapping past the end (so ``offset = step * n`` cycles epochs)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [self[(offset + i) % self.size] for i in range(n)]

    def questions(self) -> list[str]:
        """Every question, in order."""
        return [self._dataset[i]["question"] for i in range(self.size)]

    def verifier(self, *, fallback: str = "none", partial_credit: bool = True) -> Verifier:
        """reasoning-gym's scoring for this task, built with this task's config."""
        return reasoning_gym_verifier(self.name, fallback=fallback, config=self.config, partial_credit=partial_credit)

    def __repr__(self) -> str:
        return f"ReasoningGymTask({self.name!r}, seed={self.seed}, size={self.size}, config={self.config})"


def split_train_eval(
    name: str,
    *,
    config: Mapping[str, Any] | None = None,
    train_size: int,
    eval_size: int,
    seed: int,
) -> tuple[ReasoningGymTask, ReasoningGymTask]:
    """A train task (seed ``seed``) and a held-out eval task (seed ``seed + train_size``).

    The eval seed starts where the train items' generator seeds end, so the two sets are drawn
    independently. Check chance duplicates with ``overlap(train, eval)``.
    """
    train = ReasoningGymTask(name, seed=seed, size=train_size, config=config)
    held_out = ReasoningGymTask(name, seed=seed + train_size, size=eval_size, config=config)
    return train, held_out


def overlap(a: ReasoningGymTask, b: ReasoningGymTask) -> int:
    """How many examples of ``b`` have a question that also occurs in ``a`` (contamination count)."""
    seen = set(a.questions())
    return sum(question in seen for question in b.questions())
