"""Rollout throughput: ``RolloutEngine`` against transformers' ``model.generate`` on the same prompts.

Both sides sample at temperature 1 with no top-k or top-p filter and ignore end-of-sequence, so every
run produces exactly ``batch * new_tokens`` tokens; each run counts the tokens it actually produced
and stops the benchmark if the count is off. Each side is warmed up once, then timed ``--repeats``
times, alternating which goes first so that both share the machine's noise; the median time gives
tokens per second. The reported ratio is the median of the per-repeat ratios (each from an engine run
and a generate run back to back), which bursts of machine noise move less than a ratio of medians.

    OMP_NUM_THREADS=2 python benchmarks/rollout.py   # tiny model and SmolLM2-135M, 32 prompts x 128 tokens
    python benchmarks/rollout.py --decode-dtype bfloat16   # the engine decoding the float32 models in bf16
    python benchmarks/rollout.py --quick             # smoke run: tiny model, 4 prompts x 8 tokens, 1 repeat

Targets (engine tok/s over generate tok/s, at the full size): >= 3x on the tiny model, >= 2.5x on
SmolLM2-135M. At the ``--quick`` size per-call overhead dominates, so its verdicts say little.

``--decode-dtype bfloat16`` runs the engine on bfloat16 copies of the float32 model's weights (the
trainer's ``rollout.dtype=bfloat16``) while ``generate`` keeps the model as it is, which is the choice a
user of a float32 policy has. The price is measured too: the mean absolute gap, per sampled token,
between the log-prob the bf16 sampler reported and the float32 model's own re-score of that token.

The physical limit: the engine's decode steps are also counted in useful FLOPs (2 per weight of every
linear layer, the output layer included, per token, plus 4 x layers x attention width x context length
for the attention scores and the weighted sum) and divided by their measured time. That rate is printed
as a fraction of the machine's matmul rate measured in the same run, with the same threads and the
decode's precision (a square ``torch.mm`` of ``MATMUL_N``, median of ``MATMUL_REPEATS``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model here is local; never reach a hub

import torch
import transformers

from machine import MATMUL_N, flop_shape, matmul_flop_rate  # benchmarks/machine.py, beside this script
from rlvr_lab.models import load_model_and_tokenizer, render_prompt
from rlvr_lab.rollout.engine import RolloutEngine, eos_token_ids
from rlvr_lab.rollout.sampling import SamplingParams

MODEL_SOURCES = {"tiny": "tiny", "smollm2": "smollm2-135m-instruct"}
TARGETS = {"tiny": 3.0, "smollm2": 2.5}  # required engine / generate throughput ratio at the full size
QUICK = {"batch": 4, "new_tokens": 8, "repeats": 1, "models": ["tiny"]}
# timed runs per side when --repeats is not given: the tiny model's runs take well under a second each
DEFAULT_REPEATS = {"tiny": 9, "smollm2": 3}


@dataclass
class Run:
    seconds: float
    tokens: int  # new tokens actually produced


@dataclass
class TimeSplit:
    """Where one engine run spends its time (seconds)."""

    backend: str
    total: float
    prefill: float
    decode: float  # decode-step forwards, lm_head included
    lm_head: float | None  # the vocabulary projection inside decode steps (native backend only)
    other: float  # sampling, stop checks, batch compaction, output assembly
    decode_steps: int  # decode-step calls in the run


def decode_flops(model, prompt_lengths: Sequence[int], steps: int) -> float:
    """Useful FLOPs of ``steps`` decode steps for prompts of these lengths: per row and step, 2 per linear
    weight (projections, MLP, output layer) and 4 x layers x attention width x the attended context."""
    shape = flop_shape(model)
    total = 0.0
    for length in prompt_lengths:
        for t in range(steps):  # step t feeds new token t+1 at position length + t: it attends to length + t + 1
            total += 2 * shape.linear_weights + 4 * shape.attention * (length + t + 1)
    return total


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def arithmetic_questions(n: int, seed: int) -> list[str]:
    """``n`` chain-sum questions of 2 to 12 terms (cycling), so the prompt lengths vary about threefold."""
    rng = random.Random(seed)
    questions = []
    for i in range(n):
        n_terms = 2 + (i * 5) % 11
        terms = [str(rng.randint(1, 10 ** rng.randint(1, 4) - 1)) for _ in range(n_terms)]
        questions.append(f"What is {' + '.join(terms)}? Put the final number in <answer></answer> tags.")
    return questions


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(B, Lp)`` ids and attention mask, the batch layout ``generate`` expects."""
    lp = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), lp), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), lp, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, lp - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[i, lp - len(p) :] = 1
    return ids, mask


def produced_tokens(new_ids: torch.Tensor, eos_ids: Sequence[int]) -> int:
    """Tokens ``generate`` produced in ``new_ids`` (B, T): each row up to and including its first EOS
    (``generate`` fills a finished row with padding after it)."""
    is_eos = torch.isin(new_ids, torch.tensor(list(eos_ids), dtype=torch.long)).long()
    after_eos = (is_eos.cumsum(-1) - is_eos) > 0  # (B, T), strictly after the first EOS of the row
    return int((~after_eos).sum())


def engine_ignoring_eos(model, tokenizer, dtype: torch.dtype | None = None) -> RolloutEngine:
    engine = RolloutEngine(model, tokenizer, dtype=dtype)
    # generate() builds its stop checker from this list on every call; with no EOS ids and no stop
    # strings every row runs to max_new_tokens and samples from the full distribution.
    engine.eos_ids = []
    return engine


def sampling_params(new_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens, stop_strings=())


def run_engine(engine: RolloutEngine, prompt_ids: list[list[int]], new_tokens: int, seed: int) -> Run:
    params = sampling_params(new_tokens)
    start = time.perf_counter()
    gen = engine.generate(prompt_ids, params, seed=seed)
    seconds = time.perf_counter() - start
    return Run(seconds, int(gen.response_mask.sum()))


def run_generate(model, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int, seed: int, eos: list[int]) -> Run:
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.inference_mode():
        # top_k=0 switches off the top-k warper that generate would otherwise take from its defaults;
        # min_new_tokens masks the EOS logits until new_tokens are out, so no row stops early.
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
        )
    seconds = time.perf_counter() - start
    return Run(seconds, produced_tokens(out[:, ids.shape[1] :], eos))


def sampler_logp_gap(engine: RolloutEngine, model, prompt_ids: list[list[int]], new_tokens: int, seed: int) -> float:
    """Mean |sampler log-prob - the model's own (float32) log-prob| over the tokens of one engine run."""
    gen = engine.generate(prompt_ids, sampling_params(new_tokens), seed=seed)
    ids = torch.cat([gen.prompt_ids, gen.response_ids], dim=1)
    mask = torch.cat([gen.prompt_mask, gen.response_mask], dim=1).long()
    lp = gen.prompt_ids.shape[1]
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
    logp = torch.log_softmax(logits[:, lp - 1 : -1].float(), dim=-1).gather(-1, gen.response_ids.unsqueeze(-1)).squeeze(-1)
    return float((gen.sampler_logprobs - logp).abs()[gen.response_mask].mean())


def checked(run: Run, expected: int, who: str) -> Run:
    if run.tokens != expected:
        raise RuntimeError(f"{who} produced {run.tokens} new tokens, expected {expected}: rates would not compare")
    return run


def time_split(engine: RolloutEngine, prompt_ids: list[list[int]], new_tokens: int, seed: int) -> TimeSplit:
    """One extra, untimed engine run with the decoder's prefill, step (and lm_head) calls clocked."""
    decoder = engine.decoder
    spent = {"prefill": 0.0, "decode": 0.0, "lm_head": 0.0}
    calls = {"prefill": 0, "decode": 0, "lm_head": 0}
    phase = [None]  # the clocked call in progress; lm_head is counted only inside decode steps

    def clocked(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            outer, phase[0] = phase[0], name
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phase[0] = outer
                if name != "lm_head" or outer == "decode":
                    spent[name] += time.perf_counter() - start
                    calls[name] += 1

        return wrapper

    has_lm_head = engine.backend == "native"
    # Instance attributes shadow the methods for this run only; they are removed afterwards.
    decoder.prefill = clocked("prefill", decoder.prefill)
    decoder.step = clocked("decode", decoder.step)
    if has_lm_head:
        decoder.logits = clocked("lm_head", decoder.logits)
    try:
        total = run_engine(engine, prompt_ids, new_tokens, seed).seconds
    finally:
        del decoder.prefill, decoder.step
        if has_lm_head:
            del decoder.logits
    return TimeSplit(
        backend=engine.backend,
        total=total,
        prefill=spent["prefill"],
        decode=spent["decode"],
        lm_head=spent["lm_head"] if has_lm_head else None,
        other=total - spent["prefill"] - spent["decode"],
        decode_steps=calls["decode"],
    )


def bench_model(name: str, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    loaded = load_model_and_tokenizer(MODEL_SOURCES[name])
    model, tokenizer = loaded.model, loaded.tokenizer
    log(f"[{name}] loaded in {time.perf_counter() - start:.1f}s")

    model_dtype = next(model.parameters()).dtype
    dtype = model_dtype if args.decode_dtype == "model" else getattr(torch, args.decode_dtype)
    engine = engine_ignoring_eos(model, tokenizer, dtype)
    eos = eos_token_ids(model, tokenizer)
    prompt_ids = engine.encode([render_prompt(tokenizer, q) for q in arithmetic_questions(args.batch, args.seed)])
    ids, mask = left_pad(prompt_ids, engine.pad_id)
    expected = args.batch * args.new_tokens

    def engine_once(seed: int) -> Run:
        return checked(run_engine(engine, prompt_ids, args.new_tokens, seed), expected, "RolloutEngine")

    def generate_once(seed: int) -> Run:
        return checked(run_generate(model, ids, mask, args.new_tokens, seed, eos), expected, "model.generate")

    engine_once(args.seed)
    generate_once(args.seed)
    engine_runs: list[Run] = []
    generate_runs: list[Run] = []
    repeats = args.repeats or DEFAULT_REPEATS[name]
    for r in range(repeats):
        seed = args.seed + 1 + r
        if r % 2 == 0:
            engine_runs.append(engine_once(seed))
            generate_runs.append(generate_once(seed))
        else:
            generate_runs.append(generate_once(seed))
            engine_runs.append(engine_once(seed))
        log(f"[{name}] repeat {r + 1}/{repeats}: engine {engine_runs[-1].seconds:.3f}s, "
            f"generate {generate_runs[-1].seconds:.3f}s")

    engine_s = statistics.median(run.seconds for run in engine_runs)
    generate_s = statistics.median(run.seconds for run in generate_runs)
    engine_rate, generate_rate = expected / engine_s, expected / generate_s
    ratio = statistics.median(g.seconds / e.seconds for e, g in zip(engine_runs, generate_runs))
    lengths = [len(p) for p in prompt_ids]
    split = time_split(engine, prompt_ids, args.new_tokens, args.seed)
    decode_rate = decode_flops(model, lengths, split.decode_steps) / split.decode
    matmul_rate = matmul_flop_rate(dtype)
    gap = None if dtype == model_dtype else sampler_logp_gap(engine, model, prompt_ids, args.new_tokens, args.seed)
    return {
        "model": name,
        "source": MODEL_SOURCES[name],
        "backend": engine.backend,
        "prompt_tokens_min": min(lengths),
        "prompt_tokens_max": max(lengths),
        "new_tokens_per_run": expected,
        "repeats": repeats,
        "engine_seconds": [run.seconds for run in engine_runs],
        "generate_seconds": [run.seconds for run in generate_runs],
        "engine_tok_s": engine_rate,
        "generate_tok_s": generate_rate,
        "ratio": ratio,
        "target": TARGETS[name],
        "passed": ratio >= TARGETS[name],
        "time_split": asdict(split),
        "dtype": str(dtype).removeprefix("torch."),  # the decode's
        "model_dtype": str(model_dtype).removeprefix("torch."),
        "sampler_logp_gap": gap,
        "decode_flop_s": decode_rate,
        "matmul_flop_s": matmul_rate,
        "decode_fraction_of_matmul": decode_rate / matmul_rate,
    }


def print_report(results: list[dict], args: argparse.Namespace) -> None:
    repeats = "/".join(f"{r['model']} {r['repeats']}" for r in results)
    print(f"rollout throughput: {args.batch} prompts x {args.new_tokens} new tokens, medians of runs ({repeats}), "
          f"{args.threads} thread(s), torch {torch.__version__}, transformers {transformers.__version__}")
    header = (f"{'model':<9}{'backend':<9}{'decode':>9}{'prompt len':>12}{'engine tok/s':>14}{'generate tok/s':>16}"
              f"{'ratio':>8}{'target':>9}  verdict")
    print(header)
    print("-" * len(header))
    for r in results:
        prompt_len = f"{r['prompt_tokens_min']}-{r['prompt_tokens_max']}"
        print(f"{r['model']:<9}{r['backend']:<9}{r['dtype']:>9}{prompt_len:>12}{r['engine_tok_s']:>14.1f}{r['generate_tok_s']:>16.1f}"
              f"{r['ratio']:>7.2f}x{'>=' + format(r['target'], '.1f') + 'x':>9}  {'PASS' if r['passed'] else 'FAIL'}")
    if args.quick:
        print("(--quick: the targets are set for the full size; these verdicts are a smoke check only)")
    print()
    for r in results:
        s = r["time_split"]
        parts = [f"prefill {s['prefill'] * 1e3:.1f} ms ({s['prefill'] / s['total']:.0%})",
                 f"decode steps {s['decode'] * 1e3:.1f} ms ({s['decode'] / s['total']:.0%})"]
        if s["lm_head"] is not None:
            parts[-1] += f", of which lm_head {s['lm_head'] * 1e3:.1f} ms"
        parts.append(f"sampling and bookkeeping {s['other'] * 1e3:.1f} ms ({s['other'] / s['total']:.0%})")
        head = f"{r['model']} engine time split ({s['backend']}, one run, {s['total'] * 1e3:.1f} ms)"
        print(f"{head}: " + "; ".join(parts))
    print()
    for r in results:
        print(f"{r['model']} decode steps: {r['decode_flop_s'] / 1e9:.1f} GFLOP/s useful, "
              f"{r['decode_fraction_of_matmul']:.0%} of this machine's {r['dtype']} matmul rate "
              f"({r['matmul_flop_s'] / 1e9:.1f} GFLOP/s, {MATMUL_N}x{MATMUL_N}, same threads, this run)")
    for r in results:
        if r["sampler_logp_gap"] is not None:
            print(f"{r['model']}: the engine decodes the {r['model_dtype']} model in {r['dtype']} (generate runs in "
                  f"{r['model_dtype']}); sampler log-prob vs the {r['model_dtype']} model's re-score: mean "
                  f"|gap| {r['sampler_logp_gap']:.4f} nats per token")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 4, 8 new tokens, 1 repeat, tiny model only (overrides those flags)")
    parser.add_argument("--models", default="tiny,smollm2", help=f"comma-separated, from {sorted(MODEL_SOURCES)}")
    parser.add_argument("--batch", type=int, default=32, help="prompts per generation call")
    parser.add_argument("--new-tokens", type=int, default=128, help="new tokens per prompt (EOS is ignored)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed runs per side (default per model: {DEFAULT_REPEATS}); medians are reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts and of the sampling")
    parser.add_argument("--decode-dtype", choices=("model", "bfloat16"), default="model",
                        help="the engine's decode precision (generate always runs the model as loaded)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)

    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.quick:
        args.batch, args.new_tokens, args.repeats, args.models = (
            QUICK["batch"], QUICK["new_tokens"], QUICK["repeats"], list(QUICK["models"]))
    unknown = [m for m in args.models if m not in MODEL_SOURCES]
    if unknown or not args.models:
        parser.error(f"--models: unknown or empty {unknown or args.models}; choose from {sorted(MODEL_SOURCES)}")
    for flag in ("threads", "batch", "new_tokens", "repeats"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    results = [bench_model(name, args) for name in args.models]
    print_report(results, args)
    if args.json is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        environment = {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "torch_threads": torch.get_num_threads(),
        }
        payload = {"settings": settings, "environment": environment, "results": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
