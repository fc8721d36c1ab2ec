"""Comparing a sweep's conditions over seeds: the statistics by hand, a synthetic sweep's table, the page, the CLI.

The sweep here is written by hand (a manifest and fake run directories with summary.json and metrics.jsonl);
no model is trained. Every expected number is worked out in the comments beside it.
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import pytest

from rlvr_lab.lab.compare import (
    LOW_PROB_PER_TOKEN,
    CompareError,
    band_over_seeds,
    build_figures,
    default_metrics,
    load_comparison,
    markdown_table,
    mean_interval,
    paired_difference,
    regularized_incomplete_beta,
    render_html,
    signal_series,
    t_critical,
    write_comparison,
)

# ---- the statistics by hand --------------------------------------------------------------------

# Two-sided 95% critical values of Student's t, df 1..30, as printed in the standard table (NIST/SEMATECH
# e-Handbook of Statistical Methods, section 1.3.6.7.2, column 0.975).
T_TABLE_95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
              2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
              2.045, 2.042)


def test_t_critical_closed_forms():
    # df 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/π, so F(c) = 0.975 gives c = tan(0.475 π).
    assert t_critical(1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-9)
    # df 2: F(t) = 1/2 + t / (2 √(2 + t²)); F(c) = 0.975 gives c / √(2 + c²) = 0.95, c² = 2·0.9025 / 0.0975.
    assert t_critical(2) == pytest.approx(math.sqrt(2 * 0.9025 / 0.0975), rel=1e-9)  # 4.30265
    # 90%: c / √(2 + c²) = 0.9, c² = 2·0.81 / 0.19 (the table's 2.920).
    assert t_critical(2, confidence=0.90) == pytest.approx(math.sqrt(2 * 0.81 / 0.19), rel=1e-9)


def test_t_critical_matches_the_standard_table():
    for df, printed in enumerate(T_TABLE_95, start=1):
        assert round(t_critical(df), 3) == printed, df
    assert t_critical(10_000) == pytest.approx(1.960, abs=1e-3)  # the normal quantile 1.95996
    assert t_critical(60) > t_critical(120) > 1.96  # above 30 the table's 1.96 would be too narrow


def test_incomplete_beta_known_values():
    # I_x(1, 1) = x; I_x(2, 1) = x²; I_x(1, 2) = 1 − (1 − x)²; the symmetric I_0.5(a, a) = 1/2.
    assert regularized_incomplete_beta(1, 1, 0.3) == pytest.approx(0.3, rel=1e-12)
    assert regularized_incomplete_beta(2, 1, 0.3) == pytest.approx(0.09, rel=1e-12)
    assert regularized_incomplete_beta(1, 2, 0.3) == pytest.approx(1 - 0.49, rel=1e-12)
    assert regularized_incomplete_beta(3.5, 3.5, 0.5) == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(ValueError):
        regularized_incomplete_beta(1, 1, 1.5)


def test_mean_interval_by_hand():
    # mean 0.6; deviations ±0.1 and 0 give s² = 0.02 / 2, s = 0.1; se = 0.1/√3 = 0.057735;
    # t(2) = 4.302653, half-width 0.248414.
    mean, low, high = mean_interval([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert (high - mean) == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert (low, high) == pytest.approx((0.6 - 0.248414, 0.6 + 0.248414), abs=1e-6)
    # Two values 1 and 3: mean 2, s = √2, se = 1, t(1) = 12.7062.
    assert mean_interval([1.0, 3.0]) == pytest.approx((2.0, 2.0 - 12.706205, 2.0 + 12.706205), abs=1e-5)
    # No spread: a zero-width interval; a wider confidence level never narrows it.
    assert mean_interval([0.8, 0.8, 0.8]) == pytest.approx((0.8, 0.8, 0.8))
    assert mean_interval([0.5, 0.6, 0.7], confidence=0.99)[2] > high


def test_mean_interval_edge_cases():
    mean, low, high = mean_interval([0.42])
    assert mean == 0.42 and math.isnan(low) and math.isnan(high)  # one seed: no interval, never a zero-width one
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])
    with pytest.raises(ValueError, match="finite"):
        mean_interval([0.5, math.nan])


def test_paired_difference_by_hand():
    # Seeds 1-3 are in both; seed 4 only in the baseline and seed 9 only in the condition: left out.
    # Differences 0.2, 0.2, 0.1: mean 0.166667; deviations 1/30, 1/30, −2/30 give s² = (6/900)/2, s = 0.057735;
    # se = s/√3 = 0.033333; half-width 4.302653 · 0.033333 = 0.143422.
    condition = {1: 0.7, 2: 0.8, 3: 0.6, 9: 0.1}
    baseline = {1: 0.5, 2: 0.6, 3: 0.5, 4: 0.9}
    mean, low, high, n = paired_difference(condition, baseline)
    assert n == 3
    assert mean == pytest.approx(1 / 6)
    assert (low, high) == pytest.approx((1 / 6 - 0.143422, 1 / 6 + 0.143422), abs=1e-6)


def test_paired_differs_from_unpaired():
    # The baseline's seeds vary a lot, the condition always adds exactly 0.05: paired, the interval is
    # [0.05, 0.05]; the two unpaired intervals overlap almost entirely.
    baseline = {0: 0.2, 1: 0.5, 2: 0.8}
    condition = {seed: value + 0.05 for seed, value in baseline.items()}
    mean, low, high, n = paired_difference(condition, baseline)
    assert (mean, low, high, n) == pytest.approx((0.05, 0.05, 0.05, 3))
    assert mean_interval(list(condition.values()))[1] < mean_interval(list(baseline.values()))[2]


def test_paired_difference_without_pairs():
    mean, low, high, n = paired_difference({1: 0.5}, {2: 0.4})
    assert n == 0 and math.isnan(mean) and math.isnan(low) and math.isnan(high)
    mean, low, high, n = paired_difference({1: 0.5, 2: 0.9}, {2: 0.4})
    assert n == 1 and mean == pytest.approx(0.5) and math.isnan(low) and math.isnan(high)


def test_band_over_seeds_by_hand():
    band = band_over_seeds([([1, 2, 3], [1.0, 2.0, None]), ([1, 2, 3], [3.0, 6.0, 5.0]), ([2], [1.0])])
    assert band.steps == [1, 2, 3]
    assert band.mean == pytest.approx([2.0, 3.0, 5.0])  # (1+3)/2, (2+6+1)/3, 5 (the gap is left out)
    assert band.low == [1.0, 1.0, 5.0] and band.high == [3.0, 6.0, 5.0] and band.n == [2, 3, 1]


# ---- a synthetic sweep -------------------------------------------------------------------------

SEEDS = (0, 1, 2)
AFTER = {  # condition -> metric -> values for seeds 0, 1, 2 after RL
    "base": {"eval/greedy_acc": (0.50, 0.60, 0.70), "eval/pass@1": (0.30, 0.40, 0.35),
             "eval/pass@4": (0.6, 0.6, 0.6), "eval/pass@8": (0.80, 0.80, 0.80)},
    "high lr": {"eval/greedy_acc": (0.70, 0.80, 0.75), "eval/pass@1": (0.40, 0.50, 0.45),
                "eval/pass@4": (0.7, 0.7, 0.7), "eval/pass@8": (0.75, 0.95, 0.85)},
}
BEFORE = {
    "base": {"eval/greedy_acc": (0.40, 0.50, 0.60), "eval/pass@1": (0.20, 0.20, 0.20), "eval/pass@8": (0.7, 0.7, 0.7)},
    "high lr": {"eval/greedy_acc": (0.45, 0.50, 0.55), "eval/pass@1": (0.25, 0.25, 0.25),
                "eval/pass@8": (0.7, 0.8, 0.75)},
}
STEPS = range(1, 7)
LABELS = ("warmup", "warmup", "improving", "improving", "healthy", "steady_decay")


def reward(condition: str, seed: int, step: int) -> float:
    return 0.1 * step + 0.01 * seed + (0.05 if condition == "high lr" else 0.0)


def rl_record(condition: str, seed: int, step: int) -> dict:
    record = {
        "stage": "rl", "step": step, "reward/mean": reward(condition, seed, step),
        "lld/correct_logp_per_token": -0.5 + (0.01 if condition == "base" else -0.01) * step - 0.001 * seed,
        "policy/entropy": 1.0 - (0.05 if condition == "base" else 0.1) * step,
        # 0.5 summed over 10 low-probability tokens that are a quarter of the 40 trained tokens: 0.0125 per token.
        "tokens/low_prob_mass": 0.5, "tokens/low_prob_count": 10.0, "tokens/low_prob_frac": 0.25,
        "grpo/ppo_kl": 0.001, "phase/label": LABELS[step - 1],
    }
    if step % 2 == 0:
        record["probe/kl_ref"] = (0.01 if condition == "base" else 0.03) * step
    if condition == "high lr":
        record["kl/ref"] = 0.02 * step  # only one condition has it, so the page uses probe/kl_ref
    return record


def write_run(run_dir: Path, condition: str, seed: int) -> None:
    run_dir.mkdir(parents=True)
    i = SEEDS.index(seed)
    evals = {label: {metric: values[i] for metric, values in table[condition].items()} | {"eval/n_prompts": 40.0}
             for label, table in (("before_rl", BEFORE), ("after_rl", AFTER))}
    summary = {"status": "completed", "rl_steps_done": len(STEPS), "eval": evals, "phase_alerts": []}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    lines = [{"stage": "sft", "step": 0, "sft/loss": 1.0}] + [rl_record(condition, seed, s) for s in STEPS]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (run_dir / "config.yaml").write_text(f"run:\n  name: {condition}-{seed}\n  seed: {seed}\n")


def make_sweep(root: Path) -> Path:
    """2 conditions x 3 completed seeds, plus a fourth seed that is pending in one and failed in the other."""
    sweep = root / "sweep"
    cells = []
    for condition, slug in (("base", "base"), ("high lr", "high-lr")):
        for seed in SEEDS:
            run_dir = f"runs/{slug}-s{seed}"
            write_run(sweep / run_dir, condition, seed)
            cells.append({"condition": condition, "seed": seed, "run_dir": run_dir, "status": "completed",
                          "seconds": 12.5, "error": None})
    cells.append({"condition": "base", "seed": 3, "run_dir": "runs/base-s3", "status": "pending",
                  "seconds": None, "error": None})
    cells.append({"condition": "high lr", "seed": 3, "run_dir": "runs/high-lr-s3", "status": "failed",
                  "seconds": 3.0, "error": "RuntimeError: out of memory"})
    manifest = {"name": "lr-sweep", "description": "Does a higher learning rate help GRPO?", "baseline": "base",
                "seeds": [*SEEDS, 3],
                "conditions": {"base": {"presets": ["grpo"], "overrides": []},
                               "high lr": {"presets": ["grpo"], "overrides": ["train.optim.lr=3e-4"]}},
                "cells": cells}
    (sweep / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return sweep


@pytest.fixture()
def sweep(tmp_path) -> Path:
    return make_sweep(tmp_path)


def table_rows(markdown: str) -> dict[str, list[str]]:
    """condition -> its cells, from the Markdown table."""
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in body]
    return {"header": [c.strip() for c in header.split("|")[1:-1]], **{row[0]: row for row in cells}}


def test_load_comparison_reads_the_manifest(sweep):
    comparison = load_comparison(sweep)
    assert [c.name for c in comparison.conditions] == ["base", "high lr"]
    assert comparison.baseline == "base" and comparison.name == "lr-sweep"
    assert [len(c.completed) for c in comparison.conditions] == [3, 3]
    assert [(c.condition, c.seed, c.status) for c in comparison.missing] == [("base", 3, "pending"),
                                                                            ("high lr", 3, "failed")]
    assert comparison.condition("high lr").values("eval/greedy_acc") == {0: 0.70, 1: 0.80, 2: 0.75}
    assert default_metrics(comparison) == ("eval/greedy_acc", "eval/pass@1", "eval/pass@8")  # the largest k


def test_markdown_numbers_by_hand(sweep):
    rows = table_rows(markdown_table(load_comparison(sweep)))
    assert rows["header"][:5] == ["condition", "seeds", "greedy_acc before RL", "greedy_acc after RL [95%]",
                                  "Δ greedy_acc vs baseline [95%]"]
    assert len(rows["header"]) == 2 + 3 * 3
    base, high = rows["base (baseline)"], rows["high lr"]
    assert base[1] == high[1] == "3 of 4"  # 3 completed of 4 cells
    # greedy_acc. base: 0.5, 0.6, 0.7 -> 0.6 ± 4.302653·0.1/√3 = ±0.248414.
    # high lr: 0.70, 0.80, 0.75 -> 0.75, s = 0.05, ±4.302653·0.05/√3 = ±0.124207.
    # differences 0.20, 0.20, 0.05 -> 0.15, s = √(0.0075) = 0.086603, se 0.05, ±0.215133.
    # before RL: base (0.4 + 0.5 + 0.6)/3 = 0.5; high lr (0.45 + 0.5 + 0.55)/3 = 0.5.
    assert base[2:5] == ["0.500", "0.600 [0.352, 0.848]", "baseline"]
    assert high[2:5] == ["0.500", "0.750 [0.626, 0.874]", "+0.150 [-0.065, +0.365]"]
    # pass@1. base: 0.30, 0.40, 0.35 -> 0.35 ± 0.124207; high lr: 0.40, 0.50, 0.45 -> 0.45 ± 0.124207;
    # the differences are all 0.10, so the paired interval has no width.
    assert base[5:8] == ["0.200", "0.350 [0.226, 0.474]", "baseline"]
    assert high[5:8] == ["0.250", "0.450 [0.326, 0.574]", "+0.100 [+0.100, +0.100]"]
    # pass@8. base: 0.8 three times -> [0.8, 0.8]; high lr: 0.75, 0.95, 0.85 -> 0.85, s = 0.1, ±0.248414;
    # differences -0.05, 0.15, 0.05 -> 0.05, s = 0.1, ±0.248414. Before RL: 0.7 and (0.7 + 0.8 + 0.75)/3 = 0.75.
    assert base[8:11] == ["0.700", "0.800 [0.800, 0.800]", "baseline"]
    assert high[8:11] == ["0.750", "0.850 [0.602, 1.098]", "+0.050 [-0.198, +0.298]"]


def test_missing_cells_are_listed_not_dropped(sweep):
    text = markdown_table(load_comparison(sweep))
    assert "Missing cells (2, left out of every statistic)" in text
    assert "- base · seed 3: pending" in text
    assert "- high lr · seed 3: failed (RuntimeError: out of memory)" in text


def test_completed_cell_without_its_run_is_missing(sweep):
    manifest = json.loads((sweep / "manifest.json").read_text())
    manifest["cells"][0]["run_dir"] = "runs/gone"  # base seed 0, marked completed
    (sweep / "manifest.json").write_text(json.dumps(manifest))
    comparison = load_comparison(sweep)
    assert [(c.condition, c.seed) for c in comparison.missing][0] == ("base", 0)
    rows = table_rows(markdown_table(comparison))
    # base now has seeds 1, 2: 0.6, 0.7 -> 0.65, s = 0.070711, ±12.706205·0.05 = ±0.635310; paired with high lr on
    # seeds 1, 2: differences 0.20, 0.05 -> 0.125, s = 0.106066, se 0.075, ±0.952965, over 2 of the 3 seeds.
    assert rows["base (baseline)"][1] == "2 of 4"
    assert rows["base (baseline)"][3] == "0.650 [0.015, 1.285]"
    assert rows["high lr"][4] == "+0.125 [-0.828, +1.078] (n=2)"
    assert "base · seed 0: completed, but" in markdown_table(comparison) and "runs/gone" in markdown_table(comparison)


def test_single_runs_join_as_conditions(sweep, tmp_path):
    extra = tmp_path / "solo"
    write_run(extra, "high lr", 1)
    comparison = load_comparison(sweep, [extra], baseline="base")
    assert [c.name for c in comparison.conditions] == ["base", "high lr", "solo"]
    rows = table_rows(markdown_table(comparison))
    # One seed (seed 1, from its config): greedy 0.80 after RL; paired with the baseline's seed 1 (0.60): +0.20.
    assert rows["solo"][1] == "1"
    assert rows["solo"][3] == "0.800 (1 seed, no interval)"
    assert rows["solo"][4] == "+0.200 (1 pair, no interval)"


def test_a_metric_the_baseline_lacks_has_no_difference(sweep):
    for path in sweep.glob("runs/base-s*/summary.json"):
        summary = json.loads(path.read_text())
        del summary["eval"]["after_rl"]["eval/pass@8"]
        path.write_text(json.dumps(summary))
    rows = table_rows(markdown_table(load_comparison(sweep)))
    assert rows["base (baseline)"][9] == "—"
    assert rows["high lr"][9:11] == ["0.850 [0.602, 1.098]", "— (baseline not measured)"]


def test_baseline_can_be_chosen_and_must_exist(sweep):
    rows = table_rows(markdown_table(load_comparison(sweep, baseline="high lr")))
    assert rows["high lr (baseline)"][4] == "baseline"
    assert rows["base"][4] == "-0.150 [-0.365, +0.065]"  # the same differences, the other way round
    with pytest.raises(CompareError, match="'nope' .* not a condition"):
        load_comparison(sweep, baseline="nope")


def test_not_a_sweep_is_a_clear_error(tmp_path):
    with pytest.raises(CompareError, match="no manifest.json"):
        load_comparison(tmp_path)
    with pytest.raises(CompareError, match="not a directory"):
        load_comparison(tmp_path / "absent")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CompareError, match="not readable JSON"):
        load_comparison(tmp_path)


# ---- the curves and the page -------------------------------------------------------------------


def test_signals_average_over_seeds(sweep):
    comparison = load_comparison(sweep)
    figures = build_figures(comparison)
    assert [card.id for card in figures.cards] == ["phases", "reward", "likelihood", "entropy", "low_prob", "kl"]
    assert figures.keys["kl"] == "probe/kl_ref"  # kl/ref is recorded by one condition only
    reward_fig = next(card.figure for card in figures.cards if card.id == "reward")
    lines = {t.meta: t for t in reward_fig.data if t.showlegend is not False}
    bands = [t for t in reward_fig.data if t.showlegend is False]
    # base at step t: 0.1t + 0.01·seed over seeds 0, 1, 2 -> mean 0.1t + 0.01, band 0.1t to 0.1t + 0.02.
    assert list(lines["base"].y) == pytest.approx([0.1 * t + 0.01 for t in STEPS])
    assert list(lines["high lr"].y) == pytest.approx([0.1 * t + 0.06 for t in STEPS])
    assert [list(t.y) for t in bands if t.meta == "base"] == [pytest.approx([0.1 * t + 0.02 for t in STEPS]),
                                                             pytest.approx([0.1 * t for t in STEPS])]
    low_prob = next(card.figure for card in figures.cards if card.id == "low_prob")
    assert all(v == pytest.approx(0.0125) for t in low_prob.data for v in t.y)
    # a constant signal gets an explicit y range around it (plotly's autorange fails on a span of one ulp)
    assert list(low_prob.layout.yaxis.range) == pytest.approx([0.0125 - 0.00125, 0.0125 + 0.00125])
    assert reward_fig.layout.yaxis.range is None
    timeline = next(card.figure for card in figures.cards if card.id == "phases")
    rows = {y for trace in timeline.data for y in trace.y}
    assert rows == {f"{c} · seed {s}" for c in ("base", "high lr") for s in SEEDS}


def test_low_probability_mass_per_token(sweep):
    comparison = load_comparison(sweep)
    run = comparison.condition("base").completed[0].run
    run.records["rl"][:3] = [
        {"stage": "rl", "step": 1, "tokens/low_prob_mass": 0.3, "tokens/low_prob_count": 6.0,
         "tokens/low_prob_frac": 0.5},  # 12 trained tokens: 0.3 / 12 = 0.025
        {"stage": "rl", "step": 2, "tokens/low_prob_mass": 0.0, "tokens/low_prob_count": 0.0,
         "tokens/low_prob_frac": 0.0},  # no low-probability token: 0
        {"stage": "rl", "step": 3, "tokens/low_prob_mass": 0.0, "tokens/low_prob_count": 0.0},  # no trained token
    ]
    steps, values = signal_series(run, LOW_PROB_PER_TOKEN)
    assert steps[:2] == [1, 2] and 3 not in steps
    assert values[:2] == pytest.approx([0.025, 0.0])


def test_a_signal_no_run_recorded_is_left_out_and_noted(sweep):
    for path in sweep.glob("runs/*/metrics.jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record in records:
            record.pop("policy/entropy", None)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    comparison = load_comparison(sweep)
    assert "entropy" not in [card.id for card in build_figures(comparison).cards]
    assert "<code>policy/entropy</code>" in render_html(comparison)


def test_html_has_every_plot_and_no_external_url(sweep):
    from plotly.offline import get_plotlyjs

    html_path, md_path = write_comparison(sweep)
    assert (html_path, md_path) == (sweep / "compare.html", sweep / "compare.md")
    page = html_path.read_text()
    for plot in ("phases", "reward", "likelihood", "entropy", "low_prob", "kl"):
        assert f'id="plot-{plot}"' in page, plot
    assert page.count('class="plotly-graph-div"') == int(page.split('data-figures="')[1].split('"')[0]) == 6
    assert "<title>Sweep comparison: lr-sweep</title>" in page and "Does a higher learning rate help GRPO?" in page
    assert get_plotlyjs() in page  # plotly.js inline
    ours = page.replace(get_plotlyjs(), "")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", ours), "a resource loaded from elsewhere"
    assert not re.findall(r"https?://", ours), "an external URL outside plotly.js"
    # the table carries the Markdown's numbers, and the missing cells are listed
    assert "0.750 [0.626, 0.874]" in page and "+0.150 [-0.065, +0.365]" in page
    assert 'id="missing"' in page and "high lr · seed 3: failed (RuntimeError: out of memory)" in page
    markdown = md_path.read_text()
    assert markdown.startswith("# Sweep comparison: lr-sweep\n") and "0.750 [0.626, 0.874]" in markdown


def test_names_are_escaped(sweep):
    manifest = json.loads((sweep / "manifest.json").read_text())
    manifest["name"] = "<b>sweep</b>"
    (sweep / "manifest.json").write_text(json.dumps(manifest))
    page = render_html(load_comparison(sweep))
    assert "<b>sweep</b>" not in page and "&lt;b&gt;sweep&lt;/b&gt;" in page


def test_cli_compare(sweep, tmp_path):
    from typer.testing import CliRunner

    from rlvr_lab.cli import app

    extra = tmp_path / "solo"
    write_run(extra, "base", 2)
    out = tmp_path / "out" / "cmp.html"
    result = CliRunner().invoke(app, ["compare", str(sweep), str(extra), "--baseline", "high lr", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".md").is_file()
    flat = result.output.replace("\n", "")
    assert "| high lr (baseline) |" in result.output and "| solo |" in result.output
    assert "cmp.html" in flat and "cmp.md" in flat
    bad = CliRunner().invoke(app, ["compare", str(extra)])  # a run directory, not a sweep
    assert bad.exit_code == 2 and "not a sweep directory" in bad.output.replace("\n", " ")
    unknown = CliRunner().invoke(app, ["compare", str(sweep), "--baseline", "nope"])
    assert unknown.exit_code == 2 and "nope" in unknown.output


def test_compare_module_does_not_import_torch():
    """`rlvr compare` must start fast: the comparison code itself never imports torch or scipy."""
    src = Path(__file__).parents[1] / "src" / "rlvr_lab" / "lab" / "compare.py"
    tree = ast.parse(src.read_text())
    imported = {n.name for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(m.split(".")[0] in ("torch", "scipy") for m in imported)
