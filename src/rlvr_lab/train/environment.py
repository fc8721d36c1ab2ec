"""From the config to the trainer's tasks and environment (single-turn or search)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlvr_lab.config import Config
from rlvr_lab.envs import SingleTurnEnv, split_train_eval, task_rubric
from rlvr_lab.envs.tasks import qa_file_tasks, synthetic_kb_tasks


def build_tasks(cfg: Config, run_dir: Path) -> tuple[Any, Any, str | None]:
    """(train task, held-out task, corpus path or None). A synthetic knowledge base writes its passages
    to ``RUN_DIR/corpus.jsonl`` for the retriever."""
    t = cfg.task
    if t.kind == "reasoning_gym":
        train, held_out = split_train_eval(t.name, config=t.config, train_size=t.train_size,
                                           eval_size=t.eval_size, seed=t.seed)
        return train, held_out, cfg.search.corpus
    if t.kind == "qa":
        train, held_out = qa_file_tasks(t.train_path, t.eval_path, train_size=t.train_size,
                                        eval_size=t.eval_size, reward=t.qa_reward)
        return train, held_out, cfg.search.corpus
    train, held_out, passages = synthetic_kb_tasks(t.config, seed=t.seed, train_size=t.train_size,
                                                   eval_size=t.eval_size, reward=t.qa_reward)
    corpus = cfg.search.corpus
    if corpus is None:
        path = run_dir / "corpus.jsonl"
        path.write_text("".join(json.dumps(p) + "\n" for p in passages))
        corpus = str(path)
    return train, held_out, corpus


def build_env(cfg: Config, tokenizer, train_task, corpus: str | None):
    """The rollout environment: a single response per prompt, or Search-R1-style search turns."""
    t, s = cfg.task, cfg.search
    verifier = task_rubric(train_task.verifier(fallback=t.answer_fallback, partial_credit=t.partial_credit),
                           format_weight=t.format_weight)
    common = dict(tokenizer=tokenizer, verifier=verifier, system_prompt=cfg.model.system_prompt,
                  use_chat_template=cfg.model.use_chat_template, timeout_s=t.verifier_timeout_s,
                  isolation=t.verifier_isolation)
    if not s.enabled:
        return SingleTurnEnv(instruction=t.instruction, **common)
    from rlvr_lab.envs.search import INVALID_ACTION, SEARCH_INSTRUCTION, SearchEnv

    return SearchEnv(
        retriever=build_retriever(cfg, corpus), top_k=s.top_k, max_turns=s.max_turns, max_obs_tokens=s.max_obs_tokens,
        instruction=SEARCH_INSTRUCTION if s.instruction is None else s.instruction,
        invalid_message=INVALID_ACTION if s.invalid_message is None else s.invalid_message, **common,
    )


def build_retriever(cfg: Config, corpus: str | None):
    from rlvr_lab.envs.retrievers import BM25Retriever, HttpRetriever

    s = cfg.search
    if s.retriever == "http":
        return HttpRetriever(s.url, timeout_s=s.http_timeout_s, retries=s.http_retries)
    if corpus is None:
        raise ValueError("search with the bm25 retriever needs search.corpus")
    return BM25Retriever(corpus, cache_dir=s.index_cache)
