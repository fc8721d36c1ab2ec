"""Best-of-n selection (arXiv 2511.13027): parsers on malformed replies, knockout brackets, the judge's
yes-rate, the hybrid selector by hand, and all three selectors on simulated oracles."""

from __future__ import annotations

import math
import random

import pytest

from rlvr_lab.eval.selection import (
    NO_VERDICT,
    Reply,
    final_part,
    hybrid_select,
    judge_score,
    judge_solution,
    knockout_select,
    parse_best_solution,
    parse_judgement,
    simulate_problem,
    yes_rate,
)

# --- parsers -----------------------------------------------------------------------------------------

JUDGEMENTS = [
    ("Judgement: Yes", True),
    ("judgement: no", False),
    ("JUDGEMENT: YES", True),
    ("**Judgement**: Yes", True),
    ("**Judgement:** No", False),
    ("Judgement: **Yes**", True),
    ("Judgement : yes", True),
    ("Judgement: yes.", True),
    ("Judgement: Yes, because every step follows.", True),
    ("Judgement:\n\nNo", False),
    ("Judgement: no", False),
    ("Judgment: Yes", True),  # the other spelling
    ("The proof is fine.\n\nJudgement: No\n", False),
    ("Judgement Yes", None),  # no colon
    ("Judgement - Yes", None),
    ("Yes", None),  # a bare verdict is not the requested format
    ("", None),
    ("Judgement:", None),
    ("Judgement: maybe", None),
    ("Judgement: No\n... on reflection ...\nJudgement: Yes", True),  # the last verdict decides
    ("Judgement: Yes\nJudgement: unsure", None),  # ... even when it is unreadable
    ("<think>Judgement: Yes</think>", None),  # verdict only inside the reasoning
    ("<think>Judgement: Yes</think>So the solution is right.", None),
    ("<think>Judgement: No</think>\nJudgement: Yes", True),
    ("<think>long reasoning, cut off. Judgement: Yes", None),  # reasoning never closed
    ("<think>a</think><think>Judgement: No</think>Judgement: yes", True),
    ("<judgement>yes</judgement>", None),
    ("</think></think>Judgement: no", False),
    (None, None),
    (42, None),
    (b"Judgement: Yes", None),
]


@pytest.mark.parametrize(("text", "expected"), JUDGEMENTS)
def test_parse_judgement_table(text, expected):
    assert parse_judgement(text) is expected


BEST_SOLUTIONS = [
    ("<best_solution>1</best_solution>", 3, 0),
    ("<best_solution>3</best_solution>", 3, 2),
    ("<best_solution> 2 </best_solution>", 3, 1),
    ("<best_solution>\n2\n</best_solution>", 3, 1),
    ("<BEST_SOLUTION>2</BEST_SOLUTION>", 3, 1),
    ("Solution 1 errs.\n<best_solution>2</best_solution>", 2, 1),
    ("<best_solution>1</best_solution> wait, no: <best_solution>2</best_solution>", 2, 1),  # last block wins
    ("<best_solution>2</best_solution> then <best_solution>9</best_solution>", 3, None),  # last one out of range
    ("<best_solution>1<best_solution>2</best_solution>", 2, 1),  # unclosed first block
    ("<best_solution>4</best_solution>", 3, None),  # out of range
    ("<best_solution>0</best_solution>", 3, None),  # 1-based: 0 is no candidate
    ("<best_solution>-1</best_solution>", 3, None),
    ("<best_solution>+1</best_solution>", 3, None),
    ("<best_solution>2.0</best_solution>", 3, None),
    ("<best_solution>two</best_solution>", 3, None),
    ("<best_solution>[Solution 2]</best_solution>", 3, None),
    ("<best_solution></best_solution>", 3, None),
    ("<best_solution>1", 3, None),  # never closed
    ("<best_solution>1</best_sol>", 3, None),
    ("best_solution: 1", 3, None),
    ("<best_solution>\u0661</best_solution>", 3, None),  # ARABIC-INDIC DIGIT ONE, not ASCII
    ("<best_solution>" + "9" * 5000 + "</best_solution>", 3, None),  # beyond int()'s digit limit
    ("<think><best_solution>1</best_solution></think><best_solution>2</best_solution>", 2, 1),
    ("<think><best_solution>1</best_solution></think>I pick the first.", 2, None),
    ("<think>cut off <best_solution>1</best_solution>", 2, None),
    ("<best_solution>1</best_solution>", 0, None),
    ("", 2, None),
    (None, 2, None),
    (3, 2, None),
]


@pytest.mark.parametrize(("text", "n", "expected"), BEST_SOLUTIONS)
def test_parse_best_solution_table(text, n, expected):
    assert parse_best_solution(text, n) == expected


def test_final_part():
    assert final_part("no reasoning") == "no reasoning"
    assert final_part("<think>a</think>b<think>c</think> d") == " d"
    assert final_part("<think>unfinished") is None
    assert final_part(None) is None


# --- knockout tournament -----------------------------------------------------------------------------


def name_first(group):
    return "<best_solution>1</best_solution>"


def smallest_wins(group):
    return f"<best_solution>{group.index(min(group)) + 1}</best_solution>"


def garbage(group):
    return "I like all of them. <best_solution>many</best_solution>"


def check_log_consistency(ids, winners, log, keep):
    """Survivors are exactly the valid candidates minus the eliminated ones plus the reinstated ones."""
    valid = [c for c in ids if c is not None]
    eliminated = [c for game in log.games for c in game.eliminated]
    assert len(eliminated) == len(set(eliminated))
    assert set(log.reinstated) <= set(eliminated)
    assert log.reinstated == eliminated[len(eliminated) - len(log.reinstated):]  # the most recent ones
    out = set(eliminated) - set(log.reinstated)
    assert winners == [c for c in valid if c not in out]
    gone = set()
    for game in log.games:
        assert game.winner in game.participants
        assert set(game.eliminated) == set(game.participants) - {game.winner}
        assert not gone & set(game.participants)  # nobody plays after being eliminated
        gone.update(game.eliminated)
    assert log.usage.calls == log.n_games


@pytest.mark.parametrize("n", range(1, 10))
def test_pairwise_bracket_keeps_exactly_keep_in_n_minus_keep_games(n):
    ids = list(range(100, 100 + n))
    for keep in range(1, n + 2):
        winners, log = knockout_select(ids, keep, name_first, rng=n * 10 + keep)
        assert len(winners) == min(keep, n)
        assert log.n_games == max(n - keep, 0)  # one elimination per pairwise game
        assert log.reinstated == []  # pairwise games never overshoot
        assert set(winners) <= set(ids)
        assert log.failed_comparisons == 0
        check_log_consistency(ids, winners, log, keep)


def test_bracket_is_deterministic_for_a_fixed_seed():
    ids = list(range(9))
    first = knockout_select(ids, 2, garbage, rng=7)
    again = knockout_select(ids, 2, garbage, rng=random.Random(7))
    assert first[0] == again[0]
    assert [g.participants for g in first[1].games] == [g.participants for g in again[1].games]
    assert [g.winner for g in first[1].games] == [g.winner for g in again[1].games]
    differs = {tuple(knockout_select(ids, 2, garbage, rng=seed)[0]) for seed in range(20)}
    assert len(differs) > 1  # the seed matters


def test_selector_naming_candidate_one_always_picks_the_first_shown():
    ids = list("abcdefg")
    winners, log = knockout_select(ids, 1, name_first, rng=3)
    assert len(winners) == 1
    assert all(game.parsed and game.winner == game.participants[0] for game in log.games)
    assert [len(g.participants) for g in log.games] == [2] * 6
    assert log.rounds == 3  # 7 -> 4 (three games, one bye) -> 2 -> 1


@pytest.mark.parametrize("n", range(1, 10))
def test_smallest_wins_gives_the_smallest_whatever_the_shuffles(n):
    ids = random.Random(n).sample(range(1000), n)
    for seed in range(5):
        winners, _ = knockout_select(ids, 1, smallest_wins, rng=seed)
        assert winners == [min(ids)]
        for keep in range(1, n + 1):
            assert min(ids) in knockout_select(ids, keep, smallest_wins, rng=seed)[0]


def test_unreadable_replies_are_failed_comparisons_with_random_winners():
    ids = list(range(8))
    winners, log = knockout_select(ids, 1, garbage, rng=0)
    assert len(winners) == 1
    assert log.n_games == 7 and log.failed_comparisons == 7
    assert not any(game.parsed for game in log.games)
    # the random winner is not always the first shown
    firsts = [
        g.winner == g.participants[0] for seed in range(30) for g in knockout_select(ids, 1, garbage, rng=seed)[1].games
    ]
    assert 0.3 < sum(firsts) / len(firsts) < 0.7


def test_mixed_replies_count_only_the_unreadable_ones():
    replies = iter(["<best_solution>2</best_solution>", "nonsense", None, Reply("<best_solution>3</best_solution>")])
    _, log = knockout_select(list(range(5)), 1, lambda group: next(replies), rng=1)
    assert log.n_games == 4
    assert [g.parsed for g in log.games] == [True, False, False, False]  # "3" is out of range in a pair
    assert log.failed_comparisons == 3


@pytest.mark.parametrize(("n", "keep", "games"), [(9, 1, 4), (4, 1, 2), (5, 1, 3), (3, 1, 1), (7, 3, 2), (6, 4, 1)])
def test_groups_of_three_by_hand(n, keep, games):
    # 9 -> 3 games -> 3 -> 1 game -> 1; 4 -> one game of 3 and a bye -> 2 -> 1 game; 5 -> games of 3 and 2 -> 2 -> 1;
    # 7 keep 3 -> two games of 3 eliminate 4 -> 3; 6 keep 4 -> one game eliminates 2 -> 4.
    ids = list(range(n))
    winners, log = knockout_select(ids, keep, smallest_wins, group_size=3, rng=2)
    assert len(winners) == keep
    assert log.n_games == games
    assert all(2 <= len(g.participants) <= 3 for g in log.games)
    check_log_consistency(ids, winners, log, keep)


def test_overshoot_reinstates_the_most_recently_eliminated():
    # 6 candidates, keep 5, groups of 3: one game eliminates two, one too many
    ids = list(range(6))
    winners, log = knockout_select(ids, 5, smallest_wins, group_size=3, rng=4)
    (game,) = log.games
    assert len(game.eliminated) == 2
    assert log.reinstated == [game.eliminated[1]]
    assert winners == [c for c in ids if c != game.eliminated[0]]


def play_every_game(ids, keep, compare_fn, group_size, rng):
    """The procedure without skipping games: every group plays, then the surplus is reinstated."""
    alive, eliminated = list(ids), []
    while len(eliminated) < len(ids) - keep:
        survivors = [c for c in alive if c not in eliminated]
        rng.shuffle(survivors)
        for i in range(0, len(survivors), group_size):
            group = tuple(survivors[i:i + group_size])
            if len(group) > 1:
                winner = group[parse_best_solution(compare_fn(group), len(group))]
                eliminated += [c for c in group if c != winner]
    eliminated = eliminated[:max(len(ids) - keep, 0)]
    return [c for c in alive if c not in eliminated]


@pytest.mark.parametrize("group_size", [2, 3, 4])
def test_skipping_unneeded_games_gives_the_survivors_of_playing_them_all(group_size):
    for n in range(1, 13):
        ids = list(range(n))
        for keep in range(1, n + 1):
            for selector in (name_first, smallest_wins):
                ours, _ = knockout_select(ids, keep, selector, group_size=group_size, rng=n + keep)
                plain = play_every_game(ids, keep, selector, group_size, random.Random(n + keep))
                assert ours == plain, (n, keep, group_size)


def test_invalid_candidates_are_dropped_before_the_first_round():
    ids = [None, 3, None, 5, 7, 8]
    winners, log = knockout_select(ids, 1, smallest_wins, rng=0, is_valid=lambda c: c != 8)
    assert winners == [3]
    assert log.dropped == [0, 2, 5]
    assert log.n_games == 2  # three valid candidates, one survivor
    assert all(None not in g.participants and 8 not in g.participants for g in log.games)


def test_fewer_valid_candidates_than_keep_play_no_game():
    winners, log = knockout_select([None, "a", None, "b"], 3, garbage, rng=0)
    assert winners == ["a", "b"] and log.n_games == 0
    winners, log = knockout_select([None, None], 1, garbage, rng=0)
    assert winners == [] and log.n_games == 0 and log.dropped == [0, 1]


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="at least one candidate"):
        knockout_select([], 1, name_first)
    with pytest.raises(ValueError, match="keep"):
        knockout_select([1, 2], 0, name_first)
    with pytest.raises(ValueError, match="group_size"):
        knockout_select([1, 2], 1, name_first, group_size=1)
    with pytest.raises(ValueError, match="distinct"):
        knockout_select([1, 2, 1], 1, name_first)
    with pytest.raises(TypeError, match=r"str or an object with \.text"):
        knockout_select([1, 2], 1, lambda group: 1)
    with pytest.raises(TypeError, match="rng"):
        knockout_select([1, 2], 1, name_first, rng=0.5)


def test_tokens_are_summed_where_reported():
    reported = knockout_select(list(range(6)), 1, lambda g: Reply("<best_solution>2</best_solution>", 11), rng=0)[1]
    assert reported.usage.calls == 5 and reported.usage.tokens == 55 and reported.usage.calls_without_tokens == 0
    assert [g.tokens for g in reported.games] == [11] * 5
    unreported = knockout_select(list(range(6)), 1, name_first, rng=0)[1]
    assert unreported.usage.tokens == 0 and unreported.usage.calls_without_tokens == 5
    with pytest.raises(ValueError, match="negative token count"):
        knockout_select([1, 2], 1, lambda g: Reply("<best_solution>1</best_solution>", -3))


def test_each_round_is_one_map_call():
    batches = []

    def recording_map(fn, groups):
        groups = list(groups)
        batches.append(groups)
        return [fn(g) for g in groups]

    _, log = knockout_select(list(range(16)), 1, name_first, rng=0, map_fn=recording_map)
    assert [len(b) for b in batches] == [8, 4, 2, 1]
    assert log.rounds == 4


# --- judge -------------------------------------------------------------------------------------------


def test_yes_rate_by_hand():
    assert yes_rate([True, False, None, True]) == pytest.approx(2 / 3)
    assert yes_rate([False, False]) == 0.0
    assert yes_rate([None, None]) == NO_VERDICT == -1.0
    assert yes_rate([]) == -1.0


def test_judge_solution_records_verdicts_failures_and_tokens():
    replies = ["Judgement: Yes", "I am not sure.", Reply("Judgement: No", 7), "**Judgement:** yes", None]
    samples = []

    def judge_fn(sample):
        samples.append(sample)
        return replies[sample]

    record = judge_solution(judge_fn, 5)
    assert samples == [0, 1, 2, 3, 4]
    assert record.verdicts == (True, None, False, True, None)
    assert record.score == pytest.approx(2 / 3)
    assert record.calls == 5 and record.parse_failures == 2
    assert record.usage.calls == 5 and record.usage.tokens == 7 and record.usage.calls_without_tokens == 4
    assert judge_score(judge_fn, 5) == pytest.approx(2 / 3)
    assert judge_score(lambda s: "no verdict here", 3) == -1.0
    with pytest.raises(ValueError, match="n_j"):
        judge_solution(judge_fn, 0)


# --- hybrid by hand ----------------------------------------------------------------------------------

YES_COUNTS = [1, 3, 3, 0, 2, 3]  # of 4 verdicts, per candidate 0..5


def scripted_judge(candidate, sample):
    return Reply(f"Judgement: {'Yes' if sample < YES_COUNTS[candidate] else 'No'}", 2)


def largest_wins(group):
    return Reply(f"<best_solution>{group.index(max(group)) + 1}</best_solution>", 10)


def no_judge(candidate, sample):
    raise AssertionError("pure GenSelect must not call the judge")


def test_pure_judge_picks_the_first_highest_yes_rate():
    result = hybrid_select(range(6), largest_wins, scripted_judge, n_s=-1, n_j=4)
    assert result.chosen == 1  # candidates 1, 2 and 5 all score 3/4: the first wins
    assert result.scores == {c: y / 4 for c, y in enumerate(YES_COUNTS)}
    assert result.tournament is None and result.games == 0
    assert result.judge_calls == 24 == result.selector_calls
    assert result.usage.tokens == 48


def test_pure_genselect_never_calls_the_judge():
    result = hybrid_select(range(6), largest_wins, no_judge, n_s=1, n_j=4)
    assert result.chosen == 5
    assert result.games == 5 and result.judge_calls == 0
    assert result.usage.tokens == 50


def test_genselect_then_judge():
    result = hybrid_select(range(6), largest_wins, scripted_judge, n_s=3, n_j=4, rng=5)
    finalists = sorted(result.judged)
    assert len(finalists) == 3 and result.games == 3
    assert 5 in finalists  # the largest id never loses a game
    best = max(YES_COUNTS[c] for c in finalists)
    assert result.chosen == next(c for c in finalists if YES_COUNTS[c] == best)
    assert result.judge_calls == 12 and result.selector_calls == 15
    assert result.usage.tokens == 3 * 10 + 12 * 2


def test_judge_then_genselect():
    # scores 1/4, 3/4, 3/4, 0, 2/4, 3/4: the two best in input order are 1 and 2; GenSelect picks between them
    result = hybrid_select(range(6), largest_wins, scripted_judge, n_s=2, n_j=4, order="judge_then_genselect")
    assert result.chosen == 2
    assert result.judge_calls == 24 and result.games == 1
    assert set(result.tournament.games[0].participants) == {1, 2}
    result = hybrid_select(range(6), smallest_wins, scripted_judge, n_s=4, n_j=4, order="judge_then_genselect")
    assert result.chosen == 1 and result.games == 3  # finalists 1, 2, 4, 5


def test_hybrid_edge_cases():
    everything_invalid = hybrid_select([None, None], largest_wins, scripted_judge, n_s=2, n_j=4)
    assert everything_invalid.chosen is None and everything_invalid.selector_calls == 0
    assert everything_invalid.dropped == [0, 1]
    unreadable = hybrid_select(range(4), largest_wins, lambda c, s: "hmm", n_s=-1, n_j=3)
    assert unreadable.chosen == 0 and set(unreadable.scores.values()) == {-1.0}
    assert unreadable.judge_parse_failures == 12
    skipped = hybrid_select([None, 4, 1, None], largest_wins, scripted_judge, n_s=-1, n_j=4)
    assert skipped.chosen == 1 and skipped.dropped == [0, 3]
    with pytest.raises(ValueError, match="order"):
        hybrid_select(range(3), largest_wins, scripted_judge, n_s=2, n_j=1, order="judge_first")
    with pytest.raises(ValueError, match="n_s"):
        hybrid_select(range(3), largest_wins, scripted_judge, n_s=0, n_j=1)
    with pytest.raises(ValueError, match="n_j"):
        hybrid_select(range(3), largest_wins, scripted_judge, n_s=2, n_j=0)
    with pytest.raises(ValueError, match="at least one candidate"):
        hybrid_select([], largest_wins, scripted_judge, n_s=2, n_j=1)
    assert hybrid_select(range(3), largest_wins, no_judge, n_s=1, n_j=0).chosen == 2


# --- simulated oracles (spec B11.2) ------------------------------------------------------------------


def bracket_accuracy(p, q, rounds):
    """P(winner correct) after ``rounds`` pairwise rounds of i.i.d. candidates correct w.p. ``p``.

    A pair's winner is correct if both are (p^2) or exactly one is and the selector prefers it
    (2 p (1 - p) q); winners of disjoint sub-brackets stay independent, so the rule repeats per round.
    """
    for _ in range(rounds):
        p = p * p + 2 * p * (1 - p) * q
    return p


def test_bracket_accuracy_by_hand():
    assert bracket_accuracy(0.3, 0.8, 1) == pytest.approx(0.09 + 0.42 * 0.8)  # 0.426
    assert bracket_accuracy(0.3, 0.5, 3) == pytest.approx(0.3)  # a coin-flip selector keeps the base rate


def test_selectors_on_simulated_oracles():
    # The spec's setting (p=0.3, a=0.8, b=0.2, q=0.8, n_p=64, n_s=8, n_j=8) on 600 problems instead of 2000
    # to stay near 3 s. Expected: random 0.30; pure GenSelect 64 -> 1 in 6 rounds 0.9647 (bracket_accuracy);
    # pure judge and hybrid above 0.99 (a correct candidate almost always gets 8/8 yes, a wrong one ~2.6e-6).
    # With 600 problems the standard error of an accuracy near 0.96 is 0.0076 and of one near 0.99+ below
    # 0.004, so the ordering tolerance of 0.02 is over 2.5 standard errors of the noisiest difference,
    # while the checks against the derived GenSelect values use 4 standard errors.
    p, a, b, q = 0.3, 0.8, 0.2, 0.8
    n_p, n_s, n_j, problems = 64, 8, 8, 600
    rng = random.Random(2024)
    hits = {"hybrid": 0, "judge": 0, "genselect": 0}
    random_choice, finalists_correct = 0.0, 0
    for _ in range(problems):
        sim = simulate_problem(n_p, p_correct=p, yes_if_correct=a, yes_if_wrong=b, prefer_correct=q, rng=rng)
        ids = sim.candidate_ids
        random_choice += sum(sim.correct) / n_p
        hybrid = hybrid_select(ids, sim.compare_fn, sim.judge_fn, n_s=n_s, n_j=n_j, rng=rng)
        assert hybrid.games == n_p - n_s and hybrid.judge_calls == n_s * n_j
        finalists_correct += sum(sim.correct[c] for c in hybrid.judged)
        judge = hybrid_select(ids, sim.compare_fn, sim.judge_fn, n_s=-1, n_j=n_j, rng=rng)
        assert judge.games == 0 and judge.judge_calls == n_p * n_j
        genselect = hybrid_select(ids, sim.compare_fn, sim.judge_fn, n_s=1, n_j=n_j, rng=rng)
        assert genselect.games == n_p - 1 and genselect.judge_calls == 0
        for name, result in (("hybrid", hybrid), ("judge", judge), ("genselect", genselect)):
            hits[name] += sim.correct[result.chosen]
    acc = {name: h / problems for name, h in hits.items()}
    random_choice /= problems

    assert random_choice == pytest.approx(p, abs=0.02)
    assert acc["hybrid"] > random_choice + 0.3
    assert acc["hybrid"] >= acc["judge"] - 0.02
    assert acc["judge"] >= acc["genselect"] - 0.02

    expected = bracket_accuracy(p, q, 6)
    assert expected == pytest.approx(0.9647, abs=1e-4)
    assert acc["genselect"] == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / problems))
    # 64 -> 8 is three rounds: each finalist won a bracket of 8 (0.7195 correct)
    finalist_rate = bracket_accuracy(p, q, 3)
    trials = problems * n_s
    assert finalists_correct / trials == pytest.approx(
        finalist_rate, abs=4 * math.sqrt(finalist_rate * (1 - finalist_rate) / trials)
    )


def test_judge_then_genselect_on_simulated_oracles():
    # the other order on the same setting, 150 problems: the judge's top 8 are nearly all correct
    # (a wrong candidate reaches 8/8 yes with probability 2.6e-6), so the tournament among them is too
    rng = random.Random(7)
    hits = 0
    for _ in range(150):
        sim = simulate_problem(64, p_correct=0.3, yes_if_correct=0.8, yes_if_wrong=0.2, prefer_correct=0.8, rng=rng)
        result = hybrid_select(sim.candidate_ids, sim.compare_fn, sim.judge_fn, n_s=8, n_j=8, rng=rng,
                               order="judge_then_genselect")
        assert result.games == 7 and result.judge_calls == 64 * 8
        hits += sim.correct[result.chosen]
    assert hits / 150 > 0.3 + 0.3


def test_simulated_unreadable_replies_are_counted_and_survived():
    sim = simulate_problem(32, p_correct=0.3, yes_if_correct=0.8, yes_if_wrong=0.2, prefer_correct=0.8,
                           rng=3, p_unreadable=0.5, tokens=4)
    result = hybrid_select(sim.candidate_ids, sim.compare_fn, sim.judge_fn, n_s=4, n_j=6, rng=3)
    assert result.games == 28 and result.judge_calls == 24
    assert 0 < result.failed_comparisons < 28 and 0 < result.judge_parse_failures < 24
    assert result.usage.calls == 52 and result.usage.tokens == 4 * 52
    assert result.chosen in result.judged


def test_simulated_selector_prefers_the_correct_candidate_at_rate_q():
    from rlvr_lab.eval.selection import noisy_judge, noisy_selector

    correct = [True, False]
    selector = noisy_selector(correct, prefer_correct=0.8, rng=0)
    picks = [parse_best_solution(selector((0, 1)).text, 2) for _ in range(4000)]
    assert picks.count(0) / 4000 == pytest.approx(0.8, abs=0.03)  # standard error 0.0063
    judge = noisy_judge(correct, yes_if_correct=0.8, yes_if_wrong=0.2, rng=0)
    assert sum(parse_judgement(judge(1, s).text) for s in range(4000)) / 4000 == pytest.approx(0.2, abs=0.03)
    with pytest.raises(ValueError, match="probability"):
        noisy_selector(correct, prefer_correct=1.5)
