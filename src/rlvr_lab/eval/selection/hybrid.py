"""The hybrid selector: GenSelect and LLM-as-a-judge combined (arXiv 2511.13027).

The paper's recipe (NeMo-Skills ``run_end_to_end_eval``) generates ``n_p`` solutions, keeps ``n_s`` of
them with a GenSelect knockout tournament, judges each survivor ``n_j`` times and returns the survivor
with the highest yes-rate. ``n_s = -1`` skips the tournament (pure judge: every candidate is judged)
and ``n_s = 1`` skips the judge (pure GenSelect). The paper's grid: (256, 16, 32) and (512, 16, 32)
hybrid, (256, 1, 1) and (512, 1, 1) pure GenSelect, (128, -1, 32) and (256, -1, 32) pure judge.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvr_lab.eval.selection.judge import JudgeRecord, judge_solution
from rlvr_lab.eval.selection.replies import Usage, as_rng
from rlvr_lab.eval.selection.tournament import CompareFn, TournamentLog, knockout_select

ORDERS: tuple[str, ...] = ("genselect_then_judge", "judge_then_genselect")

CandidateJudgeFn = Callable[[Any, int], Any]
"""``judge_fn(candidate_id, sample) -> reply``: verdict number ``sample`` (0 .. n_j - 1) on one candidate."""


@dataclass
class HybridResult:
    """The selected candidate and what it took.

    ``chosen`` is None only when no candidate was valid. ``dropped`` holds the positions of invalid
    candidates in the input; ``tournament`` is None when no tournament was run (pure judge); ``judged``
    maps every judged candidate to its verdicts, in input order.
    """

    chosen: Hashable | None
    dropped: list[int] = field(default_factory=list)
    tournament: TournamentLog | None = None
    judged: dict[Any, JudgeRecord] = field(default_factory=dict)

    @property
    def scores(self) -> dict[Any, float]:
        """Yes-rate per judged candidate (-1: no readable verdict)."""
        return {c: record.score for c, record in self.judged.items()}

    @property
    def games(self) -> int:
        return 0 if self.tournament is None else self.tournament.n_games

    @property
    def failed_comparisons(self) -> int:
        return 0 if self.tournament is None else self.tournament.failed_comparisons

    @property
    def judge_calls(self) -> int:
        return sum(record.calls for record in self.judged.values())

    @property
    def judge_parse_failures(self) -> int:
        return sum(record.parse_failures for record in self.judged.values())

    @property
    def selector_calls(self) -> int:
        """All LLM calls spent on selection: tournament games plus judge calls."""
        return self.games + self.judge_calls

    @property
    def usage(self) -> Usage:
        """Calls and tokens of the tournament and the judge together."""
        total = Usage() if self.tournament is None else Usage() + self.tournament.usage
        for record in self.judged.values():
            total = total + record.usage
        return total


def hybrid_select(
    candidate_ids: Sequence[Hashable | None],
    compare_fn: CompareFn,
    judge_fn: CandidateJudgeFn,
    *,
    n_s: int,
    n_j: int,
    rng: random.Random | int = 0,
    order: str = "genselect_then_judge",
    group_size: int = 2,
    is_valid: Callable[[Any], bool] | None = None,
    map_fn: Callable[[Callable, Iterable], Iterable[Any]] = map,
) -> HybridResult:
    """Pick one of ``candidate_ids`` with GenSelect, the judge, or both.

    Args:
        candidate_ids: distinct hashable ids; ``None`` (or an id ``is_valid`` rejects) marks an invalid
            candidate, which is never selected (the paper drops solutions over 10,000 tokens).
        compare_fn: the GenSelect selector, ``compare_fn(group) -> reply`` (see ``tournament.CompareFn``).
        judge_fn: the judge, ``judge_fn(candidate_id, sample) -> reply``.
        n_s: ``-1`` pure judge; ``1`` pure GenSelect (knockout down to one winner, no judge call);
            otherwise ``>= 2``, the number of candidates passed from the first stage to the second.
        n_j: verdicts per judged candidate, ``>= 1`` (ignored for pure GenSelect).
        rng: a ``random.Random`` or an int seed for the tournament's shuffles and random winners.
        order: ``"genselect_then_judge"`` (default) runs the tournament down to ``n_s`` survivors and
            returns the survivor with the highest yes-rate (the first in input order on ties). This is
            the order of the paper's official recipe and of our spec. ``"judge_then_genselect"`` judges
            every candidate, keeps the ``n_s`` highest yes-rates (ties kept in input order) and runs the
            tournament among them down to one winner; it is offered because the task description
            phrases the hybrid that way (our reading; configurable, not verified in the paper).
        group_size, map_fn: passed to the tournament; ``map_fn`` also runs a candidate's judge calls.

    Raises ValueError for an empty ``candidate_ids``, an unknown ``order``, ``n_s`` not -1 or >= 1, or
    ``n_j < 1`` when the judge is used.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; valid orders: {', '.join(ORDERS)}")
    if n_s != -1 and n_s < 1:
        raise ValueError(f"n_s must be -1 (pure judge), 1 (pure GenSelect) or a larger count, got {n_s}")
    if n_s != 1 and n_j < 1:
        raise ValueError(f"n_j (verdicts per candidate) must be >= 1, got {n_j}")
    if len(candidate_ids) == 0:
        raise ValueError("hybrid_select needs at least one candidate, got an empty list")
    rng = as_rng(rng)

    result = HybridResult(chosen=None)
    valid = []
    for position, candidate in enumerate(candidate_ids):
        if candidate is None or (is_valid is not None and not is_valid(candidate)):
            result.dropped.append(position)
        else:
            valid.append(candidate)
    if not valid:
        return result

    def tournament(candidates: list, keep: int) -> list:
        winners, result.tournament = knockout_select(
            candidates, keep, compare_fn, group_size=group_size, rng=rng, map_fn=map_fn
        )
        return winners

    def judge(candidates: list) -> None:
        for candidate in candidates:
            result.judged[candidate] = judge_solution(functools.partial(judge_fn, candidate), n_j, map_fn=map_fn)

    if n_s == 1:
        result.chosen = tournament(valid, 1)[0]
    elif n_s == -1:
        judge(valid)
        result.chosen = _highest_score(valid, result.judged)
    elif order == "genselect_then_judge":
        finalists = tournament(valid, n_s)
        judge(finalists)
        result.chosen = _highest_score(finalists, result.judged)
    else:
        judge(valid)
        ranked = sorted(valid, key=lambda c: -result.judged[c].score)  # stable: ties stay in input order
        shortlist = set(ranked[:n_s])
        result.chosen = tournament([c for c in valid if c in shortlist], 1)[0]
    return result


def _highest_score(candidates: list, judged: dict[Any, JudgeRecord]) -> Hashable:
    """The candidate with the highest yes-rate; the first one in ``candidates`` on ties."""
    best = candidates[0]
    for candidate in candidates[1:]:
        if judged[candidate].score > judged[best].score:
            best = candidate
    return best
