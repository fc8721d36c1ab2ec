"""Facts in a statistical stream (arXiv 2510.16096): generator invariants, recall and KL metrics on hand-built
inputs, the testbed contract, and the claim that higher diversity delays in-distribution recall."""

import math

import numpy as np
import pytest
import torch
from testbed_contract import check_verdict_and_figures, contract_runs

from rlvr_lab.testbeds import fact_streams as tb

TINY = {"n_facts": 16, "diversities": [1, 3], "steps": 4, "log_every": 2, "eval_size": 32, "width": 16, "heads": 2}


def world(structure="sep", **overrides):
    return tb.build_world({**tb.DEFAULTS, "structure": structure, **overrides}, np.random.default_rng(0))


@pytest.mark.parametrize("structure", ["adj", "sep"])
def test_facts_sit_at_the_declared_slots(structure):
    w = world(structure)
    rng = np.random.default_rng(1)
    facts = rng.integers(w.n_facts, size=500)
    templates = rng.integers(w.n_templates, size=500)
    x = tb.sample_sequences(w, facts, templates, rng)
    rows = np.arange(500)
    assert np.array_equal(x[rows, w.slots[templates]], w.n_generic + facts)
    target_pos = w.slots[templates] + 1 if structure == "adj" else np.full(500, w.seq_len - 1)
    assert np.array_equal(x[rows, target_pos], w.n_generic + w.n_facts + w.fact_target[facts])
    assert np.array_equal(w.query_position(templates), target_pos - 1)
    # every other position holds a generic token
    others = np.ones_like(x, dtype=bool)
    others[rows, w.slots[templates]] = False
    others[rows, target_pos] = False
    assert (x[others] < w.n_generic).all()
    assert list(w.slots) == [2, 5, 8, 11]


def test_template_rows_are_distributions_and_the_chain_follows_them():
    w = world()
    assert np.allclose(w.transitions.sum(-1), 1.0) and (w.transitions >= 0).all()
    perm = np.roll(np.eye(4), 1, axis=1)[None]  # deterministic chain a -> a + 1 (mod 4)
    path = tb.sample_chain(perm, np.zeros(3, dtype=int), 9, np.random.default_rng(0))
    assert np.array_equal(path[:, 1:], (path[:, :-1] + 1) % 4)


def test_diversity_assignment_and_training_never_show_ood_templates():
    w = world()
    rng = np.random.default_rng(2)
    for d in (1, 2, 3):
        train = tb.assign_diversity(w, d, rng)
        assert (train.sum(1) == d).all()
        x, facts, templates = tb.sample_train_batch(w, train, 10_000, rng)
        assert train[facts, templates].all()
        # the template of a sequence is readable from where its source sits
        source_pos = np.argmax(x >= w.n_generic, axis=1)
        assert np.array_equal(source_pos, w.slots[templates])
    per_fact = np.arange(w.n_facts) % 3 + 1  # the "mixed" design: a level per fact
    train = tb.assign_diversity(w, per_fact, rng)
    assert np.array_equal(train.sum(1), per_fact)
    assert train.any(0).all()  # every template is somebody's training template
    with pytest.raises(ValueError):
        tb.assign_diversity(w, 5, rng)


def test_id_and_ood_eval_sets_are_disjoint():
    w = world()
    rng = np.random.default_rng(3)
    train = tb.assign_diversity(w, 2, rng)
    ids, ood = tb.eval_set(w, train, "id", 2000, rng), tb.eval_set(w, train, "ood", 2000, rng)
    assert train[ids.facts, ids.templates].all() and not train[ood.facts, ood.templates].any()
    assert not {*zip(ids.facts, ids.templates)} & {*zip(ood.facts, ood.templates)}
    assert tb.eval_set(w, tb.assign_diversity(w, 4, rng), "ood", 10, rng) is None
    group = np.arange(0, w.n_facts, 2)
    assert np.isin(tb.eval_set(w, train, "ood", 200, rng, facts=group).facts, group).all()


class Oracle(torch.nn.Module):
    """Puts all mass on a chosen token at every position (or on the true template row, for the KL)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, tokens):
        return self.logits(tokens)


def test_factual_recall_hand_cases():
    w = world()
    rng = np.random.default_rng(4)
    train = tb.assign_diversity(w, 1, rng)
    data = tb.eval_set(w, train, "id", 64, rng)

    def shifted(tokens):  # predict the next token of the (known) sequence: a perfect model
        nxt = torch.roll(tokens, -1, dims=1)
        return torch.nn.functional.one_hot(nxt, w.vocab_size).float()

    def constant(tokens):
        out = torch.zeros(*tokens.shape, w.vocab_size)
        out[..., 0] = 1.0
        return out

    x = torch.from_numpy(data.x)
    assert tb.factual_recall(Oracle(lambda t: shifted(x)), data) == 1.0
    assert tb.factual_recall(Oracle(constant), data) == 0.0


def test_chain_positions_hand_case():
    w = world("sep")
    keep = tb.chain_positions(w, np.array([3]))  # source at 11, target at 15
    assert np.flatnonzero(keep[0]).tolist() == [12, 13]  # 12 -> 13 and 13 -> 14; 14 -> 15 is the target
    w = world("adj")
    keep = tb.chain_positions(w, np.array([0]))  # source at 2, target at 3
    assert np.flatnonzero(keep[0]).tolist() == list(range(4, 15))


def test_statistical_kl_is_zero_for_the_true_rows():
    w = world("adj")
    rng = np.random.default_rng(5)
    data = tb.eval_set(w, tb.assign_diversity(w, 2, rng), "id", 50, rng)

    def true_rows(tokens):
        out = torch.full((*tokens.shape, w.vocab_size), -1e9, dtype=torch.float64)
        rows = torch.from_numpy(w.transitions[data.templates[:, None], np.clip(data.x, 0, w.n_generic - 1)])
        out[..., : w.n_generic] = torch.log(rows.clamp_min(1e-300))
        return out

    assert tb.statistical_kl(Oracle(true_rows), w, data) == pytest.approx(0.0, abs=1e-9)
    uniform = tb.statistical_kl(Oracle(lambda t: torch.zeros(*t.shape, w.vocab_size)), w, data)
    assert uniform > 0.5


def test_steps_to_level_interpolates():
    assert tb.steps_to_level([0, 50, 100], [0.0, 0.6, 1.0], 0.8) == pytest.approx(75.0)
    assert tb.steps_to_level([0, 50], [0.9, 1.0], 0.8) == 0.0
    assert math.isnan(tb.steps_to_level([0, 50], [0.1, 0.2], 0.8))


@pytest.mark.parametrize("design", ["mixed", "separate"])
def test_designs_give_one_curve_per_level(design):
    result = tb.run({**TINY, "design": design}, 0)
    levels = [r["diversity"] for r in result["history"]]
    assert levels == [1, 1, 1, 3, 3, 3]
    assert {"claim_step", "id_recall@claim_step/D=3", "steps_to_id0.8/D=1", "stat_kl/D=1"} <= set(result["final"])


def test_contract():
    results = contract_runs(tb, "2510.16096", TINY)
    for result in results:
        assert [(r["diversity"], r["step"]) for r in result["history"]] == [(d, s) for d in (1, 3) for s in (0, 2, 4)]
        assert all(isinstance(v, float) for v in result["final"].values())
    check_verdict_and_figures(tb, results, TINY)


def _fake(curves: dict[int, list[float]]) -> dict:
    records = {d: [{"step": 50 * i, "id_recall": v, "ood_recall": v} for i, v in enumerate(values)]
               for d, values in curves.items()}
    params = {**tb.DEFAULTS, "diversities": list(curves)}
    return {"history": [{**r, "diversity": d} for d, rs in records.items() for r in rs],
            "final": tb.summarise(records, params)}


def test_claim_reads_the_gap_where_low_diversity_gets_there():
    params = {"diversities": [1, 3]}
    delayed = _fake({1: [0.0, 0.4, 1.0, 1.0], 3: [0.0, 0.2, 0.4, 0.9]})
    assert delayed["final"]["claim_step"] == pytest.approx(83.333333)  # 0.4 -> 1.0 over steps 50..100 crosses 0.8
    assert delayed["final"]["id_recall@claim_step/D=3"] == pytest.approx(0.2 + 0.2 * 2 / 3)
    verdict = tb.claim([delayed, delayed], params)
    assert verdict["holds"] and verdict["measured"] == pytest.approx(0.8 - 1 / 3)
    together = _fake({1: [0.0, 0.4, 1.0, 1.0], 3: [0.0, 0.4, 0.9, 1.0]})
    assert not tb.claim([together, together], params)["holds"]
    never = _fake({1: [0.0, 0.1, 0.2, 0.3], 3: [0.0, 0.1, 0.1, 0.1]})
    assert never["final"]["claim_step"] == 150.0 and math.isnan(never["final"]["steps_to_id0.8/D=1"])


@pytest.mark.slow
def test_claim_small_diversity_delays_id_recall():
    """Spec A3.3 margin: when ID recall at D=1 reaches 0.8, ID recall at D=3 trails it by more than 0.2.

    One seed, seed 0, at the reduced size. Over 8 seeds at full size the gap is 0.293 [0.107, 0.480]
    (README, experiments/measurements/testbed_fact_streams_8seeds.json): its sign is established, the 0.2
    margin is not, and seeds 1, 2 and 6 fall short of it. So this test checks that seed 0 still shows the
    delay at the margin (a change that removes the delay fails it); it is not evidence for the margin."""
    results = [tb.run(tb.SMALL, 0)]
    verdict = tb.claim(results, tb.SMALL)
    assert verdict["holds"], verdict
