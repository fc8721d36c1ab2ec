"""What Lastde (and Lastde++) add to the forward pass that reads a text (arXiv 2410.06072).

Every detection score starts from one forward pass of the scoring model over the text and the gather of
the observed tokens' log-probabilities (the token probability sequence, TPS). Lastde then computes its
multiscale diversity entropy on that TPS; Lastde++ also samples ``S`` tokens per position from the same
logits and runs the statistic on each sampled TPS. This benchmark times, per batch of texts from the
shipped detection set (``rlvr_lab/analysis/data/detect_offline.jsonl``, cut to ``--tokens`` tokens):

* ``forward``: the model forward, the log-softmax and the gather (what the log-likelihood baseline needs);
* ``lastde``: the Lastde statistic on each text's TPS;
* ``lastde_pp``: drawing ``--samples`` tokens per position and the Lastde++ statistic.

Each is timed ``--repeats`` times (median reported); the overheads are ratios to ``forward`` in the same
run. Target (the issue's): Lastde adds under 10% to the forward pass.

    OMP_NUM_THREADS=2 python benchmarks/lastde.py --threads 2
    python benchmarks/lastde.py --model tiny --repeats 1 --texts 8   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model here is local; never reach a hub

import torch

from rlvr_lab.analysis.lastde import lastde, lastde_pp_from_logprobs

MODEL_SOURCES = {"tiny": "tiny", "smollm2": "smollm2-135m-instruct"}
TARGET = 0.10
DATA = Path(__file__).resolve().parents[1] / "src" / "rlvr_lab" / "analysis" / "data" / "detect_offline.jsonl"


def batches(tokenizer, n_texts: int, n_tokens: int, batch: int) -> list[torch.Tensor]:
    """``(batch, n_tokens)`` id tensors from the detection set's texts (texts too short are skipped)."""
    rows: list[list[int]] = []
    for line in DATA.read_text().splitlines():
        ids = tokenizer(json.loads(line)["text"]).input_ids
        if len(ids) >= n_tokens:
            rows.append(list(ids[:n_tokens]))
        if len(rows) == n_texts:
            break
    if len(rows) < batch:
        raise SystemExit(f"only {len(rows)} texts of >= {n_tokens} tokens in {DATA}; lower --tokens")
    return [torch.tensor(rows[i:i + batch]) for i in range(0, len(rows) - batch + 1, batch)]


@torch.inference_mode()
def forward(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T-1, V)`` log-probabilities and the ``(B, T-1)`` TPS of the observed tokens."""
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1].float()  # (B, T-1, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs, logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


@torch.inference_mode()
def run_lastde(tps: torch.Tensor) -> None:
    for row in tps:
        lastde(row)  # official defaults s=3, eps_mult=10, tau_max=5


@torch.inference_mode()
def run_lastde_pp(logprobs: torch.Tensor, tps: torch.Tensor, samples: int, generator: torch.Generator) -> None:
    for row_logprobs, row in zip(logprobs, tps):
        drawn = torch.multinomial(row_logprobs.exp(), samples, replacement=True, generator=generator)  # (n, S)
        lastde_pp_from_logprobs(row, row_logprobs.gather(-1, drawn))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="tiny | smollm2 | a local path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=48, help="tokens per text (the shipped texts are short paragraphs)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--samples", type=int, default=100, help="Lastde++ samples per position (official default)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from rlvr_lab.models import load_model_and_tokenizer

    torch.set_num_threads(args.threads)
    loaded = load_model_and_tokenizer(MODEL_SOURCES.get(args.model, args.model))
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    data = batches(tokenizer, args.texts, args.tokens, args.batch)
    outputs = [forward(model, ids) for ids in data]  # warm-up, and the inputs of the statistic timings
    times: dict[str, list[float]] = {"forward": [], "lastde": [], "lastde_pp": []}
    for _ in range(args.repeats):
        times["forward"].append(timed(lambda: [forward(model, ids) for ids in data]))
        times["lastde"].append(timed(lambda: [run_lastde(tps) for _, tps in outputs]))
        generator = torch.Generator().manual_seed(0)
        times["lastde_pp"].append(timed(lambda: [run_lastde_pp(lp, tps, args.samples, generator) for lp, tps in outputs]))
    median = {k: statistics.median(v) for k, v in times.items()}
    n = len(data) * args.batch
    print(f"Lastde overhead, {args.model}: {n} texts x {args.tokens} tokens, batch {args.batch}, {args.threads} thread(s), "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}; median of {args.repeats}")
    print(f"  forward + TPS: {median['forward'] * 1e3 / n:.2f} ms/text")
    for name in ("lastde", "lastde_pp"):
        extra = f" ({args.samples} samples/position)" if name == "lastde_pp" else ""
        print(f"  {name}{extra}: {median[name] * 1e3 / n:.2f} ms/text = {median[name] / median['forward']:.1%} of the forward")
    ratio = median["lastde"] / median["forward"]
    print(f"Lastde overhead {ratio:.1%} (target < {TARGET:.0%}): {'met' if ratio < TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
