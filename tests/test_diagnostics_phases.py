"""The phase detector on synthetic trajectories with known phases (rlvr_lab.diagnostics.phases)."""

import numpy as np
import pytest

from rlvr_lab.diagnostics.phases import PhaseConfig, PhaseDetector, label_series, ols_slope

DECAY_START, ACCEL_START, STEPS = 40, 90, 140
# Detection lags the true change by about half a window plus the debounce (window 10, patience 3).
LAG = 12


def death_spiral(seed: int, noise: float = 0.3) -> list[float]:
    """Flat at -20 (stagnation), then -0.3/step (steady decay), then a quadratic plunge (accelerated collapse)."""
    rng = np.random.default_rng(seed)
    t = np.arange(STEPS, dtype=float)
    x = -20.0 - 0.3 * np.clip(t - DECAY_START, 0, None) - 0.03 * np.clip(t - ACCEL_START, 0, None) ** 2
    return list(x + rng.normal(0.0, noise, STEPS))


def first(labels: list[str], label: str) -> int:
    return labels.index(label)


def test_ols_slope_exact_line():
    slope, t, level = ols_slope([0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0])
    assert slope == pytest.approx(2.0) and t == float("inf") and level == pytest.approx(7.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_labels_death_spiral_phases_in_order(seed):
    labels = label_series(death_spiral(seed))
    assert labels[:9] == ["warmup"] * 9
    assert set(labels[9:DECAY_START]) == {"stagnation"}
    assert DECAY_START <= first(labels, "steady_decay") <= DECAY_START + LAG
    assert ACCEL_START <= first(labels, "accelerated_collapse") <= ACCEL_START + LAG + 3
    # The sequence is monotone: once decaying it never reads healthy/stagnant, once collapsing it stays there.
    d, a = first(labels, "steady_decay"), first(labels, "accelerated_collapse")
    assert set(labels[d:a]) == {"steady_decay"} and set(labels[a:]) == {"accelerated_collapse"}


@pytest.mark.parametrize("seed", range(10))
def test_noisy_flat_or_rising_likelihood_is_never_flagged(seed):
    rng = np.random.default_rng(100 + seed)
    steps = np.arange(200)
    flat = -20.0 + rng.normal(0.0, 0.5, 200)
    rising = -20.0 + 0.05 * steps + rng.normal(0.0, 0.5, 200)
    for series in (flat, rising):
        assert not set(label_series(series)) & {"steady_decay", "accelerated_collapse"}
    # A clear rise (t-statistic well above the threshold) reads as healthy learning.
    clear_rise = -20.0 + 0.1 * steps + rng.normal(0.0, 0.1, 200)
    assert set(label_series(clear_rise)[12:]) == {"healthy"}


def test_alerts_fire_once_on_entering_each_phase_with_configured_action():
    cfg = PhaseConfig(actions={"steady_decay": "warn", "accelerated_collapse": "checkpoint"})
    detector = PhaseDetector(cfg)
    reports = [detector.update(step, {"lld/correct_logp_before": v, "policy/entropy": 1.0}) for step, v in enumerate(death_spiral(0))]
    alerts = [r for r in reports if r.alert]
    assert [r.entered for r in alerts] == [("steady_decay",), ("accelerated_collapse",)]
    assert [r.action for r in alerts] == ["warn", "checkpoint"]
    assert all(r.action is None for r in reports if not r.alert)
    assert alerts[0].evidence["lld/rel_slope"] <= -cfg.decay_rel_slope and alerts[0].evidence["lld/t_stat"] <= -cfg.min_t_stat
    assert alerts[1].evidence["lld/slope_ratio"] >= cfg.accel_factor
    assert reports[-1].label == "accelerated_collapse" and reports[-1].entropy_phase == "ok"


def test_missing_metric_keeps_label():
    detector = PhaseDetector()
    for step, v in enumerate(death_spiral(0)[:60]):
        last = detector.update(step, {"lld/correct_logp_before": v})
    assert detector.update(60, {}).lld_phase == last.lld_phase == "steady_decay"


def entropy_curve(seed: int, collapse: bool) -> list[float]:
    rng = np.random.default_rng(seed)
    t = np.arange(100, dtype=float)
    h = np.where(t < 30, 1.0, 0.9 ** (t - 30)) if collapse else np.ones(100)
    return list(h + rng.normal(0.0, 0.05, 100))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_collapse_detected_and_stable_entropy_not(seed):
    labels = label_series(entropy_curve(seed, collapse=True), kind="entropy")
    assert set(labels[9:30]) == {"ok"}
    assert 30 <= first(labels, "entropy_collapse") <= 30 + LAG
    assert labels[-1] == "entropy_collapse"
    assert "entropy_collapse" not in label_series(entropy_curve(seed, collapse=False), kind="entropy")


def test_entropy_alert_fires_once():
    detector = PhaseDetector()
    reports = [detector.update(s, {"policy/entropy": h}) for s, h in enumerate(entropy_curve(0, collapse=True))]
    alerts = [r for r in reports if r.alert]
    assert len(alerts) == 1 and alerts[0].entered == ("entropy_collapse",) and alerts[0].action == "warn"
    assert alerts[0].label == "entropy_collapse"


@pytest.mark.parametrize(
    "kwargs, field",
    [({"window": 2}, "window"), ({"accel_factor": 1.0}, "accel_factor"), ({"entropy_floor_frac": 1.5}, "entropy_floor_frac"),
     ({"actions": {"steady_decay": "explode"}}, "actions"), ({"actions": {"healthy": "warn"}}, "actions")],
)
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PhaseConfig(**kwargs)
