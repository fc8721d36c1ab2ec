"""rlvr-lab's native trainer against TRL's GRPOTrainer: seconds per RL step and peak memory on the same work.

Target: rlvr-lab, with the defaults a user gets, at least 3x faster per step, with equal or lower peak
memory. On SmolLM2-135M the update's achieved FLOP/s is also printed as a fraction of the machine's
matmul rate in the same run (target: at least half).

Both sides train the same model on the same work (``--model``):

* ``tiny``: the demo's tiny Llama (``configs/demo.yaml``, character tokenizer), randomly initialised
  with the same seed (``sft.steps=0``), on reasoning-gym ``spell_backward`` prompts rendered by the
  demo's environment, with its binary verifier as the reward.
* ``smollm2``: SmolLM2-135M-Instruct (``configs/smollm2_chain_sum.yaml``, the packaged GGUF) on
  ``chain_sum``, fewer prompts and short responses: per-token compute dominates.
* Batch: P prompts x G samples, at most ``--max-new-tokens`` tokens, temperature 1. Both stop only at
  EOS: the configs' ``</answer>`` stop string is removed, because TRL's generate has no stop strings.
* Update: M optimiser steps per rollout batch, micro-batches of the same size, Adam with the same
  lr and betas, and the demo's GRPO. In TRL that is ``loss_type="dapo"``, ``epsilon=0.2``,
  ``beta=0``: token-mean PPO clip, no KL.
* Steps: ``--steps`` RL steps.
* The native trainer keeps its per-step observatory signals. Its periodic extra forward passes (the
  likelihood-displacement re-score and the probe set) are switched off, because TRL does no such
  work.

Engines, each in its own subprocess, so that neither side's imports or memory are counted for the
other:

* ``native``: ``rlvr_lab.train.loop.Trainer`` (rollout engine, scoring, old-policy pass, update, signals)
  with its defaults: mini-batches of whole groups (``train.shuffle=groups``, verl's split), each
  distinct prompt of a micro-batch run once (``train.share_prompts``), so once for all its G
  responses, and each distinct prompt prefilled once in the rollout.
* ``native+rows``: the same with ``train.shuffle=rows``: mini-batches drawn uniformly from all rows,
  as TRL does (a micro-batch then holds a few responses of many prompts).
* ``trl``: TRL's stock ``GRPOTrainer``. Its config: ``per_device_train_batch_size`` = micro-batch,
  ``steps_per_generation`` = M x accumulation, ``max_steps`` = steps x M.
* ``trl+rlvr``: ``rlvr_lab.integrations.trl.RlvrGRPOTrainer`` with ``method="grpo"``. This measures
  what the adapter costs on top of TRL.

Time: wall seconds per RL step, i.e. one rollout batch (generation, scoring, the old-policy pass when
M > 1, M optimiser steps and logging). Native: around each step of the trainer's loop. TRL: from one
optimiser step's ``on_step_begin`` to the next, summed over the M optimiser steps of each generation.
The first step is reported on its own (warm-up). The headline is the median of the others.

Update FLOP/s (native engines): the time of the trainer's ``update`` (all optimiser steps of the
rollout batch: forward, backward, clipping, Adam) against its useful FLOPs: per pass over the batch,
6 per weight of the transformer's linear layers for every distinct prompt token once and every
response token, 6 per output-layer weight for every response token (the only positions scored), and
12 x layers x attention width x position for the attention of each of those tokens. The matmul rate
is a square fp32 ``torch.mm`` of ``MATMUL_N`` with the same threads, measured by the parent process
before and after the engines run (the better of the two).

Memory: peak resident set size, from Linux's VmHWM. After set-up (imports, model, data, trainer and
optimiser built), each child resets its high-water mark by writing 5 to ``/proc/self/clear_refs``.
"peak RSS" is then the largest resident memory while the steps run, libraries included, and "+steps"
is how far that peak rose above the RSS at the reset. tracemalloc would be the wrong tool: it sees
Python's allocator, not torch's tensor memory. Where clear_refs cannot be written, the whole-process
peak (``ru_maxrss``) is printed and marked ``*``.

    .venv-scale/bin/python benchmarks/vs_trl.py --threads 2          # the full comparison (minutes)
    .venv-scale/bin/python benchmarks/vs_trl.py --threads 2 --quick  # smoke run: small batch, 2 steps
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
ENGINES = ("native", "native+rows", "trl", "trl+rlvr")
TARGET_SPEEDUP = 3.0
TARGET_UPDATE_FRACTION = 0.5  # of the matmul rate, on SmolLM2
# per model: its config and the default work of one comparison
MODELS = {
    "tiny": {"config": "demo.yaml", "steps": 5, "prompts": 128, "group_size": 8, "minibatches": 4,
             "micro_batch_size": 256, "max_new_tokens": 16},
    "smollm2": {"config": "smollm2_chain_sum.yaml", "steps": 4, "prompts": 16, "group_size": 8, "minibatches": 2,
                "micro_batch_size": 32, "max_new_tokens": 24},
}


# ---- memory -------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak RSS over a stretch of the process's life (see the module docstring)."""

    def reset(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = _status_kib("VmHWM") is not None
        except OSError:
            self.exact = False
        self.start_kib = _status_kib("VmRSS") or 0

    def result(self) -> dict[str, float]:
        peak = _status_kib("VmHWM") if self.exact else None
        if peak is None:  # ru_maxrss: the whole process, set-up included (KiB on Linux)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"peak_rss_mib": peak / 1024, "start_rss_mib": self.start_kib / 1024, "exact": self.exact}


# ---- the shared set-up ---------------------------------------------------------------------------------


def native_overrides(args, run_dir: str) -> list[str]:
    return [
        f"run.output_dir={run_dir}", "run.overwrite=true", f"run.threads={args.threads}", "run.seed=0",
        "rollout.temperature=1.0",
        "sft.steps=0", "eval.enabled=false", f"train.steps={args.steps}", f"train.prompts_per_step={args.prompts}",
        f"train.group_size={args.group_size}", f"train.minibatches={args.minibatches}",
        f"train.micro_batch_size={args.micro_batch_size}", f"rollout.max_new_tokens={args.max_new_tokens}",
        "rollout.stop_strings=[]", "observe.lld_every=0", "observe.probe_prompts=0", "observe.tensorboard=false",
        "observe.report=false",
    ]


def set_up_trainer(args, run_dir: str, extra: tuple[str, ...] = ()):
    """The native trainer, set up: model, tokenizer, tasks and environment (the TRL side borrows them)."""
    import torch

    from rlvr_lab.config import load_config
    from rlvr_lab.train.loop import Trainer

    torch.set_num_threads(args.threads)
    config = CONFIGS / MODELS[args.model]["config"]
    trainer = Trainer(load_config(config, overrides=native_overrides(args, run_dir) + list(extra)))
    trainer.setup()
    return trainer


# ---- engines (each runs in a child process) ----------------------------------------------------------------


def update_flops(model, batch, epochs: int) -> float:
    """Useful FLOPs of ``epochs`` passes of forward and backward over ``batch`` (see the module docstring)."""
    from machine import flop_shape  # benchmarks/machine.py, beside this script

    shape = flop_shape(model)
    head, body = shape.head_weights, shape.linear_weights - shape.head_weights
    attention = 12 * shape.attention  # per token and position: forward 4, backward 8
    lp = batch.response_start
    prompt_len = batch.attention_mask[:, :lp].sum(-1).tolist()
    response_len = batch.attention_mask[:, lp:].sum(-1).tolist()
    seen, total = set(), 0.0
    for group, n_prompt, n_response in zip(batch.group_ids.tolist(), prompt_len, response_len, strict=True):
        if group not in seen:  # a prompt's forward and backward run once for its group
            seen.add(group)
            total += 6 * body * n_prompt + attention * n_prompt * (n_prompt + 1) / 2
        positions = n_response * n_prompt + n_response * (n_response + 1) / 2
        total += 6 * (body + head) * n_response + attention * positions
    return epochs * total


def run_native(args, run_dir: str, extra: tuple[str, ...] = ()) -> dict:
    from rlvr_lab.train.optim import build_optimizer, build_scheduler

    trainer = set_up_trainer(args, run_dir, extra)
    update, update_s, flops = trainer.update, [], []

    def timed_update(batch, *rest):
        flops.append(update_flops(trainer.model, batch, trainer.cfg.train.epochs))
        start = time.perf_counter()
        out = update(batch, *rest)
        update_s.append(time.perf_counter() - start)
        return out

    trainer.update = timed_update
    cfg = trainer.cfg
    trainer.freeze_reference()
    opt = cfg.train.optim
    optimizer = build_optimizer(trainer.model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay, betas=opt.betas)
    scheduler = build_scheduler(optimizer, warmup_steps=opt.warmup_steps,
                                total_steps=args.steps * args.minibatches, schedule=opt.schedule)
    memory = PeakMemory()
    memory.reset()
    times, rows = [], []
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        record, _ = trainer.rl_step(step, optimizer, scheduler)
        trainer.watch_phase(step, record)
        trainer.metrics.write({"stage": "rl", "step": step, **record})
        times.append(time.perf_counter() - t0)
        rows.append(record.get("rollout/response_len_mean", float("nan")))
    trainer.metrics.close()
    return {"step_s": times, "response_len_mean": statistics.fmean(rows), "update_s": update_s,
            "update_flops": flops, **memory.result()}


def run_trl(args, run_dir: str, *, rlvr: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    trainer = set_up_trainer(args, run_dir)  # same weights (seed), prompts and verifier as the native run
    env, cfg = trainer.env, trainer.cfg
    examples = trainer.train_examples(args.prompts * args.steps, offset=0)
    dataset = Dataset.from_dict({"prompt": [env.render(ex) for ex in examples], "index": list(range(len(examples)))})

    def task_reward(completions, index, **_):
        return [score.value for score in env.score(completions, [examples[i] for i in index])]

    rows_per_opt_step = args.prompts * args.group_size // args.minibatches
    accumulation = rows_per_opt_step // args.micro_batch_size
    opt = cfg.train.optim
    config = GRPOConfig(
        output_dir=str(Path(run_dir) / "trl"), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=1, seed=0, gradient_checkpointing=False, log_completions=False,
        per_device_train_batch_size=args.micro_batch_size, gradient_accumulation_steps=accumulation,
        steps_per_generation=args.minibatches * accumulation, num_generations=args.group_size,
        max_completion_length=args.max_new_tokens, max_steps=args.steps * args.minibatches, shuffle_dataset=False,
        temperature=1.0, top_k=0, top_p=1.0, learning_rate=opt.lr, lr_scheduler_type="constant",
        adam_beta1=opt.betas[0], adam_beta2=opt.betas[1], weight_decay=opt.weight_decay,
        max_grad_norm=opt.max_grad_norm, loss_type="dapo", epsilon=0.2, epsilon_high=0.2, beta=0.0,
    )

    class StepClock(TrainerCallback):
        def __init__(self):
            self.begin, self.end = [], []

        def on_train_begin(self, *_, **__):
            memory.reset()

        def on_step_begin(self, *_, **__):
            self.begin.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            self.end.append(time.perf_counter())

    memory, clock = PeakMemory(), StepClock()
    common = dict(model=trainer.model, reward_funcs=task_reward, args=config, train_dataset=dataset,
                  processing_class=trainer.tokenizer, callbacks=[clock])
    if rlvr:
        from rlvr_lab.integrations.trl import RlvrGRPOTrainer

        trl_trainer = RlvrGRPOTrainer(**common, method="grpo")
    else:
        trl_trainer = GRPOTrainer(**common)
    torch.set_num_threads(args.threads)
    trl_trainer.train()
    # one optimiser step: begin -> next begin (logging included); the last one ends at its on_step_end
    opt_steps = [b1 - b0 for b0, b1 in zip(clock.begin[:-1], clock.begin[1:], strict=True)] + [clock.end[-1] - clock.begin[-1]]
    m = args.minibatches
    times = [sum(opt_steps[i : i + m]) for i in range(0, len(opt_steps), m)]
    lengths = [r["completions/mean_length"] for r in trl_trainer.state.log_history if "completions/mean_length" in r]
    return {"step_s": times, "response_len_mean": statistics.fmean(lengths), **memory.result()}


def child(args) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    with tempfile.TemporaryDirectory() as run_dir:
        if args.engine == "native":
            result = run_native(args, run_dir)
        elif args.engine == "native+rows":
            result = run_native(args, run_dir, ("train.shuffle=rows",))
        else:
            result = run_trl(args, run_dir, rlvr=args.engine == "trl+rlvr")
    print("RESULT " + json.dumps(result))


# ---- the parent: launch each engine, print the table ---------------------------------------------------------


def launch(engine: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--engine", engine, "--model", args.model,
           "--threads", str(args.threads),
           "--steps", str(args.steps), "--prompts", str(args.prompts), "--group-size", str(args.group_size),
           "--minibatches", str(args.minibatches), "--micro-batch-size", str(args.micro_batch_size),
           "--max-new-tokens", str(args.max_new_tokens)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-6000:])
        raise SystemExit(f"{engine}: the child process failed (exit {out.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def per_step(times: list[float]) -> float:
    """Median step time without the first (warm-up) step, unless there is only one."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=sorted(MODELS), default="tiny",
                    help="tiny: the demo's model and task; smollm2: SmolLM2-135M-Instruct on chain_sum")
    ap.add_argument("--steps", type=int, help="RL steps (rollout batches) per engine (default per model)")
    ap.add_argument("--prompts", type=int, help="prompts per step (default per model; tiny: the demo's 128)")
    ap.add_argument("--group-size", type=int)
    ap.add_argument("--minibatches", type=int, help="optimiser steps per rollout batch")
    ap.add_argument("--micro-batch-size", type=int)
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, from {', '.join(ENGINES)}")
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 prompts x 4, 2 mini-batches, 2 steps")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # set in the child processes
    args = ap.parse_args()
    for key, value in MODELS[args.model].items():
        if key != "config" and getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.steps, args.prompts, args.group_size, args.minibatches, args.micro_batch_size = 2, 8, 4, 2, 16
    rows_per_opt_step = args.prompts * args.group_size // args.minibatches
    if args.prompts * args.group_size % args.minibatches or rows_per_opt_step % args.micro_batch_size:
        ap.error("prompts*group_size must split into --minibatches optimiser steps of whole micro-batches")
    if args.engine:
        child(args)
        return

    engines = [e for e in args.engines.split(",") if e]
    import torch

    from machine import MATMUL_N, matmul_flop_rate  # benchmarks/machine.py, beside this script

    torch.set_num_threads(args.threads)
    matmul = matmul_flop_rate()
    task = "demo tiny Llama, spell_backward" if args.model == "tiny" else "SmolLM2-135M-Instruct, chain_sum"
    print(f"vs TRL: {task}, {args.prompts} prompts x {args.group_size} samples, "
          f"<= {args.max_new_tokens} new tokens, {args.minibatches} optimiser steps of "
          f"{rows_per_opt_step} rows (micro-batch {args.micro_batch_size}) per RL step, {args.steps} steps, "
          f"{args.threads} thread(s); each engine in its own process")
    results = {}
    for engine in engines:
        t0 = time.perf_counter()
        results[engine] = launch(engine, args)
        results[engine]["wall_s"] = time.perf_counter() - t0
    matmul = max(matmul, matmul_flop_rate())
    base = results.get("native")
    print(f"{'engine':<14}{'s/step':>9}{'first':>8}{'peak RSS MiB':>14}{'+steps':>8}{'resp len':>10}"
          f"{'process s':>11}  engine/native: time, peak RSS")
    for engine, r in results.items():
        mark = "" if r["exact"] else "*"
        vs = ""
        if base is not None and engine != "native":
            vs = (f"{per_step(r['step_s']) / per_step(base['step_s']):.2f}x, "
                  f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x")
        print(f"{engine:<14}{per_step(r['step_s']):>9.3f}{r['step_s'][0]:>8.3f}{r['peak_rss_mib']:>13.0f}{mark:1}"
              f"{r['peak_rss_mib'] - r['start_rss_mib']:>8.0f}{r['response_len_mean']:>10.1f}{r['wall_s']:>11.1f}  {vs}")
    if "trl" in results and not args.quick:
        trl = results["trl"]
        for engine in (e for e in results if e.startswith("native")):
            r = results[engine]
            speed = per_step(trl["step_s"]) / per_step(r["step_s"])
            memory_ok = r["peak_rss_mib"] <= trl["peak_rss_mib"]
            verdict = "PASS" if speed >= TARGET_SPEEDUP and memory_ok else "FAIL"
            print(f"target: {engine} >= {TARGET_SPEEDUP:.0f}x faster per step than TRL at equal or lower peak "
                  f"memory: {speed:.2f}x, {'lower' if memory_ok else 'HIGHER'} memory -> {verdict}")
    for engine in (e for e in results if e.startswith("native")):
        r = results[engine]
        rate = sum(r["update_flops"][1:]) / sum(r["update_s"][1:]) if len(r["update_s"]) > 1 else float("nan")
        r["update_flop_s"], r["matmul_flop_s"] = rate, matmul
        verdict = ""
        if args.model == "smollm2" and not args.quick:
            verdict = f" (target >= {TARGET_UPDATE_FRACTION:.0%}: {'PASS' if rate / matmul >= TARGET_UPDATE_FRACTION else 'FAIL'})"
        print(f"{engine}: update {rate / 1e9:.1f} GFLOP/s useful, {rate / matmul:.0%} of this machine's fp32 matmul "
              f"rate ({matmul / 1e9:.1f} GFLOP/s, {MATMUL_N}x{MATMUL_N}, same threads, this run){verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "engine"},
                                               "matmul_flop_s": matmul, "results": results}, indent=1) + "\n")
    if any(not r["exact"] for r in results.values()):
        print("* whole-process peak (ru_maxrss): /proc/self/clear_refs was not writable")
    if args.quick:
        print("(--quick: a smoke run; numbers at this size say little, and the targets apply to the full run)")


if __name__ == "__main__":
    main()
