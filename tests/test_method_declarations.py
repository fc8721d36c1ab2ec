"""Every method's declarations are enforced at start-up: parameter values, the off-policy step a method
needs to have any effect, DAPO as published, SPEAR's replay trigger, and the one copy of the presets."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlvr_lab.config import ConfigError, inert_methods, load_config
from rlvr_lab.objectives import overlong_penalty
from rlvr_lab.objectives.registry import AUX_LOSSES, POLICY_LOSSES, InvalidParamError, Param, all_registries
from rlvr_lab.presets import preset_names, preset_path
from rlvr_lab.train.methods import startup_warnings

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"

# Where each registry's components sit in the config, and a preset-free way to select one.
SLOT = {
    "advantage estimator": lambda name, params: f"algorithm.advantage={{name: {name}, params: {params}}}",
    "policy loss": lambda name, params: f"algorithm.policy_loss={{name: {name}, params: {params}}}",
    "token-advantage modifier": lambda name, params: f"algorithm.token_modifiers=[{{name: {name}, params: {params}}}]",
    "token-loss override": lambda name, params: f"algorithm.token_overrides=[{{name: {name}, params: {params}}}]",
    "auxiliary loss": lambda name, params: f"algorithm.aux_losses=[{{name: {name}, params: {params}}}]",
}
EVERY_PARAM = [(reg.kind, name, key) for reg in all_registries() for name in reg.names()
               for key in reg.entry(name).params]


def yaml_value(value) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


@pytest.mark.parametrize("kind,name,key", EVERY_PARAM, ids=[f"{n}.{k}" for _, n, k in EVERY_PARAM])
def test_one_bad_value_of_every_parameter_fails_at_start_up(kind, name, key):
    registry = next(r for r in all_registries() if r.kind == kind)
    spec = registry.entry(name).params[key]
    bad = spec.bad_example()
    assert spec.problem(bad) is not None
    override = SLOT[kind](name, f"{{{key}: {yaml_value(bad)}}}")
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, overrides=[override, "train.allow_inert_methods=true"])
    message = str(err.value)
    assert f".{key}={bad!r}" in message and spec.allowed() in message, message


def test_every_default_is_allowed_and_declarations_cover_the_signature():
    for registry in all_registries():
        for name in registry.names():
            entry = registry.entry(name)
            assert set(entry.params) == set(entry.keyword_params()), name
            for key, default in entry.defaults().items():
                assert entry.params[key].problem(default) is None, (name, key)


def test_param_checks_by_hand():
    clip = Param(float, ge=0)
    assert clip.problem(0) is None and clip.problem(0.3) is None
    assert clip.problem(-0.1) == "float >= 0" and clip.problem(True) == "float >= 0" and clip.problem("x")
    assert clip.problem(math.nan) == "float >= 0"
    c = Param(float, gt=1, nullable=True)
    assert c.problem(None) is None and c.problem(1.0) == "float > 1 or null" and c.problem(3) is None
    k = Param(int, ge=1)
    assert k.problem(2) is None and k.problem(2.0) == "int >= 1" and k.problem(0) == "int >= 1"
    with pytest.raises(InvalidParamError, match=r"where\.clip_high=-0\.1 .*'ppo_clip': must be float >= 0"):
        POLICY_LOSSES.entry("ppo_clip").check_params({"clip_high": -0.1}, where="where")


def test_a_registration_without_declarations_is_refused():
    from rlvr_lab.objectives.registry import Float, Registry

    reg = Registry("test component")
    with pytest.raises(TypeError, match="undeclared parameters \\['b'\\]"):
        reg.register("x", params={"a": Float()})(lambda *, a=1.0, b=2.0: None)
    with pytest.raises(TypeError, match="default a=-1.0 is not float >= 0"):
        reg.register("y", params={"a": Float(ge=0)})(lambda *, a=-1.0: None)


def test_cli_refuses_a_bad_value_before_loading_a_model(tmp_path):
    exe = Path(sys.executable).with_name("rlvr")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    out = subprocess.run([str(exe), "train", str(DEMO), "algorithm.policy_loss.params.clip_high=-0.1",
                          f"run.output_dir={tmp_path}"], capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - t0
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode != 0
    assert "clip_high=-0.1" in text and "float >= 0" in text, text
    assert not any(tmp_path.iterdir())  # no run directory: nothing was loaded or written
    print(f"refused in {elapsed:.2f} s")


# ---- methods that act only off-policy -----------------------------------------------------------------


OFF_POLICY_ONLY = {  # preset -> the component that would be inert with one mini-batch and one epoch
    "dapo": "ppo_clip", "gspo": "gspo", "hapo": "hapo", "kl_cov": "kl_cov", "llds": "llds", "llds_ma": "llds",
    "lp_reg": "ppo_clip", "spear": "ppo_clip",
}


@pytest.mark.parametrize("preset", preset_names())
def test_presets_that_need_an_off_policy_step_take_one(preset):
    cfg = load_config(DEMO, presets=[preset], overrides=["train.minibatches=1", "train.allow_inert_methods=true"])
    inert = inert_methods(cfg)
    if preset not in OFF_POLICY_ONLY:
        assert inert == [], inert
        return
    assert len(inert) == 1 and f"'{OFF_POLICY_ONLY[preset]}' needs an off-policy step" in inert[0]
    shipped = load_config(None, presets=[preset])  # the preset on its own over the defaults (1 mini-batch)
    assert shipped.train.minibatches >= 2 and inert_methods(shipped) == []
    with pytest.raises(ConfigError, match="(?s)needs an off-policy step.*train.minibatches >= 2"):
        load_config(DEMO, presets=[preset], overrides=["train.minibatches=1"])
    assert inert_methods(load_config(DEMO, presets=[preset], overrides=["train.minibatches=1", "train.epochs=2"])) == []


def test_an_explicit_flag_runs_an_inert_method_with_a_warning():
    cfg = load_config(DEMO, presets=["kl_cov"], overrides=["train.minibatches=1", "train.allow_inert_methods=true"])
    (message,) = startup_warnings(cfg)
    assert "kl_cov" in message and "runs anyway" in message


def test_symmetric_clip_alone_is_plain_grpo_on_policy():
    # a symmetric clip never binds on-policy by design: GRPO's own loss is then REINFORCE with a baseline
    assert POLICY_LOSSES.entry("ppo_clip").inert_without_off_policy({"clip_low": 0.2, "clip_high": 0.2}) is None
    assert "clip-higher" in POLICY_LOSSES.entry("ppo_clip").inert_without_off_policy({"clip_high": 0.28})
    assert "dual clip" in POLICY_LOSSES.entry("ppo_clip").inert_without_off_policy({"clip_ratio_c": 3.0})
    assert "identically 0" in AUX_LOSSES.entry("llds").inert_without_off_policy({})


# ---- DAPO as published (arXiv 2503.14476, eq. 13 and sec. 3.2) ---------------------------------------------


def test_overlong_penalty_with_the_papers_numbers():
    lengths = torch.tensor([100, 16384, 18432, 20480, 20481, 30000])
    got = overlong_penalty(lengths, max_len=20480, cache_len=4096)
    assert got.tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0, -1.0])
    assert overlong_penalty(lengths, max_len=20480, cache_len=4096, factor=2.0).min().item() == -2.0


def test_dapo_preset_on_the_demo_lengths():
    ol = load_config(DEMO, presets=["dapo"]).algorithm.overlong
    assert (ol.max_len, ol.cache_len, ol.factor) == (16, 3, 1.0)  # the demo's budget; a fifth of it as the ramp
    # a correct 9-token answer is not punished; only the last three tokens of the budget are
    got = overlong_penalty(torch.tensor([9, 13, 14, 15, 16]), max_len=ol.max_len, cache_len=ol.cache_len)
    assert got.tolist() == pytest.approx([0.0, 0.0, -1 / 3, -2 / 3, -1.0])
    assert load_config(None, presets=["dapo"]).algorithm.overlong.max_len == 64  # the default budget
    with pytest.raises(ConfigError, match="max_len=20 exceeds the response budget of 16 tokens"):
        load_config(DEMO, presets=["dapo"], overrides=["algorithm.overlong.max_len=20"])
    with pytest.raises(ConfigError, match="cache_len=12 must not exceed max_len=10"):
        load_config(DEMO, presets=["dapo"], overrides=["algorithm.overlong={max_len: 10, cache_len: 12}"])


def test_dapo_dynamic_sampling_filters_on_correctness(tmp_path, monkeypatch):
    """All-wrong groups whose overlong penalties differ are dropped (DAPO), not kept for their reward spread."""
    from rlvr_lab.train.loop import Trainer
    from rlvr_lab.types import Score

    monkeypatch.setattr("rlvr_lab.train.environment.task_rubric",
                        lambda verifier, format_weight: lambda text, example: Score(value=0.0, correct=False))
    over = ["run.threads=1", "sft.steps=0", "eval.enabled=false", "observe.probe_prompts=0", "observe.report=false",
            "observe.tensorboard=false", "task.train_size=64", "task.eval_size=4", "train.prompts_per_step=4",
            "train.group_size=4", "rollout.max_new_tokens=8", "algorithm.dynamic_sampling.max_gen_batches=2",
            f"run.output_dir={tmp_path}"]
    trainer = Trainer(load_config(DEMO, presets=["dapo"], overrides=over))
    trainer.setup()
    rollout = trainer.collect(1)
    assert rollout.metrics["dapo/overlong_ratio"] > 0  # rewards differ within the all-wrong groups ...
    assert rollout.batch is None and rollout.metrics["dapo/kept_groups"] == 0  # ... and every group is dropped
    trainer = Trainer(load_config(DEMO, presets=["dapo"], overrides=over + ["algorithm.dynamic_sampling.metric=reward",
                                                                          f"run.output_dir={tmp_path / 'r'}"]))
    trainer.setup()
    assert trainer.collect(1).metrics["dapo/kept_groups"] > 0  # verl's seq_reward metric keeps them


# ---- SPEAR's replay on batches of this size -------------------------------------------------------------


def test_spear_replay_buffer_is_sized_to_the_batch_and_warns_when_it_cannot_fire():
    cfg = load_config(DEMO, presets=["spear"])
    assert cfg.algorithm.spear.replay.buffer_size == 128 * 8 // 4
    assert startup_warnings(cfg) == []
    never = load_config(DEMO, presets=["spear"], overrides=["algorithm.spear.replay.buffer_size=4096"])
    (message,) = startup_warnings(never)
    assert "can never trigger" in message and "6144" in message


# ---- one copy of the presets -------------------------------------------------------------------------------


def test_presets_ship_inside_the_package_and_load_by_name():
    assert {"grpo", "dapo", "llds", "spear", "hapo_tlga"} <= set(preset_names())
    assert "rlvr_lab" in preset_path("dapo").parts
    root = Path(__file__).resolve().parents[1]
    assert not [p.name for p in (root / "configs").glob("*.yaml") if p.stem in preset_names()]  # no copies
    assert load_config(DEMO, presets=["dapo"]) == load_config(DEMO, presets=[str(preset_path("dapo"))])
    with pytest.raises(ConfigError, match="no packaged preset of that name; presets: .*grpo"):
        load_config(DEMO, presets=["grpoo"])


# ---- a method that changes nothing at run time is reported -------------------------------------------------


def test_a_component_that_acts_on_nothing_is_reported_once():
    from rlvr_lab.train.methods import Methods

    methods = Methods(load_config(DEMO, presets=["clip_cov"], overrides=["observe.inactive_steps=3"]))
    said = [methods.inactivity(s, {"clip_cov/num_zeroed": 0.0}) for s in range(1, 8)]
    assert [len(m) for m in said] == [0, 0, 1, 0, 0, 0, 0]
    assert "clip_cov has changed nothing for 3 consecutive steps" in said[2][0] and "(lb, ub)" in said[2][0]
    methods = Methods(load_config(DEMO, presets=["clip_cov"], overrides=["observe.inactive_steps=3"]))
    counts = [0, 0, 2, 0, 0, 0]  # a step that acted resets the count
    said = [methods.inactivity(s, {"clip_cov/num_zeroed": float(c)}) for s, c in enumerate(counts, 1)]
    assert [len(m) for m in said] == [0, 0, 0, 0, 0, 1]
    assert Methods(load_config(DEMO)).inactivity(1, {"clip_cov/num_zeroed": 0.0}) == []  # not configured


def test_lp_reg_on_small_micro_batches_warns_that_it_regularised_nothing(tmp_path):
    """rho=0.01 selects tokens only from 200 negative tokens per micro-batch on (errata 13)."""
    from rlvr_lab.train.loop import Trainer

    over = ["run.threads=1", "sft.steps=0", "eval.enabled=false", "observe.probe_prompts=0", "observe.report=false",
            "observe.tensorboard=false", "task.train_size=64", "task.eval_size=4", "train.prompts_per_step=4",
            "train.group_size=4", "train.steps=2", "rollout.max_new_tokens=8", "observe.inactive_steps=2",
            "model.tiny={hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, intermediate_size: 64, "
            "max_position_embeddings: 160}", f"run.output_dir={tmp_path}"]
    summary = Trainer(load_config(DEMO, presets=["lp_reg"], overrides=over)).run()
    assert any("lp_reg has changed nothing for 2 consecutive steps" in w for w in summary["warnings"])


def test_rlvr_list_shows_each_method_with_parameters_defaults_and_paper():
    from typer.testing import CliRunner

    from rlvr_lab.cli import app

    result = CliRunner().invoke(app, ["list", "--no-tasks"])
    assert result.exit_code == 0, result.output
    out = result.output
    for registry in all_registries():
        for name in registry.names():
            entry = registry.entry(name)
            assert f"  {name}: {entry.summary}" in out and entry.paper in out, name
            for key, spec in entry.params.items():
                assert f"{key} = {entry.defaults()[key]!r}  [{spec.allowed()}]" in out, (name, key)
    assert "needs an off-policy step (train.minibatches >= 2 or train.epochs >= 2): without one its loss compares" in out
    assert "  dapo: DAPO (arXiv 2503.14476)" in out


def test_pass_at_k_beyond_the_group_size_fails_at_start_up():
    with pytest.raises(ConfigError, match="'passk': k=4 exceeds the group size train.group_size=2"):
        load_config(DEMO, presets=["passk"], overrides=["train.group_size=2"])
    assert load_config(DEMO, presets=["pkpo"], overrides=["train.group_size=4"]).algorithm.advantage.params["k"] == 4
