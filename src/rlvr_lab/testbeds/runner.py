"""Running a testbed over seeds (``rlvr testbed``): parameters, the run directory and its HTML report.

:func:`run_testbed` resolves the parameters (the module's ``DEFAULTS``, then ``SMALL`` with ``small=True``,
then ``key=value`` overrides), runs every seed, and writes into ``out_dir``:

- ``config.json`` — the testbed, its paper, the resolved parameters, the overrides, the seeds and the versions
  of Python and the libraries;
- ``metrics.jsonl`` — one line per seed per history record, ``{"seed": s, "step": t, <metric>: value, ...}``;
- ``summary.json`` — per seed its final metrics and wall time, every final metric over seeds (mean and 95%
  Student's t interval) and the claim's verdict;
- ``report.html`` — the verdict on top, then the testbed's figures, the parameters and the final metrics; one
  self-contained page (plotly.js inline, no network), in the style of the run report.

Every file is written to a temporary name beside it and renamed, so a reader never sees half a file. JSON
holds no NaN: a non-finite number is written as null.
"""

from __future__ import annotations

import datetime
import difflib
import html
import json
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from rlvr_lab.diagnostics.report import Card, card_html, page_head
from rlvr_lab.eval.intervals import CONFIDENCE, mean_interval
from rlvr_lab.testbeds import CLAIM_KEYS, TESTBEDS, check_module, load_testbed
from rlvr_lab.testbeds.plots import BAND_NOTES

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
DEFAULT_SEEDS = (0, 1, 2)

Progress = Callable[[int], Callable[[int], None]]
"""``progress(total)`` is called once with the number of seeds and returns ``advance(n)``, called after each seed."""


# ---- parameters --------------------------------------------------------------------------------


_KINDS = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), ((list, tuple), "list"), (dict, "dict"))


def _kind(value: Any) -> str:
    """The YAML-level name of a value's type (bool before int: a bool is an int to Python)."""
    return next((name for types, name in _KINDS if isinstance(value, types)), type(value).__name__)


def coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of ``default``; ``ValueError`` naming the key when it does not fit.

    bool needs a bool; int an int (or a string int() reads); float an int or a float (or a string float()
    reads, since YAML reads ``1e-3`` as a string); str a string; a list a list whose items fit the default's
    first item (any items when the default is empty); dict a dict; a None default takes anything.
    """
    def fail(expected: str) -> ValueError:
        kind = _kind(value)
        article = "an" if kind[0] in "aeiou" else "a"
        return ValueError(f"{key}={value!r} is {article} {kind}; expected {expected} (default {default!r})")

    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail("a bool (true or false)")
        return value
    if isinstance(default, (int, float)):
        number = int if isinstance(default, int) else float
        if isinstance(value, str):
            try:
                value = number(value)
            except ValueError:
                raise fail(f"a{'n' if number is int else ''} {number.__name__}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (number is int and isinstance(value, float)):
            raise fail(f"a{'n' if number is int else ''} {number.__name__}")
        return number(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise fail("a list, e.g. [1, 2]")
        if not default:
            return list(value)
        return [coerce(f"{key}[{i}]", item, default[0]) for i, item in enumerate(value)]
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise fail("a mapping, e.g. {a: 1}")
        return dict(value)
    return value


def parse_overrides(overrides: Sequence[str], defaults: Mapping[str, Any], testbed: str = "") -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: value}``, values parsed as YAML and checked by :func:`coerce`.

    An unknown key raises ``ValueError`` listing the allowed keys (and the nearest one); so does a wrong type.
    """
    out: dict[str, Any] = {}
    where = f" of testbed {testbed}" if testbed else ""
    for text in overrides:
        if "=" not in text:
            raise ValueError(f"override {text!r} must look like key=value")
        key, raw = (part.strip() for part in text.split("=", 1))
        if key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown parameter {key!r}{where}{hint}; allowed: {', '.join(defaults)}")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        out[key] = coerce(key, value, defaults[key])
    return out


def resolve_params(module: ModuleType, overrides: Sequence[str] = (), *, small: bool = False) -> dict[str, Any]:
    """``DEFAULTS``, then ``SMALL`` when ``small``, then the overrides (a fresh dict; lists copied)."""
    params = json.loads(json.dumps(module.DEFAULTS))
    if small:
        params.update(json.loads(json.dumps(module.SMALL)))
    params.update(parse_overrides(overrides, module.DEFAULTS, module.NAME))
    return params


# ---- files -------------------------------------------------------------------------------------


def jsonable(value: Any, where: str = "value") -> Any:
    """``value`` with non-finite floats as None, tuples as lists and numpy/torch scalars as Python numbers;
    ``TypeError`` naming the place of anything else that JSON cannot hold."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return jsonable(item(), where)
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, allow_nan=False) + "\n"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("rlvr-lab", "torch", "numpy", "plotly"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


# ---- running -----------------------------------------------------------------------------------


def check_result(result: Any, testbed: str, seed: int) -> None:
    if not (isinstance(result, dict) and isinstance(result.get("history"), list)
            and isinstance(result.get("final"), dict)):
        raise TypeError(f"testbed {testbed}: run(params, seed={seed}) must return {{'history': [...], 'final': {{...}}}}")
    bad = [i for i, r in enumerate(result["history"]) if not (isinstance(r, dict) and isinstance(r.get("step"), int))]
    if bad:
        raise TypeError(f"testbed {testbed}: history records {bad[:5]} of seed {seed} lack an int 'step'")


def check_claim(claim: Any, testbed: str) -> None:
    missing = [k for k in CLAIM_KEYS if not isinstance(claim, dict) or k not in claim]
    if missing:
        raise TypeError(f"testbed {testbed}: claim() must return a dict with {', '.join(CLAIM_KEYS)}; missing {missing}")


def final_summary(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every final metric over seeds: mean and 95% t interval over the seeds with a finite value."""
    keys = list(dict.fromkeys(k for r in results for k in r["final"]))
    out = {}
    for key in keys:
        values = [float(v) for r in results if isinstance(v := r["final"].get(key), (int, float))
                  and not isinstance(v, bool) and math.isfinite(v)]
        if values:
            mean, low, high = mean_interval(values)
            out[key] = {"mean": mean, "low": low, "high": high, "n": len(values)}
    return out


def run_testbed(name: str, overrides: Sequence[str] = (), seeds: Sequence[int] = DEFAULT_SEEDS,
                out_dir: Path | str | None = None, *, small: bool = False,
                progress: Progress | None = None) -> dict[str, Any]:
    """Run testbed ``name`` for every seed and write the run directory (default ``testbeds/<name>``).

    Returns the summary (as written to ``summary.json``) with ``report`` and ``run_dir`` paths. Raises
    ``ValueError`` for an unknown testbed, parameter or value type, or no seeds, before anything runs.
    """
    module = load_testbed(name)
    check_module(module)
    params = resolve_params(module, overrides, small=small)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no seeds to run")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ, got {seeds}")
    run_dir = Path(out_dir) if out_dir is not None else Path("testbeds") / name
    run_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().astimezone()
    config = {"testbed": name, "module": module.__name__, "paper": module.PAPER, "title": module.TITLE,
              "small": small, "overrides": list(overrides), "seeds": seeds, "params": params,
              "started": started.isoformat(timespec="seconds"), "versions": versions()}
    write_atomic(run_dir / CONFIG_FILE, _json(jsonable(config, "config")))

    advance = progress(len(seeds)) if progress else None
    results, walls = [], []  # as run() returned them: claim() and figures() read these, NaN included
    for seed in seeds:
        t0 = time.perf_counter()
        result = module.run(dict(params), seed)
        walls.append(time.perf_counter() - t0)
        check_result(result, name, seed)
        jsonable(result, f"run(seed={seed})")  # fail now, naming the place, rather than when writing
        results.append(result)
        if advance:
            advance(1)
    lines = [json.dumps(jsonable({"seed": seed, **record}), allow_nan=False)
             for seed, result in zip(seeds, results) for record in result["history"]]
    write_atomic(run_dir / METRICS_FILE, "\n".join(lines) + "\n")

    claim = module.claim(results, params)
    check_claim(claim, name)
    claim = jsonable({**claim, "n_seeds": len(seeds), "confidence": CONFIDENCE, "verdict": claim_verdict(claim)}, "claim")
    summary = {
        "testbed": name, "paper": module.PAPER, "title": module.TITLE, "paper_claim": module.CLAIM, "small": small,
        "seeds": seeds, "claim": claim, "final": final_summary(results),
        "per_seed": [{"seed": s, "wall_s": w, "final": jsonable(r["final"])} for s, w, r in zip(seeds, walls, results)],
        "wall_s": sum(walls), "run_dir": str(run_dir), "report": str(run_dir / REPORT_FILE),
    }
    summary = jsonable(summary, "summary")
    write_atomic(run_dir / SUMMARY_FILE, _json(summary))
    write_atomic(run_dir / REPORT_FILE, render_report(module, params, results, summary, config))
    return summary


# ---- the page ----------------------------------------------------------------------------------

EXTRA_CSS = """
.verdict { background: var(--card); border: 1px solid var(--line); border-left: 6px solid; border-radius: 10px;
           padding: 14px 18px; }
.verdict.holds { border-left-color: #16a34a; } .verdict.fails { border-left-color: #dc2626; }
.verdict .label { display: inline-block; font-weight: 650; font-size: 13px; border-radius: 999px; padding: 1px 10px;
                  margin-right: 10px; color: white; }
.verdict.holds .label { background: #16a34a; } .verdict.fails .label { background: #dc2626; }
.verdict.unsure { border-left-color: #d97706; } .verdict.unsure .label { background: #d97706; }
.verdict .claim { font-size: 15px; font-weight: 600; }
.verdict .numbers { font-variant-numeric: tabular-nums; margin: 8px 0 4px; font-size: 14px; }
.verdict .detail { color: var(--muted); font-size: 13px; margin: 4px 0 0; }
details { margin-top: 12px; } summary { cursor: pointer; font-weight: 600; }
"""


def format_number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


VERDICTS = {"holds": "Claim holds", "inconclusive": "Inconclusive at this power", "does not hold": "Claim does not hold"}


def claim_verdict(claim: Mapping[str, Any]) -> str:
    """The lab's reading of a module's claim: ``holds`` when its interval over seeds lies wholly on the side of
    the threshold the module's verdict is on, ``inconclusive`` when the interval holds the threshold (the mean
    alone decided the module's ``holds``), ``does not hold`` otherwise. One seed (no interval): the module's
    own verdict."""
    interval = claim.get("interval")
    if interval and interval[0] is not None and interval[1] is not None and interval[0] <= claim["threshold"] <= interval[1]:
        return "inconclusive"
    return "holds" if claim["holds"] else "does not hold"


def claim_line(claim: Mapping[str, Any]) -> str:
    """One line: the verdict, the measured value with its interval, and the threshold."""
    interval = claim.get("interval")
    spread = (f" [{format_number(interval[0])}, {format_number(interval[1])}]" if interval
              else " (one seed, no interval)")
    verdict = claim.get("verdict") or claim_verdict(claim)
    verdict = "is inconclusive at this power" if verdict == "inconclusive" else verdict
    return (f"claim {verdict}: {claim['metric']} = {format_number(claim['measured'])}{spread} vs threshold "
            f"{format_number(claim['threshold'])} ({claim.get('n_seeds', '?')} seeds, {CONFIDENCE:.0%} t interval)")


def _verdict_html(module: ModuleType, claim: Mapping[str, Any]) -> str:
    verdict = claim.get("verdict") or claim_verdict(claim)
    css = {"holds": "holds", "inconclusive": "unsure", "does not hold": "fails"}[verdict]
    interval = claim.get("interval")
    spread = (f"[{format_number(interval[0])}, {format_number(interval[1])}] ({CONFIDENCE:.0%} t interval over "
              f"{claim.get('n_seeds')} seeds)" if interval else "(one seed: no interval)")
    return (f'<section id="claim"><div class="verdict {css}" data-holds="{str(bool(claim["holds"])).lower()}" '
            f'data-verdict="{verdict}"><span class="label">{VERDICTS[verdict]}</span>'
            f'<span class="claim">{html.escape(str(claim["text"]))}</span>'
            f'<div class="numbers">{html.escape(str(claim["metric"]))}: <b>{html.escape(format_number(claim["measured"]))}'
            f'</b> {html.escape(spread)} · threshold {html.escape(format_number(claim["threshold"]))}</div>'
            f'<p class="detail">{html.escape(str(claim["detail"]))}</p>'
            f'<p class="detail">Paper (arXiv {html.escape(module.PAPER)}): {html.escape(module.CLAIM)}</p>'
            "</div></section>")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{html.escape(c)}</td>' for c in row) + "</tr>" for row in rows)
    return (f'<div class="table-wrap"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _figure_cards(module: ModuleType, results: list[dict[str, Any]], params: dict[str, Any]) -> list[Card]:
    cards = []
    for i, entry in enumerate(module.figures(results, params)):
        if not (isinstance(entry, tuple) and len(entry) in (2, 3)):
            raise TypeError(f"testbed {module.NAME}: figures() must return (title, figure) or (title, figure, caption)")
        title, figure, caption = (*entry, "")[:3]
        cards.append(Card(f"tb-{i}", str(title), str(caption), figure))
    return cards


def render_report(module: ModuleType, params: Mapping[str, Any], results: list[dict[str, Any]],
                  summary: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The whole page as one string, plotly.js included."""
    cards = _figure_cards(module, results, dict(params))
    title = f"Testbed {module.NAME}: {module.TITLE}"
    generated = html.escape(datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    seeds = ", ".join(map(str, summary["seeds"]))
    defaults = {**module.DEFAULTS, **(module.SMALL if summary["small"] else {})}
    param_rows = [[k, json.dumps(v), "" if v == defaults.get(k) else "overridden"] for k, v in params.items()]
    final_rows = []
    for key, stats in summary["final"].items():
        interval = (f"[{format_number(stats['low'])}, {format_number(stats['high'])}]" if stats["n"] > 1 else "—")
        per_seed = ", ".join(format_number(s["final"].get(key)) for s in summary["per_seed"])
        final_rows.append([key, format_number(stats["mean"]), interval, per_seed])
    walls = ", ".join(f"seed {s['seed']}: {s['wall_s']:.1f}s" for s in summary["per_seed"])
    notes = [BAND_NOTES["minmax"] + " (unless a caption says otherwise)",
             f"Intervals: mean ± t·s/√n over seeds, Student's t with n−1 degrees of freedom ({CONFIDENCE:.0%}).",
             f"Wall time {summary['wall_s']:.1f}s ({walls}).",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in config["versions"].items()) + ".",
             "Files beside this page: config.json, metrics.jsonl (one line per seed and logged step), summary.json."]
    grid = "".join(card_html(card) for card in cards) or '<p class="muted">The testbed drew no figures.</p>'
    arxiv = html.escape(module.PAPER)
    return f"""{page_head(title, "testbed", EXTRA_CSS)}
<body data-figures="{len(cards)}" data-testbed="{html.escape(module.NAME)}" data-holds="{str(bool(summary['claim']['holds'])).lower()}">
<main>
<header>
<h1>{html.escape(title)}</h1>
<p class="sub">arXiv <a href="https://arxiv.org/abs/{arxiv}">{arxiv}</a> · seeds {html.escape(seeds)}
{"· reduced size (--small) " if summary["small"] else ""}· {len(cards)} plots · {summary["wall_s"]:.1f}s · generated {generated}</p>
</header>
{_verdict_html(module, summary["claim"])}
<section>
<h2>Figures</h2>
<div class="grid">{grid}</div>
</section>
<section>
<h2>Parameters</h2>
{_table(["parameter", "value", ""], param_rows, "params")}
</section>
<section>
<h2>Final metrics over seeds</h2>
<details><summary>{len(final_rows)} metrics: mean, {CONFIDENCE:.0%} interval and the value per seed ({html.escape(seeds)})</summary>
{_table(["metric", "mean", f"{CONFIDENCE:.0%} interval", "per seed"], final_rows, "finals")}
</details>
</section>
<footer>
<b>Notes</b>
<ul>{"".join(f"<li>{html.escape(n)}</li>" for n in notes)}</ul>
Hover a plot for values; click a legend entry to hide it, double-click to show only it.
</footer>
</main>
</body>
</html>
"""


__all__ = ["CONFIG_FILE", "METRICS_FILE", "REPORT_FILE", "SUMMARY_FILE", "TESTBEDS", "claim_line", "coerce",
           "jsonable", "parse_overrides", "resolve_params", "run_testbed", "write_atomic"]
