"""GenSelect as a knockout tournament: keep ``keep`` of ``N`` candidates with one LLM call per game.

arXiv 2511.13027 (GenSelect), following the knockout procedure of the NeMo-Skills recipe:

1. drop the invalid candidates (``None`` entries, and those ``is_valid`` rejects);
2. while fewer than ``N - keep`` candidates are eliminated: shuffle the survivors, cut them into groups
   of ``group_size``, let a lone candidate at the end pass (a bye), play every game, and eliminate
   every candidate of a game except its winner;
3. if the last round eliminated too many, reinstate the most recently eliminated ones so exactly
   ``keep`` survive.

A game shows the selector its group and reads the winner from ``<best_solution>i</best_solution>``
(:func:`~rlvr_lab.eval.selection.parse.parse_best_solution`); an unreadable reply gives a uniformly
random winner and is counted as a failed comparison, never an error.

Every game eliminates ``len(group) - 1`` candidates whatever its result, so before a round starts it
is known which of its games step 3 would undo entirely; those games are not played. The survivors
are the same as when every game is played (same shuffles, same results), and with ``group_size=2``
the cost is exactly ``N - keep`` games.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvr_lab.eval.selection.parse import parse_best_solution
from rlvr_lab.eval.selection.replies import Usage, as_rng, read_reply

CompareFn = Callable[[tuple], Any]
"""``compare_fn(group) -> reply``: ``group`` holds candidate ids in the order shown to the selector
(``group[0]`` is "[Solution 1]"); the reply is a ``str`` or an object with ``.text`` (and ``.tokens``)."""


@dataclass(frozen=True)
class Game:
    """One tournament game.

    ``participants`` are in the order the selector saw them; ``eliminated`` is every other participant,
    in that order. ``parsed`` is False when the reply named no valid candidate and ``winner`` was drawn
    uniformly at random. ``tokens`` is the reply's token count (None: not reported).
    """

    round: int
    participants: tuple
    winner: Hashable
    eliminated: tuple
    parsed: bool
    tokens: int | None


@dataclass
class TournamentLog:
    """What a knockout tournament did.

    ``dropped`` holds the positions in ``candidate_ids`` of the invalid candidates removed before the
    first round; ``reinstated`` the ids eliminated in the last round and brought back so that exactly
    ``keep`` survive; ``rounds`` the number of rounds in which games were played.
    """

    dropped: list[int] = field(default_factory=list)
    games: list[Game] = field(default_factory=list)
    reinstated: list = field(default_factory=list)
    rounds: int = 0
    usage: Usage = field(default_factory=Usage)

    @property
    def n_games(self) -> int:
        """Selector calls made (one per game)."""
        return len(self.games)

    @property
    def failed_comparisons(self) -> int:
        """Games whose reply could not be read, so the winner was drawn at random."""
        return sum(not game.parsed for game in self.games)


def knockout_select(
    candidate_ids: Sequence[Hashable | None],
    keep: int,
    compare_fn: CompareFn,
    *,
    group_size: int = 2,
    rng: random.Random | int = 0,
    is_valid: Callable[[Any], bool] | None = None,
    map_fn: Callable[[CompareFn, Iterable[tuple]], Iterable[Any]] = map,
) -> tuple[list, TournamentLog]:
    """Knock out candidates until ``keep`` survive; returns ``(survivor ids, log)``.

    Args:
        candidate_ids: distinct hashable ids (typically indices into the caller's list of solutions);
            ``None`` marks an invalid candidate (an empty or over-long solution).
        keep: how many survivors to keep, ``>= 1``. When at most ``keep`` candidates are valid no game
            is played and every valid candidate survives, so fewer than ``keep`` may be returned.
        compare_fn: the selector, see :data:`CompareFn`.
        group_size: candidates per game, ``>= 2`` (the paper's default is pairwise, 2).
        rng: a ``random.Random`` or an int seed; drives the shuffles and the random winners.
        is_valid: optional predicate on ids; candidates it rejects are dropped like ``None`` entries.
        map_fn: how the games of one round are run, ``map_fn(compare_fn, groups)``; the games of a round
            are independent, so e.g. ``ThreadPoolExecutor(8).map`` runs them in parallel. Random winners
            are drawn after the round's replies are in, in game order, so results stay reproducible.

    Survivors are returned in their order in ``candidate_ids``. Raises ValueError for no candidates at
    all (a caller error), duplicate ids, ``keep < 1`` or ``group_size < 2``; a list whose candidates
    are all invalid gives no survivors and no games.
    """
    if len(candidate_ids) == 0:
        raise ValueError("knockout_select needs at least one candidate, got an empty list")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (a game compares at least two candidates), got {group_size}")
    present = [c for c in candidate_ids if c is not None]
    if len(set(present)) != len(present):
        raise ValueError("candidate ids must be distinct")
    rng = as_rng(rng)

    log = TournamentLog()
    alive = []
    for position, candidate in enumerate(candidate_ids):
        if candidate is None or (is_valid is not None and not is_valid(candidate)):
            log.dropped.append(position)
        else:
            alive.append(candidate)

    to_eliminate = len(alive) - keep
    eliminated: list = []
    out: set = set()
    while len(eliminated) < to_eliminate:
        survivors = [c for c in alive if c not in out]
        rng.shuffle(survivors)
        groups = [tuple(survivors[i:i + group_size]) for i in range(0, len(survivors), group_size)]
        groups = _games_needed([g for g in groups if len(g) > 1], to_eliminate - len(eliminated))
        replies = list(map_fn(compare_fn, groups))
        if len(replies) != len(groups):
            raise ValueError(
                f"map_fn returned {len(replies)} replies for {len(groups)} games "
                "(a StopIteration raised inside compare_fn ends a map early)"
            )
        for group, reply in zip(groups, replies):
            game = _score_game(group, reply, log.rounds, rng)
            log.games.append(game)
            log.usage.record(game.tokens)
            eliminated.extend(game.eliminated)
            out.update(game.eliminated)
        log.rounds += 1

    if len(eliminated) > max(to_eliminate, 0):
        log.reinstated = eliminated[to_eliminate:]
        out.difference_update(log.reinstated)
    return [c for c in alive if c not in out], log


def _games_needed(groups: list[tuple], needed: int) -> list[tuple]:
    """The leading groups whose games are needed to eliminate ``needed`` more candidates.

    A game eliminates ``len(group) - 1`` candidates; the games after the first ``needed`` eliminations
    would be reinstated in full by step 3, so they are left out.
    """
    played = []
    for group in groups:
        if needed <= 0:
            break
        played.append(group)
        needed -= len(group) - 1
    return played


def _score_game(group: tuple, reply: object, round_index: int, rng: random.Random) -> Game:
    """The game record for ``group`` given the selector's ``reply``."""
    text, tokens = read_reply(reply)
    choice = parse_best_solution(text, len(group))
    parsed = choice is not None
    if choice is None:
        choice = rng.randrange(len(group))  # unreadable reply: uniformly random winner (counted in the log)
    winner = group[choice]
    return Game(
        round=round_index,
        participants=group,
        winner=winner,
        eliminated=tuple(c for c in group if c != winner),
        parsed=parsed,
        tokens=tokens,
    )
