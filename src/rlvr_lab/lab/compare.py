"""Comparing the conditions of a sweep over seeds (``rlvr compare``): a Markdown table and one HTML page.

A sweep directory written by ``rlvr sweep`` holds ``manifest.json``: the conditions (presets and overrides),
the seeds, a baseline condition and one cell per condition x seed, whose ``run_dir`` (relative to the sweep
directory) is an ordinary run directory. The cells are read with the run report's reader
(:func:`rlvr_lab.diagnostics.runlog.load_run`), and two files are written into the sweep directory:

- ``compare.md``: per condition, each held-out metric after RL as the mean over seeds with a 95% interval, the
  difference to the baseline paired by seed with its interval, and the mean before RL for reference;
- ``compare.html``: the same table, one plot per training signal (reward, per-token likelihood of correct
  responses, entropy, low-probability mass per token, KL to the starting policy) with one line per condition
  (the mean over seeds) and a band (min to max over seeds), and a phase timeline per condition and seed.
  Built from the run report's pieces (plotly.js inline, same colours and styles), it opens from disk with no
  network.

Statistics conventions, also printed under the table:

- mean over seeds ± t · s / √n, with s the sample standard deviation (n − 1 in the denominator) and t the
  two-sided quantile of Student's t with n − 1 degrees of freedom; one seed gives the mean with NaN bounds
  ("no interval"), never a zero-width interval;
- the difference to the baseline is paired by seed: the same interval over the per-seed differences
  condition − baseline, on the seeds both completed, so seed-to-seed variation shared by both cancels;
- a cell that did not complete, or whose run directory cannot be read, is listed as missing and is in no
  statistic.

The module itself imports plotly, the standard library and the run report's modules, never torch or scipy;
the t quantile is computed here rather than taken from scipy, which is not a dependency.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from rlvr_lab.diagnostics.report import (
    add_band_traces,
    PLOT_HEIGHT,
    RUN_COLOURS,
    Card,
    base_layout,
    card_html,
    page_head,
    phase_timeline,
    plotly_text,
)
from rlvr_lab.diagnostics.runlog import RunDirError, RunLog, load_run
from rlvr_lab.eval.intervals import (  # noqa: F401 - re-exported: the comparison's statistics
    CONFIDENCE,
    mean_interval,
    paired_difference,
    regularized_incomplete_beta,
    t_critical,
)

MANIFEST_FILE = "manifest.json"
HTML_FILE = "compare.html"
MARKDOWN_FILE = "compare.md"
DEFAULT_METRICS = ("eval/greedy_acc", "eval/pass@1")
"""Always in the table; the largest ``eval/pass@k`` any run measured is added after them."""


BASELINE_SOURCES = {"manifest": "named by the sweep's manifest", "--baseline": "given with --baseline",
                    "first condition": "the first condition; the manifest names none"}
"""How the baseline was chosen -> how the page says it."""


class CompareError(ValueError):
    """A sweep directory, run directory or argument that cannot be compared; the message says which and why."""


# ---- statistics (the seed statistics live in rlvr_lab.eval.intervals) --------------------------------


@dataclass(frozen=True)
class SeedBand:
    """A signal of one condition per RL step, over the seeds that recorded a finite value at that step."""

    steps: list[int]
    mean: list[float]
    low: list[float]
    """The smallest value over seeds at that step."""
    high: list[float]
    """The largest value over seeds at that step."""
    n: list[int]
    """How many seeds had a value at that step."""


def band_over_seeds(series: Sequence[tuple[Sequence[int], Sequence[float | None]]]) -> SeedBand:
    """Mean, min and max over seeds at each step any seed recorded; None values (gaps, NaN) are left out.

    >>> band_over_seeds([([1, 2], [1.0, 2.0]), ([1, 2], [3.0, None])]).mean
    [2.0, 2.0]
    """
    by_step: dict[int, list[float]] = {}
    for steps, values in series:
        for step, value in zip(steps, values):
            if value is not None and math.isfinite(value):
                by_step.setdefault(int(step), []).append(float(value))
    steps = sorted(by_step)
    return SeedBand(steps=steps, mean=[math.fsum(by_step[s]) / len(by_step[s]) for s in steps],
                    low=[min(by_step[s]) for s in steps], high=[max(by_step[s]) for s in steps],
                    n=[len(by_step[s]) for s in steps])


# ---- reading a sweep ---------------------------------------------------------------------------


@dataclass
class Cell:
    """One condition x seed of the sweep, and its run when it completed and could be read."""

    condition: str
    seed: int | None
    run_dir: Path
    status: str
    seconds: float | None = None
    error: str | None = None
    run: RunLog | None = None
    problem: str | None = None
    """Why a cell marked completed could not be read (no run directory, no metrics.jsonl)."""

    @property
    def label(self) -> str:
        return f"{self.condition} · seed {self.seed}" if self.seed is not None else self.condition

    def why_missing(self) -> str:
        if self.problem:
            return f"{self.status}, but {self.problem}"
        return self.status + (f" ({self.error})" if self.error else "")


@dataclass
class Condition:
    """One condition of the comparison: a sweep condition, or a single run added on the command line."""

    name: str
    cells: list[Cell]
    presets: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    source: Path | None = None
    """The run directory of a condition added as a single run; None for the sweep's own conditions."""

    @property
    def completed(self) -> list[Cell]:
        return [cell for cell in self.cells if cell.run is not None]

    def values(self, metric: str, label: str = "after_rl") -> dict[Any, float]:
        """seed -> the metric in the held-out evaluation ``label``, for the completed seeds that measured it."""
        out: dict[Any, float] = {}
        for cell in self.completed:
            result = cell.run.evaluation(label)
            value = (result or {}).get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[cell.seed] = float(value)
        return out


@dataclass
class Comparison:
    """A sweep read back: its conditions in manifest order (added runs last), the baseline and every cell."""

    path: Path
    name: str
    description: str
    baseline: str
    baseline_source: str
    """How the baseline was chosen: "manifest", "--baseline" or "first condition"."""
    seeds: list[Any]
    conditions: list[Condition]
    warm_start_seconds: list[float] = field(default_factory=list)
    """Time spent on the sweep's shared warm-starts (compute the cells did not spend themselves)."""

    @property
    def cells(self) -> list[Cell]:
        return [cell for condition in self.conditions for cell in condition.cells]

    @property
    def missing(self) -> list[Cell]:
        """Cells left out of every statistic: not completed, or completed but unreadable."""
        return [cell for cell in self.cells if cell.run is None]

    def condition(self, name: str) -> Condition:
        for condition in self.conditions:
            if condition.name == name:
                return condition
        raise KeyError(name)


def _read_manifest(sweep_dir: Path) -> dict[str, Any]:
    if not sweep_dir.is_dir():
        raise CompareError(f"{sweep_dir}: not a directory (expected a sweep directory with a {MANIFEST_FILE})")
    path = sweep_dir / MANIFEST_FILE
    if not path.is_file():
        raise CompareError(f"{sweep_dir}: no {MANIFEST_FILE} here, so this is not a sweep directory written by "
                           "`rlvr sweep` (to compare single runs, use `rlvr report RUN_DIR ...`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CompareError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cells"), list):
        raise CompareError(f"{path}: expected a JSON object with a list of cells")
    return manifest


def _cell(sweep_dir: Path, entry: Any, index: int) -> Cell:
    if not (isinstance(entry, dict) and isinstance(entry.get("condition"), str) and entry.get("run_dir")):
        raise CompareError(f"{sweep_dir / MANIFEST_FILE}: cell {index} needs a condition name and a run_dir, "
                           f"got {entry!r}")
    seconds = entry.get("seconds")
    cell = Cell(condition=entry["condition"], seed=entry.get("seed"), run_dir=sweep_dir / str(entry["run_dir"]),
                status=str(entry.get("status") or "unknown"), error=entry.get("error") or None,
                seconds=float(seconds) if isinstance(seconds, (int, float)) else None)
    if cell.status == "completed":
        try:
            cell.run = load_run(cell.run_dir)
        except RunDirError as exc:
            cell.problem = str(exc)
    return cell


def _run_condition(run_dir: Path | str, taken: set[str]) -> Condition:
    """A single run as a condition of its own: named after its directory, its seed from its config."""
    run = load_run(run_dir)  # a path that is not a run directory stops here, with its name in the message
    run_section = (run.config or {}).get("run")
    seed = run_section.get("seed") if isinstance(run_section, dict) else None
    name, number = Path(run_dir).resolve().name, 1
    while name in taken:
        number += 1
        name = f"{Path(run_dir).resolve().name} #{number}"
    cell = Cell(condition=name, seed=seed if isinstance(seed, int) else None, run_dir=Path(run_dir),
                status="completed", run=run)
    return Condition(name=name, cells=[cell], source=Path(run_dir))


def load_comparison(sweep_dir: Path | str, extra_runs: Sequence[Path | str] = (),
                    baseline: str | None = None) -> Comparison:
    """Read a sweep directory and the single runs added to it.

    Conditions come in the manifest's order, then those only named by cells, then ``extra_runs`` (each its
    own condition named after its directory, with one seed). ``baseline`` overrides the manifest's. Raises
    :class:`CompareError` for a directory that is not a sweep or an unknown baseline, and ``RunDirError``
    (a ValueError) for an added path that is not a run directory.
    """
    sweep_dir = Path(sweep_dir)
    manifest = _read_manifest(sweep_dir)
    declared = manifest.get("conditions") if isinstance(manifest.get("conditions"), dict) else {}
    cells = [_cell(sweep_dir, entry, i) for i, entry in enumerate(manifest["cells"])]
    names = list(declared) + [c.condition for c in cells if c.condition not in declared]
    conditions: list[Condition] = []
    for name in dict.fromkeys(names):
        spec = declared.get(name) if isinstance(declared.get(name), dict) else {}
        own = [c for c in cells if c.condition == name]
        seeds = [c.seed for c in own]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
        if repeated:
            raise CompareError(f"{sweep_dir / MANIFEST_FILE}: condition {name!r} has more than one cell for seed(s) "
                               f"{repeated}; cells are paired by seed, so each seed may appear once")
        conditions.append(Condition(name=name, cells=own, presets=[str(p) for p in spec.get("presets") or []],
                                    overrides=[str(o) for o in spec.get("overrides") or []]))
    for run_dir in extra_runs:
        conditions.append(_run_condition(run_dir, {c.name for c in conditions}))
    if not conditions:
        raise CompareError(f"{sweep_dir / MANIFEST_FILE}: no conditions and no cells to compare")
    names = [c.name for c in conditions]
    if baseline is not None:
        chosen, source = baseline, "--baseline"
    elif isinstance(manifest.get("baseline"), str) and manifest["baseline"]:
        chosen, source = manifest["baseline"], "manifest"
    else:
        chosen, source = names[0], "first condition"
    if chosen not in names:
        raise CompareError(f"baseline {chosen!r} ({BASELINE_SOURCES[source]}) is not a condition; the conditions are "
                           + ", ".join(repr(n) for n in names))
    return Comparison(path=sweep_dir, name=str(manifest.get("name") or sweep_dir.resolve().name),
                      description=str(manifest.get("description") or ""), baseline=chosen, baseline_source=source,
                      seeds=list(manifest.get("seeds") or []), conditions=conditions,
                      warm_start_seconds=[w["seconds"] for w in manifest.get("warm_starts") or []
                                          if isinstance(w, dict) and isinstance(w.get("seconds"), (int, float))])


# ---- the table ---------------------------------------------------------------------------------

_PASS_AT = re.compile(r"^eval/pass@(\d+)$")


def default_metrics(comparison: Comparison) -> tuple[str, ...]:
    """Greedy accuracy, pass@1 and pass@k for the largest k > 1 any completed run measured after RL."""
    ks = {int(m.group(1)) for c in comparison.conditions for cell in c.completed
          for key in (cell.run.evaluation("after_rl") or {}) if (m := _PASS_AT.match(key))}
    largest = max((k for k in ks if k > 1), default=None)
    return DEFAULT_METRICS + ((f"eval/pass@{largest}",) if largest else ())


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one condition: after RL over seeds, the paired difference to the baseline, before RL."""

    metric: str
    after: tuple[float, float, float]
    """(mean, low, high) over seeds after RL."""
    n: int
    before_mean: float
    before_n: int
    diff: tuple[float, float, float, int] | None
    """(mean, low, high, pairs) of condition − baseline; None for the baseline itself."""
    baseline_n: int
    """Seeds of the baseline that measured the metric after RL."""
    per_seed: dict[Any, float]
    """seed -> value after RL."""


def summarise(comparison: Comparison, metrics: Sequence[str]) -> dict[str, dict[str, MetricSummary]]:
    """condition -> metric -> its summary, for every condition and metric."""
    baseline = comparison.condition(comparison.baseline)
    out: dict[str, dict[str, MetricSummary]] = {}
    nan3 = (math.nan, math.nan, math.nan)
    for condition in comparison.conditions:
        row: dict[str, MetricSummary] = {}
        for metric in metrics:
            after, before = condition.values(metric, "after_rl"), condition.values(metric, "before_rl")
            reference = baseline.values(metric, "after_rl")
            row[metric] = MetricSummary(
                metric=metric, after=mean_interval(list(after.values())) if after else nan3, n=len(after),
                before_mean=math.fsum(before.values()) / len(before) if before else math.nan, before_n=len(before),
                diff=None if condition is baseline else paired_difference(after, reference),
                baseline_n=len(reference), per_seed=after)
        out[condition.name] = row
    return out


def _short(metric: str) -> str:
    return metric.removeprefix("eval/")


def _num(value: float, signed: bool = False) -> str:
    return "—" if not math.isfinite(value) else f"{value:+.3f}" if signed else f"{value:.3f}"


def format_interval(mean: float, low: float, high: float, n: int, *, signed: bool = False,
                    expected_n: int | None = None, unit: str = "seed") -> str:
    """"0.600 [0.352, 0.848]"; "0.600 (1 seed, no interval)"; "—" without values; "(n=2)" when n differs."""
    if n == 0 or not math.isfinite(mean):
        return "—"
    if n == 1:
        text = f"{_num(mean, signed)} (1 {unit}, no interval)"
    else:
        text = f"{_num(mean, signed)} [{_num(low, signed)}, {_num(high, signed)}]"
    return text + (f" (n={n})" if expected_n is not None and n != expected_n and n > 1 else "")


def _diff_text(summary: MetricSummary, expected_n: int) -> str:
    if summary.diff is None:
        return "baseline"
    mean, low, high, n = summary.diff
    if summary.n == 0:
        return "—"
    if summary.baseline_n == 0:
        return "— (baseline not measured)"
    if n == 0:
        return "— (no seed in common)"
    return format_interval(mean, low, high, n, signed=True, expected_n=expected_n, unit="pair")


def _seeds_text(condition: Condition) -> str:
    done = len(condition.completed)
    return str(done) if done == len(condition.cells) else f"{done} of {len(condition.cells)}"


def table_rows(comparison: Comparison, metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """The comparison table as plain text: (headers, one row per condition), shared by Markdown and HTML."""
    stats = summarise(comparison, metrics)
    pct = f"{CONFIDENCE:.0%}"
    headers = ["condition", "seeds"]
    for metric in metrics:
        short = _short(metric)
        headers += [f"{short} before RL", f"{short} after RL [{pct}]", f"Δ {short} vs baseline [{pct}]"]
    rows = []
    for condition in comparison.conditions:
        n_done = len(condition.completed)
        row = [condition.name + (" (baseline)" if condition.name == comparison.baseline else ""),
               _seeds_text(condition)]
        for metric in metrics:
            s = stats[condition.name][metric]
            row += [_num(s.before_mean), format_interval(*s.after, s.n, expected_n=n_done), _diff_text(s, n_done)]
        rows.append(row)
    return headers, rows


def conventions(comparison: Comparison) -> list[str]:
    """What the numbers in the table mean, one sentence each."""
    pct = f"{CONFIDENCE:.0%}"
    chosen = BASELINE_SOURCES[comparison.baseline_source]
    return [
        f"After RL: mean over seeds [{pct} interval, mean ± t·s/√n, Student's t with n−1 degrees of freedom]; "
        "one seed has no interval.",
        f"Δ: condition − baseline, paired by seed, mean [{pct} interval] over the seeds both completed; "
        "an interval that excludes 0 marks a difference at that confidence level.",
        "Before RL: mean over seeds of the evaluation before RL (after any warm-start), for reference.",
        f"Baseline: {comparison.baseline} ({chosen}). Seeds: completed cells (of all cells when some are missing).",
    ]


def _missing_lines(comparison: Comparison) -> list[str]:
    return [f"{cell.label}: {cell.why_missing()}" for cell in comparison.missing]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(comparison: Comparison, metrics: Sequence[str] | None = None) -> str:
    """The comparison as a Markdown table, followed by what its numbers mean and the missing cells."""
    metrics = tuple(metrics) if metrics is not None else default_metrics(comparison)
    headers, rows = table_rows(comparison, metrics)
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    lines.append("")
    lines += [f"- {_md_cell(text)}" for text in conventions(comparison)]
    missing = _missing_lines(comparison)
    if missing:
        lines += ["", f"Missing cells ({len(missing)}, left out of every statistic):", ""]
        lines += [f"- {_md_cell(text)}" for text in missing]
    return "\n".join(lines) + "\n"


def render_markdown(comparison: Comparison, metrics: Sequence[str] | None = None) -> str:
    """``compare.md``: a heading with the sweep's name and description, then :func:`markdown_table`."""
    head = f"# Sweep comparison: {comparison.name}\n\n"
    if comparison.description:
        head += comparison.description.strip() + "\n\n"
    return head + markdown_table(comparison, metrics)


# ---- the training signals ----------------------------------------------------------------------

LOW_PROB_PER_TOKEN = "tokens/low_prob_mass_per_token"
"""Derived: ``tokens/low_prob_mass`` (a sum over the batch) over the number of trained tokens, which is
``tokens/low_prob_count / tokens/low_prob_frac`` (see ``diagnostics.signals.low_probability_tokens``); unlike
the sum it does not grow with the batch, so conditions with different batch sizes compare."""
KL_CAPTIONS = {
    "kl/ref": "KL(π‖π_start) on each step's sampled batch, π_start the policy when RL began (k3 estimate; "
              "recorded when the KL penalty is on).",
    "probe/kl_ref": "KL to the policy when RL began, on the fixed probe set's stored responses (k3 estimate, "
                    "every observe.probe_every steps).",
    "grpo/ppo_kl": "KL to the starting policy (kl/ref, probe/kl_ref) is not recorded by every condition; shown "
                   "instead: the approximate KL between the old and the updated policy within each step.",
}


@dataclass(frozen=True)
class Signal:
    """One plot of the page: a per-step signal, read from the first key of ``keys`` the conditions share."""

    id: str
    title: str
    y_title: str
    keys: tuple[str, ...]
    caption: str


SIGNALS: tuple[Signal, ...] = (
    Signal("reward", "Reward", "mean reward", ("reward/mean",), "Training-batch reward per RL step."),
    Signal("likelihood", "Likelihood of correct responses", "log-prob per token", ("lld/correct_logp_per_token",),
           "Per-token log-likelihood of the batch's correct responses; a fall while reward rises is likelihood "
           "displacement (arXiv 2512.04220 §5.1)."),
    Signal("entropy", "Policy entropy", "nats per token", ("policy/entropy",),
           "Mean entropy over the sampled response tokens."),
    Signal("low_prob", "Low-probability mass", "probability mass per token", (LOW_PROB_PER_TOKEN,),
           "Summed probability of the sampled tokens below the low-probability threshold, per trained token."),
    Signal("kl", "KL divergence", "KL (nats per token)", ("kl/ref", "probe/kl_ref", "grpo/ppo_kl"), ""),
)
BAND_NOTE = "Line: mean over seeds; band: min to max over seeds (hover for the count)."


def _low_prob_per_token(record: Mapping[str, Any]) -> float | None:
    mass, count, frac = (record.get(k) for k in ("tokens/low_prob_mass", "tokens/low_prob_count",
                                                 "tokens/low_prob_frac"))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (mass, count, frac)):
        return None  # no frac: the batch had no trained token
    return 0.0 if count == 0 else mass * frac / count


def signal_series(run: RunLog, key: str) -> tuple[list[int], list[float | None]]:
    """(steps, values) of an RL signal of one run; the derived low-probability mass per token included."""
    if key != LOW_PROB_PER_TOKEN:
        return run.series(key)
    steps, values = [], []
    for record in run.rl:
        value = _low_prob_per_token(record)
        if value is not None:
            steps.append(int(record["step"]))
            values.append(value)
    return steps, values


def _has(run: RunLog, key: str) -> bool:
    return any(v is not None for v in signal_series(run, key)[1])


def choose_key(signal: Signal, conditions: Sequence[Condition]) -> str | None:
    """The first candidate key every condition with a completed run recorded; else the first any recorded."""
    present = [c for c in conditions if c.completed]
    for key in signal.keys:
        if present and all(any(_has(cell.run, key) for cell in c.completed) for c in present):
            return key
    for key in signal.keys:
        if any(_has(cell.run, key) for c in present for cell in c.completed):
            return key
    return None


def condition_colours(comparison: Comparison) -> dict[str, str]:
    return {c.name: RUN_COLOURS[i % len(RUN_COLOURS)] for i, c in enumerate(comparison.conditions)}


def signal_figure(key: str, y_title: str, conditions: Sequence[Condition], colours: Mapping[str, str]) -> go.Figure:
    """One line per condition (mean over its seeds) over a band from the min to the max over seeds."""
    fig = go.Figure()
    for condition in conditions:
        band = band_over_seeds([signal_series(cell.run, key) for cell in condition.completed])
        if not band.steps:
            continue
        add_band_traces(fig, band.steps, band.mean, band.low, band.high, band.n, name=plotly_text(condition.name),
                        group=condition.name, colour=colours[condition.name])
    layout = base_layout("RL step", "RL step %{x}")
    layout["yaxis"]["title"] = {"text": y_title}
    layout["hoverdistance"] = -1  # the nearest step anywhere on the plot: sweeps often log a few dozen steps
    flat = _flat_range(fig)
    if flat is not None:
        layout["yaxis"]["range"] = flat
    legend_rows = -(-len(conditions) // 4)
    layout["margin"]["b"] = 60 + 21 * legend_rows
    layout["height"] = PLOT_HEIGHT + layout["margin"]["b"]
    fig.update_layout(**layout)
    return fig


def _flat_range(fig: go.Figure) -> list[float] | None:
    """A y range around a signal that is constant up to rounding, else None (plotly's own autorange).

    Values that differ only in their last bits (a mean of equal numbers) make plotly's autorange a span of
    about 1e-18, for which it computes infinite tick label widths and draws nothing on the axis.
    """
    ys = [y for trace in fig.data for y in (trace.y or ()) if y is not None]
    if not ys:
        return None
    low, high = min(ys), max(ys)
    scale = max(abs(low), abs(high))
    if high - low > 1e-9 * scale or scale == 0.0:
        return None
    centre = 0.5 * (low + high)
    pad = 0.1 * scale
    return [centre - pad, centre + pad]


@dataclass(frozen=True)
class ComparisonFigures:
    cards: list[Card]
    absent: list[Signal]
    """Signals no completed run recorded."""
    keys: dict[str, str]
    """signal id -> the key it was drawn from."""


def build_figures(comparison: Comparison) -> ComparisonFigures:
    """The phase timeline (when any run has phase labels) and one plot per signal some run recorded."""
    colours = condition_colours(comparison)
    cards: list[Card] = []
    cells = [cell for c in comparison.conditions for cell in c.completed]
    rows = [dataclasses.replace(cell.run, name=cell.label) for cell in cells]  # one timeline row per seed
    timeline = phase_timeline(rows, {cell.label: colours[cell.condition] for cell in cells}) if rows else None
    if timeline is not None:
        cards.append(Card("phases", "Phase timeline",
                          "Phase labels of the detector per RL step, one row per condition and seed "
                          "(▼: an alert, hover for the evidence).", timeline, wide=True))
    absent: list[Signal] = []
    keys: dict[str, str] = {}
    for signal in SIGNALS:
        key = choose_key(signal, comparison.conditions)
        if key is None:
            absent.append(signal)
            continue
        keys[signal.id] = key
        caption = KL_CAPTIONS.get(key, signal.caption) if signal.id == "kl" else signal.caption
        lacking = [c.name for c in comparison.conditions if c.completed
                   and not any(_has(cell.run, key) for cell in c.completed)]
        caption += f" {BAND_NOTE} Key: {key}." + (f" Not recorded by: {', '.join(lacking)}." if lacking else "")
        cards.append(Card(signal.id, signal.title, caption,
                          signal_figure(key, signal.y_title, comparison.conditions, colours)))
    return ComparisonFigures(cards, absent, keys)


# ---- the page ----------------------------------------------------------------------------------

EXTRA_CSS = """
th.group { text-align: center; border-left: 1px solid var(--line); }
td.first, th.first { border-left: 1px solid var(--line); }
tr.baseline td { background: #f8fafc; }
.tag { font-size: 11px; color: var(--muted); border: 1px solid var(--line); border-radius: 999px; padding: 0 7px;
       margin-left: 6px; }
.setup { font-size: 12px; color: var(--muted); white-space: normal; }
ul.missing { margin: 6px 0 0; padding-left: 20px; }
"""


def _html_table(comparison: Comparison, metrics: Sequence[str], colours: Mapping[str, str]) -> str:
    stats = summarise(comparison, metrics)
    _, rows = table_rows(comparison, metrics)
    pct = f"{CONFIDENCE:.0%}"
    top = '<th rowspan="2">Condition</th><th rowspan="2">Seeds</th>' + "".join(
        f'<th class="group" colspan="3">{html.escape(_short(m))}</th>' for m in metrics)
    sub = "".join(f'<th class="first">before RL</th><th>after RL [{pct}]</th><th>Δ vs baseline [{pct}]</th>'
                  for _ in metrics)
    body = []
    for condition, row in zip(comparison.conditions, rows):
        is_base = condition.name == comparison.baseline
        setup = "; ".join(filter(None, [
            ("presets: " + ", ".join(condition.presets)) if condition.presets else "",
            ("overrides: " + " ".join(condition.overrides)) if condition.overrides else "",
            f"run: {condition.source}" if condition.source is not None else ""]))
        cells = [f'<td class="run"><span class="swatch" style="background:{colours[condition.name]}"></span>'
                 f'<b>{html.escape(condition.name)}</b>' + ('<span class="tag">baseline</span>' if is_base else "")
                 + (f'<div class="setup">{html.escape(setup)}</div>' if setup else "") + "</td>",
                 f'<td class="num">{html.escape(row[1])}</td>']
        for i, metric in enumerate(metrics):
            s = stats[condition.name][metric]
            before, after, diff = row[2 + 3 * i: 5 + 3 * i]
            seeds = ", ".join(f"seed {k}: {v:.4g}" for k, v in s.per_seed.items())
            tone = ""
            if s.diff is not None and s.diff[3] > 1:
                tone = " up" if s.diff[1] > 0 else " down" if s.diff[2] < 0 else ""
            cells += [f'<td class="num first">{html.escape(before)}</td>',
                      f'<td class="num" title="{html.escape(seeds)}">{html.escape(after)}</td>',
                      f'<td class="num"><span class="change{tone}">{html.escape(diff)}</span></td>']
        body.append(f'<tr class="{"baseline" if is_base else ""}">' + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table id="comparison"><thead><tr>{top}</tr><tr>{sub}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _notes(comparison: Comparison, figures: ComparisonFigures) -> list[str]:
    notes = [html.escape(text) for text in conventions(comparison)]
    notes.append(html.escape(BAND_NOTE) + " The low-probability mass is <code>tokens/low_prob_mass</code> per "
                 f"trained token (<code>{html.escape(LOW_PROB_PER_TOKEN)}</code>).")
    if figures.absent:
        parts = [f"{html.escape(s.title)} ({', '.join(f'<code>{html.escape(k)}</code>' for k in s.keys)})"
                 for s in figures.absent]
        notes.append("Not shown, because no completed run recorded them: " + "; ".join(parts) + ".")
    for condition in comparison.conditions:
        for cell in condition.completed:
            notes.extend(f"{html.escape(cell.label)}: {html.escape(p)}." for p in cell.run.problems)
    return notes


def render_html(comparison: Comparison, metrics: Sequence[str] | None = None) -> str:
    """The whole comparison page as one string, plotly.js included."""
    metrics = tuple(metrics) if metrics is not None else default_metrics(comparison)
    figures = build_figures(comparison)
    colours = condition_colours(comparison)
    title = f"Sweep comparison: {comparison.name}"
    generated = html.escape(datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    done, total = sum(len(c.completed) for c in comparison.conditions), len(comparison.cells)
    seeds = ", ".join(map(str, comparison.seeds)) or "—"
    chips = "".join(f'<li><span class="swatch" style="background:{colours[c.name]}"></span>{html.escape(c.name)}</li>'
                    for c in comparison.conditions)
    missing = _missing_lines(comparison)
    missing_html = (f'<section id="missing"><h2>Missing cells ({len(missing)})</h2><p class="muted">Not completed, '
                    'or not readable: left out of every statistic and plot.</p><ul class="missing">'
                    + "".join(f"<li>{html.escape(m)}</li>" for m in missing) + "</ul></section>") if missing else ""
    timeline_html = "".join(f'<section class="grid">{card_html(c)}</section>' for c in figures.cards if c.wide)
    grid_html = "".join(card_html(c) for c in figures.cards if not c.wide) or (
        '<p class="muted">No per-step metrics recorded by any completed run.</p>')
    notes = "".join(f"<li>{note}</li>" for note in _notes(comparison, figures))
    description = f'<p class="sub">{html.escape(comparison.description)}</p>' if comparison.description else ""
    return f"""{page_head(title, "compare", EXTRA_CSS)}
<body data-figures="{len(figures.cards)}" data-conditions="{len(comparison.conditions)}" data-missing="{len(missing)}">
<main>
<header>
<h1>{html.escape(title)}</h1>
{description}
<p class="sub">{len(comparison.conditions)} conditions · seeds {html.escape(seeds)} ·
{done} of {total} cells completed · baseline <b>{html.escape(comparison.baseline)}</b> · {len(figures.cards)} plots ·
generated {generated}</p>
<ul class="chips">{chips}</ul>
</header>
<section>
<h2>Held-out metrics</h2>
{_html_table(comparison, metrics, colours)}
</section>
{missing_html}
{timeline_html}
<section>
<h2>Training dynamics</h2>
<div class="grid">{grid_html}</div>
</section>
<footer>
<b>Notes</b>
<ul>{notes}</ul>
Hover a plot for values at a step, and a table cell for the value of each seed; click a legend entry to hide a
condition, double-click to show only it.
</footer>
</main>
</body>
</html>
"""


def output_paths(sweep_dir: Path | str, out: Path | str | None = None) -> tuple[Path, Path]:
    """(HTML, Markdown) paths: ``compare.html`` and ``compare.md`` in the sweep directory, or ``out`` and the
    same path with the suffix ``.md``."""
    if out is None:
        return Path(sweep_dir) / HTML_FILE, Path(sweep_dir) / MARKDOWN_FILE
    html_path = Path(out)
    if html_path.suffix == ".md":
        raise CompareError(f"--out {out}: the HTML file needs a suffix other than .md (the Markdown goes beside it)")
    return html_path, html_path.with_suffix(".md")


def save_comparison(comparison: Comparison, html_path: Path, md_path: Path,
                    metrics: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Write the page and the Markdown of an already loaded comparison; returns their paths."""
    html_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(comparison, metrics), encoding="utf-8")
    md_path.write_text(render_markdown(comparison, metrics), encoding="utf-8")
    return html_path, md_path


def write_comparison(sweep_dir: Path | str, extra_runs: Sequence[Path | str] = (), out: Path | str | None = None,
                     baseline: str | None = None, metrics: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Read the sweep (and ``extra_runs``) and write ``compare.html`` and ``compare.md``; returns their paths.

    By default both go into the sweep directory; ``out`` names the HTML file and the Markdown goes beside it
    with the suffix ``.md``.
    """
    paths = output_paths(sweep_dir, out)
    return save_comparison(load_comparison(sweep_dir, extra_runs, baseline=baseline), *paths, metrics)
