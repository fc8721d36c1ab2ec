"""The HTML report: loading run directories, which figures appear, phase segments, the CLI, self-containment.

tests/data/recorded_run is a short real `rlvr train` run (metrics.jsonl, summary.json, config.yaml). The
tests read its structure, never its exact values, so a richer recording can replace it.
"""

from __future__ import annotations

import ast
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rlvr_lab.diagnostics.report import (
    MAX_SHADED_SEGMENTS,
    PANELS,
    RUN_COLOURS,
    build_figures,
    render_html,
    write_report,
)
from rlvr_lab.diagnostics.runlog import PhaseSegment, RunDirError, load_run, load_runs, phase_segments

RECORDED = Path(__file__).parent / "data" / "recorded_run"


ALL_FILES = ("metrics.jsonl", "summary.json", "config.yaml")


def copy_run(dst: Path, *, edit: Callable[[dict], dict | None] | None = None, files=ALL_FILES) -> Path:
    """A copy of the recorded run at ``dst``; ``edit`` rewrites each metrics record (None drops it)."""
    dst.mkdir(parents=True)
    for name in files:
        shutil.copy(RECORDED / name, dst / name)
    if edit is not None and "metrics.jsonl" in files:
        records = [json.loads(line) for line in (RECORDED / "metrics.jsonl").read_text().splitlines() if line.strip()]
        edited = [r for r in (edit(dict(r)) for r in records) if r is not None]
        (dst / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edited))
    return dst


def ensure_evals(run_dir: Path) -> Path:
    """Append held-out evaluations before and after RL to the metrics when the recording has none."""
    run = load_run(run_dir)
    if not run.records["eval"]:
        last = run.rl_steps_done()
        with (run_dir / "metrics.jsonl").open("a") as fh:
            for label, step, value in (("before_rl", 0, 0.25), ("after_rl", last, 0.5)):
                record = {"stage": "eval", "label": label, "step": step, "eval/pass@1": value, "eval/pass@1_se": 0.05,
                          "eval/greedy_acc": value, "eval/greedy_acc_se": 0.05}
                fh.write(json.dumps(record) + "\n")
    return run_dir


def add_observatory_keys(record: dict) -> dict:
    """Keys a richer trainer writes: probe set, per-group gradient norms, KL to the reference."""
    if record["stage"] == "rl":
        step = record["step"]
        record.setdefault("kl/ref", 0.001 * step)
        for group in ("embed", "layers_0-1", "layers_2-3", "head"):
            record.setdefault(f"grad_norm/{group}", 0.1 * step)
        if step % 2 == 0:
            record.setdefault("probe/correct_logp", -1.0 - 0.1 * step)
            record.setdefault("probe/incorrect_logp", -5.0)
            record.setdefault("probe/kl_ref", 0.01 * step)
    return record


def drop_prefixes(*prefixes: str) -> Callable[[dict], dict]:
    def edit(record: dict) -> dict:
        return {k: v for k, v in record.items() if not k.startswith(prefixes)}
    return edit


def figure_ids(figures) -> list[str]:
    return [card.id for card in figures.cards]


# ---- loading -----------------------------------------------------------------------------------


def test_load_recorded_run():
    run = load_run(RECORDED)
    assert run.name == run.config["run"]["name"]
    assert run.summary is not None and run.summary["status"] == "completed"
    assert run.rl, "the recording has RL steps"
    steps = [r["step"] for r in run.rl]
    assert steps == sorted(steps) and steps[0] >= 1
    assert run.rl_steps_done() == run.summary["rl_steps_done"] == steps[-1]
    x, y = run.series("reward/mean")
    assert x == steps and all(v is None or 0.0 <= v <= 1.0 for v in y)
    assert run.records["sft"] and run.has("sft/loss", "sft")
    assert run.problems == []


def test_series_keep_gaps_and_nans(tmp_path):
    def edit(record):
        if record["stage"] == "rl" and record["step"] == 2:
            record.pop("reward/mean")  # a gap: the point is left out
        if record["stage"] == "rl" and record["step"] == 3:
            record["reward/mean"] = math.nan  # recorded, but NaN: a break in the line
        return record

    run = load_run(copy_run(tmp_path / "r", edit=edit))
    steps, values = run.series("reward/mean")
    assert 2 not in steps and 3 in steps
    assert values[steps.index(3)] is None  # never a fake 0


def test_missing_summary_reads_metrics_alone(tmp_path):
    run_dir = ensure_evals(copy_run(tmp_path / "crashed", files=("metrics.jsonl", "config.yaml")))
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write('{"stage": "rl", "step": 99, "reward/me')  # a record cut off by the crash
    run = load_run(run_dir)
    assert run.summary is None
    assert run.rl_steps_done() == max(r["step"] for r in run.rl)
    assert run.evaluation("before_rl") is not None  # from the eval records in metrics.jsonl
    assert any("unreadable line" in p for p in run.problems)
    page = render_html([run])
    assert "no summary.json" in page and "unreadable line" in page


def test_missing_config_names_the_run_after_its_directory(tmp_path):
    run = load_run(copy_run(tmp_path / "my-run", files=("metrics.jsonl",)))
    assert run.name == "my-run" and run.config is None and run.summary is None


def test_bad_directory_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(RunDirError, match=str(missing)):
        load_run(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunDirError, match=rf"{empty}.*metrics\.jsonl"):
        write_report([empty])


def test_duplicate_run_names_are_told_apart(tmp_path):
    runs = load_runs([copy_run(tmp_path / "a"), copy_run(tmp_path / "b")])
    assert runs[0].name != runs[1].name


# ---- phase segments ----------------------------------------------------------------------------


def test_phase_segments_known_answer():
    steps = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    labels = ["warmup", "warmup", "healthy", "healthy", "healthy", None, "steady_decay", "steady_decay", "healthy"]
    assert phase_segments(steps, labels) == [
        PhaseSegment("warmup", 1, 2),
        PhaseSegment("healthy", 3, 5),
        PhaseSegment("steady_decay", 7, 8),  # the unlabelled step 6 ends the healthy stretch
        PhaseSegment("healthy", 9, 9),
    ]
    assert phase_segments([], []) == []
    assert phase_segments([4], [None]) == []
    with pytest.raises(ValueError):
        phase_segments([1, 2], ["ok"])


def test_timeline_bars_follow_the_segments(tmp_path):
    labels = {1: "warmup", 2: "warmup", 3: "healthy", 4: "steady_decay", 5: "steady_decay"}

    def edit(record):
        if record["stage"] == "rl":
            if record["step"] not in labels:
                return None
            record["phase/label"] = labels[record["step"]]
        return record

    run = load_run(copy_run(tmp_path / "r", edit=edit, files=("metrics.jsonl", "config.yaml")))
    timeline = next(c.figure for c in build_figures([run]).cards if c.id == "phases")
    bars = {t.name: t for t in timeline.data if t.type == "bar"}
    assert list(bars) == ["warmup", "healthy", "steady_decay"]
    assert list(bars["steady_decay"].base) == [3.5] and list(bars["steady_decay"].x) == [2]
    alerts = [t for t in timeline.data if t.name == "alert"]  # no summary: alerts come from the labels
    assert len(alerts) == 1 and list(alerts[0].x) == [4]
    reward = next(c.figure for c in build_figures([run]).cards if c.id == "reward")
    shaded = [(s.x0, s.x1) for s in reward.layout.shapes]
    assert shaded == [(2.5, 3.5), (3.5, 5.5)]  # warmup is left unshaded


def test_flickering_phases_are_not_shaded(tmp_path):
    run_dir = tmp_path / "flicker"
    run_dir.mkdir()
    labels = ("healthy", "stagnation")
    records = [{"stage": "rl", "step": s, "reward/mean": 0.5, "phase/label": labels[s % 2]}
               for s in range(1, MAX_SHADED_SEGMENTS + 3)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    runs = load_runs([run_dir])
    reward = next(c.figure for c in build_figures(runs).cards if c.id == "reward")
    assert not reward.layout.shapes
    assert "change too often" in render_html(runs)


def test_summary_alerts_reach_the_table_and_the_timeline(tmp_path):
    run_dir = copy_run(tmp_path / "r")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["phase_alerts"] = [{"step": 7, "entered": ["steady_decay"], "evidence": {"slope": -0.01}, "action": "warn"}]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    runs = load_runs([run_dir])
    assert "step 7: steady_decay → warn" in render_html(runs)
    timeline = next(c.figure for c in build_figures(runs).cards if c.id == "phases")
    alert = next(t for t in timeline.data if t.name == "alert")
    assert list(alert.x) == [7] and "slope=-0.01" in alert.text[0]


# ---- which figures -----------------------------------------------------------------------------


def test_recorded_run_figures():
    figures = build_figures(load_runs([RECORDED]))
    ids = figure_ids(figures)
    for always in ("reward", "entropy", "low_prob", "kl", "clipfrac", "length", "sft_loss", "likelihood", "grad_norm"):
        assert always in ids, always
    assert "phases" in ids  # the recording has phase labels
    absent = {p.id for p in figures.absent}
    assert set(ids).isdisjoint(absent) and set(ids) | absent == {p.id for p in PANELS} | {"phases"}


@pytest.mark.parametrize("panel", [p for p in PANELS if p.id != "grad_norm"], ids=lambda p: p.id)
def test_each_panel_disappears_without_its_metrics(tmp_path, panel):
    keys = set(panel.keys()) | ({"eval/pass@1"} if panel.with_eval else set())

    def edit(record):
        return {k: v for k, v in record.items() if k not in keys}

    run_dir = copy_run(tmp_path / "r", edit=edit, files=("metrics.jsonl", "config.yaml"))
    figures = build_figures(load_runs([run_dir]))
    assert panel.id not in figure_ids(figures)
    assert panel.id in [p.id for p in figures.absent]
    assert panel.title in render_html(load_runs([run_dir])).split("<footer>")[1]  # named in the notes


def test_grad_norm_plots_every_group_key(tmp_path):
    with_groups = copy_run(tmp_path / "groups", edit=add_observatory_keys)
    fig = next(c.figure for c in build_figures(load_runs([with_groups])).cards if c.id == "grad_norm")
    names = [t.name for t in fig.data]
    assert {"embed", "layers_0-1", "layers_2-3", "head"} <= set(names) and "total" in names
    assert names.index("embed") < names.index("layers_2-3") < names.index("head")  # input end to output end
    bare = copy_run(tmp_path / "bare", edit=drop_prefixes("grad_norm/", "policy/grad_norm"))
    assert "grad_norm" not in figure_ids(build_figures(load_runs([bare])))


def test_optional_keys_add_traces(tmp_path):
    plain = copy_run(tmp_path / "plain", edit=drop_prefixes("probe/", "kl/", "grad_norm/"))
    rich = copy_run(tmp_path / "rich", edit=add_observatory_keys)

    def trace_names(run_dir, panel_id):
        figures = build_figures(load_runs([run_dir]))
        return [t.name for t in next(c.figure for c in figures.cards if c.id == panel_id).data]

    assert "to reference" not in trace_names(plain, "kl") and "to reference" in trace_names(rich, "kl")
    assert "to reference (probe set)" in trace_names(rich, "kl")
    assert "correct (probe set)" in trace_names(rich, "likelihood")
    assert "correct (probe set)" not in trace_names(plain, "likelihood")
    assert "probe_drift" not in figure_ids(build_figures(load_runs([plain])))


def test_reward_plot_has_eval_points_with_errors(tmp_path):
    run_dir = ensure_evals(copy_run(tmp_path / "r"))
    fig = next(c.figure for c in build_figures(load_runs([run_dir])).cards if c.id == "reward")
    evals = [t for t in fig.data if t.name == "held-out pass@1"]
    assert len(evals) == 1 and len(evals[0].x) == len(evals[0].error_y.array) >= 2


# ---- several runs ------------------------------------------------------------------------------


def test_two_runs_overlay_in_one_colour_each(tmp_path):
    a = copy_run(tmp_path / "a", edit=add_observatory_keys)
    b = copy_run(tmp_path / "b", edit=add_observatory_keys)
    runs = load_runs([a, b])
    figures = build_figures(runs)
    colour_of = {run.name: RUN_COLOURS[i] for i, run in enumerate(runs)}
    for card in figures.cards:
        if card.id == "phases":
            continue
        per_run = {name: [t for t in card.figure.data if t.meta == name] for name in colour_of}
        assert all(per_run.values()), f"{card.id}: a run has no trace"
        assert len(per_run[runs[0].name]) == len(per_run[runs[1].name])
        for name, traces in per_run.items():
            assert {t.line.color if t.mode != "markers" else t.marker.color for t in traces} == {colour_of[name]}
        assert not card.figure.layout.shapes, "with several runs phases are shown only in the timeline"
    clip = next(c.figure for c in figures.cards if c.id == "clipfrac")
    assert len(clip.data) == 2  # one metric, two runs: two traces
    timeline = next(c.figure for c in figures.cards if c.id == "phases")
    assert {y for t in timeline.data for y in t.y} == {r.name for r in runs}
    assert render_html(runs).count('<tr><td class="run">') == 2


# ---- the page and the command ------------------------------------------------------------------


def test_html_is_self_contained(tmp_path):
    out = write_report([RECORDED], out=tmp_path / "sub" / "r.html", title="Test <report>")
    page = out.read_text()
    assert '<script src="http' not in page and "<script src=" not in page and '<link rel="stylesheet"' not in page
    assert "<title>Test &lt;report&gt;</title>" in page
    assert page.count('class="plotly-graph-div"') == int(page.split('data-figures="')[1].split('"')[0])
    assert len(page) > 1_000_000  # plotly.js itself is inline


def test_default_output_is_in_the_first_run_dir(tmp_path):
    run_dir = copy_run(tmp_path / "r")
    assert write_report([run_dir]) == run_dir / "report.html"
    assert (run_dir / "report.html").is_file()


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from rlvr_lab.cli import app

    a, b = copy_run(tmp_path / "a"), copy_run(tmp_path / "b")
    out = tmp_path / "both.html"
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(out), "--title", "A vs B"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "both.html" in result.output.replace("\n", "")
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "missing" in bad.output


def test_report_modules_do_not_import_torch():
    """`rlvr report` must start fast: the report code itself never imports torch."""
    src = Path(__file__).parents[1] / "src" / "rlvr_lab" / "diagnostics"
    for name in ("report.py", "runlog.py"):
        tree = ast.parse((src / name).read_text())
        imported = {n.name for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not any(m == "torch" or m.startswith("torch.") for m in imported), name
