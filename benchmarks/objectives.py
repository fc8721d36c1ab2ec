"""Per-step cost of each objective preset relative to plain GRPO, on the same rollout batch.

One rollout batch is sampled once from the demo model (rewards replaced by a fixed random 0/1
pattern so every group has both outcomes and no method can skip its work). Then, for every packaged preset
(``rlvr list``) merged over ``configs/demo.yaml``, the training side of an RL step is timed on a copy of
that batch: the old-policy pass (with whatever the method needs: entropy, Lp-Reg proxy, hidden states),
the advantages and token modifiers, and the mini-batch updates. Every method uses the same model
initialisation and the same number of mini-batches (``--minibatches``), so the ratio isolates the
objective's own cost. GRPO is timed in alternation with the others so that both see the same machine
noise. Target: methods that need full-vocabulary work (Lp-Reg, HAPO, THR) within 1.5x of GRPO.

    OMP_NUM_THREADS=2 python benchmarks/objectives.py
    python benchmarks/objectives.py --quick          # smoke run: small batch, one repeat, three presets
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rlvr_lab.config import load_config
from rlvr_lab.presets import preset_names
from rlvr_lab.train.loop import Trainer
from rlvr_lab.train.optim import build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
FULL_VOCAB = {"lp_reg", "hapo", "thr", "nthr"}  # presets whose extra work spans the vocabulary
TARGET = 1.5
SKIP = {"demo", "grpo", "llds_ma", "div_prec_precision", "div_prec_tail"}  # baseline, needs tool use, SFT-only


def make_trainer(preset: str | None, overrides: list[str]) -> Trainer:
    presets = [preset] if preset else []
    trainer = Trainer(load_config(CONFIGS / "demo.yaml", presets=presets, overrides=overrides))
    trainer.setup()
    trainer.freeze_reference()
    return trainer


def fixed_batch(trainer: Trainer, seed: int):
    """One real rollout with a fixed mixed 0/1 reward pattern (every group has both outcomes)."""
    batch = trainer.collect(1).batch
    g = torch.Generator().manual_seed(seed)
    G = trainer.cfg.train.group_size
    rewards = (torch.rand(len(batch), generator=g) < 0.5).float().view(-1, G)
    rewards[:, 0], rewards[:, 1] = 1.0, 0.0
    batch.rewards = rewards.view(-1)
    batch.extras["correct"] = batch.rewards.bool()
    return batch


def time_step(trainer: Trainer, batch) -> float:
    """Seconds for the training side of one RL step on ``batch`` (from a fresh optimiser)."""
    opt_cfg = trainer.cfg.train.optim
    optimizer = build_optimizer(trainer.model.parameters(), lr=opt_cfg.lr, weight_decay=0.0, betas=opt_cfg.betas)
    scheduler = build_scheduler(optimizer, warmup_steps=0, total_steps=10, schedule="constant")
    t0 = time.perf_counter()
    prepared = trainer.prepare(batch.select(torch.arange(len(batch))))
    prepared, _ = trainer.advantages(prepared, 1)
    trainer.update(prepared, 1, optimizer, scheduler)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--minibatches", type=int, default=2)
    ap.add_argument("--presets", default="", help="comma-separated preset names (default: all packaged presets)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.group_size, args.repeats = 4, 4, 1
        args.presets = args.presets or "lp_reg,llds,thr"
    torch.set_num_threads(args.threads)
    names = args.presets.split(",") if args.presets else [p for p in preset_names() if p not in SKIP]
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"run.output_dir={tmp}", "run.overwrite=true", f"run.threads={args.threads}", "sft.steps=0",
            "eval.enabled=false", f"train.prompts_per_step={args.prompts}", f"train.group_size={args.group_size}",
            f"train.minibatches={args.minibatches}", "train.epochs=1", "algorithm.dynamic_sampling.enabled=false",
        ]
        base = make_trainer(None, overrides)
        batch = fixed_batch(base, seed=0)
        init = {k: v.clone() for k, v in base.model.state_dict().items()}
        print(f"objective step cost on one batch: {len(batch)} sequences x {batch.loss_mask.shape[1]} tokens, "
              f"{args.minibatches} mini-batches, median of {args.repeats}, {args.threads} thread(s)")
        print(f"{'method':<14}{'GRPO s':>9}{'method s':>10}{'ratio':>8}  note")
        failed = False
        for name in names:
            trainer = make_trainer(name, overrides)
            base_t, meth_t = [], []
            for _ in range(args.repeats):  # alternate so both share the machine's noise
                base.model.load_state_dict(init)
                base_t.append(time_step(base, batch))
                trainer.model.load_state_dict(init)
                meth_t.append(time_step(trainer, batch))
            ratio = statistics.median(meth_t) / statistics.median(base_t)
            note = ""
            if name in FULL_VOCAB:
                ok = ratio <= TARGET
                failed |= not ok
                note = f"full-vocabulary work, target <= {TARGET}x: {'PASS' if ok else 'FAIL'}"
            print(f"{name:<14}{statistics.median(base_t):>9.3f}{statistics.median(meth_t):>10.3f}{ratio:>7.2f}x  {note}")
        if args.quick:
            print("(--quick: a smoke run; ratios at this size say little)")
        elif failed:
            print("some full-vocabulary methods are over the target")


if __name__ == "__main__":
    main()
