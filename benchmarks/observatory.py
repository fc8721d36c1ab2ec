"""Cost of the training-dynamics observatory on the demo configuration, measured inside one run.

The run uses the default observatory settings. Every call the trainer makes into the observatory
(per-step signals, per-layer-group gradient norms, the phase detector, the metric mirrors such as
TensorBoard, making the fixed probe set, and the extra forward passes: every ``observe.lld_every``
steps the re-scoring that measures likelihood displacement, every ``observe.probe_every`` steps the
probe set) is timed where it happens, and its total is compared with the total step time of the same
run. The end-of-run report is timed and printed apart (it is written once, after training). Attributing time directly, in the same run, avoids comparing two separate
runs whose step times differ by more than the effect (rollout lengths and machine noise vary by
several percent from run to run). Target: below 5% of the step time.

    OMP_NUM_THREADS=2 python benchmarks/observatory.py
    python benchmarks/observatory.py --quick
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import torch

from rlvr_lab.config import load_config
from rlvr_lab.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.05


def timed(spent: list[float], fn, _depth=[0]):
    """Wrap ``fn`` so that its wall time is appended to ``spent``; nested timed calls count once."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _depth[0] += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _depth[0] -= 1
            if _depth[0] == 0:
                spent.append(time.perf_counter() - t0)

    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.prompts = 2, 8
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs" / "demo.yaml", overrides=[
            f"run.output_dir={tmp}", f"run.threads={args.threads}", "sft.steps=0", "eval.enabled=false",
            f"train.steps={args.steps}", f"train.prompts_per_step={args.prompts}",
            f"observe.lld_every={min(cfg_default_lld_every(), args.steps)}",
        ])
        trainer = Trainer(cfg)
        trainer.setup()
        spent: list[float] = []
        obs = trainer.observer
        for name in ("before_update", "displacement", "probe", "phase"):
            setattr(obs, name, timed(spent, getattr(obs, name)))
        if obs.grad_groups is not None:
            obs.grad_groups.norms = timed(spent, obs.grad_groups.norms)
        for sink in trainer.metrics.sinks[1:]:  # mirrors only: metrics.jsonl predates the observatory
            sink.write = timed(spent, sink.write)
        trainer.rescore = timed(spent, trainer.rescore)
        trainer.make_probes = timed(spent, trainer.make_probes)
        report_time: list[float] = []
        trainer.write_report = timed(report_time, trainer.write_report)
        summary = trainer.run()
        rows = [json.loads(x) for x in Path(summary["run_dir"], "metrics.jsonl").read_text().splitlines()]
    step_total = sum(r["time/step_s"] for r in rows if r["stage"] == "rl")
    share = sum(spent) / step_total
    print(f"observatory cost: {args.steps} RL steps, {args.prompts} prompts x 8 responses, {args.threads} thread(s), "
          f"displacement measured every {cfg.observe.lld_every} steps, {cfg.observe.probe_prompts}x"
          f"{cfg.observe.probe_samples} probes every {cfg.observe.probe_every}, mirrors: {', '.join(trainer.metrics.names[1:]) or 'none'}")
    print(f"observatory {sum(spent):.3f}s of {step_total:.3f}s step time = {100 * share:.2f}% "
          f"(ratio on/off {1 + share:.3f}; target < {100 * TARGET:.0f}%: {'PASS' if share < TARGET else 'FAIL'})")
    print(f"end-of-run report: {sum(report_time):.2f}s once (not part of the step time)")


def cfg_default_lld_every() -> int:
    from rlvr_lab.config import ObserveConfig

    return ObserveConfig().lld_every


if __name__ == "__main__":
    main()
