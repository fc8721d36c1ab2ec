"""The Search-R1-style tool shipped for verl's tool agent loop, loaded the way verl loads it."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
import torch

pytest.importorskip("verl", reason="verl is installed only in the scale-out venv (make test-scale)")

from verl.tools.function_tool import load_function_tools_from_path  # noqa: E402

import rlvr_lab.integrations.verl as verl_integration  # noqa: E402
from rlvr_lab.envs.retrievers import Passage, make_retrieval_server  # noqa: E402

torch.set_num_threads(1)
TOOL = os.path.join(os.path.dirname(verl_integration.__file__), "search_tool.py")


class OneFact:
    def search(self, queries, k):
        return [[Passage(id="7", title="Paris", text="Paris is the capital of France.", score=1.0)] for _ in queries]


def test_search_tool_answers_through_a_search_r1_shaped_service(monkeypatch):
    server = make_retrieval_server(OneFact(), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("RLVR_RETRIEVER_URL", f"http://127.0.0.1:{server.server_address[1]}/retrieve")
        (tool,) = load_function_tools_from_path(TOOL)  # what verl's agent-loop worker does
        assert tool.name == "search"
        assert list(tool.tool_schema.function.parameters.properties) == ["query"]
        out = asyncio.run(tool.call({"query": "capital of France"}))
    finally:
        server.shutdown()
        server.server_close()
    assert out == "Doc 1(Title: Paris) Paris is the capital of France.\n"
