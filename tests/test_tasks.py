"""reasoning-gym task sources: determinism, train/eval splits, contamination counts, config errors."""

from __future__ import annotations

import pytest

from rlvr_lab.envs import ReasoningGymTask, overlap, split_train_eval


def test_examples_are_plain_dicts_fixed_by_seed():
    task = ReasoningGymTask("chain_sum", seed=7, size=20)
    again = ReasoningGymTask("chain_sum", seed=7, size=20)
    other = ReasoningGymTask("chain_sum", seed=7_000, size=20)
    assert len(task) == 20
    assert set(task[0]) == {"question", "answer", "metadata"}
    assert isinstance(task[0]["answer"], str)
    assert task.examples(20) == again.examples(20)
    assert task.questions() != other.questions()


def test_indexing_and_wrapping():
    task = ReasoningGymTask("chain_sum", seed=0, size=5)
    assert task[-1] == task[4]
    with pytest.raises(IndexError):
        task[5]
    batch = task.examples(4, offset=3)
    assert [e["metadata"]["source_index"] for e in batch] == [3, 4, 0, 1]


def test_config_reaches_the_generator():
    task = ReasoningGymTask("chain_sum", seed=0, size=10, config={"min_terms": 2, "max_terms": 2})
    assert all(e["metadata"]["num_terms"] == 2 for e in task.examples(10))


def test_split_sizes_and_held_out_sample():
    train, held_out = split_train_eval("chain_sum", config={}, train_size=300, eval_size=60, seed=1)
    assert (len(train), len(held_out)) == (300, 60)
    assert held_out.seed != train.seed
    # Only chance duplicates (small sums repeat); a shifted copy of the train set would give ~60.
    assert overlap(train, held_out) < 6
    again = split_train_eval("chain_sum", config={}, train_size=300, eval_size=60, seed=1)
    assert [t.questions() for t in again] == [train.questions(), held_out.questions()]


def test_adjacent_seeds_share_items_which_is_why_the_split_offsets_seeds():
    # reasoning-gym seeds item i with seed + i, so seed 1 is seed 0 shifted by one item.
    a = ReasoningGymTask("chain_sum", seed=0, size=50)
    b = ReasoningGymTask("chain_sum", seed=1, size=50)
    assert overlap(a, b) >= 49
    assert overlap(a, a) == 50


def test_task_verifier_scores_its_own_examples():
    task = ReasoningGymTask("chain_sum", seed=0, size=3)
    verify = task.verifier()
    assert all(verify(f"<answer>{e['answer']}</answer>", e).correct for e in task.examples(3))


def test_unknown_task_names_close_matches():
    with pytest.raises(ValueError, match="chain_sum"):
        ReasoningGymTask("chainsum", seed=0, size=4)


def test_unknown_config_field_lists_valid_fields():
    with pytest.raises(ValueError, match=r"\['min_term'\].*min_terms, max_terms"):
        ReasoningGymTask("chain_sum", seed=0, size=4, config={"min_term": 3})


def test_seed_and_size_are_not_config_fields():
    with pytest.raises(ValueError, match="seed"):
        ReasoningGymTask("chain_sum", seed=0, size=4, config={"seed": 3})


def test_rejected_config_value_names_the_task():
    with pytest.raises(ValueError, match="'chain_sum'.*max_terms must be >= min_terms"):
        ReasoningGymTask("chain_sum", seed=0, size=4, config={"min_terms": 5, "max_terms": 2})


@pytest.mark.parametrize(("seed", "size"), [(None, 4), (0, 0), (0, 2.5)])
def test_seed_and_size_are_checked(seed, size):
    with pytest.raises(ValueError):
        ReasoningGymTask("chain_sum", seed=seed, size=size)
