"""The phase detector on synthetic trajectories with known phases (rlvr_lab.diagnostics.phases).

The series imitate arXiv 2512.04220 §5.1, Fig. 2: per-token log-likelihood of correct responses, reward and
gradient norm over steps. Phase I flat likelihood with rising reward; Phase II slow decay, reward still rising,
gradient norm stable; Phase III sharp drop, gradient-norm explosion, reward collapse.
"""

import numpy as np
import pytest

from rlvr_lab.diagnostics.phases import (
    ALERT_LABELS,
    LLD_LABELS,
    PhaseConfig,
    PhaseDetector,
    classify_trend,
    label_series,
    ols_slope,
)

LIK, SUM, LEN = "lld/correct_logp_per_token", "lld/correct_logp_before", "rollout/response_len_mean"
REWARD, GRAD, ENT = "reward/mean", "policy/grad_norm", "policy/entropy"
DECAY_START, ACCEL_START, STEPS = 40, 90, 140
# Detection lags the true change by about half a window plus the debounce (window 10, patience 3).
LAG = 12
CFG = PhaseConfig()
WARMUP = CFG.window - 1  # steps 0 .. window-2 are warmup; step window-1 has the first label
REWARD_READY = CFG.reward_window - 1 + CFG.patience  # first step a reward-based label can have been reported


def first(labels: list[str], label: str) -> int:
    return labels.index(label)


def paper_run(seed: int) -> dict[str, np.ndarray]:
    """The three phases: flat likelihood then -0.003 nats/token/step from DECAY_START, then a quadratic plunge from
    ACCEL_START; reward rising 0.004/step until ACCEL_START, then falling 0.01/step; gradient norm flat at 1, then
    growing by 0.5 per step (an explosion)."""
    rng = np.random.default_rng(seed)
    t = np.arange(STEPS, dtype=float)
    lik = -0.4 - 0.003 * np.clip(t - DECAY_START, 0, None) - 0.0004 * np.clip(t - ACCEL_START, 0, None) ** 2
    reward = np.where(t < ACCEL_START, 0.2 + 0.004 * t, 0.2 + 0.004 * ACCEL_START - 0.01 * (t - ACCEL_START))
    grad = 1.0 + 0.5 * np.clip(t - ACCEL_START, 0, None)
    return {LIK: lik + rng.normal(0, 0.001, STEPS), REWARD: reward + rng.normal(0, 0.01, STEPS),
            GRAD: grad * np.exp(rng.normal(0, 0.1, STEPS))}


def replay(series: dict[str, np.ndarray], config: PhaseConfig | None = None):
    detector = PhaseDetector(config)
    n = len(next(iter(series.values())))
    return [detector.update(step, {k: float(v[step]) for k, v in series.items()}) for step in range(n)]


def lld(reports) -> list[str]:
    return [r.lld_phase for r in reports]


def test_ols_slope_exact_line():
    slope, t, level = ols_slope([0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0])
    assert slope == pytest.approx(2.0) and t == float("inf") and level == pytest.approx(7.0)


def test_classify_trend_flat_needs_a_tight_fit():
    kw = {"threshold": 0.01, "min_t_stat": 4.0, "flat_t_stat": 1.0}
    assert classify_trend(0.02, 0.001, **kw) == "rising" and classify_trend(-0.02, 0.001, **kw) == "falling"
    assert classify_trend(0.001, 0.002, **kw) == "flat"  # 0.001 + 0.002 < 0.01
    assert classify_trend(0.001, 0.02, **kw) == "unclear"  # too noisy to say it holds still
    assert classify_trend(0.02, 0.01, **kw) == "unclear"  # large but not significant (t = 2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_paper_run_phases_in_order(seed):
    labels = lld(replay(paper_run(seed)))
    assert labels[:WARMUP] == ["warmup"] * WARMUP
    # Before the reward fit is ready a flat likelihood is only "healthy"; then flat likelihood + rising reward.
    assert set(labels[WARMUP:CFG.reward_window - 1]) == {"healthy"}
    assert set(labels[REWARD_READY:DECAY_START]) == {"stagnation"}
    d, a = first(labels, "steady_decay"), first(labels, "accelerated_collapse")
    assert DECAY_START <= d <= DECAY_START + LAG
    assert ACCEL_START <= a <= ACCEL_START + LAG
    # Monotone: once decaying it never reads healthy/stagnant again, once collapsing it stays there.
    assert set(labels[d:a]) == {"steady_decay"} and set(labels[a:]) == {"accelerated_collapse"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slow_decline_with_rising_reward_and_stable_grad_is_steady_decay(seed):
    run = {k: v[:ACCEL_START] for k, v in paper_run(seed).items()}  # phases I and II only
    labels = lld(replay(run))
    d = first(labels, "steady_decay")
    assert DECAY_START <= d <= DECAY_START + LAG and set(labels[d:]) == {"steady_decay"}
    assert "accelerated_collapse" not in labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sharp_fall_with_grad_spike_and_falling_reward_is_accelerated_collapse(seed):
    # Healthy learning (likelihood and reward rising), then at step 60 the likelihood plunges, the gradient norm
    # jumps fivefold and the reward falls: Phase III without a long Phase II before it.
    rng = np.random.default_rng(seed)
    t = np.arange(100, dtype=float)
    after = t >= 60
    lik = np.where(after, -0.3 - 0.02 * (t - 60), -0.5 + 0.2 * t / 60) + rng.normal(0, 0.005, 100)
    reward = np.where(after, 0.6 - 0.02 * (t - 60), 0.3 + 0.005 * t) + rng.normal(0, 0.02, 100)
    grad = np.where(after, 5.0, 1.0) * np.exp(rng.normal(0, 0.1, 100))
    labels = lld(replay({LIK: lik, REWARD: reward, GRAD: grad}))
    assert set(labels[WARMUP + CFG.patience:60]) == {"improving"}
    a = first(labels, "accelerated_collapse")
    assert 60 <= a <= 60 + LAG and set(labels[a:]) == {"accelerated_collapse"}
    # The same plunge with a stable gradient norm and a reward that keeps rising is only a steady decay at first.
    calm = lld(replay({LIK: lik, REWARD: 0.3 + 0.005 * t + rng.normal(0, 0.02, 100), GRAD: np.ones(100)}))
    assert calm[a] == "steady_decay"


@pytest.mark.parametrize("seed", range(5))
def test_flat_likelihood_with_rising_reward_is_stagnation(seed):
    rng = np.random.default_rng(10 + seed)
    t = np.arange(80, dtype=float)
    run = {LIK: -0.4 + rng.normal(0, 0.001, 80), REWARD: 0.2 + 0.005 * t + rng.normal(0, 0.01, 80),
           GRAD: np.exp(rng.normal(0, 0.1, 80))}
    labels = lld(replay(run))
    assert set(labels[REWARD_READY:]) == {"stagnation"}
    # The same flat likelihood under a flat reward holds still: healthy, not stagnation.
    run[REWARD] = 0.4 + rng.normal(0, 0.02, 80)
    assert set(lld(replay(run))[WARMUP:]) == {"healthy"}
    # Without a reward series there is no evidence of Phase I at all.
    assert "stagnation" not in label_series(run[LIK])


@pytest.mark.parametrize("seed", range(10))
def test_rising_reward_and_likelihood_is_improving_never_stagnation(seed):
    rng = np.random.default_rng(100 + seed)
    t = np.arange(200, dtype=float)
    grad = np.exp(rng.normal(0, 0.2, 200))
    # Clear trends: likelihood +0.5%/step of its start, reward +0.003/step.
    lik = -0.8 + 0.004 * t + rng.normal(0, 0.005, 200)
    reward = 0.2 + 0.003 * t + rng.normal(0, 0.01, 200)
    labels = label_series(lik, reward=reward, grad_norm=grad)
    post = labels[WARMUP + CFG.patience:]
    assert "stagnation" not in labels and not set(labels) & set(ALERT_LABELS)
    assert post.count("improving") >= 0.95 * len(post)
    # Noisier trends (10-step likelihood t ≈ 1.8): often too weak to call, but never stagnation or an alert.
    lik = -0.8 + 0.002 * t + rng.normal(0, 0.01, 200)
    reward = 0.2 + 0.003 * t + rng.normal(0, 0.03, 200)
    labels = label_series(lik, reward=reward, grad_norm=grad)
    assert set(labels[WARMUP:]) <= {"improving", "healthy"}


@pytest.mark.parametrize("seed", range(5))
def test_rising_reward_with_an_unresolved_likelihood_is_not_stagnation(seed):
    # The invariant: a significantly rising reward whose likelihood is not falling (here: noisy, slightly rising)
    # is never called stagnation; "flat" needs a fit tight enough to show it.
    rng = np.random.default_rng(200 + seed)
    t = np.arange(120, dtype=float)
    lik = -0.3 + 0.0002 * t + rng.normal(0, 0.02, 120)
    reward = 0.2 + 0.004 * t + rng.normal(0, 0.02, 120)
    labels = label_series(lik, reward=reward)
    assert "stagnation" not in labels
    post = labels[REWARD_READY:]
    assert set(post) <= {"improving", "healthy"} and post.count("improving") >= 0.8 * len(post)


@pytest.mark.parametrize("seed", range(3))
def test_longer_responses_at_rising_per_token_likelihood_are_not_decay(seed):
    # Per-token likelihood of correct responses rises while responses grow from 50 to ~150 tokens, so the
    # summed (per-response) likelihood falls: a length effect, not a displacement.
    rng = np.random.default_rng(300 + seed)
    t = np.arange(100, dtype=float)
    per_token = -0.5 + 0.002 * t + rng.normal(0, 0.003, 100)
    length = 50 + t + rng.normal(0, 1.0, 100)
    run = {LIK: per_token, SUM: per_token * length, LEN: length, REWARD: 0.3 + 0.003 * t + rng.normal(0, 0.02, 100)}
    labels = lld(replay(run))
    assert not set(labels) & {"steady_decay", "accelerated_collapse"}
    post = labels[WARMUP:]
    assert set(post) <= {"improving", "healthy"} and post.count("improving") >= 0.8 * len(post)
    # Read through the summed likelihood, as before, the same run looks like a steady decay.
    assert "steady_decay" in lld(replay(run, PhaseConfig(likelihood_key=SUM)))


@pytest.mark.parametrize("seed", range(20))
def test_noise_only_gives_no_alert(seed):
    rng = np.random.default_rng(400 + seed)
    run = {LIK: -0.4 + rng.normal(0, 0.01, 200), REWARD: 0.4 + rng.normal(0, 0.03, 200),
           GRAD: np.exp(rng.normal(0, 0.3, 200)), ENT: 0.5 + rng.normal(0, 0.02, 200)}
    reports = replay(run)
    assert not any(r.alert for r in reports)
    assert not {r.label for r in reports} & set(ALERT_LABELS)
    assert "stagnation" not in lld(reports)


@pytest.mark.parametrize("seed", range(10))
def test_demo_like_replay_reads_no_stagnation_and_no_entropy_collapse(seed):
    # What `make demo` shows: 25 steps, reward climbing from 0.33 to 0.51 under batch noise, entropy sharpening
    # steadily (84% of its start by step 10), per-token likelihood of correct responses flat or slightly rising.
    rng = np.random.default_rng(500 + seed)
    s = np.arange(25, dtype=float)
    entropy = 0.6 * (1 - 0.016 * s)
    assert entropy[10] / entropy[0] == pytest.approx(0.84)
    run = {REWARD: 0.33 + 0.0075 * s + rng.normal(0, 0.03, 25), ENT: entropy + rng.normal(0, 0.005, 25),
           LIK: -0.12 + 0.0005 * s + rng.normal(0, 0.01, 25), GRAD: 1.5 * np.exp(rng.normal(0, 0.2, 25)),
           SUM: (-0.12 + 0.0005 * s) * 8.0 + rng.normal(0, 0.15, 25)}
    detector = PhaseDetector()
    reports = [detector.update(int(step) + 1, {k: float(v[step]) for k, v in run.items()}) for step in range(25)]
    post = reports[WARMUP:]
    assert not {"stagnation", "entropy_collapse"} & ({r.label for r in post} | {r.entropy_phase for r in post})
    assert not any(r.alert for r in reports)
    assert {r.lld_phase for r in post} <= {"healthy", "improving"}


def test_entropy_sharpening_is_not_collapse_but_falling_to_five_percent_is():
    t = np.arange(60, dtype=float)
    # Linear sharpening: 84% of the start at step 10, 52% at step 30; and a steady 3%/step fall to 28% at step 24.
    sharpening = 1.0 - 0.016 * t[:31]
    assert sharpening[10] == pytest.approx(0.84)
    assert "entropy_collapse" not in label_series(sharpening, kind="entropy")
    assert "entropy_collapse" not in label_series(1.0 - 0.03 * t[:25], kind="entropy")
    # Flat, then a geometric fall that reaches 5% of the start by step 40 and stays near it.
    collapse = np.where(t < 10, 1.0, np.maximum(0.9 ** (t - 10), 0.04))
    assert collapse[40] == pytest.approx(0.05, abs=0.01)
    labels = label_series(collapse, kind="entropy")
    c = first(labels, "entropy_collapse")
    assert 10 < c <= 40 and set(labels[c:]) == {"entropy_collapse"}
    assert collapse[c] < 2 * CFG.entropy_floor_frac  # fires near the floor, not on the way down


def test_entropy_absolute_floor():
    # Already sharp at the start (0.02 nats/token), falling to 0.008: 40% of the start, under the 0.01 floor.
    entropy = np.concatenate([np.full(10, 0.02), np.linspace(0.02, 0.008, 10), np.full(10, 0.008)])
    assert label_series(entropy, kind="entropy")[-1] == "entropy_collapse"
    assert "entropy_collapse" not in label_series(entropy, kind="entropy", config=PhaseConfig(entropy_abs_floor=0.0))


def test_alerts_fire_once_on_entering_each_phase_with_configured_action():
    cfg = PhaseConfig(actions={"steady_decay": "warn", "accelerated_collapse": "checkpoint"})
    run = paper_run(0) | {ENT: np.ones(STEPS)}
    reports = replay(run, cfg)
    alerts = [r for r in reports if r.alert]
    assert [r.entered for r in alerts] == [("steady_decay",), ("accelerated_collapse",)]
    assert [r.action for r in alerts] == ["warn", "checkpoint"]
    assert all(r.action is None for r in reports if not r.alert)
    decay = alerts[0].evidence
    assert decay["lld/rel_slope"] <= -cfg.decay_rel_slope and decay["lld/t_stat"] <= -cfg.min_t_stat
    collapse = alerts[1].evidence
    assert collapse["grad/spike_ratio"] >= cfg.grad_spike_factor or collapse["reward/t_stat"] <= -cfg.min_t_stat
    assert reports[-1].label == "accelerated_collapse" and reports[-1].entropy_phase == "ok"


def test_turning_point_alone_is_accelerated_collapse_without_reward_or_grad():
    # Likelihood only: flat, then -0.003/step, then a plunge. No reward, so Phase I reads healthy, not stagnation;
    # the doubling of the decay rate marks Phase III.
    labels = label_series(paper_run(1)[LIK])
    assert "stagnation" not in labels and set(labels[WARMUP:DECAY_START]) == {"healthy"}
    d, a = first(labels, "steady_decay"), first(labels, "accelerated_collapse")
    assert DECAY_START <= d < a and ACCEL_START <= a <= ACCEL_START + 2 * LAG


def test_falling_reward_with_holding_likelihood_is_not_healthy():
    rng = np.random.default_rng(7)
    t = np.arange(60, dtype=float)
    labels = label_series(-0.4 + rng.normal(0, 0.005, 60), reward=0.6 - 0.006 * t + rng.normal(0, 0.02, 60))
    assert set(labels[REWARD_READY:]) == {"reward_decline"}
    assert not set(labels) & set(ALERT_LABELS)


def test_infinite_grad_norm_counts_as_a_spike():
    # A steady decay under a rising reward; one optimiser step with an infinite (skipped) gradient norm is no spike,
    # three in a row are.
    t = np.arange(40, dtype=float)
    run = {LIK: -0.4 - 0.003 * t, REWARD: 0.2 + 0.004 * t, GRAD: np.ones(40)}
    one = run | {GRAD: np.where(t == 30, np.inf, 1.0)}
    three = run | {GRAD: np.where((t >= 30) & (t < 33), np.inf, 1.0)}
    assert lld(replay(one))[-1] == "steady_decay"
    reports = replay(three)
    assert reports[-1].lld_phase == "accelerated_collapse"
    assert reports[32].evidence["grad/spike_ratio"] == float("inf")


def test_missing_metric_keeps_label():
    detector = PhaseDetector()
    run = paper_run(0)
    for step in range(60):
        last = detector.update(step, {k: float(v[step]) for k, v in run.items()})
    assert detector.update(60, {}).lld_phase == last.lld_phase == "steady_decay"
    assert detector.update(61, {LIK: float("nan"), REWARD: None}).lld_phase == "steady_decay"


def test_every_label_is_declared():
    seen = set()
    for seed in range(2):
        seen |= set(lld(replay(paper_run(seed))))
    assert seen <= set(LLD_LABELS) and {"stagnation", "steady_decay", "accelerated_collapse"} <= seen


def test_label_series_checks_lengths():
    with pytest.raises(ValueError, match="reward"):
        label_series([0.0] * 5, reward=[0.0] * 4)
    with pytest.raises(ValueError, match="kind"):
        label_series([0.0], kind="reward")


@pytest.mark.parametrize(
    "kwargs, field",
    [({"window": 2}, "window"), ({"accel_factor": 1.0}, "accel_factor"),
     ({"entropy_floor_frac": 1.5}, "entropy_floor_frac"), ({"entropy_abs_floor": -1.0}, "entropy_abs_floor"),
     ({"grad_spike_factor": 0.5}, "grad_spike_factor"), ({"reward_min_t_stat": 0.0}, "reward_min_t_stat"),
     ({"grad_spike_span": 0}, "grad_spike_span"), ({"reward_window": 2}, "reward_window"),
     ({"flat_t_stat": 0.0}, "flat_t_stat"), ({"reward_key": ""}, "reward_key"),
     ({"actions": {"steady_decay": "explode"}}, "actions"), ({"actions": {"healthy": "warn"}}, "actions")],
)
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PhaseConfig(**kwargs)


def test_a_reward_wiped_out_with_no_correct_response_left_is_a_collapse():
    """The lr=2e-3 demo run: reward 0.37, then 0 with no correct response (no likelihood to read) and rising
    entropy. The likelihood track has nothing to fit; the reward alone says Phase III."""
    detector = PhaseDetector(PhaseConfig())
    labels = []
    for step in range(1, 16):
        metrics = {"reward/mean": 0.367 if step == 1 else 0.0, "policy/entropy": 0.45 + 0.04 * step,
                   "policy/grad_norm": 3.7 if step == 1 else 0.0}
        if step == 1:
            metrics["lld/correct_logp_per_token"] = -0.085
        labels.append(detector.update(step, metrics).lld_phase)
    patience = PhaseConfig().patience
    assert labels[: patience] == ["warmup"] * patience  # one step of reward is not yet a collapse
    assert set(labels[patience + 1:]) == {"accelerated_collapse"}
    steady = PhaseDetector(PhaseConfig())  # a reward that stays low from the start never had a peak to lose
    assert all(steady.update(s, {"reward/mean": 0.0, "policy/entropy": 0.5}).lld_phase == "warmup" for s in range(1, 16))


def test_a_reward_that_fell_to_a_tenth_of_its_peak_is_a_collapse_even_with_a_few_correct_responses():
    """The lld sweep's GRPO at lr 1e-3: reward 0.37, then about 0.01 for 19 steps, with the few correct
    responses left giving a noisy but flat likelihood. It read as healthy before."""
    detector = PhaseDetector(PhaseConfig())
    rewards = [0.37] + [0.0, 0.0, 0.01, 0.0, 0.01, 0.01, 0.0, 0.01, 0.0] * 3
    labels = []
    for step, reward in enumerate(rewards, 1):
        metrics = {"reward/mean": reward, "policy/entropy": 0.5, "policy/grad_norm": 1.0,
                   "lld/correct_logp_per_token": -0.2 + 0.05 * (-1) ** step}
        labels.append(detector.update(step, metrics).lld_phase)
    patience = PhaseConfig().patience
    assert labels[:patience] == ["warmup"] * patience
    assert set(labels[patience + 1:]) == {"accelerated_collapse"}
    # a reward that fell to 40% of its peak and holds there is not a collapse
    held = PhaseDetector(PhaseConfig())
    for step, reward in enumerate([0.5] + [0.2] * 25, 1):
        label = held.update(step, {"reward/mean": reward, "policy/entropy": 0.5,
                                   "lld/correct_logp_per_token": -0.2}).lld_phase
    assert label != "accelerated_collapse"
    # the reward recovering above a tenth of its peak ends it
    for step in range(27, 60):
        label = detector.update(step, {"reward/mean": 0.02 * (step - 26), "policy/entropy": 0.5,
                                       "lld/correct_logp_per_token": -0.2 + 0.004 * (step - 26)}).lld_phase
    assert label != "accelerated_collapse"


def test_relabel_script_rewrites_recorded_labels_and_keeps_the_old_ones(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "relabel_phases", Path(__file__).resolve().parents[1] / "scripts" / "relabel_phases.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = [{"stage": "sft", "step": 1, "sft/loss": 1.0}]
    for step in range(1, 12):
        rows.append({"stage": "rl", "step": step, "reward/mean": 0.4 if step == 1 else 0.01,
                     "policy/entropy": 0.5, "lld/correct_logp_per_token": -0.2, "phase/label": "healthy"})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    changes = script.relabel(tmp_path)
    again = script.relabel(tmp_path)  # idempotent: compared with what the run recorded, every time
    out = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert out[0] == rows[0]
    assert [r["phase/label"] for r in out[1:]][-1] == "accelerated_collapse"
    assert all(r["phase/label_recorded"] == "healthy" for r in out[1:] if r["phase/label"] != "healthy")
    assert changes == again and changes[("healthy", "accelerated_collapse")] >= 7
