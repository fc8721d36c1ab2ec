"""``rlvr eval``'s sampling against a plain ``transformers.generate`` loop, same questions, same lengths.

Both sides draw ``--samples`` responses for each of ``--questions`` reasoning-gym questions (the prompts
rendered by the same environment) at temperature 1, and both ignore end-of-sequence, so each produces
exactly ``questions * samples * new_tokens`` tokens (counted and checked). The plain side is what a user
writes without the library: one ``model.generate(..., num_return_sequences=samples)`` per question.
``rlvr eval``'s side is :func:`rlvr_lab.eval.evaluate.sample_eval`, the function the command runs: batches of
questions, each question's samples sharing its prefill, through the rollout engine. Scoring is included on
both sides (it is part of an evaluation). The sides alternate over ``--repeats`` and the median of the
per-repeat ratios is reported.

    OMP_NUM_THREADS=2 python benchmarks/eval.py              # SmolLM2-135M, 16 questions x 8 samples x 48 tokens
    python benchmarks/eval.py --quick                        # smoke run: tiny model, 4 questions x 2 samples

Target: ``rlvr eval`` at least 2x faster than the plain loop on SmolLM2-135M.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model here is local; never reach a hub

import torch

from rlvr_lab.eval.evaluate import sample_eval
from rlvr_lab.eval.run import EvalRequest, eval_config, eval_questions, load_engine, resolve_model
from rlvr_lab.train.environment import build_env

TARGET = 2.0
TASK = "chain_sum"


def plain_loop(model, tokenizer, env, examples, samples: int, new_tokens: int, seed: int) -> tuple[float, int]:
    """One ``generate`` call per question with ``num_return_sequences=samples``; decode and score."""
    torch.manual_seed(seed)
    produced = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for ex in examples:
            ids = tokenizer(env.render(ex), return_tensors="pt", add_special_tokens=False).to(model.device)
            out = model.generate(**ids, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 num_return_sequences=samples, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
            new = out[:, ids["input_ids"].shape[1]:]
            produced += new.numel()
            env.score(tokenizer.batch_decode(new, skip_special_tokens=True), [ex] * samples)
    return time.perf_counter() - start, produced


def library(engine, env, examples, samples: int, new_tokens: int, seed: int) -> tuple[float, int]:
    start = time.perf_counter()
    result = sample_eval(engine, env, examples, samples=samples, temperature=1.0, max_new_tokens=new_tokens,
                         greedy=False, seed=seed)
    seconds = time.perf_counter() - start
    return seconds, sum(s.tokens for group in result.sampled for s in group)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="any model rlvr eval loads")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny model, 4 questions x 2 samples x 8 tokens, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.questions, args.samples, args.new_tokens, args.repeats = "tiny", 4, 2, 8, 1
    for flag in ("questions", "samples", "new_tokens", "repeats", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = resolve_model(args.model)
    cfg = eval_config(EvalRequest(args.model, task=TASK, questions=args.questions,
                                  overrides=[f"run.threads={args.threads}"]), spec)
    task, examples = eval_questions(cfg)
    engine = load_engine(cfg)
    env = build_env(cfg, engine.tokenizer, task, None)
    engine.eos_ids = []  # no row stops early: both sides produce exactly new_tokens per sample
    expected = args.questions * args.samples * args.new_tokens
    library(engine, env, examples[:1], args.samples, 2, seed=0)  # warm-up, both sides
    plain_loop(engine.model, engine.tokenizer, env, examples[:1], args.samples, 2, seed=0)
    ratios, ours, plain = [], [], []
    for rep in range(args.repeats):
        sides = [("ours", library, (engine, env)), ("plain", plain_loop, (engine.model, engine.tokenizer, env))]
        timings = {}
        for name, fn, lead in (sides if rep % 2 == 0 else sides[::-1]):
            seconds, tokens = fn(*lead, examples, args.samples, args.new_tokens, rep)
            if tokens != expected:
                raise SystemExit(f"{name} produced {tokens} tokens, expected {expected}")
            timings[name] = seconds
        ours.append(timings["ours"])
        plain.append(timings["plain"])
        ratios.append(timings["plain"] / timings["ours"])
        print(f"repeat {rep + 1}: rlvr eval {timings['ours']:.2f} s | generate loop {timings['plain']:.2f} s | "
              f"{ratios[-1]:.2f}x", flush=True)
    ratio = statistics.median(ratios)
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"{args.model} ({engine.backend} engine), {args.questions} questions x {args.samples} samples x "
          f"{args.new_tokens} tokens, {args.threads} threads: rlvr eval {statistics.median(ours):.2f} s, "
          f"generate loop {statistics.median(plain):.2f} s; speed-up {ratio:.2f}x (median of {len(ratios)}); "
          f"target {TARGET}x {verdict}" + (" (quick size: says little)" if args.quick else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
