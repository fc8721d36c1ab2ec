"""Start-up data hygiene: held-out questions are removed from training, the numbers are reported, and a
training pool below the floor is refused."""

import json

import pytest

from rlvr_lab.config import load_config
from rlvr_lab.train.loop import Trainer

SMALL_SPACE = {  # 1-digit chain_sum with two terms: 200 distinct questions in all
    "model": {"source": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                                         "intermediate_size": 64, "max_position_embeddings": 160}},
    "task": {"name": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
             "train_size": 2000, "eval_size": 200},
    "train": {"steps": 1, "prompts_per_step": 4, "group_size": 2},
    "eval": {"enabled": False}, "observe": {"report": False, "tensorboard": False},
}


def config(tmp_path, **task):
    values = {**SMALL_SPACE, "task": {**SMALL_SPACE["task"], **task}, "run": {"output_dir": str(tmp_path)}}
    return load_config(None, overrides=[f"{k}={json.dumps(v)}" for k, v in values.items()])


def test_a_small_training_pool_is_reported_with_its_numbers(tmp_path):
    trainer = Trainer(config(tmp_path))
    with pytest.warns(UserWarning, match=r"of 2,000 training questions were dropped as duplicates of the 200 held-out"):
        trainer.setup()
    pool = trainer.pool
    assert pool["train_questions"] == 2000 and pool["dropped_as_eval_duplicates"] > 1000
    assert 16 <= pool["distinct_left"] < 200  # what the held-out set did not cover
    assert trainer.summary["distinct_train_questions"] == pool["distinct_left"]
    assert any("distinct training questions" in w for w in trainer.summary["warnings"])


def test_a_pool_below_the_floor_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"fewer than task.min_train_questions=500"):
        Trainer(config(tmp_path, min_train_questions=500)).setup()
