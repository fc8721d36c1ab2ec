"""SwiReasoning step cost: one latent decode step against one explicit (plain) decode step.

A latent step (arXiv 2510.05069) does what a plain step does (a forward of one position per row, the
sampling of a token) plus the controller's work: the unfiltered softmax and its entropy, the switching
rule, and the soft embedding ``p^T E``, a (B, V) x (V, d) matmul as large as the output head. Both loops
run on the engine's decoder after the same prefill; each is timed ``--steps`` steps, ``--repeats`` times,
alternating which goes first; the reported ratio is the median of the per-repeat ratios.

    OMP_NUM_THREADS=1 python benchmarks/swireasoning.py                 # SmolLM2-135M, batch 1 and 16
    python benchmarks/swireasoning.py --model tiny --steps 16 --repeats 1   # smoke run

Target (the issue's): latent step time / explicit step time <= 1.3 on SmolLM2-135M.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model here is local; never reach a hub

import torch

from rlvr_lab.models import load_model_and_tokenizer, render_prompt
from rlvr_lab.rollout.engine import RolloutEngine
from rlvr_lab.rollout.sampling import SamplingParams, sample_next
from rlvr_lab.rollout.swireasoning import SwirConfig, SwirController, SwiReasoning

MODEL_SOURCES = {"tiny": "tiny", "smollm2": "smollm2-135m-instruct"}
TARGET = 1.3
PARAMS = SamplingParams(temperature=0.7, max_new_tokens=1)


def prompts(tokenizer, batch: int) -> list[list[int]]:
    questions = [f"State the final answer to the given question directly. {a} + {b} = ?" for a, b in
                 zip(range(1, batch + 1), range(batch, 0, -1))]
    return [tokenizer.encode(render_prompt(tokenizer, q), add_special_tokens=False) for q in questions]


@torch.inference_mode()
def time_steps(engine: RolloutEngine, ids: list[list[int]], steps: int, latent: bool) -> float:
    """Seconds per decode step over ``steps`` steps after one prefill (the prefill is not timed)."""
    prompt_ids, prompt_mask = engine.left_pad(ids)
    B, Lp = prompt_ids.shape
    logits, cache = engine.prefill(prompt_ids, prompt_mask, Lp + steps + 1)
    positions = prompt_mask.sum(-1)
    generator = torch.Generator().manual_seed(0)
    embed = engine.model.get_input_embeddings().weight
    swir = SwiReasoning(SwirConfig(force_math_tokens=False), engine.tokenizer)
    ctrl = SwirController(swir.cfg, swir.ids, B, max_new_tokens=steps, device=engine.device)
    t0 = time.perf_counter()
    for t in range(steps):
        if latent:  # what the SwiReasoning loop does per step, every row fed its soft embedding
            raw = logits.float()
            probs = torch.softmax(raw, dim=-1)
            sampled, _ = sample_next(logits, PARAMS, generator)
            step = ctrl.update(t, torch.logsumexp(raw, dim=-1) - (probs * raw).sum(-1), sampled)
            step.feed_latent[:] = True
            x = ctrl.next_inputs(t, probs, step, embed)
            logits = engine.decoder.step_embeds(x, positions, cache, Lp + t)
        else:  # the plain engine's step
            tokens, _ = sample_next(logits, PARAMS, generator)
            logits = engine.decoder.step(tokens, positions, cache, Lp + t)
        positions = positions + 1
    seconds = (time.perf_counter() - t0) / steps
    engine.decoder.release()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(MODEL_SOURCES), default="smollm2")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backend", choices=["auto", "native", "hf"], default="auto")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    loaded = load_model_and_tokenizer(MODEL_SOURCES[args.model])
    engine = RolloutEngine(loaded.model, loaded.tokenizer, backend=args.backend)
    results = []
    for batch in args.batch:
        ids = prompts(loaded.tokenizer, batch)
        time_steps(engine, ids, 4, True), time_steps(engine, ids, 4, False)  # warm-up
        latent, explicit = [], []
        for r in range(args.repeats):
            order = (True, False) if r % 2 == 0 else (False, True)
            for is_latent in order:
                (latent if is_latent else explicit).append(time_steps(engine, ids, args.steps, is_latent))
        # the median of per-repeat ratios (each from two runs back to back) moves less with machine noise
        ratios = [a / b for a, b in zip(latent, explicit)]
        results.append({"batch": batch, "latent_ms": 1e3 * statistics.median(latent),
                        "explicit_ms": 1e3 * statistics.median(explicit), "ratio": statistics.median(ratios),
                        "ratios": ratios})
    print(f"{args.model} ({engine.backend} decoder), {torch.get_num_threads()} thread(s), {args.steps} steps x "
          f"{args.repeats} repeats, {platform.processor() or platform.machine()}")
    print("| batch | explicit step (ms) | latent step (ms) | latent / explicit (median [range] of repeats) |")
    print("|---|---|---|---|")
    for r in results:
        verdict = "ok" if r["ratio"] <= TARGET else f"above the {TARGET}x target"
        spread = f"{min(r['ratios']):.2f}-{max(r['ratios']):.2f}"
        print(f"| {r['batch']} | {r['explicit_ms']:.2f} | {r['latent_ms']:.2f} | {r['ratio']:.2f} [{spread}] ({verdict}) |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "backend": engine.backend, "threads": torch.get_num_threads(),
                       "steps": args.steps, "repeats": args.repeats, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
