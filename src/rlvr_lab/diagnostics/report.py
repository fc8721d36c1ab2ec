"""A self-contained interactive HTML report of one or more training runs (``rlvr report``).

One HTML file, plotly.js embedded inline, so it opens from ``file://`` with no network. The page has a
summary table (one row per run), a phase timeline, and a grid of per-step plots in which several runs
share the axes, each run in one colour across every plot. A plot is left out when none of the runs
recorded any of its metrics, and the notes at the bottom say which.

Phase shading: with one run, the per-step plots are shaded by that run's phase label. With several runs
only the timeline shows phases; shading the first run's phases under the other runs' lines would read as
if it described them too.

Imports plotly and the standard library, never torch (``rlvr report`` must start fast).
"""

from __future__ import annotations

import datetime
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from rlvr_lab.diagnostics.phases import ALERT_LABELS
from rlvr_lab.diagnostics.runlog import PhaseSegment, RunLog, load_runs, phase_segments

REPORT_FILE = "report.html"
RUN_COLOURS = ("#2563eb", "#e8590c", "#0d9488", "#9333ea", "#ca8a04",
               "#db2777", "#475569", "#65a30d", "#0891b2", "#92400e")
"""One colour per run, in the order the runs are given (cycled past ten)."""
PHASE_COLOURS = {
    "warmup": "#cbd5e1",
    "improving": "#16a34a",
    "healthy": "#4ade80",
    "ok": "#a7f3d0",
    "stagnation": "#facc15",
    "reward_decline": "#f472b6",
    "steady_decay": "#fb923c",
    "accelerated_collapse": "#ef4444",
    "entropy_collapse": "#a855f7",
}
UNKNOWN_PHASE_COLOUR = "#94a3b8"
SHADING_OPACITY = 0.13
MAX_SHADED_SEGMENTS = 200
"""Above this many phase stretches the per-step plots go unshaded: thousands of shapes per plot make the page
slow to draw, and the timeline still shows every stretch."""
FONT = "Inter, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
PLOT_HEIGHT = 320
"""Height of a plot area in pixels, before the room for its legend."""
GROUP_DASHES = ("dot", "dash", "dashdot", "longdash", "longdashdot")
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"],
                 "toImageButtonOptions": {"format": "png", "scale": 2}}


# ---- what to plot ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One metric of a panel, drawn once per run in that run's colour."""

    key: str
    label: str
    dash: str = "solid"
    right: bool = False
    """On the panel's right-hand y axis."""
    band: tuple[str, str] | None = None
    """Keys of the lower and upper edge of a shaded band around this line."""


@dataclass(frozen=True)
class Panel:
    """One plot of the grid: its metrics, axes and a one-line caption of what to read from it."""

    id: str
    title: str
    y_title: str
    lines: tuple[Line, ...]
    caption: str = ""
    right_title: str = ""
    right_is_fraction: bool = False
    """The right-hand axis shows a fraction: fix it to [0, 1] so runs and steps compare at a glance."""
    group_prefix: str = ""
    """Every key with this prefix also becomes a line (e.g. per-layer-group gradient norms)."""
    with_eval: bool = False
    """Add the held-out pass@1 evaluations as points with standard-error bars."""
    stage: str = "rl"

    def keys(self) -> list[str]:
        """The fixed metric keys the panel reads (prefixed keys not included)."""
        return [k for line in self.lines for k in (line.key, *(line.band or ()))]

    def group_keys(self, runs: Sequence[RunLog]) -> list[str]:
        """The prefixed keys of any run, from the input end of the model to the output end."""
        if not self.group_prefix:
            return []
        keys = {k for run in runs for k in run.keys_with_prefix(self.group_prefix, self.stage)}
        return sorted(keys, key=lambda k: _depth_order(k.removeprefix(self.group_prefix)))

    def has_data(self, runs: Sequence[RunLog]) -> bool:
        keys = self.keys() + self.group_keys(runs)
        return any(run.has(k, self.stage) for run in runs for k in keys) or (
            self.with_eval and any(eval_points(run)[0] for run in runs))


PANELS: tuple[Panel, ...] = (
    Panel("reward", "Reward and accuracy", "reward / accuracy",
          (Line("reward/mean", "reward"), Line("reward/accuracy", "accuracy", dash="dot")), with_eval=True,
          caption="Training-batch reward and accuracy per RL step; diamonds: held-out pass@1 ± standard error."),
    Panel("likelihood", "Likelihood of correct vs incorrect responses", "mean sequence log-prob",
          (Line("lld/correct_logp_before", "correct (batch)"),
           Line("lld/incorrect_logp_before", "incorrect (batch)", dash="dot"),
           Line("probe/correct_logp", "correct (probe set)", dash="dash"),
           Line("probe/incorrect_logp", "incorrect (probe set)", dash="dashdot")),
          caption="A falling likelihood of correct responses while reward rises is likelihood displacement "
                  "(arXiv 2512.04220 §5.1)."),
    Panel("displacement", "Likelihood change over one update", "Δ log-prob (after − before)",
          (Line("lld/correct_logp_delta", "Δ correct"), Line("lld/incorrect_logp_delta", "Δ incorrect", dash="dot"),
           Line("lld/frac_correct_fell", "fraction of correct that fell", dash="dash", right=True)),
          right_title="fraction fell", right_is_fraction=True,
          caption="The step's own batch re-scored after its update (every N-th step)."),
    Panel("probe_drift", "Probe-set drift since RL began", "Δ log-prob (now − reference)",
          (Line("probe/correct_logp_delta", "Δ correct"),
           Line("probe/incorrect_logp_delta", "Δ incorrect", dash="dot"),
           Line("probe/frac_correct_fell", "fraction of correct that fell", dash="dash", right=True)),
          right_title="fraction fell", right_is_fraction=True,
          caption="A fixed set of stored responses, comparable across steps and runs."),
    Panel("entropy", "Policy entropy", "nats per token",
          (Line("policy/entropy", "mean", band=("policy/entropy_p10", "policy/entropy_p90")),
           Line("policy/entropy_p50", "median", dash="dot")),
          caption="Band: 10th to 90th percentile over response tokens."),
    Panel("grad_norm", "Gradient norm", "L2 norm (before clipping)",
          (Line("policy/grad_norm", "total"),), group_prefix="grad_norm/",
          caption="Total, and per layer group (thin lines) when recorded; a spike often marks a collapse."),
    Panel("low_prob", "Low-probability tokens", "probability mass (sum)",
          (Line("tokens/low_prob_mass", "mass"), Line("tokens/low_prob_count", "count", dash="dot", right=True)),
          right_title="count",
          caption="Sampled response tokens below the probability threshold: their summed probability and number."),
    Panel("kl", "KL divergence", "KL (nats per token)",
          (Line("grpo/ppo_kl", "to old policy (approx.)"), Line("kl/ref", "to reference", dash="dot"),
           Line("probe/kl_ref", "to reference (probe set)", dash="dash")),
          caption="Old policy: how far one step's updates moved; reference: drift since RL began."),
    Panel("clipfrac", "Clip fraction", "fraction of tokens clipped", (Line("grpo/pg_clipfrac", "clip fraction"),),
          caption="Share of tokens whose importance ratio was clipped."),
    Panel("length", "Response length and truncation", "tokens",
          (Line("rollout/response_len_mean", "mean length"),
           Line("rollout/clip_ratio_len", "truncated", dash="dot", right=True)),
          right_title="truncation rate", right_is_fraction=True,
          caption="Truncated: responses that hit the generation limit."),
    Panel("search", "Tool use (search)", "searches per response",
          (Line("search/valid_searches_mean", "valid searches"),
           Line("search/frac_searched", "share that searched", dash="dot", right=True),
           Line("search/answered_rate", "share that answered", dash="dash", right=True),
           Line("search/invalid_action_rate", "invalid actions per turn", dash="dashdot", right=True)),
          right_title="share", right_is_fraction=True,
          caption="Multi-turn search rollouts: how often the policy searches, answers, or breaks the protocol."),
    Panel("sft_loss", "Warm-start (SFT) loss", "cross-entropy", (Line("sft/loss", "loss"),), stage="sft",
          caption="Supervised warm-start before RL, per optimiser step."),
)


def _depth_order(group: str) -> tuple[int, list[Any]]:
    """Sort key for layer-group names: embeddings first, the output head last, layers by number in between."""
    rank = 0 if group.startswith("embed") else 2 if "head" in group else 1
    return rank, [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", group)]


# ---- figures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    """One figure on the page."""

    id: str
    title: str
    caption: str
    figure: go.Figure
    wide: bool = False


@dataclass(frozen=True)
class ReportFigures:
    cards: list[Card]
    absent: list[Panel]
    """Panels left out because no run recorded any of their metrics."""


def run_colours(runs: Sequence[RunLog]) -> dict[str, str]:
    return {run.name: RUN_COLOURS[i % len(RUN_COLOURS)] for i, run in enumerate(runs)}


def eval_points(run: RunLog, key: str = "eval/pass@1") -> tuple[list[int], list[float], list[float], list[str]]:
    """(steps, values, standard errors, labels) of the run's held-out evaluations that measured ``key``."""
    records = [r for r in run.records["eval"] if isinstance(r.get(key), (int, float))]
    if not records and run.summary:  # a summary whose evaluations are missing from the metrics (older runs)
        last = run.rl_steps_done()
        records = [{**result, "label": label, "step": _eval_step(label, last)}
                   for label, result in run.summary.get("eval", {}).items() if isinstance(result, dict)]
        records = [r for r in records if r["step"] is not None and isinstance(r.get(key), (int, float))]
    return ([int(r["step"]) for r in records], [float(r[key]) for r in records],
            [float(r.get(key + "_se") or 0.0) for r in records], [str(r.get("label", "")) for r in records])


def _eval_step(label: str, last_step: int) -> int | None:
    """The RL step an eval label refers to: before_rl -> 0, step_N -> N, after_rl -> the last step."""
    if label == "before_rl":
        return 0
    if label == "after_rl":
        return last_step
    number = label.removeprefix("step_")
    return int(number) if number.isdigit() else None


def plotly_text(text: str) -> str:
    """Plotly reads names as a small subset of HTML; escape so a run name like "a<b" shows as typed."""
    return html.escape(text, quote=False)


def fade(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _mode(n_points: int) -> str:
    return "lines+markers" if n_points <= 60 else "lines"


def _line_traces(panel: Panel, run: RunLog, colour: str, group_keys: list[str], multi: bool) -> list[go.Scatter]:
    """The traces of one run in one panel, all in the run's legend group and colour."""
    single = len(panel.lines) == 1 and not group_keys and not panel.with_eval
    group = plotly_text(run.name)
    common: dict[str, Any] = {"meta": run.name}  # meta names the run of every trace (tests read it)
    if multi:  # one legend column per run; with one run the entries flow in rows instead
        common["legendgroup"] = run.name
        if not single:
            common["legendgrouptitle_text"] = group
    traces: list[go.Scatter] = []

    def add(key: str, name: str, *, dash: str = "solid", width: float = 2.0, right: bool = False,
            mode: str | None = None, **extra: Any) -> None:
        steps, values = run.series(key, panel.stage)
        if not any(v is not None for v in values):
            return
        traces.append(go.Scatter(
            x=steps, y=values, name=name, mode=mode or _mode(len(steps)), yaxis="y2" if right else "y",
            line={"color": colour, "dash": dash, "width": width}, marker={"size": 4, "color": colour},
            hovertemplate=f"{name}: %{{y:.4g}}<extra></extra>", **common, **extra,
        ))

    for line in panel.lines:
        name = group if single else plotly_text(line.label)
        if line.band and run.has(line.band[0], panel.stage) and run.has(line.band[1], panel.stage):
            low, high = line.band
            add(high, high, width=0, mode="lines", showlegend=False)
            add(low, low, width=0, mode="lines", showlegend=False, fill="tonexty", fillcolor=fade(colour, 0.16))
        add(line.key, name, dash=line.dash, right=line.right)
    for i, key in enumerate(group_keys):
        add(key, plotly_text(key.removeprefix(panel.group_prefix)), dash=GROUP_DASHES[i % len(GROUP_DASHES)],
            width=1.3, opacity=0.8, mode="lines")
    if panel.with_eval:
        steps, values, errors, labels = eval_points(run)
        if steps:
            traces.append(go.Scatter(
                x=steps, y=values, name="held-out pass@1", mode="markers", customdata=list(zip(errors, labels)),
                marker={"symbol": "diamond", "size": 10, "color": colour, "line": {"color": "white", "width": 1}},
                error_y={"type": "data", "array": errors, "color": colour, "thickness": 1.5, "width": 4},
                hovertemplate="held-out pass@1 (%{customdata[1]}): %{y:.3f} ± %{customdata[0]:.3f}"
                              "<extra></extra>", **common,
            ))
    return traces


def _verdict_segments(run: RunLog) -> list[PhaseSegment]:
    """The run's phase stretches except warmup, which carries no verdict and stays unshaded."""
    return [s for s in phase_segments(*run.labels()) if s.label != "warmup"]


def shaded_segments(run: RunLog) -> list[PhaseSegment]:
    """The phase stretches that shade the per-step plots; none when there are over MAX_SHADED_SEGMENTS."""
    segments = _verdict_segments(run)
    return segments if len(segments) <= MAX_SHADED_SEGMENTS else []


def _shading(segments: list[PhaseSegment]) -> list[dict[str, Any]]:
    """Background rectangles, one per phase stretch, behind the traces."""
    return [{"type": "rect", "xref": "x", "yref": "paper", "x0": s.start - 0.5, "x1": s.end + 0.5, "y0": 0, "y1": 1,
             "fillcolor": PHASE_COLOURS.get(s.label, UNKNOWN_PHASE_COLOUR), "opacity": SHADING_OPACITY,
             "line": {"width": 0}, "layer": "below"}
            for s in segments]


def _supports_unified_hover_title() -> bool:
    """plotly >= 6.3 (plotly.js 3.1) can title the shared hover box ("RL step 12"); older ones show the bare step."""
    try:
        go.layout.XAxis(unifiedhovertitle={"text": "%{x}"})
    except ValueError:
        return False
    return True


_UNIFIED_HOVER_TITLE = _supports_unified_hover_title()


def base_layout(x_title: str, hover_title: str, height: int = PLOT_HEIGHT) -> dict[str, Any]:
    return {
        "template": "plotly_white",
        "height": height,
        "margin": {"l": 64, "r": 24, "t": 12, "b": 40},
        "font": {"family": FONT, "size": 13, "color": "#1f2937"},
        "hovermode": "x unified",
        "hoverlabel": {"namelength": -1, "font": {"family": FONT, "size": 12}},
        "xaxis": {"title": {"text": x_title, "standoff": 8}, "zeroline": False, "gridcolor": "#eef0f3",
                  **({"unifiedhovertitle": {"text": hover_title}} if _UNIFIED_HOVER_TITLE else {})},
        "yaxis": {"zeroline": False, "gridcolor": "#eef0f3", "automargin": True},
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0, "groupclick": "toggleitem",
                   "font": {"size": 12}},
    }


def panel_figure(panel: Panel, runs: Sequence[RunLog], colours: dict[str, str]) -> go.Figure:
    """The panel's plot: every run's lines on shared axes; phase shading when there is only one run."""
    group_keys = panel.group_keys(runs)
    multi = len(runs) > 1
    fig = go.Figure()
    for run in runs:
        fig.add_traces(_line_traces(panel, run, colours[run.name], group_keys, multi))
    x_title = "warm-start step" if panel.stage == "sft" else "RL step"
    layout = base_layout(x_title, x_title + " %{x}")
    layout["yaxis"]["title"] = {"text": panel.y_title}
    if any(trace.yaxis == "y2" for trace in fig.data):
        layout["yaxis2"] = {"title": {"text": panel.right_title}, "overlaying": "y", "side": "right",
                            "showgrid": False, "zeroline": False, "automargin": True, "tickmode": "auto",
                            "rangemode": "tozero"}
        if panel.right_is_fraction:
            layout["yaxis2"]["range"] = [-0.03, 1.03]
        layout["margin"]["r"] = 64
    layout["margin"]["b"] = _legend_room(fig, len(runs))
    layout["height"] = PLOT_HEIGHT + layout["margin"]["b"]
    layout["legend"]["traceorder"] = "grouped" if multi else "normal"  # fills (the entropy band) would reverse it
    if not multi and panel.stage == "rl":
        layout["shapes"] = _shading(shaded_segments(runs[0]))
    fig.update_layout(**layout)
    return fig


def _legend_room(fig: go.Figure, n_runs: int, per_row: int = 4, groups_per_row: int = 3) -> int:
    """Bottom margin in pixels for the axis title plus the legend under the plot.

    One run: entries flow in rows of about ``per_row``. Several runs: one column per run (its entries
    stacked under the run's name), about ``groups_per_row`` columns side by side.
    """
    shown = [t for t in fig.data if t.showlegend is not False]
    if n_runs == 1:
        rows = -(-len(shown) // per_row)
    else:
        per_run = max((sum(t.meta == m for t in shown) for m in {t.meta for t in shown}), default=0)
        rows = (per_run + (per_run > 1)) * -(-n_runs // groups_per_row)  # + 1 for the run's title
    return 60 + 21 * rows


def phase_alerts(run: RunLog) -> list[dict[str, Any]]:
    """The run's alerts: from summary.json when it has them, else the entries into alert labels in the metrics."""
    if run.summary is not None and "phase_alerts" in run.summary:
        return [a for a in run.summary["phase_alerts"] if isinstance(a, dict)]
    if run.summary is not None and run.summary.get("status"):
        return []  # a finished run that listed no alerts had none
    segments = phase_segments(*run.labels())
    return [{"step": s.start, "entered": [s.label], "evidence": {}, "action": "(from metrics)"}
            for s in segments if s.label in ALERT_LABELS]


def _ordered_labels(labels: set[str]) -> list[str]:
    known = [label for label in PHASE_COLOURS if label in labels]
    return known + sorted(labels - set(known))


def phase_timeline(runs: Sequence[RunLog], colours: dict[str, str]) -> go.Figure | None:
    """One row per run, a coloured bar per stretch of steps with the same phase label; alerts as markers."""
    rows = [(run, phase_segments(*run.labels())) for run in runs]
    labels = {s.label for _, segments in rows for s in segments}
    if not labels:
        return None
    names = [plotly_text(run.name) for run in runs]
    fig = go.Figure()
    for label in _ordered_labels(labels):
        bars = [(name, s) for (run, segments), name in zip(rows, names) for s in segments if s.label == label]
        shown = plotly_text(label)
        fig.add_trace(go.Bar(
            orientation="h", y=[name for name, _ in bars], base=[s.start - 0.5 for _, s in bars],
            x=[s.end - s.start + 1 for _, s in bars], customdata=[(s.start, s.end) for _, s in bars],
            name=shown, marker={"color": PHASE_COLOURS.get(label, UNKNOWN_PHASE_COLOUR), "line": {"width": 0}},
            hovertemplate=f"%{{y}}<br><b>{shown}</b>: steps %{{customdata[0]}}–%{{customdata[1]}}<extra></extra>",
        ))
    alerts = [(name, a) for run, name in zip(runs, names) for a in phase_alerts(run)]
    if alerts:
        fig.add_trace(go.Scatter(
            x=[a.get("step") for _, a in alerts], y=[name for name, _ in alerts], mode="markers", name="alert",
            marker={"symbol": "triangle-down", "size": 13, "color": "#111827", "line": {"color": "white", "width": 1}},
            text=[_alert_text(a) for _, a in alerts], hovertemplate="%{y}<br>%{text}<extra></extra>",
        ))
    layout = base_layout("RL step", "RL step %{x}", height=130 + 46 * len(runs))
    layout.update(barmode="overlay", bargap=0.35, hovermode="closest")
    layout["margin"].update(b=48, t=36)
    layout["legend"].update(y=1.02, yanchor="bottom", orientation="h")
    layout["yaxis"].update(
        type="category", categoryorder="array", categoryarray=names[::-1], tickvals=names, showgrid=False,
        ticktext=[f"<span style='color:{colours[run.name]}'>■</span> {name}" for run, name in zip(runs, names)],
    )
    fig.update_layout(**layout)
    return fig


def _alert_text(alert: dict[str, Any]) -> str:
    entered = ", ".join(map(str, alert.get("entered") or []))
    evidence = ", ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}"
                         for k, v in (alert.get("evidence") or {}).items())
    action = plotly_text(str(alert.get("action")))
    text = f"step {alert.get('step')}: entered <b>{plotly_text(entered)}</b>; action {action}"
    return text + (f"<br>{plotly_text(evidence)}" if evidence else "")


def build_figures(runs: Sequence[RunLog]) -> ReportFigures:
    """Every figure the runs have data for, in page order, and the panels left out."""
    colours = run_colours(runs)
    cards: list[Card] = []
    timeline = phase_timeline(runs, colours)
    if timeline is not None:
        unlabelled = [run.name for run in runs if not any(run.labels()[1])]
        caption = "Phase labels of the detector per RL step (▼: an alert, hover for the evidence)." + (
            f" No labels recorded by: {', '.join(unlabelled)}." if unlabelled else "")
        cards.append(Card("phases", "Phase timeline", caption, timeline, wide=True))
    absent: list[Panel] = []
    for panel in PANELS:
        if panel.has_data(runs):
            cards.append(Card(panel.id, panel.title, panel.caption, panel_figure(panel, runs, colours)))
        else:
            absent.append(panel)
    return ReportFigures(cards, absent)


# ---- the page ----------------------------------------------------------------------------------


def _human_count(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "—"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f} {suffix}"
    return str(int(n))


def _before_after(run: RunLog, key: str) -> str:
    before, after = run.evaluation("before_rl"), run.evaluation("after_rl")

    def one(result: dict[str, Any] | None) -> str:
        if not result or not isinstance(result.get(key), (int, float)):
            return "—"
        se = result.get(key + "_se")
        return f"{result[key]:.3f}" + (f" ± {se:.3f}" if isinstance(se, (int, float)) else "")

    first, last = one(before), one(after)
    if first == last == "—":
        return "—"
    text = f"{first}<br>→ {last}"
    if "—" not in (first, last):
        change = after[key] - before[key]
        tone = "up" if change > 0 else "down" if change < 0 else ""
        text += f' <span class="change {tone}">({change:+.3f})</span>'
    return text


def _phase_chip(label: str | None) -> str:
    if not label:
        return "—"
    colour = PHASE_COLOURS.get(label, UNKNOWN_PHASE_COLOUR)
    style = f"background:{fade(colour, 0.28)};border-color:{colour}"
    return f'<span class="phase" style="{style}">{html.escape(label)}</span>'


def _alert_line(alert: dict[str, Any]) -> str:
    entered = ", ".join(map(str, alert.get("entered") or []))
    text = f"step {alert.get('step')}: {entered} → {alert.get('action')}"
    return f"<div>{html.escape(text)}</div>"


def _summary_row(run: RunLog, colour: str) -> str:
    summary = run.summary or {}
    status = (html.escape(str(summary.get("status", "—"))) if run.summary is not None
              else '<span class="warn">no summary.json (running, or crashed)</span>')
    last = run.last("reward/mean")
    alert_html = "".join(_alert_line(alert) for alert in phase_alerts(run)) or "none"
    labels = [label for label in run.labels()[1] if label]
    model = summary.get("model") or ((run.config or {}).get("model") or {}).get("source")
    task = summary.get("task") or ((run.config or {}).get("task") or {}).get("name")
    cells = [
        f'<span class="swatch" style="background:{colour}"></span><b>{html.escape(run.name)}</b>'
        f'<div class="path">{html.escape(str(run.path))}</div>',
        html.escape(str(model or "—")), html.escape(str(task or "—")),
        _human_count(summary.get("params")), str(run.rl_steps_done()), status,
        _before_after(run, "eval/pass@1"), _before_after(run, "eval/greedy_acc"),
        f"{last[1]:.3f} <span class='muted'>(step {last[0]})</span>" if last else "—",
        alert_html, _phase_chip(labels[-1] if labels else None),
    ]
    classes = ["run", "", "", "num", "num", "wrap", "num", "num", "num", "wrap", ""]
    return "<tr>" + "".join(f'<td class="{c}">{cell}</td>' for c, cell in zip(classes, cells)) + "</tr>"


SUMMARY_HEADERS = ("Run", "Model", "Task", "Params", "RL steps", "Status", "Held-out pass@1<br>before → after RL",
                   "Greedy accuracy<br>before → after RL", "Last reward", "Phase alerts", "Final phase")

CSS = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f5f6f8; --card: #ffffff; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font: 14px/1.5 %(font)s; }
main { max-width: 1560px; margin: 0 auto; padding: 28px 32px 40px; }
h1 { font-size: 26px; font-weight: 650; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 17px; font-weight: 600; margin: 0 0 12px; }
h3 { font-size: 15px; font-weight: 600; margin: 0; }
.sub, .muted, .caption, .path { color: var(--muted); }
.sub { margin: 0; }
.chips { display: flex; flex-wrap: wrap; gap: 8px; list-style: none; padding: 0; margin: 14px 0 0; }
.chips li { background: var(--card); border: 1px solid var(--line); border-radius: 999px; padding: 3px 12px 3px 9px;
            display: inline-flex; align-items: center; gap: 8px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin-right: 8px; flex: none;
          vertical-align: -1px; }
.chips .swatch { margin-right: 0; }
section { margin-top: 28px; }
.table-wrap { overflow-x: auto; background: var(--card); border: 1px solid var(--line); border-radius: 10px; }
table { border-collapse: collapse; width: 100%%; font-size: 13px; }
th, td { padding: 9px 12px; text-align: left; border-bottom: 1px solid var(--line); vertical-align: top;
         white-space: nowrap; }
th { background: #f9fafb; color: #4b5563; font-weight: 600; font-size: 12px; white-space: normal; min-width: 70px; }
tr:last-child td { border-bottom: none; }
td.num { font-variant-numeric: tabular-nums; }
td.wrap { white-space: normal; min-width: 140px; max-width: 260px; }
td.run { white-space: normal; min-width: 150px; max-width: 280px; }
.path { font-size: 12px; margin-left: 20px; overflow-wrap: anywhere; }
.change.up { color: #15803d; } .change.down { color: #b91c1c; }
.phase { display: inline-block; padding: 0 9px; border: 1px solid; border-radius: 999px; font-size: 12px; }
.warn { color: #b45309; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 18px; }
@media (max-width: 1100px) { .grid { grid-template-columns: 1fr; } }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px 6px;
        min-width: 0; }
.card.wide { grid-column: 1 / -1; }
.caption { font-size: 12.5px; margin: 2px 0 4px; }
footer { margin-top: 28px; color: var(--muted); font-size: 13px; }
footer ul { padding-left: 20px; margin: 6px 0; }
code { font-family: ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace; font-size: 12px;
       background: #f1f3f5; padding: 0 4px; border-radius: 4px; }
""" % {"font": FONT}


def card_html(card: Card) -> str:
    plot = pio.to_html(card.figure, include_plotlyjs=False, full_html=False, div_id=f"plot-{card.id}",
                       config=PLOTLY_CONFIG, default_height=f"{card.figure.layout.height}px", default_width="100%")
    wide = " wide" if card.wide else ""
    return (f'<div class="card{wide}" data-figure="{card.id}"><h3>{html.escape(card.title)}</h3>'
            f'<p class="caption">{html.escape(card.caption)}</p>{plot}</div>')


def _notes(runs: Sequence[RunLog], figures: ReportFigures) -> list[str]:
    notes = []
    if figures.absent:
        parts = [f"{html.escape(p.title)} ({', '.join(f'<code>{html.escape(k)}</code>' for k in p.keys())}"
                 + (f", <code>{html.escape(p.group_prefix)}*</code>" if p.group_prefix else "") + ")"
                 for p in figures.absent]
        notes.append("Not shown, because no run recorded their metrics: " + "; ".join(parts) + ".")
    if len(runs) == 1 and len(_verdict_segments(runs[0])) > MAX_SHADED_SEGMENTS:
        notes.append(f"The phase labels change too often (over {MAX_SHADED_SEGMENTS} stretches) to shade the "
                     "per-step plots; the phase timeline shows them.")
    elif len(runs) == 1 and _verdict_segments(runs[0]):
        notes.append("Per-step plots are shaded by the run's phase label (colours as in the phase timeline; "
                     "warmup unshaded).")
    else:
        notes.append("With several runs, phases appear only in the phase timeline: shading one run's phases "
                     "under all runs' lines would misread the others.")
    for run in runs:
        if run.summary is None:
            notes.append(f"{html.escape(run.name)}: no <code>summary.json</code> (still running, or crashed before "
                         f"writing it); its row is read from <code>metrics.jsonl</code>.")
        notes.extend(f"{html.escape(run.name)}: {html.escape(problem)}." for problem in run.problems)
    return notes


def add_band_traces(fig, x: Sequence, mean: Sequence[float], low: Sequence[float], high: Sequence[float],
                    n: Sequence[int], *, name: str, group: str, colour: str, fill_alpha: float = 0.18,
                    edge_names: tuple[str, str] = ("max", "min"), spread_word: str = "range",
                    dash: str | None = None, width: float = 2) -> None:
    """A mean line over a filled band from ``low`` to ``high`` (drawn only when some point has more than one
    seed), hover showing the seed count and the band; ``name`` is already escaped for plotly. Shared by the
    sweep comparison and the testbed reports."""
    common = {"legendgroup": group, "meta": group, "x": list(x)}
    if max(n) > 1:
        edge = {"mode": "lines", "line": {"width": 0, "color": colour}, "showlegend": False, "hoverinfo": "skip"}
        fig.add_trace(go.Scatter(y=high, name=f"{name} {edge_names[0]}", **edge, **common))
        fig.add_trace(go.Scatter(y=low, name=f"{name} {edge_names[1]}", fill="tonexty",
                                 fillcolor=fade(colour, fill_alpha), **edge, **common))
    line = {"color": colour, "width": width} if dash is None else {"color": colour, "dash": dash, "width": width}
    fig.add_trace(go.Scatter(
        y=mean, name=name, mode="lines+markers" if len(x) <= 60 else "lines", line=line,
        marker={"size": 4, "color": colour}, customdata=list(zip(n, low, high)),
        hovertemplate=f"{name}: %{{y:.4g}} (seeds %{{customdata[0]}}, {spread_word} %{{customdata[1]:.4g}} to "
                      "%{customdata[2]:.4g})<extra></extra>", **common))


def page_head(title: str, generator: str, extra_css: str = "") -> str:
    """The start of a self-contained page up to ``</head>``: the report's CSS (plus ``extra_css``) and
    plotly.js inline, so the page opens from disk with no network. Shared by the run report, the sweep
    comparison and the testbed reports."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="rlvr-lab {generator}">
<title>{html.escape(title)}</title>
<style>{CSS}{extra_css}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>"""


def render_html(runs: Sequence[RunLog], title: str | None = None) -> str:
    """The whole report page as one string, plotly.js included."""
    figures = build_figures(runs)
    colours = run_colours(runs)
    title = title or "RLVR report: " + ", ".join(run.name for run in runs)
    generated = html.escape(datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    chips = "".join(f'<li><span class="swatch" style="background:{colours[run.name]}"></span>'
                    f'{html.escape(run.name)}</li>' for run in runs)
    rows = "".join(_summary_row(run, colours[run.name]) for run in runs)
    header_cells = "".join(f"<th>{h}</th>" for h in SUMMARY_HEADERS)
    timeline_html = "".join(f'<section class="grid">{card_html(c)}</section>' for c in figures.cards if c.wide)
    grid_html = "".join(card_html(c) for c in figures.cards if not c.wide) or (
        '<p class="muted">No per-step metrics recorded yet.</p>')
    notes = "".join(f"<li>{note}</li>" for note in _notes(runs, figures))
    return f"""{page_head(title, "report")}
<body data-figures="{len(figures.cards)}" data-runs="{len(runs)}">
<main>
<header>
<h1>{html.escape(title)}</h1>
<p class="sub">{len(runs)} run{"s" if len(runs) != 1 else ""} · {len(figures.cards)} plots · generated {generated}</p>
<ul class="chips">{chips}</ul>
</header>
<section>
<h2>Summary</h2>
<div class="table-wrap"><table id="summary">
<thead><tr>{header_cells}</tr></thead>
<tbody>{rows}</tbody>
</table></div>
</section>
{timeline_html}
<section>
<h2>Training dynamics</h2>
<div class="grid">{grid_html}</div>
</section>
<footer>
<b>Notes</b>
<ul>{notes}</ul>
Hover a plot for values at a step; click a legend entry to hide it, double-click to show only it; drag to zoom,
double-click the plot to reset.
</footer>
</main>
</body>
</html>
"""


def write_report(run_dirs: Sequence[Path | str], out: Path | str | None = None, title: str | None = None) -> Path:
    """Write the report of ``run_dirs`` (default ``<first run dir>/report.html``) and return its path.

    Raises ``RunDirError`` (a ValueError) naming the path when a directory has no ``metrics.jsonl``.
    """
    runs = load_runs(list(run_dirs))
    path = Path(out) if out is not None else runs[0].path / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(runs, title), encoding="utf-8")
    return path
