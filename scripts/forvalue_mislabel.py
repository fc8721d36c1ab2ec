"""Mislabel detection with For-Value (arXiv 2508.10180) on a corrupted reasoning-gym set.

A training set of chain_sum questions answered in the warm-start's format (``<answer>N</answer>``), with a
fraction of the answers replaced by a wrong number (the correct one plus a nonzero offset in [-10, 10]);
a clean validation set drawn with another seed. Every training sample is scored against the validation
mean by ``rlvr value``'s runner; a low score should flag a corrupted sample, so the detector is ``-score``
and its quality the AUROC (Mann-Whitney) with corrupted = positive. The mean response log-likelihood
(``-logprob_mean``, a loss-based detector) is scored on the same forward passes as a reference. Each seed
draws new questions and a new corruption; intervals over seeds are Student's t (n = 3 seeds), per seed a
stratified bootstrap. The summary has the shape of the lab's sweep summaries (``experiments/results``):
conditions, a ``chance`` baseline (AUROC 0.5) and claims with verdicts.

    python scripts/forvalue_mislabel.py                                  # the committed summary
    python scripts/forvalue_mislabel.py --train 40 --val 10 --seeds 0 --out /tmp/mislabel.json   # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIFFICULTIES = {
    "easy": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},  # the repository's test config
    "default": {},  # reasoning-gym's defaults: 2-6 terms of 1-4 digits (the trainer's default task)
}


def corrupt(answer: str, rng: random.Random) -> str:
    """A wrong answer: the correct integer plus a nonzero offset in [-10, 10]."""
    return str(int(answer) + rng.choice([d for d in range(-10, 11) if d != 0]))


def write_sets(folder: Path, task: str, config: dict, seed: int, n_train: int, n_val: int, fraction: float):
    from rlvr_lab.envs.tasks import split_train_eval

    train_task, val_task = split_train_eval(task, config=config, train_size=n_train, eval_size=n_val,
                                            seed=10_000 * (seed + 1))
    rng = random.Random(seed)
    bad = set(rng.sample(range(n_train), round(fraction * n_train)))
    train_rows = []
    for i in range(n_train):
        ex = train_task[i]
        answer = corrupt(ex["answer"], rng) if i in bad else ex["answer"]
        train_rows.append({"question": ex["question"], "answer": answer, "corrupted": i in bad})
    val_rows = [{"question": val_task[i]["question"], "answer": val_task[i]["answer"]} for i in range(n_val)]
    for name, rows in (("train.jsonl", train_rows), ("val.jsonl", val_rows)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [int(r["corrupted"]) for r in train_rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--task", default="chain_sum")
    ap.add_argument("--difficulty", nargs="+", default=list(DIFFICULTIES), choices=list(DIFFICULTIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--train", type=int, default=200, help="training samples per seed")
    ap.add_argument("--val", type=int, default=50, help="clean validation samples per seed")
    ap.add_argument("--fraction", type=float, default=0.2, help="share of training answers corrupted")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "forvalue_mislabel.json")
    args = ap.parse_args()

    import torch

    from rlvr_lab.analysis.detect import auroc, auroc_interval
    from rlvr_lab.analysis.value import ValueSettings, run_value
    from rlvr_lab.eval.intervals import mean_interval, paired_difference
    from rlvr_lab.lab.results import verdict
    from rlvr_lab.models.loading import load_model_and_tokenizer

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    loaded = load_model_and_tokenizer(args.model)
    settings = ValueSettings(batch_size=args.batch_size, top_k=0)
    per_seed: dict[str, dict[str, dict[int, float]]] = {}
    intervals: dict[str, dict[int, list[float]]] = {}
    details, run_seconds = [], []
    for difficulty in args.difficulty:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                labels = write_sets(folder, args.task, DIFFICULTIES[difficulty], seed, args.train, args.val, args.fraction)
                t0 = time.perf_counter()
                summary = run_value(folder / "train.jsonl", folder / "val.jsonl", args.model, settings,
                                    out_dir=folder / "out", loaded=loaded)
                seconds = time.perf_counter() - t0
                rows = [json.loads(line) for line in (folder / "out" / "scores.jsonl").read_text().splitlines()]
            run_seconds.append(seconds)
            detectors = {"forvalue": [-r["score"] for r in rows], "loglik": [-r["logprob_mean"] for r in rows]}
            record = {"difficulty": difficulty, "seed": seed, "n_train": len(rows), "n_corrupted": sum(labels),
                      "n_val": summary["n_val"], "seconds": seconds,
                      "score_mean_clean": _mean([r["score"] for r, y in zip(rows, labels) if not y]),
                      "score_mean_corrupted": _mean([r["score"] for r, y in zip(rows, labels) if y])}
            for name, values in detectors.items():
                key = f"{name}_{difficulty}"
                per_seed.setdefault(key, {})[seed] = auroc(values, labels)
                intervals.setdefault(key, {})[seed] = list(auroc_interval(values, labels, seed=seed))
                record[f"auroc_{name}"] = per_seed[key][seed]
                record[f"auroc_{name}_ci95"] = intervals[key][seed]
            details.append(record)
            print(f"{difficulty:>7} seed {seed}: AUROC For-Value {record['auroc_forvalue']:.3f} "
                  f"[{record['auroc_forvalue_ci95'][0]:.3f}, {record['auroc_forvalue_ci95'][1]:.3f}], log-likelihood "
                  f"{record['auroc_loglik']:.3f} | {len(rows)} train ({sum(labels)} corrupted), {summary['n_val']} val, "
                  f"{seconds:.0f}s", flush=True)

    chance = {seed: 0.5 for seed in args.seeds}
    conditions = {"chance": {"metrics": {"auroc": {"after": [0.5, 0.5, 0.5], "diff": None,
                                                   "per_seed": {str(s): 0.5 for s in args.seeds}}}}}
    for key, values in per_seed.items():
        conditions[key] = {"metrics": {"auroc": {
            "after": list(mean_interval(list(values.values()))),
            "diff": list(paired_difference(values, chance)),
            "per_seed": {str(s): v for s, v in values.items()},
            "per_seed_ci95": {str(s): v for s, v in intervals[key].items()},
        }}}
    claims = []
    for difficulty in args.difficulty:
        for name, text in (("forvalue", "For-Value (-score vs the clean validation mean) flags corrupted answers better than chance"),
                           ("loglik", "reference: the response log-likelihood flags corrupted answers better than chance")):
            diff = conditions[f"{name}_{difficulty}"]["metrics"]["auroc"]["diff"]
            claims.append({"condition": f"{name}_{difficulty}", "metric": "auroc", "direction": "higher",
                           "text": f"{text} ({difficulty} chain_sum)", "diff": diff, "verdict": verdict(tuple(diff), "higher")})
    versus = {d: list(paired_difference(per_seed[f"forvalue_{d}"], per_seed[f"loglik_{d}"])) for d in args.difficulty}
    command = "OMP_NUM_THREADS=1 .venv/bin/python scripts/forvalue_mislabel.py " + " ".join(sys.argv[1:])
    result = {
        "name": "forvalue_mislabel",
        "description": "For-Value (arXiv 2508.10180) detects mislabeled supervised samples: chain_sum answers, "
                       f"{args.fraction:.0%} replaced by a wrong number, scored by SmolLM2-135M-Instruct against a clean "
                       "validation mean; AUROC of -score, corrupted = positive.",
        "baseline": "chance",
        "seeds": args.seeds,
        "base": None,
        "overrides": [],
        "compute": {"cells": len(details), "completed": len(details), "cell_seconds": sum(run_seconds)},
        "conditions": conditions,
        "claims": claims,
        "forvalue_minus_loglik_auroc": versus,
        "setup": {"model": args.model, "task": args.task, "difficulties": {d: DIFFICULTIES[d] for d in args.difficulty},
                  "n_train": args.train, "n_val": args.val, "corrupted_fraction": args.fraction,
                  "corruption": "correct answer + a uniform nonzero offset in [-10, 10]",
                  "response": "<answer>{answer}</answer> + EOS after the chat-rendered question (the warm-start's sample)",
                  "settings": {"reduce": "mean", "vocab": "all", "keep_ratio": 1.0, "batch_size": args.batch_size},
                  "threads": args.threads, "wall_seconds": time.perf_counter() - t_start, "command": command,
                  "device": "CPU", "torch": torch.__version__},
        "runs": details,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for key, cond in conditions.items():
        if key != "chance":
            mean, low, high = cond["metrics"]["auroc"]["after"]
            print(f"{key:>18}: AUROC {mean:.3f} [{low:.3f}, {high:.3f}] over {len(args.seeds)} seeds")
    print(f"wrote {args.out} ({time.perf_counter() - t_start:.0f}s)")


def _mean(values):
    return sum(values) / len(values) if values else None


if __name__ == "__main__":
    main()
