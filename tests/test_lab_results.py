"""Experiment summaries and verdicts, on a synthetic sweep whose numbers are known by hand."""

from __future__ import annotations

import json

import pytest
import yaml
from test_lab_compare import make_sweep

from rlvr_lab.lab.results import parse_claims, results_table, summarise_sweep, verdict, write_summary

CLAIMS = [
    {"condition": "high lr", "metric": "eval/pass@1", "direction": "higher", "text": "a higher lr raises pass@1"},
    {"condition": "high lr", "metric": "final:policy/entropy", "direction": "higher"},
    {"condition": "high lr", "metric": "eval/greedy_acc", "direction": "higher"},
]


@pytest.fixture()
def sweep(tmp_path):
    sweep = make_sweep(tmp_path)
    (sweep / "spec.yaml").write_text(yaml.safe_dump({"name": "lr-sweep", "claims": CLAIMS}))
    return sweep


def test_verdicts_from_paired_differences_by_hand(sweep):
    summary = summarise_sweep(sweep)
    claims = summary["claims"]
    # pass@1: high lr - base = 0.10 on every seed: an interval of zero width above 0
    assert claims[0]["diff"][:3] == pytest.approx([0.10, 0.10, 0.10]) and claims[0]["verdict"] == "reproduced"
    # entropy 1 - c*step averaged over steps 2..6 (mean step 4): 0.8 (base) vs 0.6: lower, not higher
    assert claims[1]["diff"][0] == pytest.approx(-0.2) and claims[1]["verdict"] == "not reproduced (the opposite)"
    # greedy: differences 0.20, 0.20, 0.05: mean 0.15, sd 0.0866, t(2) = 4.3027: [-0.065, 0.365] holds 0
    mean, low, high, n = claims[2]["diff"]
    assert (mean, low, high, n) == pytest.approx((0.15, -0.06511, 0.36511, 3), abs=1e-4)
    assert claims[2]["verdict"] == "inconclusive at this power"
    base = summary["conditions"]["base"]["metrics"]
    assert base["final:policy/entropy"]["after"][0] == pytest.approx(0.8) and base["eval/pass@1"]["diff"] is None
    assert summary["compute"] == {"cells": 8, "completed": 6, "cell_seconds": pytest.approx(6 * 12.5 + 3.0)}


def test_verdict_rule():
    assert verdict((0.1, 0.02, 0.2, 3), "higher") == "reproduced"
    assert verdict((-0.1, -0.2, -0.02, 3), "lower") == "reproduced"
    assert verdict((-0.1, -0.2, -0.02, 3), "higher") == "not reproduced (the opposite)"
    assert verdict((0.1, -0.02, 0.2, 3), "higher") == "inconclusive at this power"
    assert verdict((0.1, float("nan"), float("nan"), 1), "higher").startswith("inconclusive (fewer")


def test_bad_claims_are_refused():
    with pytest.raises(ValueError, match="must be one of the conditions other than the baseline"):
        parse_claims([{"condition": "base", "metric": "eval/pass@1", "direction": "higher"}], ["base", "x"], "base")
    with pytest.raises(ValueError, match="direction='up'"):
        parse_claims([{"condition": "x", "metric": "eval/pass@1", "direction": "up"}], ["base", "x"], "base")


def test_summary_file_and_table(sweep, tmp_path):
    path = write_summary(sweep, tmp_path / "results")
    assert path.name == "lr-sweep.json" and json.loads(path.read_text())["baseline"] == "base"
    table = results_table(tmp_path / "results").splitlines()
    assert len(table) == 2 + len(CLAIMS)
    assert "| a higher lr raises pass@1 |" in table[2] and "+0.100 (no interval)" not in table[2]
    assert "+0.100 [+0.100, +0.100] | reproduced | 3 | 6 runs, 0.0 h |" in table[2]
