"""The part of a testbed's contract test that is the same for every testbed: the module follows the
contract and is what the registry loads, its runs and verdict are JSON, the verdict has the claim keys
and its figures are titled plotly figures. Each test_testbed_*.py adds what its own history holds."""

import json

import plotly.graph_objects as go

from rlvr_lab.testbeds import check_module, load_testbed

VERDICT_KEYS = {"text", "metric", "measured", "interval", "threshold", "holds", "detail"}


def contract_runs(module, paper: str, params: dict, seeds=(0, 1)) -> list[dict]:
    """Check ``module`` against the contract (``check_module`` also refuses SMALL keys that DEFAULTS lacks),
    then run it at ``params`` for ``seeds``; the results, which must be JSON."""
    check_module(module)
    assert load_testbed(module.NAME) is module
    assert module.PAPER == paper
    results = [module.run(params, seed) for seed in seeds]
    json.dumps(results)
    return results


def check_verdict_and_figures(module, results: list[dict], params: dict) -> dict:
    """The claim's verdict on ``results`` (returned) has the claim keys, a bool ``holds`` and is JSON; the
    figures are a non-empty list of (title, plotly figure, ...)."""
    verdict = module.claim(results, params)
    assert set(verdict) == VERDICT_KEYS
    assert isinstance(verdict["holds"], bool)
    json.dumps(verdict)
    figs = module.figures(results, params)
    assert figs and all(isinstance(t, str) and isinstance(f, go.Figure) for t, f, *_ in figs)
    return verdict
