"""Retrieval throughput and the search tool's share of multi-turn rollout time.

1. Retrieval alone, on the synthetic knowledge base's corpus: BM25 (``bm25s``) queries per second,
   one query per call and batched, and the same queries through the HTTP client against a retrieval
   server on loopback (Search-R1's /retrieve shape) running in its own process, as a real service would.
2. Rollouts: the tiny model is warm-started briefly on search demonstrations (so that it issues
   searches), then multi-turn rollouts are timed with each retriever. Printed per retriever: rollout
   wall time, summed tool-call time, their ratio (the tool's share; calls run on worker threads,
   overlapped with decoding), searches per second, and the share of rows that searched.

    OMP_NUM_THREADS=2 python benchmarks/search.py
    python benchmarks/search.py --quick
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import torch

from rlvr_lab.config import load_config
from rlvr_lab.envs.retrievers import BM25Retriever, HttpRetriever, make_retrieval_server
from rlvr_lab.envs.synthetic_kb import generate_kb, write_corpus
from rlvr_lab.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]


def retrieval_rate(retriever, queries: list[str], k: int, batch: int) -> float:
    """Queries per second, ``batch`` queries per call."""
    t0 = time.perf_counter()
    for lo in range(0, len(queries), batch):
        retriever.search(queries[lo : lo + batch], k)
    return len(queries) / (time.perf_counter() - t0)


def serve(corpus: Path, cache_dir: str, port, ready) -> None:
    """The retrieval service, in a child process: BM25 over ``corpus`` behind /retrieve."""
    torch.set_num_threads(1)
    server = make_retrieval_server(BM25Retriever(corpus, cache_dir=cache_dir), port=0)
    port.value = server.server_address[1]
    ready.set()
    server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--sft-steps", type=int, default=150)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.queries, args.sft_steps, args.prompts, args.rounds = 50, 5, 4, 1
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        kb = generate_kb(seed=0)
        corpus = write_corpus(kb, Path(tmp) / "corpus.jsonl")
        queries = [q["question"] for q in kb.questions][: args.queries]
        bm25 = BM25Retriever(corpus, cache_dir=tmp)
        ctx = multiprocessing.get_context("spawn")
        port, ready = ctx.Value("i", 0), ctx.Event()
        service = ctx.Process(target=serve, args=(corpus, tmp, port, ready), daemon=True)
        service.start()
        ready.wait(60)
        http = HttpRetriever(f"http://127.0.0.1:{port.value}")
        try:
            print(f"retrieval on {len(kb.passages)} passages, {len(queries)} queries, top-3 "
                  "(http: the client here, the service in another process)")
            for name, retriever in (("bm25", bm25), ("http (loopback)", http)):
                one = retrieval_rate(retriever, queries, 3, 1)
                many = retrieval_rate(retriever, queries, 3, 64)
                print(f"  {name:<16} {one:>9.0f} queries/s one per call   {many:>9.0f} queries/s 64 per call")

            cfg = load_config(ROOT / "configs" / "search_tiny.yaml", overrides=[
                f"run.output_dir={tmp}", f"run.threads={args.threads}", f"sft.steps={args.sft_steps}",
                "train.steps=0", "eval.enabled=false", "observe.report=false", "observe.tensorboard=false",
                f"train.prompts_per_step={args.prompts}", f"train.group_size={args.group_size}",
            ])
            trainer = Trainer(cfg)
            trainer.setup()
            trainer.warm_start()
            print(f"rollouts: tiny model after {args.sft_steps} warm-start steps, {args.prompts} prompts x "
                  f"{args.group_size}, {args.rounds} round(s) per retriever, {args.threads} thread(s)")
            for name, retriever in (("bm25", bm25), ("http (loopback)", http)):
                trainer.env.retriever = retriever
                wall = tool = searches = searched = rows = 0.0
                for round_ in range(args.rounds):
                    t0 = time.perf_counter()
                    _, _, metrics, _ = trainer.rollout_round(step=1, round_=round_)
                    wall += time.perf_counter() - t0
                    n = args.prompts * args.group_size
                    tool += metrics["search/tool_seconds"]
                    searches += metrics["search/valid_searches_mean"] * n
                    searched += metrics["search/frac_searched"] * n
                    rows += n
                print(f"  {name:<16} rollout {wall:6.2f}s | tool calls {tool:6.3f}s = {100 * tool / wall:5.1f}% of "
                      f"rollout time | {searches / wall:7.1f} searches/s | rows that searched {searched / rows:.2f}")
        finally:
            service.terminate()
            service.join()


if __name__ == "__main__":
    main()
