"""The testbed machinery: the registry, the module contract, parameter overrides, the run directory, the HTML
report and ``rlvr testbed`` end to end."""

from __future__ import annotations

import json
import math
import re
import sys
import types

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
import pytest
import torch
from typer.testing import CliRunner

from rlvr_lab import testbeds
from rlvr_lab.cli import app
from rlvr_lab.eval.intervals import mean_interval
from rlvr_lab.testbeds import check_module, load_testbed
from rlvr_lab.testbeds.plots import band, band_figure, series
from rlvr_lab.testbeds.runner import claim_line, coerce, jsonable, parse_overrides, run_testbed

torch.set_num_threads(1)


# ---- a fake testbed: fast, and every value known ------------------------------------------------


def fake_module() -> types.ModuleType:
    module = types.ModuleType("fake_testbed_module")
    module.NAME, module.PAPER, module.TITLE = "fake", "0000.00000", "A fake testbed <b>"
    module.CLAIM = "The value grows."
    module.DEFAULTS = {"steps": 3, "rate": 1.0, "names": ["a"], "flag": False}
    module.SMALL = {"steps": 2}

    def run(params, seed):
        history = [{"step": t, "value": params["rate"] * t + seed, "gap": math.nan if t == 0 else 1.0}
                   for t in range(params["steps"] + 1)]
        return {"history": history, "final": {"value": history[-1]["value"], "undefined": math.nan}}

    def claim(results, params):
        mean, low, high = mean_interval([r["final"]["value"] for r in results])
        return {"text": "value ≥ 1", "metric": "value", "measured": mean,
                "interval": None if len(results) < 2 else [low, high],
                "threshold": 1.0, "holds": mean >= 1.0, "detail": f"{len(results)} seeds"}

    def figures(results, params):
        return [("Value over steps", band_figure([series("value", results, "value")], x_title="step",
                                                  y_title="value"), "The fake value."),
                ("Gap", go.Figure())]

    module.run, module.claim, module.figures = run, claim, figures
    return module


@pytest.fixture
def fake(monkeypatch):
    module = fake_module()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(testbeds.TESTBEDS, "fake", module.__name__)
    return module


# ---- registry and contract ---------------------------------------------------------------------


def test_registry_names_and_lazy_loading():
    assert list(testbeds.TESTBEDS) == ["hadamard-ce", "specgd", "fact-streams", "icl-occam", "llr-weighting"]
    for name in ("hadamard-ce", "specgd"):
        module = load_testbed(name)
        check_module(module)
        assert module.NAME == name and set(module.SMALL) <= set(module.DEFAULTS)


def test_unknown_testbed_names_the_known_ones_and_the_nearest():
    with pytest.raises(ValueError, match=r"known: hadamard-ce, specgd, .*did you mean 'specgd'"):
        load_testbed("spec-gd")


def test_check_module_lists_what_is_missing():
    module = types.ModuleType("broken")
    module.NAME, module.DEFAULTS = "broken", []
    with pytest.raises(TypeError, match=r"PAPER \(a str\).*DEFAULTS \(a dict\).*run\(\)"):
        check_module(module)


# ---- parameters --------------------------------------------------------------------------------


def test_overrides_are_parsed_as_yaml_and_typed_by_the_default():
    defaults = {"steps": 10, "lr": 0.1, "models": ["linear"], "flag": False, "name": "x", "extra": {"a": 1}}
    out = parse_overrides(["steps=20", "lr=1", "models=[linear, bilinear]", "flag=true", "name=y", "lr=1e-3",
                           "extra={b: 2}"], defaults)
    assert out == {"steps": 20, "lr": 1e-3, "models": ["linear", "bilinear"], "flag": True, "name": "y",
                   "extra": {"b": 2}}
    assert isinstance(parse_overrides(["lr=1"], defaults)["lr"], float)


@pytest.mark.parametrize("override, message", [
    ("stepz=3", r"unknown parameter 'stepz' \(did you mean 'steps'\?\); allowed: steps, lr, models, flag"),
    ("steps=2.5", r"steps=2.5 is a float; expected an int"),
    ("steps=true", r"expected an int"),
    ("lr=fast", r"lr='fast' is a str; expected a float"),
    ("flag=1", r"expected a bool"),
    ("models=linear", r"expected a list"),
    ("models=[1]", r"models\[0\]=1 is an int; expected a string"),
    ("steps", r"must look like key=value"),
])
def test_bad_overrides_name_the_key_and_what_is_allowed(override, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides([override], {"steps": 10, "lr": 0.1, "models": ["linear"], "flag": False})


def test_coerce_and_jsonable_edges():
    assert coerce("x", [1, 2], []) == [1, 2] and coerce("x", "anything", None) == "anything"
    assert jsonable({"a": (1.0, math.inf), "b": torch.tensor(2.5), "c": [math.nan]}) == {"a": [1.0, None], "b": 2.5,
                                                                                         "c": [None]}
    with pytest.raises(TypeError, match=r"value\['t'\]"):
        jsonable({"t": torch.zeros(2)})


# ---- the run directory and the report ----------------------------------------------------------


def test_run_writes_the_run_directory(fake, tmp_path):
    advanced = []
    summary = run_testbed("fake", ["rate=2"], [0, 1, 2], tmp_path / "run", small=True,
                          progress=lambda total: (advanced.append(("total", total)), advanced.append)[1])
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.jsonl", "report.html", "summary.json"]
    assert advanced == [("total", 3), 1, 1, 1]

    config = json.loads((run / "config.json").read_text())
    assert config["params"] == {"steps": 2, "rate": 2.0, "names": ["a"], "flag": False}
    assert config["seeds"] == [0, 1, 2] and config["small"] is True and "torch" in config["versions"]

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * 3 and lines[0] == {"seed": 0, "step": 0, "value": 0.0, "gap": None}
    assert lines[-1] == {"seed": 2, "step": 2, "value": 6.0, "gap": 1.0}

    written = json.loads((run / "summary.json").read_text())
    assert written == summary
    assert [s["final"]["value"] for s in written["per_seed"]] == [4.0, 5.0, 6.0]
    assert written["per_seed"][0]["final"]["undefined"] is None
    assert written["final"]["value"]["mean"] == 5.0 and written["final"]["value"]["n"] == 3
    assert written["final"]["value"]["low"] == pytest.approx(5.0 - 4.302652729911275 / math.sqrt(3))  # t(2)·s/√3, s=1
    assert "undefined" not in written["final"]
    claim = written["claim"]
    assert claim["holds"] is True and claim["measured"] == 5.0 and claim["n_seeds"] == 3
    assert claim_line(claim).startswith("claim holds: value = 5 [2.516, 7.484] vs threshold 1 (3 seeds")

    page = (run / "report.html").read_text()
    assert 'data-figures="2"' in page and page.count('class="plotly-graph-div"') == 2
    assert "Value over steps" in page and "The fake value." in page
    assert "Claim holds" in page and "value ≥ 1" in page and 'data-holds="true"' in page
    assert "A fake testbed &lt;b&gt;" in page  # escaped
    assert get_plotlyjs() in page and "<script src=" not in page  # plotly.js inline: opens offline
    ours = page.replace(get_plotlyjs(), "")
    assert re.findall(r"https?://[^\s\"'<]+", ours) == ["https://arxiv.org/abs/0000.00000"]  # a link, never fetched
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_claim_that_fails_says_so(fake, tmp_path):
    summary = run_testbed("fake", ["rate=0"], [0], tmp_path)
    assert summary["claim"]["holds"] is False
    assert "claim does not hold" in claim_line(summary["claim"]) and "one seed" in claim_line(summary["claim"])
    assert "Claim does not hold" in (tmp_path / "report.html").read_text()


def test_errors_come_before_anything_runs(fake, tmp_path):
    with pytest.raises(ValueError, match="allowed: steps, rate, names, flag"):
        run_testbed("fake", ["speed=2"], [0], tmp_path / "x")
    with pytest.raises(ValueError, match="seeds must differ"):
        run_testbed("fake", [], [1, 1], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_band_over_seeds():
    b = band([([0, 1, 2], [1.0, 2.0, 3.0]), ([0, 1], [3.0, 4.0])])
    assert b.x == [0, 1, 2] and b.mean == [2.0, 3.0, 3.0] and b.low == [1.0, 2.0, 3.0] and b.n == [2, 2, 1]
    t = band([([0], [1.0]), ([0], [3.0])], kind="t")
    assert t.low[0] == pytest.approx(2.0 - 12.706204736174703 * 1.0)  # t(1) · s / √2 with s = √2
    history = [{"step": 0, "v": 1.0}, {"step": 1, "v": 0.0}, {"step": 2, "v": 2.0}]
    fig = band_figure([series("a", [{"history": history}], "v")], x_title="step", y_title="v", log_x=True,
                      log_y=True, hlines=[(0.5, "half")])
    assert fig.layout.xaxis.type == "log" and [t.name for t in fig.data] == ["a", "half"]
    assert list(fig.data[0].x) == [2.0]  # x = 0 and y = 0 have no place on log axes


# ---- the command line --------------------------------------------------------------------------


def test_cli_runs_hadamard_ce_small_end_to_end(tmp_path):
    out = tmp_path / "hadamard"
    result = CliRunner().invoke(app, ["testbed", "hadamard-ce", "--small", "--seeds", "0", "1", "--out", str(out),
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["small"] is True and summary["claim"]["holds"] is True
    # two seeds: Student's t with 1 degree of freedom makes the interval wide, so the lab may call it inconclusive
    verdict = summary["claim"]["verdict"]
    assert verdict in ("holds", "inconclusive")
    shown = "claim holds" if verdict == "holds" else "claim is inconclusive at this power"
    assert f"{shown}: hadamard/sv_ratio_drop" in result.output and "report:" in result.output
    page = (out / "report.html").read_text()
    assert "Frozen singular vectors: off-diagonal of QᵀZQ" in page and 'data-figures="5"' in page
    assert "QᵀZQ stays diagonal" in page and f'data-verdict="{verdict}"' in page
    seeds = {json.loads(line)["seed"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert seeds == {0, 1}


@pytest.mark.parametrize("args, message", [
    (["testbed", "hadamard"], "did you mean 'hadamard-ce'"),
    (["testbed", "hadamard-ce", "stepz=3"], "unknown parameter 'stepz'"),
    (["testbed", "hadamard-ce", "steps=many"], "expected an int"),
    (["testbed", "hadamard-ce", "--seeds", "0", "x"], "--seeds takes integers"),
])
def test_cli_errors_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "testbed error" in result.output and message in " ".join(result.output.split())


def test_a_claim_whose_interval_holds_the_threshold_is_inconclusive():
    from rlvr_lab.testbeds.runner import claim_line, claim_verdict

    base = {"metric": "gap", "measured": 0.31, "threshold": 0.2, "holds": True, "n_seeds": 3}
    assert claim_verdict({**base, "interval": [0.25, 0.4]}) == "holds"
    assert claim_verdict({**base, "interval": [-0.33, 0.94]}) == "inconclusive"
    assert claim_verdict({**base, "holds": False, "measured": 0.1, "interval": [0.05, 0.15]}) == "does not hold"
    assert claim_verdict({**base, "interval": None}) == "holds"  # one seed: the module's own verdict
    assert claim_line({**base, "interval": [-0.33, 0.94]}).startswith("claim is inconclusive at this power")
