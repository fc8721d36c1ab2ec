"""Reading a run directory back for the HTML report: ``metrics.jsonl``, ``summary.json``, ``config.yaml``.

The trainer writes one JSON record per line to ``metrics.jsonl``, each with a ``stage`` ("sft", "rl" or
"eval") and a ``step``. A key absent from a record is a gap, never a zero, and a NaN stays a NaN; the
series read here keep both apart (an absent key drops the point, a non-finite value becomes ``None``,
which plotly draws as a break in the line). ``summary.json`` only exists once a run has ended, so a
running or crashed run is read from ``metrics.jsonl`` alone.

Imports only the standard library and PyYAML, so that ``rlvr report`` starts fast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
STAGES = ("sft", "rl", "eval")


class RunDirError(ValueError):
    """A path that is not a readable run directory; the message names the path."""


@dataclass
class RunLog:
    """One run's records, split by stage, plus its summary and config when they exist."""

    path: Path
    name: str
    records: dict[str, list[dict[str, Any]]]
    """stage -> that stage's records in file order."""
    summary: dict[str, Any] | None = None
    """``summary.json``; None while the run is still going or after a hard crash."""
    config: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    """What could not be read (a line cut off by a crash, an unparseable summary), for the report's notes."""

    @property
    def rl(self) -> list[dict[str, Any]]:
        return self.records["rl"]

    def series(self, key: str, stage: str = "rl") -> tuple[list[int], list[float | None]]:
        """(steps, values) of ``key`` over the records of ``stage`` that have it; NaN and inf become None."""
        steps: list[int] = []
        values: list[float | None] = []
        for record in self.records[stage]:
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            steps.append(int(record["step"]))
            values.append(float(value) if math.isfinite(value) else None)
        return steps, values

    def has(self, key: str, stage: str = "rl") -> bool:
        """True when at least one record of ``stage`` has a finite value for ``key``."""
        return any(v is not None for v in self.series(key, stage)[1])

    def keys_with_prefix(self, prefix: str, stage: str = "rl") -> list[str]:
        """Every key starting with ``prefix`` in any record of ``stage``, in order of first appearance."""
        seen: dict[str, None] = {}
        for record in self.records[stage]:
            seen.update((k, None) for k in record if k.startswith(prefix))
        return list(seen)

    def last(self, key: str, stage: str = "rl") -> tuple[int, float] | None:
        """(step, value) of the last finite value of ``key``, or None."""
        for step, value in reversed(list(zip(*self.series(key, stage)))):
            if value is not None:
                return step, value
        return None

    def labels(self, key: str = "phase/label") -> tuple[list[int], list[str | None]]:
        """(step, label) for every RL record; None where the record has no label."""
        steps = [int(r["step"]) for r in self.rl]
        labels = [r[key] if isinstance(r.get(key), str) else None for r in self.rl]
        return steps, labels

    def rl_steps_done(self) -> int:
        """From ``summary.json`` when there is one, else the last RL step in the metrics."""
        if self.summary and isinstance(self.summary.get("rl_steps_done"), int):
            return self.summary["rl_steps_done"]
        return max((int(r["step"]) for r in self.rl), default=0)

    def evaluation(self, label: str) -> dict[str, Any] | None:
        """The eval result called ``label`` ("before_rl", "step_N", "after_rl"): the summary's, else the metrics'."""
        if self.summary and label in self.summary.get("eval", {}):
            return self.summary["eval"][label]
        found = [r for r in self.records["eval"] if r.get("label") == label]
        return found[-1] if found else None


def read_metrics(path: Path) -> tuple[dict[str, list[dict[str, Any]]], list[int]]:
    """Records of a ``metrics.jsonl`` by stage, and the numbers of the lines that could not be read.

    A record needs a ``stage`` string and an integer-valued ``step``; anything else counts as unreadable.
    """
    records: dict[str, list[dict[str, Any]]] = {stage: [] for stage in STAGES}
    unreadable: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)  # Python's json reads the NaN/Infinity literals json.dumps writes
            except json.JSONDecodeError:
                unreadable.append(number)
                continue
            if not (isinstance(record, dict) and isinstance(record.get("stage"), str) and _is_step(record.get("step"))):
                unreadable.append(number)
                continue
            records.setdefault(record["stage"], []).append(record)  # stages other than STAGES are kept, unused
    return records, unreadable


def _is_step(value: Any) -> bool:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return numeric and math.isfinite(value) and value == int(value)


def _read_optional(path: Path, parse, problems: list[str]) -> dict[str, Any] | None:
    """A JSON or YAML mapping, or None when the file is absent or unreadable (noted in ``problems``)."""
    if not path.is_file():
        return None
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as exc:
        problems.append(f"{path.name} could not be parsed and was ignored ({type(exc).__name__})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} does not hold a mapping and was ignored")
        return None
    return data


def load_run(path: Path | str) -> RunLog:
    """Read one run directory. Raises RunDirError when it is missing or has no ``metrics.jsonl``."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory (expected a run directory with a {METRICS_FILE})")
    metrics = path / METRICS_FILE
    if not metrics.is_file():
        raise RunDirError(f"{path}: no {METRICS_FILE} here, so this is not a run directory written by `rlvr train`")
    records, unreadable = read_metrics(metrics)
    problems = [f"{METRICS_FILE}: skipped unreadable line(s) {_line_list(unreadable)}"] if unreadable else []
    summary = _read_optional(path / SUMMARY_FILE, json.loads, problems)
    config = _read_optional(path / CONFIG_FILE, yaml.safe_load, problems)
    run_section = (config or {}).get("run")
    name = (run_section.get("name") if isinstance(run_section, dict) else None) or path.resolve().name
    return RunLog(path=path, name=str(name), records=records, summary=summary, config=config, problems=problems)


def _line_list(numbers: list[int], shown: int = 5) -> str:
    text = ", ".join(map(str, numbers[:shown]))
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")


def load_runs(paths: Sequence[Path | str]) -> list[RunLog]:
    """Read several run directories; runs that share a name get " #2", " #3", ... so legends stay apart."""
    if not paths:
        raise RunDirError("no run directories given")
    runs = [load_run(p) for p in paths]
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
        if counts[run.name] > 1:
            run.name = f"{run.name} #{counts[run.name]}"
    return runs


@dataclass(frozen=True)
class PhaseSegment:
    """Steps ``start`` to ``end`` (both included) carried the same phase label."""

    label: str
    start: int
    end: int


def phase_segments(steps: Sequence[int], labels: Sequence[str | None]) -> list[PhaseSegment]:
    """Merge consecutive steps with the same label into segments; an unlabelled step ends a segment.

    >>> phase_segments([1, 2, 3, 4], ["warmup", "warmup", "healthy", "healthy"])
    [PhaseSegment(label='warmup', start=1, end=2), PhaseSegment(label='healthy', start=3, end=4)]
    """
    if len(steps) != len(labels):
        raise ValueError(f"steps and labels differ in length: {len(steps)} vs {len(labels)}")
    segments: list[PhaseSegment] = []
    current: PhaseSegment | None = None
    for step, label in zip(steps, labels):
        if current is not None and label == current.label:
            current = PhaseSegment(label, current.start, step)
            continue
        if current is not None:
            segments.append(current)
        current = PhaseSegment(label, step, step) if label is not None else None
    if current is not None:
        segments.append(current)
    return segments
