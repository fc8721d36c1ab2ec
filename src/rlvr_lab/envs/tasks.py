"""reasoning-gym tasks as deterministic sources of ``{"question", "answer", "metadata"}`` examples.

reasoning-gym generates item ``i`` of a dataset from ``random.Random(seed + i)`` (nearly every task
does), so two datasets whose seeds differ by less than their size share most of their items, only
shifted. ``split_train_eval`` therefore gives the eval set a seed past the train set's range; equal
questions can still occur by chance when a task has few distinct questions, and ``overlap`` counts
them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class QATask:
    """Question-answering examples held in memory (a QA dataset file or a generated knowledge base),
    with the interface of :class:`ReasoningGymTask`. Examples carry ``answers`` (a list of gold strings)."""

    def __init__(self, name: str, examples: Sequence[Mapping[str, Any]], *, reward: str = "em") -> None:
        if not examples:
            raise ValueError(f"QA task {name!r} has no examples")
        self.name, self.reward = name, reward
        self._examples = [dict(ex) for ex in examples]

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._examples[index]

    def examples(self, n: int, offset: int = 0) -> list[dict[str, Any]]:
        return [self._examples[(offset + i) % len(self)] for i in range(n)]

    def questions(self) -> list[str]:
        return [ex["question"] for ex in self._examples]

    def verifier(self, *, fallback: str = "none", partial_credit: bool = True) -> Verifier:
        """Exact match, token F1 or Search-R1's format-aware EM on the last ``<answer>`` (``fallback`` and
        ``partial_credit`` do not apply: F1 is the partial-credit reward)."""
        from rlvr_lab.rewards.qa import qa_exact_match_verifier, qa_f1_verifier, search_r1_format_verifier

        return {"em": qa_exact_match_verifier, "f1": qa_f1_verifier, "search_r1": search_r1_format_verifier}[self.reward]()

    def __repr__(self) -> str:
        return f"QATask({self.name!r}, {len(self)} examples, reward={self.reward!r})"


def synthetic_kb_tasks(
    config: Mapping[str, Any], *, seed: int, train_size: int, eval_size: int, reward: str = "em"
) -> tuple[QATask, QATask, list[dict[str, str]]]:
    """Train and held-out questions over one generated knowledge base, and its passages.

    ``config`` holds :func:`generate_kb`'s sizes plus optional ``kinds`` and ``hops`` filters. Held-out
    questions come first in the (shuffled) question list, so they do not depend on ``train_size``.
    """
    from rlvr_lab.envs.synthetic_kb import generate_kb

    opts = dict(config)
    kinds, hops = opts.pop("kinds", None), opts.pop("hops", None)
    try:
        kb = generate_kb(seed=seed, **opts)
    except TypeError as exc:
        raise ValueError(f"task.config for synthetic_kb: {exc}") from None
    title = {p["id"]: p["title"] for p in kb.passages}
    questions = [
        {**q, "queries": [title[pid] for pid in q["support"]]}  # what a demonstration searches for
        for q in kb.questions
        if (kinds is None or q["kind"] in kinds) and (hops is None or q["hops"] in hops)
    ]
    if len(questions) <= eval_size:
        raise ValueError(f"synthetic_kb has {len(questions)} questions after the filters; eval_size={eval_size} leaves none to train on")
    held_out, train = questions[:eval_size], questions[eval_size : eval_size + train_size]
    return QATask("synthetic_kb", train, reward=reward), QATask("synthetic_kb", held_out, reward=reward), kb.passages


def qa_file_tasks(
    train_path: str, eval_path: str | None, *, train_size: int, eval_size: int, reward: str = "em"
) -> tuple[QATask, QATask]:
    """Train and held-out questions from dataset files; without ``eval_path`` the last ``eval_size``
    training questions are held out."""
    from rlvr_lab.envs.qa_data import load_qa_dataset

    train = load_qa_dataset(train_path)
    if eval_path:
        held_out = load_qa_dataset(eval_path, limit=eval_size)
    else:
        if len(train) <= eval_size:
            raise ValueError(f"{train_path} has {len(train)} questions; holding out eval_size={eval_size} leaves none")
        train, held_out = train[:-eval_size], train[-eval_size:]
    return QATask(train_path, train[:train_size], reward=reward), QATask(eval_path or train_path, held_out, reward=reward)
