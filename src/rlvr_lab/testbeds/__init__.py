"""Testbeds: small synthetic experiments, one module per paper, that test a claim on a CPU in minutes.

They stand apart from the RL trainer: each builds its own data and model, trains with plain full-batch loops
(or the optimisers of :mod:`rlvr_lab.optim`) and measures the paper's headline claim over several seeds.
``rlvr testbed NAME`` runs one (:func:`rlvr_lab.testbeds.runner.run_testbed`) and writes a run directory with
the metrics, a summary with the claim's verdict and an HTML report.

The module contract
-------------------
Every testbed module (a value of :data:`TESTBEDS`) defines:

``NAME: str``
    The registry name (``"hadamard-ce"``).
``PAPER: str``
    The arXiv id of the paper (``"2512.04006"``).
``TITLE: str``
    The paper's title, or a short title of the testbed.
``CLAIM: str``
    The claim under test, in one sentence.
``DEFAULTS: dict[str, Any]``
    Every parameter ``run`` reads, at full size: all default seeds together take under 5 minutes on 2 cores.
    Values are JSON/YAML scalars, lists or dicts; ``rlvr testbed NAME key=value`` may override any key (the
    value is parsed as YAML and must have the default's type; an int is accepted for a float).
``SMALL: dict[str, Any]``
    Overrides of ``DEFAULTS`` (a subset of its keys) for the reduced claim test: under 60 s for the seeds
    the test uses (``--small`` on the command line).
``run(params: dict, seed: int) -> dict``
    One seed. Returns ``{"history": [{"step": int, <metric>: float, ...}, ...], "final": {<metric>: float}}``,
    JSON-serialisable (Python ints and floats, no tensors; NaN is written as null). Metric keys may be
    namespaced with ``/`` (``"hadamard/sv_ratio"``); a history record may leave out metrics not measured at
    that step. ``params`` is the complete resolved dict (DEFAULTS, then SMALL when asked, then overrides).
``claim(results: list[dict], params: dict) -> dict``
    The verdict over the seeds' results (the dicts ``run`` returned, in seed order). Returns
    ``{"text": str, "metric": str, "measured": float, "interval": [low, high] or None, "threshold": float,
    "holds": bool, "detail": str}``: ``measured`` is the mean over seeds of ``metric`` and ``interval`` its
    95% Student's t interval (:func:`rlvr_lab.eval.intervals.mean_interval`; None with one seed);
    ``threshold`` is what ``measured`` is compared with; ``holds`` is the module's verdict (its rule is
    stated in ``text`` or ``detail``, which may also carry secondary criteria).
``figures(results: list[dict], params: dict) -> list[tuple[str, plotly.graph_objects.Figure]]``
    The paper's headline plot(s), ``(title, figure)``, or ``(title, figure, caption)`` with a one-line
    caption; lines are means over seeds with a band over seeds (:mod:`rlvr_lab.testbeds.plots`).

:func:`check_module` checks the attributes; the runner calls it before running anything.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

TESTBEDS = {
    "hadamard-ce": "rlvr_lab.testbeds.hadamard_ce",
    "specgd": "rlvr_lab.testbeds.specgd",
    "fact-streams": "rlvr_lab.testbeds.fact_streams",
    "icl-occam": "rlvr_lab.testbeds.icl_occam",
    "llr-weighting": "rlvr_lab.testbeds.llr_weighting",
}
"""Testbed name -> the module that implements it (imported only when the testbed is used)."""

ATTRIBUTES = {"NAME": str, "PAPER": str, "TITLE": str, "CLAIM": str, "DEFAULTS": dict, "SMALL": dict}
FUNCTIONS = ("run", "claim", "figures")
CLAIM_KEYS = ("text", "metric", "measured", "interval", "threshold", "holds", "detail")


def load_testbed(name: str) -> ModuleType:
    """The module of testbed ``name``, imported on first use; ``ValueError`` for an unknown name."""
    if name not in TESTBEDS:
        close = difflib.get_close_matches(name, TESTBEDS, n=1, cutoff=0.0)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown testbed {name!r}; known: {', '.join(TESTBEDS)}{hint}")
    try:
        return importlib.import_module(TESTBEDS[name])
    except ModuleNotFoundError as exc:
        if exc.name == TESTBEDS[name]:
            raise ValueError(f"testbed {name!r} is registered but its module {TESTBEDS[name]} is not installed") from None
        raise


def check_module(module: ModuleType) -> None:
    """Raise ``TypeError`` naming every attribute of the contract that ``module`` lacks or mistypes."""
    problems = [f"{attr} (a {kind.__name__})" for attr, kind in ATTRIBUTES.items()
                if not isinstance(getattr(module, attr, None), kind)]
    problems += [f"{fn}()" for fn in FUNCTIONS if not callable(getattr(module, fn, None))]
    if problems:
        raise TypeError(f"testbed module {module.__name__} does not follow the contract: missing or wrong "
                        + ", ".join(problems))
    unknown = sorted(set(module.SMALL) - set(module.DEFAULTS))
    if unknown:
        raise TypeError(f"testbed module {module.__name__}: SMALL sets keys that DEFAULTS lacks: {unknown}")


__all__ = ["ATTRIBUTES", "CLAIM_KEYS", "FUNCTIONS", "TESTBEDS", "check_module", "load_testbed"]
