"""Phase detector for the LLD death spiral and for entropy collapse (spec section 2.3).

The paper (arXiv 2512.04220, §5.1, Fig. 2) reads a run's health from the mean log-likelihood of
correct responses over steps, in three phases:

* **stagnation** (Phase I): the likelihood of correct responses stays flat while reward rises;
* **steady_decay** (Phase II): it falls slowly and steadily;
* **accelerated_collapse** (Phase III): after a turning point the fall steepens sharply (and the
  gradient norm spikes, the reward collapses).

A rising likelihood is labelled **healthy**; the first ``window − 1`` steps, before a slope can be
fitted, are **warmup**. Separately, **entropy_collapse** is flagged when the policy entropy falls below
a fraction of its initial level or drops fast.

Smoothing: each series is read through an ordinary-least-squares slope over the last ``window``
steps, and a slope only counts when it is both large (relative to the series' initial level) and
significant (its t-statistic), so batch-to-batch noise does not flip labels. A new label must also
hold for ``patience`` consecutive steps before it replaces the current one.

The detector only reports. What the trainer does on an alert (``"warn"``, ``"checkpoint"``,
``"stop"``) is the caller's choice, passed in as ``actions`` and echoed in the report.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["warn", "checkpoint", "stop"]
ACTIONS: tuple[str, ...] = ("warn", "checkpoint", "stop")

LLD_LABELS = ("warmup", "healthy", "stagnation", "steady_decay", "accelerated_collapse")
ENTROPY_LABELS = ("warmup", "ok", "entropy_collapse")
ALERT_LABELS = ("steady_decay", "accelerated_collapse", "entropy_collapse")
# Headline label when both tracks have something to say: most severe first.
_PRIORITY = ("accelerated_collapse", "entropy_collapse", "steady_decay", "stagnation", "healthy", "ok", "warmup")
_SEVERITY = {"warmup": 0, "healthy": 0, "stagnation": 0, "steady_decay": 1, "accelerated_collapse": 2}


@dataclass(frozen=True)
class PhaseConfig:
    """Thresholds of the phase detector. The paper gives the phases' shape, not numbers: every default is
    inferred [INF] and chosen so that the synthetic trajectories in the tests separate cleanly."""

    window: int = 10
    """Steps in each least-squares slope fit. 10 spans a sixth of the paper's ~60-step Phase II (§5.1), so
    decay is seen within a few steps of its onset while one noisy batch moves the slope by ~1/10."""
    patience: int = 3
    """Consecutive steps a new label must hold before it is reported (debounce; 3 adds two steps of lag)."""
    likelihood_key: str = "lld/correct_logp_before"
    """Metric read as the likelihood series: mean sequence log-likelihood of correct responses (signals.py)."""
    entropy_key: str = "policy/entropy"
    """Metric read as the entropy series."""
    decay_rel_slope: float = 0.002
    """A slope counts as decay (or rise) when |slope| ≥ this fraction of the series' initial magnitude per step:
    0.2%/step is a ≥12% fall over a 60-step Phase II; slower drifts are lost in prompt-mix noise."""
    min_t_stat: float = 4.0
    """A slope counts only when |slope / standard error| ≥ this. One window alone would need ~3 (p < 0.01,
    8 dof), but a run tests ~one overlapping window per step; 4 gave no false decay on 100 seeded noisy
    flat and rising 200-step series while delaying decay detection by only a step or two."""
    accel_factor: float = 2.0
    """Accelerated collapse: the slope over the last window is at least this many times the (already
    decaying) slope over the window before it, i.e. the decay rate at least doubled (paper: a "turning point")."""
    min_scale: float = 0.1
    """Floor on the initial magnitude used to make slopes relative (nats), so a near-zero series does not
    turn every wiggle into a huge relative slope."""
    entropy_floor_frac: float = 0.25
    """Entropy collapse when the smoothed entropy is below this fraction of its initial level."""
    entropy_drop_rel_slope: float = 0.03
    """... or when it falls by at least this fraction of its initial level per step (significantly, as above):
    3%/step loses a third of the entropy within one 10-step window."""
    actions: Mapping[str, str] = field(
        default_factory=lambda: {"steady_decay": "warn", "accelerated_collapse": "warn", "entropy_collapse": "warn"}
    )
    """What the caller wants done on entering each alerting phase; echoed in ``PhaseReport.action``."""

    def __post_init__(self) -> None:
        def bad(name: str, value: object, allowed: str) -> ValueError:
            return ValueError(f"PhaseConfig.{name}={value!r} is invalid; allowed: {allowed}")

        if not isinstance(self.window, int) or self.window < 3:
            raise bad("window", self.window, "an int >= 3 (a slope needs a residual)")
        if not isinstance(self.patience, int) or self.patience < 1:
            raise bad("patience", self.patience, "an int >= 1")
        for name in ("decay_rel_slope", "min_t_stat", "min_scale", "entropy_drop_rel_slope"):
            if not getattr(self, name) > 0:
                raise bad(name, getattr(self, name), "a number > 0")
        if not self.accel_factor > 1:
            raise bad("accel_factor", self.accel_factor, "a number > 1")
        if not 0 < self.entropy_floor_frac < 1:
            raise bad("entropy_floor_frac", self.entropy_floor_frac, "a number in (0, 1)")
        for label, action in self.actions.items():
            if label not in ALERT_LABELS:
                raise bad("actions", label, f"keys among {ALERT_LABELS}")
            if action not in ACTIONS:
                raise bad(f"actions[{label!r}]", action, f"one of {ACTIONS}")


@dataclass(frozen=True)
class PhaseReport:
    """What the detector says about one step."""

    step: int
    label: str
    """Headline: the most severe of ``lld_phase`` and ``entropy_phase``."""
    lld_phase: str
    entropy_phase: str
    alert: bool
    """True only on the step a run *enters* an alerting phase (or a more severe one), never while it stays."""
    entered: tuple[str, ...] = ()
    """The alerting phases entered on this step (empty unless ``alert``)."""
    action: str | None = None
    """The caller's configured action for the most severe entered phase; None without an alert."""
    evidence: dict[str, float] = field(default_factory=dict)
    """The numbers behind the labels: slopes, t-statistics, ratios, levels."""


def ols_slope(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares fit ``y = a + b·x``: returns (slope b, t-statistic of b, fitted y at the last x).

    A perfect fit has an infinite t-statistic (with the slope's sign), 0 for a zero slope.
    """
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, 0.0, my
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    ssr = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    se = math.sqrt(ssr / (n - 2) / sxx) if n > 2 else 0.0
    # Residuals at rounding level count as a perfect fit.
    if se <= 1e-12 * max(1.0, abs(b)):
        t = math.copysign(math.inf, b) if b != 0 else 0.0
    else:
        t = b / se
    return b, t, a + b * xs[-1]


class _Debounce:
    """Holds the reported label; a candidate replaces it after ``patience`` consecutive steps."""

    def __init__(self, patience: int, initial: str) -> None:
        self.patience = patience
        self.label = initial
        self._candidate = initial
        self._count = 0

    def push(self, candidate: str) -> str:
        if self.label == "warmup" or candidate == self.label:
            self.label, self._candidate, self._count = candidate, candidate, 0
            return self.label
        if candidate == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = candidate, 1
        if self._count >= self.patience:
            self.label, self._count = candidate, 0
        return self.label


class PhaseDetector:
    """Online phase labelling. Call :meth:`update` once per optimiser step with that step's metrics."""

    def __init__(self, config: PhaseConfig | None = None) -> None:
        self.config = config or PhaseConfig()
        w = self.config.window
        self._lik: deque[tuple[int, float]] = deque(maxlen=2 * w)
        self._ent: deque[tuple[int, float]] = deque(maxlen=w)
        self._lik_baseline: list[float] = []
        self._ent_baseline: list[float] = []
        self._decay_steps = 0  # consecutive steps reported as steady_decay
        self._lld = _Debounce(self.config.patience, "warmup")
        self._entropy = _Debounce(self.config.patience, "warmup")

    # ---- one series each -------------------------------------------------------------------------

    def _likelihood_candidate(self, evidence: dict[str, float]) -> str:
        cfg = self.config
        w = cfg.window
        if len(self._lik) < w:
            return "warmup"
        scale = max(abs(sum(self._lik_baseline) / len(self._lik_baseline)), cfg.min_scale)
        recent = list(self._lik)[-w:]
        slope, t, level = ols_slope([float(s) for s, _ in recent], [v for _, v in recent])
        rel = slope / scale
        evidence.update({"lld/slope": slope, "lld/rel_slope": rel, "lld/t_stat": t, "lld/level": level, "lld/scale": scale})
        decaying = rel <= -cfg.decay_rel_slope and t <= -cfg.min_t_stat
        rising = rel >= cfg.decay_rel_slope and t >= cfg.min_t_stat
        if not decaying:
            return "healthy" if rising else "stagnation"
        if self._lld.label == "accelerated_collapse":
            return "accelerated_collapse"  # sticky while the decay lasts: the paper's Phase III does not ease off
        # The previous window must lie wholly inside the reported decay: flat-then-decay is also a steepening.
        if self._lld.label == "steady_decay" and self._decay_steps >= w and len(self._lik) == 2 * w:
            prev = list(self._lik)[:w]
            p_slope, p_t, _ = ols_slope([float(s) for s, _ in prev], [v for _, v in prev])
            ratio = slope / p_slope if p_slope < 0 else 0.0
            evidence.update({"lld/prev_slope": p_slope, "lld/prev_t_stat": p_t, "lld/slope_ratio": ratio})
            prev_decaying = p_slope / scale <= -cfg.decay_rel_slope and p_t <= -cfg.min_t_stat
            if prev_decaying and ratio >= cfg.accel_factor:
                return "accelerated_collapse"
        return "steady_decay"

    def _entropy_candidate(self, evidence: dict[str, float]) -> str:
        cfg = self.config
        if len(self._ent) < cfg.window:
            return "warmup"
        initial = max(sum(self._ent_baseline) / len(self._ent_baseline), 1e-12)
        slope, t, level = ols_slope([float(s) for s, _ in self._ent], [v for _, v in self._ent])
        frac = level / initial
        rel = slope / initial
        evidence.update({"entropy/level_frac": frac, "entropy/rel_slope": rel, "entropy/t_stat": t, "entropy/initial": initial})
        fast_drop = rel <= -cfg.entropy_drop_rel_slope and t <= -cfg.min_t_stat
        return "entropy_collapse" if frac < cfg.entropy_floor_frac or fast_drop else "ok"

    # ---- public ----------------------------------------------------------------------------------

    def update(self, step: int, metrics: Mapping[str, float]) -> PhaseReport:
        """Feed one step's metrics; a missing or non-finite key leaves that series' label unchanged."""
        cfg = self.config
        evidence: dict[str, float] = {}
        prev_lld, prev_ent = self._lld.label, self._entropy.label

        value = metrics.get(cfg.likelihood_key)
        if value is not None and math.isfinite(value):
            self._lik.append((step, float(value)))
            if len(self._lik_baseline) < cfg.window:
                self._lik_baseline.append(float(value))
            self._lld.push(self._likelihood_candidate(evidence))
            self._decay_steps = self._decay_steps + 1 if self._lld.label == "steady_decay" else 0
        value = metrics.get(cfg.entropy_key)
        if value is not None and math.isfinite(value):
            self._ent.append((step, float(value)))
            if len(self._ent_baseline) < cfg.window:
                self._ent_baseline.append(float(value))
            self._entropy.push(self._entropy_candidate(evidence))

        lld, ent = self._lld.label, self._entropy.label
        entered: list[str] = []
        if lld in ALERT_LABELS and _SEVERITY[lld] > _SEVERITY[prev_lld]:
            entered.append(lld)
        if ent == "entropy_collapse" and prev_ent != "entropy_collapse":
            entered.append(ent)
        entered.sort(key=_PRIORITY.index)
        label = min((lld, ent), key=_PRIORITY.index)
        action = cfg.actions.get(entered[0]) if entered else None
        return PhaseReport(step, label, lld, ent, bool(entered), tuple(entered), action, evidence)


def label_series(
    values: Iterable[float],
    *,
    kind: Literal["likelihood", "entropy"] = "likelihood",
    config: PhaseConfig | None = None,
) -> list[str]:
    """Labels a whole series (one value per step, steps 0, 1, ...) with a fresh detector.

    ``kind="likelihood"`` returns the LLD labels (``warmup``/``healthy``/``stagnation``/``steady_decay``/
    ``accelerated_collapse``); ``kind="entropy"`` returns ``warmup``/``ok``/``entropy_collapse``.
    """
    if kind not in ("likelihood", "entropy"):
        raise ValueError(f"kind={kind!r} is invalid; allowed: 'likelihood', 'entropy'")
    detector = PhaseDetector(config)
    key = detector.config.likelihood_key if kind == "likelihood" else detector.config.entropy_key
    out = []
    for step, v in enumerate(values):
        report = detector.update(step, {key: float(v)})
        out.append(report.lld_phase if kind == "likelihood" else report.entropy_phase)
    return out
