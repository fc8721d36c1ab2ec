"""Sweeps: a grid of run configs (base x condition presets x overrides x grid values) crossed with seeds.

A spec file names the conditions to compare and the seeds; every (condition, seed) pair is a *cell*,
one ``rlvr train`` run in its own process. ``load_spec`` reads a spec, ``expand`` lists its cells,
``plan_sweep`` validates every cell's config and decides what to run, ``run_sweep`` runs it::

    spec = load_spec("experiments/entropy_mechanism.yaml")
    run_sweep(spec, parallel=2)           # sweeps/entropy_mechanism/{spec.yaml,manifest.json,runs/...}

The sweep directory holds ``spec.yaml`` (the spec last run there), ``manifest.json`` (every cell's
status, rewritten atomically after each change) and ``runs/<condition>/seed<seed>/``, the run
directories, each next to its ``.config.yaml`` (the resolved config it trained from, so any cell can be
rerun by hand with ``rlvr train``) and its ``.log``. A cell is completed exactly when its
``summary.json`` says ``"status": "completed"``; a rerun skips those and restarts every other cell from
scratch, so a sweep that was stopped or killed resumes by running the same command again.

With ``warm_start: shared`` (the default) cells of one seed whose model, task, search and warm-start
settings agree share their supervised warm-start: it is trained once, as ``warm/<key>/seed<seed>/`` (a run
without RL steps), before the first cell that loads it (``sft.init_from``). The cells then start RL from
the same weights, which a paired comparison wants, and the sweep does not train them again per condition.
``warm_start: per_run`` trains one in every cell.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlvr_lab.config import (
    Config,
    ConfigError,
    build_config,
    dump_config,
    load_config,
    parse_override,
    resolve_config_file,
)
from rlvr_lab.presets import preset_names
from rlvr_lab.threads import available_cores

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
CONDITION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")  # it names a directory
# ``claims`` is read by rlvr_lab.lab.results (the verdicts), not by the sweep.
SPEC_KEYS = ("name", "description", "base", "overrides", "seeds", "baseline", "conditions", "grid", "claims",
             "warm_start")
WARM_STARTS = ("shared", "per_run")
# Settings each cell gets from the sweep itself; a spec that sets them would be silently overridden.
SWEEP_SETTINGS = ("run.seed", "run.output_dir", "run.name", "run.overwrite", "run.threads")
BACKENDS = ("local", "ray")
LOG_TAIL_LINES = 20
TERMINATE_GRACE_S = 5.0


class SpecError(ValueError):
    """A sweep that cannot start: a bad spec, a cell whose config is invalid, a changed spec."""


# ---- the spec ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One compared configuration. ``overrides`` are the condition's own, then its grid values;
    ``group`` is the name in the spec's ``conditions`` (``name`` adds the grid values to it)."""

    name: str
    group: str
    presets: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepSpec:
    name: str
    description: str
    base: str                          # as written: a path relative to ``root`` or a packaged preset name
    overrides: tuple[str, ...]         # applied to every condition, before the condition's own
    seeds: tuple[int, ...]
    baseline: str                      # a name of ``conditions``
    conditions: tuple[Condition, ...]  # grid already expanded, in spec order
    root: Path = Path(".")             # folder of the spec file: base and preset paths are relative to it
    text: str = ""                     # the spec file as given
    warm_start: str = "shared"         # shared: cells with the same seed and warm-start config share one

    def all_overrides(self, condition: Condition) -> tuple[str, ...]:
        return self.overrides + condition.overrides


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: a condition with one seed."""

    condition: str
    seed: int
    presets: tuple[str, ...]
    overrides: tuple[str, ...]  # the spec's, the condition's, its grid values; not the sweep's own settings

    @property
    def label(self) -> str:
        return f"{self.condition}/seed{self.seed}"

    @property
    def run_dir(self) -> str:
        """The run directory, relative to the sweep directory."""
        return f"runs/{self.condition}/seed{self.seed}"

    def settings(self, out: Path, threads: int) -> list[str]:
        """The sweep's own overrides, applied last."""
        return [f"run.seed={self.seed}", f"run.output_dir={(out / 'runs' / self.condition).resolve()}",
                f"run.name=seed{self.seed}", "run.overwrite=true", f"run.threads={threads}"]


@dataclass(frozen=True)
class WarmStart:
    """A supervised warm-start shared by the cells of one seed whose model, task, search and warm-start
    settings are equal: one ``rlvr train`` run without RL steps, whose final checkpoint those cells load
    (``sft.init_from``) instead of each training the same weights again."""

    key: str  # hash of the settings the warm-start depends on (:func:`warm_key`)
    seed: int

    @property
    def label(self) -> str:
        return f"warm-start {self.key}/seed{self.seed}"

    @property
    def run_dir(self) -> str:
        return f"warm/{self.key}/seed{self.seed}"

    @property
    def checkpoint(self) -> str:
        return f"{self.run_dir}/checkpoints/final"


WARM_SECTIONS = ("model", "task", "sft", "search")
"""The config sections a warm-start depends on (with the seed); two cells that agree on them train the same
warm-start weights, because a warm-start reads nothing else (no RL setting, no sampling)."""


def warm_key(cfg: Config) -> str:
    data = {name: getattr(cfg, name).model_dump(mode="json") for name in WARM_SECTIONS}
    data["sft"].pop("init_from", None)
    data["seed"] = cfg.run.seed
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def share_warm_starts(configs: dict[Cell, Config], out: Path) -> tuple[dict[Cell, WarmStart], dict[WarmStart, Config]]:
    """For every cell with a warm-start (``sft.steps > 0``, no ``sft.init_from`` of its own): the shared
    warm-start it loads, its config rewritten to load it, and each warm-start's own config (the first such
    cell's, with no RL steps, no evaluation, no report)."""
    needs: dict[Cell, WarmStart] = {}
    jobs: dict[WarmStart, Config] = {}
    for cell, cfg in configs.items():
        if cfg.sft.steps == 0 or cfg.sft.init_from:
            continue
        job = WarmStart(warm_key(cfg), cfg.run.seed)
        needs[cell] = job
        if job not in jobs:
            data = cfg.model_dump(mode="json")
            data["train"]["steps"] = 0
            data["eval"]["enabled"] = False
            data["observe"].update(report=False, tensorboard=False, probe_prompts=0)
            data["observe"]["wandb"]["enabled"] = data["observe"]["mlflow"]["enabled"] = False
            data["run"].update(output_dir=str((out / "warm" / job.key).resolve()), name=f"seed{job.seed}")
            jobs[job] = build_config(data)
        data = cfg.model_dump(mode="json")
        data["sft"]["init_from"] = str((out / job.checkpoint).resolve())
        configs[cell] = build_config(data)
    return needs, jobs


def warm_completed(out: Path, job: WarmStart) -> bool:
    return is_completed(out / job.run_dir) and (out / job.checkpoint).is_dir()


def _string_list(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where} must be a list of strings, got {value!r}")
        return ()
    return tuple(value)


def _check_overrides(overrides: tuple[str, ...], where: str, problems: list[str]) -> None:
    for text in overrides:
        try:
            keys, _ = parse_override(text)
        except ConfigError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if ".".join(keys) in SWEEP_SETTINGS:
            problems.append(f"{where}: {text!r} sets {'.'.join(keys)}, which the sweep sets for each cell "
                            f"({', '.join(SWEEP_SETTINGS)}); seeds come from `seeds:`")


def value_text(value: Any) -> str:
    """``value`` as override text that parses back to the same value (``1e-05`` -> ``1.0e-05``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
    return text.removesuffix("...").strip()


def _expand_grid(grid: Any, problems: list[str]) -> list[list[tuple[str, str]]]:
    """Every combination of the grid's values, in key order, as (name part, override) pairs."""
    if grid is None:
        return [[]]
    if not isinstance(grid, dict) or not grid:
        problems.append(f"grid must be a non-empty mapping of key.path -> list of values, got {grid!r}")
        return [[]]
    axes = []
    for key, values in grid.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            problems.append(f"grid key {key!r} must be a key.path")
            continue
        if not isinstance(values, list) or not values:
            problems.append(f"grid.{key} must be a non-empty list of values, got {values!r}")
            continue
        if key in SWEEP_SETTINGS:
            problems.append(f"grid.{key}: the sweep sets {key} for each cell")
            continue
        texts = [value_text(v) for v in values]
        if len(set(texts)) < len(texts):
            problems.append(f"grid.{key} repeats a value: {values!r}")
            continue
        short = key.rsplit(".", 1)[-1]
        axes.append([(f"{short}={t}", f"{key}={t}") for t in texts])
    return [list(combo) for combo in itertools.product(*axes)]


def parse_spec(data: Any, *, root: Path = Path("."), text: str = "", where: str = "spec") -> SweepSpec:
    """A spec from its parsed YAML; every problem is named in one SpecError."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: the top level must be a mapping, got {type(data).__name__}")
    problems: list[str] = []
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        problems.append(f"unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        problems.append(f"name is required and must match [A-Za-z0-9_-]+, got {name!r}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        problems.append(f"description must be a string, got {description!r}")
    base = data.get("base")
    if not isinstance(base, str) or not base:
        problems.append("base (the run config: a path relative to the spec, or a preset name) is required, "
                        f"got {base!r}")
    overrides = _string_list(data.get("overrides"), "overrides", problems)
    _check_overrides(overrides, "overrides", problems)

    seeds = data.get("seeds")
    if not isinstance(seeds, list) or not seeds:
        problems.append(f"seeds must be a non-empty list of ints, got {seeds!r}")
        seeds = []
    elif not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        problems.append(f"seeds must be ints, got {seeds!r}")
    elif len(set(seeds)) < len(seeds):
        problems.append(f"seeds must be distinct, got {seeds!r} (repeats: "
                        f"{sorted({s for s in seeds if seeds.count(s) > 1})})")

    combos = _expand_grid(data.get("grid"), problems)
    raw = data.get("conditions")
    conditions: list[Condition] = []
    if not isinstance(raw, dict) or not raw:
        problems.append("conditions must be a non-empty mapping name -> {presets: [...], overrides: [...]}, "
                        f"got {raw!r}")
        raw = {}
    for group, body in raw.items():
        if not isinstance(group, str) or not CONDITION_RE.fullmatch(group):
            problems.append(f"condition name {group!r} must match {CONDITION_RE.pattern} (it names a directory)")
            continue
        body = body if body is not None else {}
        if not isinstance(body, dict) or set(body) - {"presets", "overrides"}:
            problems.append(f"conditions.{group} must be a mapping with presets and/or overrides, got {body!r}")
            continue
        presets = _string_list(body.get("presets"), f"conditions.{group}.presets", problems)
        own = _string_list(body.get("overrides"), f"conditions.{group}.overrides", problems)
        _check_overrides(own, f"conditions.{group}.overrides", problems)
        for combo in combos:
            full = "+".join([group, *(part for part, _ in combo)])
            if not CONDITION_RE.fullmatch(full):
                problems.append(f"condition name {full!r} (from the grid values) cannot name a directory; "
                                "grid values must be plain numbers, booleans or words")
                continue
            conditions.append(Condition(full, group, presets, own + tuple(o for _, o in combo)))

    names = [c.name for c in conditions]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"condition names {repeated} occur more than once after the grid expansion")
    baseline = data.get("baseline")
    if baseline is None:
        baseline = names[0] if names else ""
    elif baseline in names:
        pass
    elif any(c.group == baseline for c in conditions):  # with a grid: its first combination
        baseline = next(c.name for c in conditions if c.group == baseline)
    else:
        problems.append(f"baseline {baseline!r} is not a condition; conditions: {', '.join(names) or '(none)'}")
    warm_start = data.get("warm_start", "shared")
    if warm_start not in WARM_STARTS:
        problems.append(f"warm_start must be one of {', '.join(WARM_STARTS)}, got {warm_start!r}")
    if problems:
        raise SpecError(f"{where}: invalid sweep spec:\n" + "\n".join(f"  {p}" for p in problems))
    return SweepSpec(name=name, description=description, base=base, overrides=overrides, seeds=tuple(seeds),
                     baseline=baseline, conditions=tuple(conditions), root=root, text=text, warm_start=warm_start)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a spec file (its structure; the cells' configs are checked by ``plan_sweep``)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec not found: {path}")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, root=path.resolve().parent, text=text, where=str(path))


def spec_yaml(spec: SweepSpec) -> str:
    """A spec file equivalent to ``spec`` (its grid written out as conditions), for specs built in code."""
    data = {"name": spec.name, "description": spec.description, "base": spec.base,
            "overrides": list(spec.overrides), "seeds": list(spec.seeds), "baseline": spec.baseline,
            "conditions": {c.name: {"presets": list(c.presets), "overrides": list(c.overrides)}
                           for c in spec.conditions}, "warm_start": spec.warm_start}
    return yaml.safe_dump(data, sort_keys=False)


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell, seed-major: each seed of every condition before the next seed, so that a sweep stopped
    early still compares all its conditions."""
    return [Cell(c.name, seed, c.presets, spec.all_overrides(c)) for seed in spec.seeds for c in spec.conditions]


def spec_differences(old: SweepSpec, new: SweepSpec) -> list[str]:
    """What ``new`` changes about the cells of ``old``; adding conditions or seeds changes none."""
    diffs = []
    if old.base != new.base:
        diffs.append(f"base: {old.base!r} -> {new.base!r}")
    if old.overrides != new.overrides:
        diffs.append(f"overrides: {list(old.overrides)} -> {list(new.overrides)}")
    current = {c.name: c for c in new.conditions}
    for c in old.conditions:
        now = current.get(c.name)
        if now is None:
            diffs.append(f"condition {c.name!r} is not in the new spec")
            continue
        if c.presets != now.presets:
            diffs.append(f"condition {c.name!r}: presets {list(c.presets)} -> {list(now.presets)}")
        if c.overrides != now.overrides:
            diffs.append(f"condition {c.name!r}: overrides {list(c.overrides)} -> {list(now.overrides)}")
    dropped = [s for s in old.seeds if s not in new.seeds]
    if dropped:
        diffs.append(f"seeds {dropped} are not in the new spec")
    return diffs


# ---- planning ------------------------------------------------------------------------------------


@dataclass
class CellState:
    """A cell's manifest entry."""

    status: str = "pending"  # pending | running | completed | failed
    seconds: float | None = None
    error: str | None = None


@dataclass
class SweepPlan:
    spec: SweepSpec
    out: Path
    cells: list[Cell]               # every cell of the spec, in run order
    threads: int                    # per cell
    parallel: int
    selected: set[str]              # the conditions this invocation runs (--only)
    todo: list[Cell]                # what this invocation runs, in order
    restart: set[Cell]              # of ``todo``: incomplete cells whose files are deleted first
    states: dict[Cell, CellState]
    configs: dict[Cell, Config] = field(repr=False, default_factory=dict)
    warm: dict[Cell, WarmStart] = field(default_factory=dict)            # the shared warm-start a cell loads
    warm_states: dict[WarmStart, CellState] = field(default_factory=dict)
    warm_configs: dict[WarmStart, Config] = field(repr=False, default_factory=dict)
    warm_todo: list[WarmStart] = field(default_factory=list)             # needed by ``todo`` and not completed

    def states_of(self, item: Cell | WarmStart) -> dict:
        """The table that holds ``item``'s state: ``warm_states`` for a warm-start, else ``states``."""
        return self.warm_states if isinstance(item, WarmStart) else self.states

    @property
    def skipped(self) -> list[Cell]:
        """Selected cells that are already completed."""
        return [c for c in self.cells if c.condition in self.selected and c not in self.todo
                and self.states[c].status == "completed"]

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if self.states[c].status == "failed"]


def is_completed(run_dir: Path) -> bool:
    """The trainer writes ``summary.json`` last, with ``"status": "completed"`` only when the run finished."""
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status") == "completed"
    except (OSError, ValueError, AttributeError):
        return False


def default_threads() -> int:
    return available_cores(fallback=2)


def cell_configs(spec: SweepSpec, cells: list[Cell], out: Path, threads: int) -> dict[Cell, Config]:
    """Build and validate every cell's config (unknown presets and keys, bad values, inert methods, inputs
    the rollout cannot give); every problem is named with its condition and seeds in one SpecError."""
    from rlvr_lab.train.methods import SINGLE_TURN_PROVIDES, TOOL_USE_PROVIDES, check_inputs

    try:
        base = resolve_config_file(spec.base, spec.root)
    except ConfigError as exc:
        raise SpecError(f"base: {exc}") from None
    presets: dict[str, Path] = {}
    problems: dict[tuple[str, str], list[int]] = {}
    for c in spec.conditions:
        for p in c.presets:
            try:
                presets[p] = resolve_config_file(p, spec.root)
            except ConfigError:
                message = (f"unknown preset {p!r}: no file {spec.root / p} and no packaged preset of that name "
                           f"(presets: {', '.join(preset_names())})")
                problems.setdefault((c.name, message), []).extend(spec.seeds)
    configs = {}
    for cell in cells:
        if any(p not in presets for p in cell.presets):
            continue
        try:
            cfg = load_config(base, presets=[presets[p] for p in cell.presets],
                              overrides=[*cell.overrides, *cell.settings(out, threads)])
            check_inputs(cfg, TOOL_USE_PROVIDES if cfg.search.enabled else SINGLE_TURN_PROVIDES)
        except ValueError as exc:  # a ConfigError, or check_inputs'
            problems.setdefault((cell.condition, str(exc)), []).append(cell.seed)
            continue
        configs[cell] = cfg
    if problems:
        lines = [f"  condition {name!r}, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: "
                 + message.replace("\n", "\n  ") for (name, message), seeds in problems.items()]
        raise SpecError("some cells have an invalid config; nothing was run:\n" + "\n".join(lines))
    return configs


def _select(spec: SweepSpec, only: Iterable[str]) -> set[str]:
    only = list(only)
    if not only:
        return {c.name for c in spec.conditions}
    unknown = [o for o in only if not any(o in (c.name, c.group) for c in spec.conditions)]
    if unknown:
        raise SpecError(f"--only {', '.join(unknown)}: no such condition; conditions: "
                        f"{', '.join(c.name for c in spec.conditions)}")
    return {c.name for c in spec.conditions if c.name in only or c.group in only}


def plan_sweep(spec: SweepSpec, out: str | Path | None = None, *, parallel: int = 1, threads: int | None = None,
               only: Iterable[str] = ()) -> SweepPlan:
    """Everything a sweep checks before its first cell: the spec against the one already in ``out``,
    every cell's config, and which cells to skip (completed), restart (incomplete) or run. Reads only."""
    out = Path(out) if out is not None else Path("sweeps") / spec.name
    if parallel < 1:
        raise SpecError(f"--parallel must be >= 1, got {parallel}")
    total = threads if threads is not None else default_threads()
    if total < 1:
        raise SpecError(f"--threads must be >= 1, got {total}")
    per_cell = max(1, total // parallel)
    if (out / "spec.yaml").is_file():
        old_text = (out / "spec.yaml").read_text()
        try:
            old_data = yaml.safe_load(old_text)
        except yaml.YAMLError as exc:
            raise SpecError(f"{out / 'spec.yaml'}: not valid YAML: {exc}") from None
        old = parse_spec(old_data, text=old_text, where=str(out / "spec.yaml"))
        diffs = spec_differences(old, spec)
        if diffs:
            raise SpecError(f"{out} holds a sweep run with a different spec, which would mix results:\n"
                            + "\n".join(f"  {d}" for d in diffs)
                            + "\nAn existing sweep may only gain conditions or seeds; "
                              "use another --out for a changed spec.")
    elif out.exists() and any(p.name != ".lock" for p in out.iterdir()):
        raise SpecError(f"{out} exists and is not a sweep directory (no spec.yaml); choose another --out")
    cells = expand(spec)
    configs = cell_configs(spec, cells, out, per_cell)
    needs, warm_configs = share_warm_starts(configs, out) if spec.warm_start == "shared" else ({}, {})
    selected = _select(spec, only)

    previous: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        for entry in json.loads((out / "manifest.json").read_text())["cells"]:
            previous[(entry["condition"], entry["seed"])] = entry
    except (OSError, ValueError, KeyError, TypeError):
        pass
    todo, restart, states = [], set(), {}
    for cell in cells:
        before = previous.get((cell.condition, cell.seed), {})
        if is_completed(out / cell.run_dir):
            states[cell] = CellState("completed", before.get("seconds"))
            continue
        if cell.condition not in selected:  # left as it was
            failed = before.get("status") == "failed"
            states[cell] = CellState("failed", before.get("seconds"), before.get("error")) if failed else CellState()
            continue
        states[cell] = CellState()
        todo.append(cell)
        if any(p.exists() for p in _cell_files(out, cell)):
            restart.add(cell)
    warm_states = {job: CellState("completed" if warm_completed(out, job) else "pending") for job in warm_configs}
    warm_todo = list(dict.fromkeys(needs[c] for c in todo if c in needs and warm_states[needs[c]].status != "completed"))
    return SweepPlan(spec, out, cells, per_cell, parallel, selected, todo, restart, states, configs,
                     needs, warm_states, warm_configs, warm_todo)


def _cell_files(out: Path, cell: Cell | WarmStart) -> tuple[Path, Path, Path]:
    run_dir = out / cell.run_dir
    return run_dir, run_dir.with_name(run_dir.name + ".log"), run_dir.with_name(run_dir.name + ".config.yaml")


# ---- the manifest --------------------------------------------------------------------------------


def manifest(plan: SweepPlan) -> dict[str, Any]:
    spec = plan.spec
    return {
        "name": spec.name,
        "description": spec.description,
        "baseline": spec.baseline,
        "seeds": list(spec.seeds),
        "conditions": {c.name: {"presets": list(c.presets), "overrides": list(spec.all_overrides(c))}
                       for c in spec.conditions},
        "cells": [{"condition": cell.condition, "seed": cell.seed, "run_dir": cell.run_dir,
                   "status": plan.states[cell].status, "seconds": plan.states[cell].seconds,
                   "error": plan.states[cell].error} for cell in plan.cells],
        "warm_start": spec.warm_start,
        "warm_starts": [{"key": job.key, "seed": job.seed, "run_dir": job.run_dir, "status": state.status,
                         "seconds": state.seconds, "error": state.error} for job, state in plan.warm_states.items()],
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """Readers never see a half-written file: write a temporary file, flush it, rename it over."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- running one cell ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CellJob:
    """What a process needs to run one cell (plain data, so that Ray can ship it to a worker)."""

    label: str
    config_file: str
    run_dir: str
    log_file: str
    threads: int
    cwd: str
    resume: bool = False  # continue run_dir from its last periodic checkpoint (rlvr train --resume)


@dataclass(frozen=True)
class CellResult:
    status: str  # completed | failed
    seconds: float
    error: str | None = None


def resumable(run_dir: Path, cfg: Config) -> bool:
    """Whether an interrupted cell can continue from its last periodic checkpoint (the spec sets
    ``train.checkpoint_every``) instead of starting over: its run directory has one, and its config is the
    cell's apart from the step budget and output options (a different ``--parallel`` changes the threads)."""
    if not (run_dir / "checkpoints").is_dir() or not (run_dir / "config.yaml").is_file():
        return False
    from rlvr_lab.train.resume import config_differences, latest_checkpoint  # loads torch: only when needed

    if latest_checkpoint(run_dir) is None:
        return False
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    return not config_differences(saved, cfg.model_dump(mode="json"))


def cell_command(config_file: str) -> list[str]:
    return [sys.executable, "-m", "rlvr_lab.cli", "train", config_file]


def start_cell(job: CellJob) -> subprocess.Popen:
    """Start ``rlvr train`` on the cell's config in its own process group (so that stopping the sweep can
    stop it and everything it started), with its threads pinned and its output in the cell's log."""
    threads = str(job.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
    command = cell_command(job.config_file)
    if job.resume:
        command = [*command, "--resume", job.run_dir]
    with open(job.log_file, "a" if job.resume else "w") as log:
        log.write(f"$ OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {' '.join(command)}\n")
        log.flush()
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=job.cwd, start_new_session=True)


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there after a grace period."""
    for sig, wait in ((signal.SIGTERM, TERMINATE_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def log_tail(log_file: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(log_file, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


def finish_cell(job: CellJob, returncode: int, seconds: float) -> CellResult:
    """The cell's outcome, from its summary.json; a failure carries the end of its log."""
    seconds = round(seconds, 3)
    if is_completed(Path(job.run_dir)):
        return CellResult("completed", seconds)
    try:
        status = json.loads((Path(job.run_dir) / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    reason = f"run status: {status}" if status else f"exit code {returncode}, no summary.json"
    return CellResult("failed", seconds, f"{reason}; last lines of {job.log_file}:\n{log_tail(job.log_file)}")


def run_cell(job: CellJob) -> CellResult:
    """Run one cell to the end (the body of a Ray task); stopping it stops its process group."""
    t0 = time.monotonic()
    try:
        proc = start_cell(job)
    except OSError as exc:
        return CellResult("failed", 0.0, f"could not start the cell: {exc}")
    try:
        returncode = proc.wait()
    except BaseException:  # KeyboardInterrupt, or Ray's cancellation of the task
        stop_process_group(proc)
        raise
    return finish_cell(job, returncode, time.monotonic() - t0)


# ---- backends: start cells, report finished ones, stop the rest -----------------------------------


class LocalBackend:
    """Cells as subprocesses of this process."""

    def __init__(self) -> None:
        self.running: dict[Cell, tuple[CellJob, subprocess.Popen, float]] = {}
        self.unstarted: list[tuple[Cell, CellResult]] = []

    def submit(self, cell: Cell, job: CellJob) -> None:
        t0 = time.monotonic()
        try:
            self.running[cell] = (job, start_cell(job), t0)
        except OSError as exc:
            self.unstarted.append((cell, CellResult("failed", 0.0, f"could not start the cell: {exc}")))

    def wait(self, timeout: float) -> list[tuple[Cell, CellResult]]:
        deadline = time.monotonic() + timeout
        while True:
            done = [(cell, finish_cell(job, proc.returncode, time.monotonic() - t0))
                    for cell, (job, proc, t0) in list(self.running.items()) if proc.poll() is not None]
            for cell, _ in done:
                del self.running[cell]
            done, self.unstarted = self.unstarted + done, []
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(0.05)

    def cancel(self) -> None:
        for job, proc, _ in self.running.values():
            stop_process_group(proc)
        self.running.clear()

    def close(self) -> None:
        pass


def import_ray():
    try:
        import ray
    except ImportError:
        raise SpecError("the ray backend needs Ray: pip install 'rlvr-lab[ray]'") from None
    return ray


class RayBackend:
    """Cells as Ray tasks, each running the same ``rlvr train`` subprocess on whichever node Ray picks.

    The sweep directory must be on a filesystem that every node mounts at the same path (and the
    working directory too, for relative paths in the config): workers write the run directories and
    logs there, and the driver reads them. Each task asks for ``num_cpus=threads``, so a cell whose
    threads exceed every node's CPUs waits forever. With ``address`` None a local Ray instance is started
    (and shut down at the end); otherwise ``ray.init(address=...)`` joins a running cluster, whose
    nodes need rlvr-lab installed.
    """

    def __init__(self, address: str | None, threads: int) -> None:
        ray = self.ray = import_ray()
        self.started = not ray.is_initialized()
        if self.started:
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    ray.init(num_cpus=max(default_threads(), threads), include_dashboard=False, log_to_driver=False)
            except Exception as exc:  # noqa: BLE001 - no cluster at that address, a version mismatch, ...
                raise SpecError(f"could not {'join Ray at ' + address if address else 'start Ray'}: "
                                f"{type(exc).__name__}: {exc}") from None
        self.task = ray.remote(num_cpus=threads, max_retries=0)(run_cell)
        self.running: dict[Any, Cell] = {}

    def submit(self, cell: Cell, job: CellJob) -> None:
        self.running[self.task.remote(job)] = cell

    def wait(self, timeout: float) -> list[tuple[Cell, CellResult]]:
        if not self.running:
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        done = []
        for ref in ready:
            cell = self.running.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - the task itself failed (worker died, import error)
                result = CellResult("failed", 0.0, f"ray task failed: {type(exc).__name__}: {exc}"[-2000:])
            done.append((cell, result))
        return done

    def cancel(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref)  # raises KeyboardInterrupt in the task: run_cell stops its process group
        if self.running:
            self.ray.wait(list(self.running), num_returns=len(self.running), timeout=TERMINATE_GRACE_S + 5)
        self.running.clear()

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


# ---- the sweep -----------------------------------------------------------------------------------


def _lock(out: Path):
    """Hold ``out/.lock`` for the sweep: two sweeps writing one directory would corrupt each other's cells."""
    import fcntl

    handle = open(out / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SpecError(f"another rlvr sweep is running in {out}") from None
    return handle


def run_sweep(spec: SweepSpec, out: str | Path | None = None, *, parallel: int = 1, threads: int | None = None,
              backend: str = "local", ray_address: str | None = None, only: Iterable[str] = (),
              reporter: Callable[..., None] | None = None) -> SweepPlan:
    """Run the cells of ``spec`` that are not completed, ``parallel`` at a time, each with
    ``threads // parallel`` threads (``threads`` default: this machine's CPUs). Returns the plan with
    every cell's final state; a failed cell does not stop the others. Raises SpecError before any cell
    starts; on KeyboardInterrupt the running cells are stopped, left restartable, and it re-raises."""
    report = reporter or (lambda kind, **kw: None)
    if backend not in BACKENDS:
        raise SpecError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if ray_address and backend != "ray":
        raise SpecError("--ray-address needs --backend ray")
    plan = plan_sweep(spec, out, parallel=parallel, threads=threads, only=only)
    if backend == "ray":
        import_ray()
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        (out / "spec.yaml").write_text(spec.text or spec_yaml(spec))
        write_json_atomic(out / "manifest.json", manifest(plan))
        runner = RayBackend(ray_address, plan.threads) if backend == "ray" and plan.todo else LocalBackend()
        report("start", plan=plan)
        try:
            _schedule(plan, runner, report)
        finally:
            report("end", plan=plan)
            runner.close()
    finally:
        lock.close()
    return plan


def _queue(plan: SweepPlan) -> list[Cell | WarmStart]:
    """``todo`` in order, each shared warm-start just before the first cell that loads it."""
    queue: list[Cell | WarmStart] = []
    for cell in plan.todo:
        job = plan.warm.get(cell)
        if job in plan.warm_todo and job not in queue:
            queue.append(job)
        queue.append(cell)
    return queue


def _schedule(plan: SweepPlan, runner, report: Callable[..., None]) -> None:
    queue, running = _queue(plan), []
    out = plan.out

    def update(item: Cell | WarmStart, state: CellState) -> None:
        plan.states_of(item)[item] = state
        write_json_atomic(out / "manifest.json", manifest(plan))

    def waiting_on(item: Cell | WarmStart) -> WarmStart | None:
        """The shared warm-start ``item`` still needs, if any."""
        job = plan.warm.get(item) if isinstance(item, Cell) else None
        return job if job is not None and plan.warm_states[job].status != "completed" else None

    try:
        while queue or running:
            for item in [i for i in queue if (j := waiting_on(i)) is not None and plan.warm_states[j].status == "failed"]:
                queue.remove(item)  # its warm-start failed: it cannot run
                update(item, CellState("failed", 0.0, f"its shared warm-start failed; see {plan.warm[item].run_dir}.log"))
                report("cell_done", cell=item, state=plan.states[item], log=_cell_files(out, plan.warm[item])[1])
            while len(running) < plan.parallel:
                item = next((i for i in queue if waiting_on(i) is None), None)
                if item is None:
                    break
                queue.remove(item)
                run_dir, log_file, config_file = _cell_files(out, item)
                cfg = plan.warm_configs[item] if isinstance(item, WarmStart) else plan.configs[item]
                resume = resumable(run_dir, cfg)
                if run_dir.exists() and not resume:
                    shutil.rmtree(run_dir)
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                config_file.write_text(dump_config(cfg))
                job = CellJob(item.label, str(config_file.resolve()), str(run_dir.resolve()),
                              str(log_file.resolve()), plan.threads, os.getcwd(), resume=resume)
                update(item, CellState("running"))
                report("cell_start", cell=item)
                runner.submit(item, job)
                running.append(item)
            for item, result in runner.wait(timeout=0.5):
                running.remove(item)
                if isinstance(item, WarmStart) and result.status == "completed" and not warm_completed(out, item):
                    result = CellResult("failed", result.seconds, f"no checkpoint at {item.checkpoint}")
                update(item, CellState(result.status, result.seconds, result.error))
                report("cell_done", cell=item, state=plan.states_of(item)[item], log=_cell_files(out, item)[1])
    except BaseException:  # Ctrl-C (or a crash here): stop the cells, leave them to be restarted
        runner.cancel()
        for item in running:
            plan.states_of(item)[item] = CellState("pending", None, "interrupted; the next run of the sweep restarts it")
        write_json_atomic(out / "manifest.json", manifest(plan))
        raise


# ---- progress ------------------------------------------------------------------------------------


class SweepProgress:
    """A bar over the cells (done/total, elapsed, the running ones) and one line per finished cell,
    driven by ``run_sweep``'s events; the cells' own output goes to their logs."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[running]}"), console=console, transient=True,
        )
        self.running: list[str] = []
        self.task = None

    def __call__(self, kind: str, **kw: Any) -> None:
        getattr(self, f"on_{kind}", lambda **_: None)(**kw)

    def on_start(self, plan: SweepPlan) -> None:
        from rich.markup import escape

        selected = len(plan.todo) + len(plan.skipped) + len(plan.warm_todo)
        self.console.print(
            f"[bold]rlvr sweep[/] {escape(plan.spec.name)} | {escape(str(plan.out))} | {len(plan.cells)} cells, "
            f"{len(plan.skipped)} already completed, {len(plan.todo)} to run ({len(plan.restart)} restarted)"
            + (f" after {len(plan.warm_todo)} shared warm-start(s)" if plan.warm_todo else "")
            + f" | {plan.parallel} at a time, {plan.threads} thread(s) each", soft_wrap=True, highlight=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("cells", total=selected, completed=len(plan.skipped), running="")

    def _show_running(self) -> None:
        shown = ", ".join(self.running[:4]) + (f" +{len(self.running) - 4}" if len(self.running) > 4 else "")
        self.progress.update(self.task, running=f"running: {shown}" if shown else "")

    def on_cell_start(self, cell: Cell) -> None:
        self.running.append(cell.label)
        self._show_running()

    def on_cell_done(self, cell: Cell, state: CellState, log: Path) -> None:
        from rich.markup import escape

        if cell.label in self.running:  # a cell whose warm-start failed never started
            self.running.remove(cell.label)
        self.progress.advance(self.task)
        self._show_running()
        if state.status == "completed":
            self.console.print(f"[green]completed[/] {escape(cell.label)} in {state.seconds:.1f} s",
                               soft_wrap=True, highlight=False)
        else:
            last = (state.error or "").strip().splitlines()[-1:] or [""]
            self.console.print(f"[bold red]failed[/] {escape(cell.label)}: {escape(last[0])} (log: {escape(str(log))})",
                               soft_wrap=True, highlight=False)

    def on_end(self, plan: SweepPlan) -> None:
        self.progress.stop()
