"""A Search-R1-style ``search`` tool for verl's multi-turn tool agent loop.

Give verl this file's path; verl executes it once per agent-loop worker and registers the tool::

    actor_rollout_ref.rollout.multi_turn.enable=true
    actor_rollout_ref.rollout.multi_turn.function_tool_path=$(python3 -c \\
        "import rlvr_lab.integrations.verl as v, os; print(os.path.join(os.path.dirname(v.__file__), 'search_tool.py'))")
    actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent

The tool asks a retrieval service in Search-R1's request/response shape (Search-R1's
``retrieval_server.py``, or rlvr-lab's ``make_retrieval_server`` over a BM25 corpus) at
``$RLVR_RETRIEVER_URL`` for ``$RLVR_RETRIEVER_TOPK`` passages (default 3) and returns them as
Search-R1 shows them (``Doc 1(Title: ...) ...``). A failed retrieval becomes a fixed "Retrieval
failed" observation and a logged warning, never a crash of the rollout (``envs.retrievers.safe_search``).

Do not import this file as a module: verl loads it by path, and a second import would register the
tool twice (verl refuses that).
"""

from __future__ import annotations

import os

from verl.tools.function_tool import function_tool

from rlvr_lab.envs.retrievers import HttpRetriever, SearchStats, safe_search

RETRIEVER_URL = os.environ.get("RLVR_RETRIEVER_URL", "http://127.0.0.1:8000/retrieve")
TOPK = int(os.environ.get("RLVR_RETRIEVER_TOPK", "3"))
STATS = SearchStats()  # per agent-loop worker; failures are also logged
_retriever = HttpRetriever(RETRIEVER_URL)


@function_tool
def search(query: str) -> str:
    """Search the knowledge corpus (Wikipedia in Search-R1) and return the most relevant passages.

    Args:
        query: What to look up, as a short search-engine query.
    """
    return safe_search(_retriever, [query], TOPK, stats=STATS)[0]
