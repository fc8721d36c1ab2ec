"""LLM-as-a-judge scoring: the yes-rate of ``n_j`` independent binary verdicts (arXiv 2511.13027).

The judge is asked whether one solution is correct and ends with "Judgement: Yes" or "Judgement: No"
(:func:`~rlvr_lab.eval.selection.parse.parse_judgement`). A solution's score is the fraction of yes
among the verdicts that could be read; with no readable verdict it is -1, below every real score.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvr_lab.eval.selection.parse import parse_judgement
from rlvr_lab.eval.selection.replies import Usage, read_reply

NO_VERDICT = -1.0
"""The score of a solution none of whose verdicts could be read."""

SampleJudgeFn = Callable[[int], Any]
"""``judge_fn(sample) -> reply`` for one solution: ``sample`` is 0 .. n_j - 1, for the caller to turn
into a seed; the reply is a ``str`` or an object with ``.text`` (and ``.tokens``)."""


def yes_rate(verdicts: Sequence[bool | None]) -> float:
    """#yes / #readable over ``verdicts`` (None: unreadable), or -1 when none is readable."""
    readable = [v for v in verdicts if v is not None]
    if not readable:
        return NO_VERDICT
    return sum(readable) / len(readable)


@dataclass(frozen=True)
class JudgeRecord:
    """The verdicts a judge gave one solution (None: unreadable), in sample order, and their cost."""

    verdicts: tuple[bool | None, ...]
    usage: Usage = field(default_factory=Usage)

    @property
    def score(self) -> float:
        """The yes-rate in [0, 1], or -1 with no readable verdict."""
        return yes_rate(self.verdicts)

    @property
    def calls(self) -> int:
        return len(self.verdicts)

    @property
    def parse_failures(self) -> int:
        """Verdicts that could not be read."""
        return sum(v is None for v in self.verdicts)


def judge_solution(
    judge_fn: SampleJudgeFn,
    n_j: int,
    *,
    map_fn: Callable[[SampleJudgeFn, Iterable[int]], Iterable[Any]] = map,
) -> JudgeRecord:
    """Ask ``judge_fn`` for ``n_j >= 1`` verdicts on one solution and record them with their cost.

    ``map_fn(judge_fn, range(n_j))`` makes the calls (pass an executor's ``map`` to run them in parallel).
    """
    if n_j < 1:
        raise ValueError(f"n_j (verdicts per solution) must be >= 1, got {n_j}")
    usage = Usage()
    verdicts = []
    for reply in map_fn(judge_fn, range(n_j)):
        text, tokens = read_reply(reply)
        usage.record(tokens)
        verdicts.append(parse_judgement(text))
    if len(verdicts) != n_j:
        raise ValueError(
            f"map_fn returned {len(verdicts)} replies for {n_j} judge calls "
            "(a StopIteration raised inside judge_fn ends a map early)"
        )
    return JudgeRecord(verdicts=tuple(verdicts), usage=usage)


def judge_score(
    judge_fn: SampleJudgeFn,
    n_j: int,
    *,
    map_fn: Callable[[SampleJudgeFn, Iterable[int]], Iterable[Any]] = map,
) -> float:
    """The yes-rate of ``n_j`` verdicts on one solution, -1 if none is readable (see :func:`judge_solution`)."""
    return judge_solution(judge_fn, n_j, map_fn=map_fn).score
