"""Phase detector for the LLD death spiral and for entropy collapse (spec section 2.3).

The paper (arXiv 2512.04220, §5.1, Fig. 2) reads a GRPO run's health from the log-likelihood of correct
responses over steps, read together with the reward and the gradient norm, and names three phases:
Phase I *early stagnation* (the likelihood of correct responses stays flat while reward rises), Phase II
*steady decay* (the likelihood falls slowly while reward still rises and the gradient norm is stable) and
Phase III *accelerated collapse* (after a turning point the likelihood drops sharply, the gradient norm
spikes and the reward collapses).

What is read. Each series is summarised over its last ``window`` values (the reward over ``reward_window``)
by an ordinary-least-squares slope and its standard error, and classified as

* *rising* / *falling*: the slope is large (``decay_rel_slope`` of the likelihood's initial magnitude per
  step; ``reward_min_slope`` reward units per step) **and** significant (``|t| ≥ min_t_stat``, for the
  reward ``reward_min_t_stat``);
* *flat*: the fit rules out a change that large: ``|slope| + flat_t_stat·se < threshold`` (an equivalence
  test, so a series counts as flat only when the window is quiet enough to show it, not merely because
  its slope is not significant);
* *unclear*: neither (too noisy, or too short a window, to tell).

The likelihood is the **per-token** mean log-prob of correct responses (``lld/correct_logp_per_token``,
:func:`~rlvr_lab.diagnostics.signals.response_likelihood`), not the per-response sum: responses that grow
longer at an unchanged per-token likelihood make the sum fall, which is no displacement. The gradient norm
*spikes* when the median of its last ``grad_spike_span`` values is at least ``grad_spike_factor`` times the
median of the ``window`` values before them.

Likelihood labels (``lld_phase``), first match wins:

* **accelerated_collapse** (reward collapse): the reward has stayed below ``collapse_reward_frac`` of its peak
  for ``patience`` steps, whatever the likelihood does (no slope needed, so also during warmup).
* **warmup**: fewer than ``window`` likelihood values: no slope yet.
* **accelerated_collapse** (Phase III): the likelihood is falling and at least one of: the gradient norm
  spikes; the reward is falling; the decay rate at least doubled (``accel_factor``) against a previous
  window that was already decaying (the paper's "turning point"). Once reported it stays until the run
  recovers (likelihood rising, or reward rising with the likelihood not falling): Phase III does not ease
  off by itself.
* **steady_decay** (Phase II): the likelihood is falling, without a spike, a steepening or a falling reward
  (the reward may rise, hold or be unclear).
* **reward_decline**: the reward is falling while the likelihood of correct responses is not. Not one of
  the paper's phases and not a likelihood displacement, but no run whose reward falls is reported healthy.
* **stagnation** (Phase I): the reward is rising and the likelihood is *flat* in the sense above. A rising
  reward with a rising or unclear likelihood is ``improving``, never ``stagnation``; without a reward
  series there is no stagnation at all.
* **improving**: the reward or the likelihood is rising, and nothing above applies.
* **healthy**: nothing significant: likelihood and reward hold (or cannot be told apart from holding).

Entropy labels (``entropy_phase``): **warmup** for the first ``window`` values, then **entropy_collapse**
when the smoothed entropy (the least-squares fit's value at the latest step) is below
``entropy_floor_frac`` of its initial level or below the absolute ``entropy_abs_floor``, else **ok**.
The policy sharpening as it learns lowers the entropy steadily (the demo's falls to about 84% of its start
in 10 steps); that is not a collapse, so there is no rate criterion, only floors that sharpening alone
does not reach.

Debounce: a new label must hold for ``patience`` consecutive steps before it replaces the current one.

The detector only reports. What the trainer does on an alert (``"warn"``, ``"checkpoint"``, ``"stop"``) is
the caller's choice, passed in as ``actions`` and echoed in the report. Only ``steady_decay``,
``accelerated_collapse`` and ``entropy_collapse`` alert.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["warn", "checkpoint", "stop"]
ACTIONS: tuple[str, ...] = ("warn", "checkpoint", "stop")

LLD_LABELS = ("warmup", "improving", "healthy", "stagnation", "reward_decline", "steady_decay", "accelerated_collapse")
ENTROPY_LABELS = ("warmup", "ok", "entropy_collapse")
ALERT_LABELS = ("steady_decay", "accelerated_collapse", "entropy_collapse")
# Headline label when both tracks have something to say: most severe first.
_PRIORITY = ("accelerated_collapse", "entropy_collapse", "steady_decay", "reward_decline", "stagnation", "improving",
             "healthy", "ok", "warmup")
_SEVERITY = {label: 0 for label in LLD_LABELS} | {"steady_decay": 1, "accelerated_collapse": 2}

Trend = Literal["rising", "falling", "flat", "unclear"]


@dataclass(frozen=True)
class PhaseConfig:
    """Thresholds of the phase detector. The paper gives the phases' shape, not numbers: every default is
    inferred [INF] and chosen so that the synthetic trajectories in the tests separate cleanly."""

    window: int = 10
    """Steps in each least-squares slope fit [INF]. 10 spans a sixth of the paper's ~60-step Phase II (§5.1), so
    decay is seen within a few steps of its onset while one noisy batch moves the slope by ~1/10."""
    patience: int = 3
    """Consecutive steps a new label must hold before it is reported [INF] (debounce; 3 adds two steps of lag)."""
    likelihood_key: str = "lld/correct_logp_per_token"
    """Metric read as the likelihood series: per-token mean log-prob of correct responses under the rollout
    policy (signals.py), every step. The per-response sum (``lld/correct_logp_before``) falls whenever responses
    lengthen; pointing this at the probe set's ``probe/correct_logp_per_token`` labels from the fixed probes."""
    probe_key: str | None = "probe/correct_logp_per_token"
    """The probe set's per-token likelihood of its stored correct responses. Its trend over its last ``window``
    values is reported in the evidence (``probe/*``) beside the batch series'; it does not change labels,
    because probes are scored only every ``observe.probe_every`` steps. None: ignore it."""
    reward_key: str | None = "reward/mean"
    """Metric read as the reward series (``rewards/safe.py``). None: labels from the likelihood alone, which
    can then say neither ``stagnation`` nor ``reward_decline`` and needs a steepening for a collapse."""
    grad_norm_key: str | None = "policy/grad_norm"
    """Metric read as the gradient norm (pre-clip, ``train/step.py``). None: no spike criterion."""
    entropy_key: str = "policy/entropy"
    """Metric read as the entropy series."""
    decay_rel_slope: float = 0.002
    """A likelihood slope counts as decay (or rise) when |slope| ≥ this fraction of the series' initial magnitude
    per step [INF]: 0.2%/step is a ≥12% fall over a 60-step Phase II; slower drifts are lost in prompt-mix noise.
    It is also the half-width of the band a flat likelihood must stay within."""
    min_t_stat: float = 4.0
    """A slope (of the likelihood or of the reward) counts only when |slope / standard error| ≥ this [INF]. One
    window alone would need ~3 (p < 0.01, 8 dof), but a run tests ~one overlapping window per step; 4 gave no
    false decay on seeded noisy flat and rising 200-step series while delaying decay detection by a step or two."""
    flat_t_stat: float = 2.0
    """A series is flat when ``|slope| + flat_t_stat·se`` is below the slope threshold [INF]: about a one-sided 95%
    bound (8 dof), so ``stagnation`` is claimed only when the window shows the likelihood holding still, not when
    it is merely too noisy to show a trend (then a rising reward reads ``improving``), and a likelihood rising at
    the threshold rate reads flat in ~2% of windows, not the ~16% a one-standard-error margin would give."""
    accel_factor: float = 2.0
    """Turning point: the likelihood slope over the last window is at least this many times the (already
    decaying) slope over the window before it, i.e. the decay rate at least doubled [INF]."""
    min_scale: float = 0.1
    """Floor on the initial magnitude used to make likelihood slopes relative (nats per token) [INF], so a
    near-zero series (a very sharp policy) does not turn every wiggle into a huge relative slope."""
    reward_window: int = 20
    """Steps in the reward's slope fit [INF]: twice ``window``, because a batch's mean reward is noisier than its
    mean token log-prob and rises slowly (the demo: ~0.0075/step under ~0.03 of batch noise, which a 10-step fit
    cannot tell from noise, t ≈ 2; a 20-step fit can, t ≈ 6)."""
    reward_min_t_stat: float = 3.0
    """A reward slope counts only when |t| ≥ this [INF]: lower than ``min_t_stat`` because a reward trend alone
    never raises an alert (it makes ``improving``, ``stagnation`` or ``reward_decline``; it upgrades a decay the
    likelihood already shows to a collapse), and 4 made a reward rising at the demo's pace flicker between
    ``improving`` and ``healthy``. With 18 dof, p ≈ 0.004 one-sided per window."""
    reward_min_slope: float = 0.002
    """A reward slope counts as a rise or fall when |slope| ≥ this many reward units per step [INF]: 0.1 over
    50 steps on a 0-1 reward. Absolute, because a reward can start at 0."""
    collapse_reward_frac: float = 0.1
    """A reward that has stayed below this fraction of its peak for ``patience`` steps is Phase III's reward
    collapse (paper §5.1): the run is labelled ``accelerated_collapse`` whatever the likelihood's trend, and on
    steps with no correct response (no likelihood to read) as well [INF]. Without it a run whose reward fell
    from 0.37 to 0.01 in one step and stayed there read as healthy: the few correct responses left gave a
    flat likelihood, and a reward flat at 0.01 has no slope."""
    grad_spike_factor: float = 3.0
    """Gradient-norm spike: recent median ≥ this times the median of the window before [INF]. Batch-to-batch the
    norm of a stable run moves by tens of percent (0.9 to 2.0 in ``tests/data/recorded_run``, a short run on the
    demo's task); the paper's Phase III explosion is a multiple."""
    grad_spike_span: int = 3
    """Steps whose median is the "recent" gradient norm [INF]: one outlier batch is not a spike."""
    entropy_floor_frac: float = 0.1
    """Entropy collapse when the smoothed entropy is below this fraction of its initial level [INF]. Sharpening
    on a task being learnt lowers the entropy steadily (84% of its start after 10 demo steps); a tenth of the
    start is a policy that samples nearly the same tokens every time, which sharpening alone does not reach
    within a run of the demo's length."""
    entropy_abs_floor: float = 0.01
    """... or below this many nats per token [INF], whatever the start: a two-way choice at 0.01 nats puts ~99.9%
    on one token, so groups of samples repeat themselves and GRPO's group advantages vanish. 0 turns it off."""
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
        if not isinstance(self.reward_window, int) or self.reward_window < 3:
            raise bad("reward_window", self.reward_window, "an int >= 3 (a slope needs a residual)")
        if not isinstance(self.grad_spike_span, int) or not 1 <= self.grad_spike_span <= self.window:
            raise bad("grad_spike_span", self.grad_spike_span, f"an int in [1, window={self.window}]")
        for name in ("decay_rel_slope", "min_t_stat", "flat_t_stat", "min_scale", "reward_min_t_stat",
                     "reward_min_slope"):
            if not getattr(self, name) > 0:
                raise bad(name, getattr(self, name), "a number > 0")
        if not 0 < self.collapse_reward_frac < 1:
            raise bad("collapse_reward_frac", self.collapse_reward_frac, "a number in (0, 1)")
        for name in ("accel_factor", "grad_spike_factor"):
            if not getattr(self, name) > 1:
                raise bad(name, getattr(self, name), "a number > 1")
        if not 0 < self.entropy_floor_frac < 1:
            raise bad("entropy_floor_frac", self.entropy_floor_frac, "a number in (0, 1)")
        if not self.entropy_abs_floor >= 0:
            raise bad("entropy_abs_floor", self.entropy_abs_floor, "a number >= 0 (0: off)")
        for name in ("likelihood_key", "entropy_key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise bad(name, getattr(self, name), "a metric name")
        for name in ("probe_key", "reward_key", "grad_norm_key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise bad(name, value, "a metric name or None")
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


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares ``y = a + b·x``: (slope b, standard error of b, fitted y at the last x)."""
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
        se = 0.0
    return b, se, a + b * xs[-1]


def _t_stat(slope: float, se: float) -> float:
    if se == 0.0:
        return math.copysign(math.inf, slope) if slope != 0 else 0.0
    return slope / se


def ols_slope(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares fit ``y = a + b·x``: returns (slope b, t-statistic of b, fitted y at the last x).

    A perfect fit has an infinite t-statistic (with the slope's sign), 0 for a zero slope.
    """
    b, se, level = _fit(xs, ys)
    return b, _t_stat(b, se), level


def classify_trend(slope: float, se: float, *, threshold: float, min_t_stat: float, flat_t_stat: float) -> Trend:
    """``rising``/``falling`` when ``|slope| ≥ threshold`` and ``|t| ≥ min_t_stat``; ``flat`` when
    ``|slope| + flat_t_stat·se < threshold``; else ``unclear``."""
    t = _t_stat(slope, se)
    if slope >= threshold and t >= min_t_stat:
        return "rising"
    if slope <= -threshold and t <= -min_t_stat:
        return "falling"
    if abs(slope) + flat_t_stat * se < threshold:
        return "flat"
    return "unclear"


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

    def force(self, label: str) -> str:
        """Report ``label`` now (the caller has already waited out its own patience)."""
        self.label, self._candidate, self._count = label, label, 0
        return self.label


def _xy(points: Iterable[tuple[int, float]]) -> tuple[list[float], list[float]]:
    points = list(points)
    return [float(s) for s, _ in points], [v for _, v in points]


class PhaseDetector:
    """Online phase labelling. Call :meth:`update` once per optimiser step with that step's metrics."""

    def __init__(self, config: PhaseConfig | None = None) -> None:
        self.config = config or PhaseConfig()
        cfg = self.config
        w = cfg.window
        self._lik: deque[tuple[int, float]] = deque(maxlen=2 * w)
        self._probe: deque[tuple[int, float]] = deque(maxlen=w)
        self._reward: deque[tuple[int, float]] = deque(maxlen=cfg.reward_window)
        self._grad: deque[float] = deque(maxlen=w + cfg.grad_spike_span)
        self._ent: deque[tuple[int, float]] = deque(maxlen=w)
        self._lik_baseline: list[float] = []
        self._probe_baseline: list[float] = []
        self._ent_baseline: list[float] = []
        self._decay_steps = 0  # consecutive steps reported as steady_decay
        self._reward_peak = 0.0
        self._low_reward_steps = 0  # consecutive steps with the reward below collapse_reward_frac of its peak
        self._lld = _Debounce(cfg.patience, "warmup")
        self._entropy = _Debounce(cfg.patience, "warmup")

    # ---- trends ----------------------------------------------------------------------------------

    def _likelihood_trend(self, points: list[tuple[int, float]], baseline: list[float], prefix: str,
                          evidence: dict[str, float]) -> tuple[Trend, float, float]:
        """Trend of a likelihood series over ``points``: (trend, slope, scale)."""
        cfg = self.config
        scale = max(abs(sum(baseline) / len(baseline)), cfg.min_scale)
        slope, se, level = _fit(*_xy(points))
        trend = classify_trend(slope, se, threshold=cfg.decay_rel_slope * scale, min_t_stat=cfg.min_t_stat,
                               flat_t_stat=cfg.flat_t_stat)
        evidence.update({f"{prefix}/slope": slope, f"{prefix}/rel_slope": slope / scale,
                         f"{prefix}/t_stat": _t_stat(slope, se), f"{prefix}/level": level, f"{prefix}/scale": scale})
        return trend, slope, scale

    def _reward_trend(self, evidence: dict[str, float]) -> Trend | None:
        """Trend of the reward over its last ``reward_window`` values; None before there are that many."""
        cfg = self.config
        if len(self._reward) < cfg.reward_window:
            return None
        slope, se, level = _fit(*_xy(self._reward))
        trend = classify_trend(slope, se, threshold=cfg.reward_min_slope, min_t_stat=cfg.reward_min_t_stat,
                               flat_t_stat=cfg.flat_t_stat)
        evidence.update({"reward/slope": slope, "reward/t_stat": _t_stat(slope, se), "reward/level": level})
        return trend

    def _grad_spike(self, evidence: dict[str, float]) -> bool:
        cfg = self.config
        if len(self._grad) < self._grad.maxlen:
            return False
        values = list(self._grad)
        recent = statistics.median(values[-cfg.grad_spike_span:])
        before = statistics.median(values[: -cfg.grad_spike_span])
        if math.isinf(before):
            ratio = 1.0  # already exploded before the recent steps: nothing new to compare against
        elif before > 0:
            ratio = recent / before
        else:
            ratio = math.inf if recent > 0 else 1.0
        evidence["grad/spike_ratio"] = ratio
        return ratio >= cfg.grad_spike_factor

    # ---- one track each --------------------------------------------------------------------------

    def _reward_collapsed(self, evidence: dict[str, float]) -> bool:
        """The reward has stayed below ``collapse_reward_frac`` of its peak for ``patience`` steps."""
        cfg = self.config
        if self._low_reward_steps < cfg.patience or self._reward_peak <= 0:
            return False
        evidence.update({"reward/peak": self._reward_peak, "reward/last": self._reward[-1][1],
                         "reward/low_steps": float(self._low_reward_steps)})
        return True

    def _likelihood_candidate(self, evidence: dict[str, float]) -> str:
        cfg = self.config
        w = cfg.window
        if self._reward_collapsed(evidence):
            # Phase III's reward collapse (paper §5.1): the few correct responses left say nothing against it,
            # and no slope is needed to see a reward that fell to a tenth of its peak and stayed there
            return "accelerated_collapse"
        if len(self._lik) < w:
            return "warmup"
        lik, slope, scale = self._likelihood_trend(list(self._lik)[-w:], self._lik_baseline, "lld", evidence)
        reward = self._reward_trend(evidence)
        spike = self._grad_spike(evidence)
        if cfg.probe_key is not None and len(self._probe) >= w:
            self._likelihood_trend(list(self._probe), self._probe_baseline, "probe", evidence)
        current = self._lld.label

        if lik == "falling":
            if current == "accelerated_collapse" or spike or reward == "falling":
                return "accelerated_collapse"
            # The previous window must lie wholly inside the reported decay: flat-then-decay is also a steepening.
            if current == "steady_decay" and self._decay_steps >= w and len(self._lik) == 2 * w:
                p_slope, p_se, _ = _fit(*_xy(list(self._lik)[:w]))
                ratio = slope / p_slope if p_slope < 0 else 0.0
                evidence.update({"lld/prev_slope": p_slope, "lld/prev_t_stat": _t_stat(p_slope, p_se),
                                 "lld/slope_ratio": ratio})
                prev = classify_trend(p_slope, p_se, threshold=cfg.decay_rel_slope * scale,
                                      min_t_stat=cfg.min_t_stat, flat_t_stat=cfg.flat_t_stat)
                if prev == "falling" and ratio >= cfg.accel_factor:
                    return "accelerated_collapse"
            return "steady_decay"
        recovering = lik == "rising" or reward == "rising"
        if current == "accelerated_collapse" and not recovering:
            return "accelerated_collapse"  # Phase III does not ease off by itself (paper §5.1)
        if reward == "falling":
            return "reward_decline"
        if reward == "rising":
            return "stagnation" if lik == "flat" else "improving"
        return "improving" if lik == "rising" else "healthy"

    def _entropy_candidate(self, evidence: dict[str, float]) -> str:
        cfg = self.config
        if len(self._ent) < cfg.window:
            return "warmup"
        initial = max(sum(self._ent_baseline) / len(self._ent_baseline), 1e-12)
        slope, t, level = ols_slope(*_xy(self._ent))
        frac = level / initial
        evidence.update({"entropy/level": level, "entropy/level_frac": frac, "entropy/rel_slope": slope / initial,
                         "entropy/t_stat": t, "entropy/initial": initial})
        return "entropy_collapse" if frac < cfg.entropy_floor_frac or level < cfg.entropy_abs_floor else "ok"

    # ---- public ----------------------------------------------------------------------------------

    @staticmethod
    def _value(metrics: Mapping[str, float], key: str | None, *, allow_inf: bool = False) -> float | None:
        """The metric as a float; None when absent, not a number, NaN, or infinite (unless ``allow_inf``)."""
        if key is None:
            return None
        value = metrics.get(key)
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return None
        value = float(value)
        if math.isnan(value) or (math.isinf(value) and not allow_inf):
            return None
        return value

    def update(self, step: int, metrics: Mapping[str, float]) -> PhaseReport:
        """Feed one step's metrics. Reward, gradient norm and probe values are recorded whenever present; the
        likelihood label moves only on steps with a likelihood value, the entropy label only with an entropy
        value: a missing or non-finite key leaves that label unchanged."""
        cfg = self.config
        evidence: dict[str, float] = {}
        prev_lld, prev_ent = self._lld.label, self._entropy.label

        if (value := self._value(metrics, cfg.reward_key)) is not None:
            self._reward.append((step, value))
            self._reward_peak = max(self._reward_peak, value)
            low = value < cfg.collapse_reward_frac * self._reward_peak
            self._low_reward_steps = self._low_reward_steps + 1 if low else 0
        # An infinite gradient norm (a skipped optimiser step) is the largest spike there is, not a gap.
        if (value := self._value(metrics, cfg.grad_norm_key, allow_inf=True)) is not None:
            self._grad.append(value)
        if (value := self._value(metrics, cfg.probe_key)) is not None:
            self._probe.append((step, value))
            if len(self._probe_baseline) < cfg.window:
                self._probe_baseline.append(value)
        if (value := self._value(metrics, cfg.likelihood_key)) is not None:
            self._lik.append((step, value))
            if len(self._lik_baseline) < cfg.window:
                self._lik_baseline.append(value)
            self._lld.push(self._likelihood_candidate(evidence))
            self._decay_steps = self._decay_steps + 1 if self._lld.label == "steady_decay" else 0
        elif self._reward_collapsed(evidence):
            # no correct response to read a likelihood from, and the reward is gone: Phase III's collapse
            self._lld.force("accelerated_collapse")
        if (value := self._value(metrics, cfg.entropy_key)) is not None:
            self._ent.append((step, value))
            if len(self._ent_baseline) < cfg.window:
                self._ent_baseline.append(value)
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
    reward: Iterable[float] | None = None,
    grad_norm: Iterable[float] | None = None,
) -> list[str]:
    """Labels a whole series (one value per step, steps 0, 1, ...) with a fresh detector.

    ``kind="likelihood"`` returns the likelihood labels (:data:`LLD_LABELS`), read together with the optional
    ``reward`` and ``grad_norm`` series of the same steps (without a reward there is no ``stagnation``);
    ``kind="entropy"`` returns ``warmup``/``ok``/``entropy_collapse``.
    """
    if kind not in ("likelihood", "entropy"):
        raise ValueError(f"kind={kind!r} is invalid; allowed: 'likelihood', 'entropy'")
    detector = PhaseDetector(config)
    cfg = detector.config
    values = [float(v) for v in values]
    extra: dict[str, list[float]] = {}
    for name, key, series in (("reward", cfg.reward_key, reward), ("grad_norm", cfg.grad_norm_key, grad_norm)):
        if series is None:
            continue
        if key is None:
            raise ValueError(f"{name} was given but config.{name}_key is None")
        extra[key] = [float(v) for v in series]
        if len(extra[key]) != len(values):
            raise ValueError(f"{name} has {len(extra[key])} values, expected {len(values)} like values")
    key = cfg.likelihood_key if kind == "likelihood" else cfg.entropy_key
    out = []
    for step, v in enumerate(values):
        record = {key: v} | {k: series[step] for k, series in extra.items()}
        report = detector.update(step, record)
        out.append(report.lld_phase if kind == "likelihood" else report.entropy_phase)
    return out
