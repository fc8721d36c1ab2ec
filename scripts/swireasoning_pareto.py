"""Accuracy against tokens: plain sampling vs SwiReasoning (arXiv 2510.05069) on SmolLM2-135M-Instruct.

The setting of ``configs/smollm2_chain_sum.yaml`` (reasoning-gym chain_sum, two 1-digit terms, "Reply with
the result as a single number.", the last number of the response read as the answer) and its held-out
questions, as ``rlvr eval`` picks them. Every arm samples one response per question at the same temperature
and seed through the evaluation code (``sample_eval``/``summarize``: same prompts, answer extraction and
verifier); the arms differ only in ``rollout.mode`` and ``rollout.swireasoning``:

* ``sample``: plain token-by-token sampling;
* ``swir a=...``: SwiReasoning at each α₀, window W (default 8: the paper's 512 is about 1.5% of its
  32k-token budgets and could never end an explicit block within 48 tokens, leaving α₀ without effect);
* ``swir a=1 cap=C``: the same with the switch cap C_max (convergence text, then termination text and a
  32-token answer budget; the paper's texts, although SmolLM2 has no ``<think>`` tokens: it sees pieces).

Reported per arm: accuracy with its 95% Wilson interval, the paired difference to ``sample`` with its 95%
normal interval over questions, mean response tokens (latent steps count: each is a forward), the share of
latent tokens, switches per response and the wall time. Printed as a Markdown table and written as JSON.

    OMP_NUM_THREADS=1 python scripts/swireasoning_pareto.py          # 100 questions x 1 sample, 48 tokens
    python scripts/swireasoning_pareto.py --questions 8 --max-new-tokens 16 --out /tmp/x.json   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model here is local; never reach a hub

import torch

from rlvr_lab.eval.evaluate import PER_PROMPT, sample_eval, summarize
from rlvr_lab.eval.intervals import normal_interval, wilson_interval
from rlvr_lab.eval.passk import paired_difference
from rlvr_lab.eval.run import EvalRequest, ModelSpec, eval_config, eval_questions, load_engine
from rlvr_lab.train.environment import build_env
from rlvr_lab.train.loop import make_engine

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "smollm2_chain_sum.yaml"
MODEL = "smollm2-135m-instruct"


class RecordingEnv:
    """The task environment, keeping each generation's SwiReasoning counts (latent share, switches)."""

    def __init__(self, env):
        self.env, self.records = env, []

    def render(self, example):
        return self.env.render(example)

    def score(self, texts, examples):
        return self.env.score(texts, examples)

    def generate(self, engine, prompts, params, *, seed=0, temperature_fn=None):
        gen = self.env.generate(engine, prompts, params, seed=seed, temperature_fn=temperature_fn)
        if hasattr(gen, "rollout_metrics"):
            self.records.append((len(gen), gen.rollout_metrics(), int(gen.response_mask.sum())))
        return gen


def arms(alphas: list[float], window: int, cap: int | None) -> list[tuple[str, list[str]]]:
    """(label, rollout overrides) of every arm, plain sampling first."""
    out = [("sample", ["rollout.mode=sample"])]
    swir = ["rollout.mode=swireasoning", f"rollout.swireasoning.window={window}"]
    for a in alphas:
        out.append((f"swir a={a:g}", [*swir, f"rollout.swireasoning.alpha0={a}"]))
    if cap is not None:
        out.append((f"swir a=1 cap={cap}", [*swir, "rollout.swireasoning.alpha0=1.0",
                                            f"rollout.swireasoning.max_switch_count={cap}"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.6, 0.3])
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--cap", type=int, default=2, help="C_max of the capped arm (0: no capped arm)")
    ap.add_argument("--temperature", type=float, default=0.7, help="the config's sampling temperature")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "measurements" / "swireasoning_smollm2.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    base = [f"rollout.max_new_tokens={args.max_new_tokens}", f"run.threads={args.threads}"]
    request = EvalRequest(model=MODEL, config=str(CONFIG), questions=args.questions, samples=1, ks=[1], maj=[1],
                          overrides=base)
    cfg = eval_config(request, ModelSpec(MODEL, MODEL))
    task, examples = eval_questions(cfg)
    engine = load_engine(cfg)
    model, tokenizer = engine.model, engine.tokenizer

    rows, per_question = [], {}
    for label, overrides in arms(args.alphas, args.window, args.cap or None):
        arm_cfg = eval_config(EvalRequest(model=MODEL, config=str(CONFIG), questions=args.questions, samples=1, ks=[1], maj=[1],
                                          overrides=base + overrides), ModelSpec(MODEL, MODEL))
        arm_engine = make_engine(model, tokenizer, arm_cfg.rollout)
        env = RecordingEnv(build_env(arm_cfg, tokenizer, task, None))
        t0 = time.perf_counter()
        result = sample_eval(arm_engine, env, examples, samples=1, temperature=args.temperature,
                             max_new_tokens=args.max_new_tokens, stop_strings=arm_cfg.rollout.stop_strings,
                             greedy=False, seed=args.seed, answer_fallback=arm_cfg.task.answer_fallback)
        seconds = time.perf_counter() - t0
        metrics = summarize(result, ks=[1])
        correct = metrics[PER_PROMPT]["eval/pass@1"]
        per_question[label] = correct
        n_right = int(round(sum(correct)))
        low, high = wilson_interval(n_right, len(correct))
        tokens = metrics["eval/response_tokens"]
        row = {"arm": label, "overrides": overrides, "accuracy": n_right / len(correct), "correct": n_right,
               "questions": len(correct), "accuracy_95": [low, high], "mean_tokens": tokens, "seconds": seconds,
               "ms_per_token": 1e3 * seconds / max(tokens * len(correct), 1)}
        if env.records:
            n_tok = sum(t for _, _, t in env.records)
            row["latent_frac"] = sum(m["swir/latent_frac"] * t for _, m, t in env.records) / max(n_tok, 1)
            row["switches_mean"] = sum(m["swir/switches_mean"] * n for n, m, _ in env.records) / len(correct)
        if label != "sample":
            mean, se = paired_difference(per_question["sample"], correct)
            row["diff_vs_sample"] = mean
            row["diff_vs_sample_95"] = list(normal_interval(mean, se))
        rows.append(row)
        print(f"{label}: accuracy {row['accuracy']:.3f}, {tokens:.1f} tokens, {seconds:.0f} s", flush=True)

    table = markdown(rows)
    print(table)
    summary = {
        "what": "plain sampling vs SwiReasoning (arXiv 2510.05069) on SmolLM2-135M-Instruct, chain_sum",
        "config": str(CONFIG.relative_to(ROOT)), "model": MODEL, "task": cfg.task.name,
        "task_config": cfg.task.config, "questions": len(examples), "samples_per_question": 1,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed,
        "window": args.window, "threads": args.threads, "machine": platform.machine(),
        "interval": "accuracy: 95% Wilson; difference: 95% normal over paired questions",
        "command": "OMP_NUM_THREADS=1 python scripts/swireasoning_pareto.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k != "out"),
        "arms": rows, "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


def markdown(rows: list[dict]) -> str:
    lines = ["| arm | accuracy [95%] | vs sample [95%] | mean tokens | latent share | switches | ms/token |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        low, high = r["accuracy_95"]
        diff = (f"{r['diff_vs_sample']:+.3f} [{r['diff_vs_sample_95'][0]:+.3f}, {r['diff_vs_sample_95'][1]:+.3f}]"
                if "diff_vs_sample" in r else "-")
        latent = f"{r['latent_frac']:.2f}" if "latent_frac" in r else "-"
        switches = f"{r['switches_mean']:.2f}" if "switches_mean" in r else "-"
        lines.append(f"| {r['arm']} | {r['accuracy']:.3f} [{low:.3f}, {high:.3f}] | {diff} | {r['mean_tokens']:.1f} | "
                     f"{latent} | {switches} | {r['ms_per_token']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
