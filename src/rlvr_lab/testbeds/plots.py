"""Figures of the testbeds: per series a line (the mean over seeds) over a band (min to max over seeds, or a
95% Student's t interval), drawn in the HTML report's style (its colours, fonts and layout).

A testbed's result holds one history per seed; :func:`series` reads a metric out of them, :func:`band_figure`
draws several such series on shared axes::

    fig = band_figure([series("GD", results, "linear_mse/gd/bal_acc"),
                       series("SpecGD", results, "linear_mse/specgd/bal_acc")],
                      x_title="step", y_title="balanced accuracy")

``RUN_COLOURS`` (the report's palette) is re-exported for the testbeds' own colour choices. Imports plotly and
the report's helpers, never torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from rlvr_lab.diagnostics.report import PLOT_HEIGHT, RUN_COLOURS, add_band_traces, base_layout, plotly_text
from rlvr_lab.eval.intervals import CONFIDENCE, t_critical

BANDS = ("minmax", "t")
BAND_NOTES = {"minmax": "Line: mean over seeds; band: min to max over seeds.",
              "t": f"Line: mean over seeds; band: {CONFIDENCE:.0%} Student's t interval over seeds."}


@dataclass(frozen=True)
class Series:
    """One line of a figure: a metric of every seed, as ``(x, y)`` lists per seed."""

    name: str
    runs: list[tuple[list[float], list[float]]]
    colour: str | None = None
    """None: the next of the report's run colours."""
    dash: str = "solid"
    width: float = 2.0


def series(name: str, results: Sequence[Mapping[str, Any]], key: str, *, x: str = "step",
           x_transform: Callable[[float], float] | None = None, colour: str | None = None, dash: str = "solid",
           width: float = 2.0) -> Series:
    """The metric ``key`` of every seed's history (records without it, or with a None/non-finite value, skipped).

    ``x_transform`` maps the x value (``step + 1`` puts step 0 on a log axis).
    """
    runs = []
    for result in results:
        xs, ys = [], []
        for record in result["history"]:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                position = float(record[x])
                xs.append(x_transform(position) if x_transform else position)
                ys.append(float(value))
        runs.append((xs, ys))
    return Series(name, runs, colour, dash, width)


@dataclass(frozen=True)
class Band:
    x: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]
    n: list[int]


def band(runs: Sequence[tuple[Sequence[float], Sequence[float]]], kind: str = "minmax") -> Band:
    """Mean and band over seeds at every x any seed has; ``kind`` ``minmax`` or ``t`` (the t interval; with one
    value at an x the band is that value).

    >>> band([([0, 1], [1.0, 2.0]), ([0, 1], [3.0, 2.0])]).mean
    [2.0, 2.0]
    """
    if kind not in BANDS:
        raise ValueError(f"unknown band {kind!r}; allowed: {', '.join(BANDS)}")
    by_x: dict[float, list[float]] = {}
    for xs, ys in runs:
        for x, y in zip(xs, ys):
            by_x.setdefault(float(x), []).append(float(y))
    out = Band([], [], [], [], [])
    for x in sorted(by_x):
        values = by_x[x]
        mean = math.fsum(values) / len(values)
        if kind == "minmax" or len(values) == 1:
            low, high = min(values), max(values)
        else:
            sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
            half = t_critical(len(values) - 1) * sd / math.sqrt(len(values))
            low, high = mean - half, mean + half
        out.x.append(x)
        out.mean.append(mean)
        out.low.append(low)
        out.high.append(high)
        out.n.append(len(values))
    return out


def band_figure(lines: Sequence[Series], *, x_title: str, y_title: str, kind: str = "minmax", log_x: bool = False,
                log_y: bool = False, hlines: Sequence[tuple[float, str]] = (), y_range: Sequence[float] | None = None,
                height: int = PLOT_HEIGHT) -> go.Figure:
    """One figure: per series its mean line over its band (see :func:`band`), in the report's layout.

    ``hlines``: horizontal reference lines ``(y, label)`` (a threshold, a target value), grey and dotted,
    named in the legend. On a log x axis points at x <= 0 are left out; on a log y axis non-positive means
    are left out and the band's lower edge is clipped at the smallest positive value drawn.
    """
    fig = go.Figure()
    positives = [y for line in lines for _, ys in line.runs for y in ys if y > 0]
    floor = min(positives) if (log_y and positives) else None
    for i, line in enumerate(lines):
        colour = line.colour or RUN_COLOURS[i % len(RUN_COLOURS)]
        b = band(line.runs, kind)
        if log_x:
            keep = [j for j, x in enumerate(b.x) if x > 0]
            b = Band(*([getattr(b, f)[j] for j in keep] for f in ("x", "mean", "low", "high", "n")))
        if log_y:
            keep = [j for j, m in enumerate(b.mean) if m > 0]
            b = Band(*([getattr(b, f)[j] for j in keep] for f in ("x", "mean", "low", "high", "n")))
            b.low[:] = [max(v, floor) for v in b.low]
        if not b.x:
            continue
        add_band_traces(fig, b.x, b.mean, b.low, b.high, b.n, name=plotly_text(line.name), group=line.name,
                        colour=colour, fill_alpha=0.16, edge_names=("high", "low"), spread_word="band",
                        dash=line.dash, width=line.width)
    layout = base_layout(x_title, x_title + " %{x}", height=height)
    layout["yaxis"]["title"] = {"text": y_title}
    if log_x:
        layout["xaxis"]["type"] = "log"
    if log_y:
        layout["yaxis"]["type"] = "log"
        layout["yaxis"]["exponentformat"] = "power"
    if y_range is not None:
        layout["yaxis"]["range"] = list(y_range)
    xs = [x for trace in fig.data for x in (trace.x or ())]
    for y, label in hlines if xs else ():  # a trace, not a shape: right on linear and log axes alike
        fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[y, y], mode="lines", name=plotly_text(label),
                                 line={"color": "#6b7280", "width": 1.2, "dash": "dot"}, hoverinfo="skip"))
    legend_rows = -(-sum(1 for t in fig.data if t.showlegend is not False) // 4)
    layout["margin"]["b"] = 60 + 21 * legend_rows
    layout["height"] = height + layout["margin"]["b"]
    fig.update_layout(**layout)
    return fig


__all__ = ["BANDS", "BAND_NOTES", "Band", "RUN_COLOURS", "Series", "band", "band_figure", "series"]
