"""The smallest run config the lab tests train: about 3 s per cell on one thread plus the process start
(no warm-start, no eval, 2 steps of 2 prompts x 2 responses)."""

TINY = {
    "extends": "grpo",
    "model": {"source": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                                         "intermediate_size": 64, "max_position_embeddings": 160}},
    "task": {"name": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
             "train_size": 50, "eval_size": 8},
    "rollout": {"max_new_tokens": 8},
    "sft": {"steps": 0},
    "train": {"steps": 2, "prompts_per_step": 2, "group_size": 2, "micro_batch_size": 4},
    "eval": {"enabled": False},
    "observe": {"report": False},
}
