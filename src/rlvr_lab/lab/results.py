"""Experiment results: a finished sweep's small summary and the verdict on each of its claims.

An experiment spec (``experiments/<name>.yaml``) may state its claims, each a direction of one metric of
one condition relative to the sweep's baseline::

    claims:
      - {condition: nsr, metric: eval/pass@8, direction: higher, text: "NSR keeps pass@k at large k"}
      - {condition: clip_cov, metric: final:policy/entropy, direction: higher}

A metric is a held-out evaluation metric after RL (``eval/pass@1``) or ``final:<key>``, the mean of a
training signal over the last :data:`FINAL_STEPS` RL steps of a run (``final:policy/entropy``). The
verdict reads the 95% interval of the difference to the baseline, paired by seed
(:func:`~rlvr_lab.lab.compare.paired_difference`): *reproduced* when the whole interval lies on the
claimed side of 0, *not reproduced* when it lies wholly on the other side, *inconclusive at this power*
when it contains 0, and *inconclusive* with fewer than two paired seeds.

:func:`summarise_sweep` writes the JSON that is committed under ``experiments/results/`` (never the runs
themselves), and :func:`results_table` turns those files into README's table, so every number in it can
be regenerated from the summaries with one command (``scripts/experiment_results.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rlvr_lab.lab.compare import (
    Comparison,
    Condition,
    default_metrics,
    load_comparison,
    mean_interval,
    paired_difference,
)

FINAL_STEPS = 5
FINAL_PREFIX = "final:"
DIRECTIONS = ("higher", "lower")
SIGNALS = ("final:reward/mean", "final:policy/entropy")


@dataclass(frozen=True)
class Claim:
    condition: str
    metric: str
    direction: str
    text: str = ""


def parse_claims(data: Any, conditions: Sequence[str], baseline: str, where: str = "claims") -> list[Claim]:
    """The ``claims`` list of a spec, checked against the sweep's conditions."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError(f"{where} must be a list of {{condition, metric, direction, text}}")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, Mapping) or not {"condition", "metric", "direction"} <= set(item):
            raise ValueError(f"{where}[{i}] needs condition, metric and direction (and optionally text)")
        unknown = set(item) - {"condition", "metric", "direction", "text"}
        if unknown:
            raise ValueError(f"{where}[{i}]: unknown key(s) {sorted(unknown)}")
        if item["condition"] not in conditions or item["condition"] == baseline:
            raise ValueError(f"{where}[{i}].condition={item['condition']!r} must be one of the conditions other "
                             f"than the baseline {baseline!r}: {', '.join(c for c in conditions if c != baseline)}")
        if item["direction"] not in DIRECTIONS:
            raise ValueError(f"{where}[{i}].direction={item['direction']!r}: one of {', '.join(DIRECTIONS)}")
        out.append(Claim(str(item["condition"]), str(item["metric"]), str(item["direction"]), str(item.get("text", ""))))
    return out


def condition_values(condition: Condition, metric: str) -> dict[Any, float]:
    """seed -> the metric of each completed run: an eval metric after RL, or a ``final:`` training signal."""
    if not metric.startswith(FINAL_PREFIX):
        return condition.values(metric, "after_rl")
    key, out = metric[len(FINAL_PREFIX):], {}
    for cell in condition.completed:
        values = [r[key] for r in cell.run.rl if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if values:
            tail = values[-FINAL_STEPS:]
            out[cell.seed] = math.fsum(tail) / len(tail)
    return out


def verdict(diff: tuple[float, float, float, int], direction: str) -> str:
    """Reproduced / not reproduced / inconclusive from a paired (mean, low, high, n) difference."""
    mean, low, high, n = diff
    if n < 2 or not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive (fewer than 2 paired seeds)"
    sign = 1.0 if direction == "higher" else -1.0
    if sign * low > 0 and sign * high > 0:
        return "reproduced"
    if sign * low < 0 and sign * high < 0:
        return "not reproduced (the opposite)"
    return "inconclusive at this power"


def _stats(values: Mapping[Any, float]) -> list[float] | None:
    return list(mean_interval(list(values.values()))) if values else None


def summarise_sweep(sweep_dir: Path | str, spec_path: Path | str | None = None) -> dict[str, Any]:
    """The JSON summary of a sweep: per condition the held-out metrics and final training signals (mean and
    95% interval over seeds, paired difference to the baseline), the claims' verdicts and the compute used.
    Claims come from ``spec_path`` (default: the sweep's own ``spec.yaml``)."""
    comparison: Comparison = load_comparison(sweep_dir)
    spec_file = Path(spec_path) if spec_path is not None else Path(sweep_dir) / "spec.yaml"
    spec = yaml.safe_load(spec_file.read_text()) if spec_file.is_file() else {}
    names = [c.name for c in comparison.conditions]
    claims = parse_claims(spec.get("claims"), names, comparison.baseline, where=f"{spec_file}: claims")
    metrics = list(dict.fromkeys([*default_metrics(comparison), *SIGNALS, *(c.metric for c in claims)]))
    baseline = comparison.condition(comparison.baseline)
    reference = {m: condition_values(baseline, m) for m in metrics}
    conditions = {}
    for condition in comparison.conditions:
        rows = {}
        for metric in metrics:
            values = condition_values(condition, metric)
            before = condition.values(metric, "before_rl") if not metric.startswith(FINAL_PREFIX) else {}
            rows[metric] = {
                "before": math.fsum(before.values()) / len(before) if before else None,
                "after": _stats(values),
                "diff": None if condition is baseline else list(paired_difference(values, reference[metric])),
                "per_seed": {str(k): v for k, v in values.items()},
            }
        conditions[condition.name] = {"presets": condition.presets, "overrides": condition.overrides,
                                      "seeds_completed": len(condition.completed), "metrics": rows}
    judged = []
    for claim in claims:
        diff = conditions[claim.condition]["metrics"][claim.metric]["diff"]
        judged.append({"condition": claim.condition, "metric": claim.metric, "direction": claim.direction,
                       "text": claim.text, "diff": diff, "verdict": verdict(tuple(diff), claim.direction)})
    seconds = [c.seconds for c in comparison.cells if c.seconds is not None] + comparison.warm_start_seconds
    return {
        "name": comparison.name, "description": comparison.description, "baseline": comparison.baseline,
        "seeds": comparison.seeds, "base": spec.get("base"), "overrides": spec.get("overrides", []),
        "compute": {"cells": len(comparison.cells), "completed": sum(c.run is not None for c in comparison.cells),
                    "cell_seconds": math.fsum(seconds)},
        "conditions": conditions, "claims": judged,
    }


def write_summary(sweep_dir: Path | str, out_dir: Path | str, spec_path: Path | str | None = None) -> Path:
    summary = summarise_sweep(sweep_dir, spec_path)
    out = Path(out_dir) / f"{summary['name']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1, sort_keys=False) + "\n")
    return out


def _interval(stats: Sequence[float] | None, signed: bool = False) -> str:
    if not stats:
        return "—"
    mean, low, high = stats[:3]
    fmt = "{:+.3f}" if signed else "{:.3f}"
    if not (math.isfinite(low) and math.isfinite(high)):
        return fmt.format(mean) + " (no interval)"
    return f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def results_table(results_dir: Path | str) -> str:
    """README's Markdown table of every committed summary: one row per claim."""
    rows = ["| experiment | claim | condition vs baseline | measured: condition − baseline, paired [95%] | "
            "verdict | seeds | compute |", "|---|---|---|---|---|---|---|"]
    for path in sorted(Path(results_dir).glob("*.json")):
        s = json.loads(path.read_text())
        hours = s["compute"]["cell_seconds"] / 3600
        compute = f"{s['compute']['completed']} runs, {hours:.1f} h"
        for claim in s["claims"] or [None]:
            if claim is None:
                rows.append(f"| `{s['name']}` | {s['description']} | — | — | no claim stated | "
                            f"{len(s['seeds'])} | {compute} |")
                continue
            n = claim["diff"][3] if claim["diff"] else 0
            metric = claim["metric"].removeprefix("eval/")
            rows.append(
                f"| `{s['name']}` | {claim['text'] or s['description']} | `{claim['condition']}` vs "
                f"`{s['baseline']}`, {metric} ({claim['direction']}) | {_interval(claim['diff'], signed=True)} | "
                f"{claim['verdict']} | {n} | {compute} |"
            )
    return "\n".join(r.replace("\n", " ") for r in rows)
