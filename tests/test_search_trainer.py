"""Search-R1-style tool use inside the trainer: LLDS-MA and SPEAR get their tool-use inputs; an HTTP
retrieval service on loopback; retrieval failures do not stop the run."""

import threading
from pathlib import Path

import pytest

from rlvr_lab.config import load_config
from rlvr_lab.envs.retrievers import BM25Retriever, make_retrieval_server
from rlvr_lab.train.loop import Trainer

from test_trainer_run import CONFIGS, read_metrics

SEARCH_FAST = [
    "run.threads=2",
    "model.tiny={hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, intermediate_size: 64, max_position_embeddings: 256}",
    "task.config={n_cities: 40}",
    "task.train_size=50",
    "task.eval_size=8",
    "sft.steps=3",
    "sft.batch_size=4",
    "train.steps=2",
    "train.prompts_per_step=4",
    "train.group_size=4",
    "train.minibatches=2",
    "train.micro_batch_size=8",
    "rollout.max_new_tokens=24",
    "eval.samples=2",
    "eval.k=[1, 2]",
    "observe.probe_prompts=2",
    "observe.probe_every=1",
    "observe.report=false",
]


def run(tmp_path, *extra, presets=()):
    cfg = load_config(CONFIGS / "search_tiny.yaml", presets=list(presets),
                      overrides=SEARCH_FAST + [f"run.output_dir={tmp_path}", *extra])
    summary = Trainer(cfg).run()
    return summary, [r for r in read_metrics(summary["run_dir"]) if r["stage"] == "rl"]


def test_search_run_logs_tool_metrics_and_llds_ma_runs(tmp_path):
    summary, rl = run(tmp_path, presets=["llds_ma"])
    assert summary["status"] == "completed" and set(summary["eval"]) == {"before_rl", "after_rl"}
    for r in rl:
        for key in ("search/turns_mean", "search/valid_searches_mean", "search/invalid_action_rate",
                    "search/tool_time_share", "state_tokens/coverage", "llds/loss"):
            assert key in r, key
        assert 0 < r["state_tokens/coverage"] <= 1
        assert 1 <= r["search/turns_mean"] <= 2  # search.max_turns=1: at most one tool call, then a last turn
    assert (Path(summary["run_dir"]) / "corpus.jsonl").exists()


def test_spear_invalid_action_penalty_and_tool_bonus(tmp_path):
    _, rl = run(tmp_path, "search.invalid_message=bad", "algorithm.spear.replay=null", presets=["spear.yaml"])
    for r in rl:
        assert "spear/toolcall_bonus" in r or any(k.startswith("spear/") for k in r)
        if r["search/invalid_action_rate"] > 0:
            assert r["search/invalid_action_penalty"] > 0


class CountingRetriever:
    def __init__(self, inner):
        self.inner, self.queries = inner, 0

    def search(self, queries, k):
        self.queries += len(queries)
        return self.inner.search(queries, k)


def test_http_retrieval_service_and_an_outage(tmp_path):
    from rlvr_lab.envs.retrievers import RETRIEVAL_FAILED
    from rlvr_lab.envs.synthetic_kb import generate_kb, write_corpus

    corpus = write_corpus(generate_kb(seed=0, n_people=20, n_cities=10, n_companies=5), tmp_path / "corpus.jsonl")
    served = CountingRetriever(BM25Retriever(corpus))
    server = make_retrieval_server(served, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        summary, rl = run(tmp_path / "up", "search.retriever=http", f"search.url={url}", "eval.enabled=false")
        assert summary["status"] == "completed"
        assert served.queries >= 3 * 4  # at least the warm-start demonstrations went through the service
        cfg = load_config(CONFIGS / "search_tiny.yaml", overrides=SEARCH_FAST + [
            f"run.output_dir={tmp_path / 'probe'}", "search.retriever=http", f"search.url={url}"])
        trainer = Trainer(cfg)
        trainer.setup()
        reply = trainer.env.reply("<search>the city</search>")
        assert reply.counts["failed_search"] == 0.0 and "Doc 1(Title:" in reply.observation
    finally:
        server.shutdown()
        server.server_close()
    # the service is gone: a search becomes an observation saying so, counted; the run completes
    reply = trainer.env.reply("<search>the city</search>")
    assert reply.counts["failed_search"] == 1.0 and RETRIEVAL_FAILED in reply.observation
    summary, rl = run(tmp_path / "down", "search.retriever=http", f"search.url={url}", "search.http_retries=0",
                      "search.http_timeout_s=1", "eval.enabled=false", "sft.steps=0")
    assert summary["status"] == "completed"
    n = 4 * 4  # prompts x group size
    for r in rl:  # every executed search failed, and was counted
        assert r["search/failed_searches"] == pytest.approx(r["search/valid_searches_mean"] * n)


def test_bfloat16_multi_turn_rollouts_log_the_gap_on_sampled_tokens_only(tmp_path):
    """rollout.dtype=bfloat16 under multi-turn search: the run completes, and the sampler-vs-trainer gap
    is measured on the model's own tokens (forced observations carry no sampler log-prob)."""
    summary, rl = run(tmp_path, "rollout.dtype=bfloat16", "eval.enabled=false")
    assert summary["status"] == "completed" and summary["rollout_dtype"] == "bfloat16"
    assert all(0 < r["rollout/sampler_logp_gap"] < 0.1 for r in rl), [r["rollout/sampler_logp_gap"] for r in rl]
    assert any(r["state_tokens/coverage"] < 1 for r in rl)  # observations were forced into the responses
