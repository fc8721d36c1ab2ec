"""Task sources and environments that produce examples for rollouts and score responses."""

from rlvr_lab.envs.qa_data import load_qa_dataset
from rlvr_lab.envs.retrievers import (
    BM25Retriever,
    HttpRetriever,
    Passage,
    RetrievalError,
    Retriever,
    SearchStats,
    format_passages,
    information_observation,
    load_corpus,
    make_retrieval_server,
    safe_search,
)
from rlvr_lab.envs.single_turn import SingleTurnEnv, task_rubric
from rlvr_lab.envs.synthetic_kb import SyntheticKB, generate_kb, write_corpus, write_questions
from rlvr_lab.envs.tasks import ReasoningGymTask, overlap, split_train_eval

__all__ = [
    "BM25Retriever",
    "HttpRetriever",
    "Passage",
    "ReasoningGymTask",
    "RetrievalError",
    "Retriever",
    "SearchStats",
    "SingleTurnEnv",
    "SyntheticKB",
    "format_passages",
    "generate_kb",
    "information_observation",
    "load_corpus",
    "load_qa_dataset",
    "make_retrieval_server",
    "overlap",
    "safe_search",
    "split_train_eval",
    "task_rubric",
    "write_corpus",
    "write_questions",
]
