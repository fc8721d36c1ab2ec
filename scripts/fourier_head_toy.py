"""Linear head vs Fourier head on the synthetic density toy (arXiv 2410.22269; spec B10.2 and B10.4).

    python scripts/fourier_head_toy.py --dataset gmm2 --epochs 150 --seeds 1 2 3 --n-freqs 12 --gamma 1e-6 \\
        --threads 1 --out experiments/results/fourier_head_gmm2.json

Prints a Markdown table (per head: KL to the true pmf, the smoothness metric and the MSE, each the mean over
seeds with a Student's t 95% interval; the total wall time) and the Fourier - linear differences paired by
seed. ``--out`` writes the summary in the format of the other files in ``experiments/results/`` (conditions
``linear`` and ``fourier``, two claims: lower smoothness metric, lower KL) plus the per-seed metrics, so
``scripts/experiment_results.py --readme`` can list it.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rlvr_lab.lab.results import verdict
from rlvr_lab.layers.density_toy import DATASETS, HEADS, METRICS, HeadComparison, compare_heads, comparison_record

LABELS = {"kl": "KL(true ‖ pred)", "smoothness_l2": "smoothness L2", "mse": "MSE"}


def _mean_ci(stats: tuple[float, float, float] | list[float]) -> str:
    mean, low, high = stats[:3]
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.3f} (no interval)"
    return f"{mean:.3f} ± {(high - low) / 2:.3f}"


def markdown_table(comparison: HeadComparison) -> str:
    """One row per head: each metric as mean ± half-width of the 95% interval, seeds and total wall time."""
    rows = [f"| head | {' | '.join(LABELS[m] + ' (mean ± 95% CI)' for m in METRICS)} | seeds | wall time |",
            "|---|" + "---|" * len(METRICS) + "---|---|"]
    for head in HEADS:
        seconds = math.fsum(run.seconds for run in comparison.per_seed[head].values())
        cells = " | ".join(_mean_ci(comparison.interval(head, m)) for m in METRICS)
        rows.append(f"| {head} | {cells} | {len(comparison.per_seed[head])} | {seconds:.0f} s |")
    return "\n".join(rows)


def difference_lines(comparison: HeadComparison) -> list[str]:
    lines = []
    for metric in METRICS:
        mean, low, high, n = comparison.difference(metric)
        lines.append(f"- Fourier − linear, {LABELS[metric]}, paired over {n} seeds: "
                     f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]")
    return lines


def results_summary(comparison: HeadComparison, *, name: str, threads: int, command: str) -> dict[str, Any]:
    """The ``experiments/results/`` summary: the keys :func:`rlvr_lab.lab.results.results_table` reads, the
    per-condition metrics in the same layout as a sweep's summary, and this toy's settings and per-seed runs."""
    record = comparison_record(comparison)
    settings = comparison.settings
    conditions = {}
    for head in HEADS:
        metrics = {}
        for metric in METRICS:
            metrics[metric] = {
                "before": None,
                "after": list(comparison.interval(head, metric)),
                "diff": None if head == "linear" else list(comparison.difference(metric)),
                "per_seed": {str(seed): value for seed, value in comparison.values(head, metric).items()},
            }
        conditions[head] = {"presets": [], "overrides": [f"head={head}"],
                            "seeds_completed": len(comparison.per_seed[head]), "metrics": metrics}
    budget = f"{comparison.dataset} toy, {settings['epochs']} epochs; the paper trains 500"
    claim_texts = {
        "smoothness_l2": f"Fourier head predicts smoother pmfs than a linear head ({budget})",
        "kl": f"Fourier head predicts pmfs closer (KL) to the true conditional pmf than a linear head ({budget})",
    }
    claims = []
    for metric, text in claim_texts.items():
        diff = comparison.difference(metric)
        claims.append({"condition": "fourier", "metric": metric, "direction": "lower", "text": text,
                       "diff": list(diff), "verdict": verdict(diff, "lower")})
    seconds = [run.seconds for runs in comparison.per_seed.values() for run in runs.values()]
    return {
        "name": name,
        "description": (f"Fourier head (arXiv 2410.22269, N={settings['n_freqs']}, gamma={settings['gamma']:g}) vs a "
                        f"linear head on the {comparison.dataset} density toy, {settings['epochs']} epochs"),
        "baseline": "linear",
        "seeds": list(comparison.seeds),
        "base": None,
        "overrides": [],
        "compute": {"cells": len(seconds), "completed": len(seconds), "cell_seconds": math.fsum(seconds)},
        "conditions": conditions,
        "claims": claims,
        "settings": {"dataset": comparison.dataset, **settings, "threads": threads, "command": command},
        "per_seed": record["per_seed"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=DATASETS, default="gmm2")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--n-freqs", type=int, default=12, help="frequencies N of the Fourier head")
    ap.add_argument("--gamma", type=float, default=1e-6, help="weight of the Fourier head's smoothness regulariser")
    ap.add_argument("--n-samples", type=int, default=5000, help="rows per dataset, split 80/20")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON summary here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    comparison = compare_heads(args.dataset, seeds=args.seeds, epochs=args.epochs, n_freqs=args.n_freqs,
                               gamma=args.gamma, n_samples=args.n_samples)
    print(f"{args.dataset}: {args.epochs} epochs, N={args.n_freqs}, gamma={args.gamma:g}, seeds {args.seeds}, "
          f"{args.n_samples} rows, {args.threads} thread(s), {time.perf_counter() - start:.0f} s in all\n")
    print(markdown_table(comparison))
    print()
    print("\n".join(difference_lines(comparison)))
    if args.out is not None:
        command = "python scripts/fourier_head_toy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        summary = results_summary(comparison, name=args.out.stem, threads=args.threads, command=command)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
