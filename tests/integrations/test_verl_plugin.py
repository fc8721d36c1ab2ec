"""The ``verl.plugins`` entry point: discovery on ``import verl``, self-check, loud failures, start-up checks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

verl = pytest.importorskip("verl", reason="verl is installed only in the scale-out venv (make test-scale)")

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.errors import InstantiationException  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.utils.config import omega_conf_to_dataclass, validate_config  # noqa: E402

from rlvr_lab.integrations.verl import RlvrAlgoConfig, RlvrPolicyLossConfig, plugin  # noqa: E402
from rlvr_lab.integrations.verl.presets import PRESETS  # noqa: E402

torch.set_num_threads(1)
NAMES = sorted(f"rlvr_{p}" for p in PRESETS)

PROBE = """
import json
import verl
{extra}
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, POLICY_LOSS_REGISTRY
print(json.dumps([sorted(n for n in POLICY_LOSS_REGISTRY if n.startswith("rlvr_")),
                  sorted(n for n in ADV_ESTIMATOR_REGISTRY if n.startswith("rlvr_"))]))
"""
# What Hydra does for `policy_loss._target_=rlvr_lab.integrations.verl.RlvrPolicyLossConfig`.
BUILD_TARGET = "from hydra.utils import get_class; get_class('rlvr_lab.integrations.verl.RlvrPolicyLossConfig')"


def registered_in_fresh_process(policy: str | None, extra: str = "") -> list[list[str]]:
    """What a fresh process sees after ``import verl`` (as a Ray worker does), plus ``extra`` code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("VERL_USE_EXTERNAL_PLUGINS", None)
    if policy is not None:
        env["VERL_USE_EXTERNAL_PLUGINS"] = policy
    code = PROBE.format(extra=extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("policy, expected", [(None, NAMES), ("rlvr_lab", NAMES), ("none", [])],
                         ids=["auto", "named", "none"])
def test_entry_point_is_discovered_on_import_verl(policy, expected):
    assert registered_in_fresh_process(policy) == [expected, expected]


def test_the_config_target_registers_even_with_plugins_off():
    assert registered_in_fresh_process("none", BUILD_TARGET) == [NAMES, NAMES]


def test_registered_in_this_process_and_self_check_passes():
    assert plugin.register() == [f"rlvr_{p}" for p in PRESETS]
    for name in NAMES:
        assert core_algos.get_policy_loss_fn(name).rlvr_lab_preset == name[len("rlvr_"):]
        assert core_algos.get_adv_estimator_fn(name).rlvr_lab_preset == name[len("rlvr_"):]
    plugin.self_check(NAMES)


def test_self_check_failure_is_logged_at_error(monkeypatch, caplog):
    monkeypatch.setitem(core_algos.POLICY_LOSS_REGISTRY, "rlvr_grpo", core_algos.compute_policy_loss_vanilla)
    with caplog.at_level(logging.ERROR, logger="rlvr_lab.integrations.verl"), pytest.raises(ImportError):
        plugin.self_check(["rlvr_grpo"])
    assert any(r.levelno == logging.ERROR and "rlvr_grpo is not bound" in r.getMessage() for r in caplog.records)


def test_version_check(caplog):
    with caplog.at_level(logging.WARNING, logger="rlvr_lab.integrations.verl"):
        plugin.check_version(verl.__version__)
        assert not caplog.records
        plugin.check_version("0.10.2")
        assert caplog.records[-1].levelno == logging.WARNING and "outside the tested range" in caplog.records[-1].getMessage()
        with pytest.raises(ImportError, match="older than 0.7.0"):
            plugin.check_version("0.6.1")
        assert caplog.records[-1].levelno == logging.ERROR


def compose_trainer(overrides: list[str]):
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    base = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.actor.policy_loss._target_=rlvr_lab.integrations.verl.RlvrPolicyLossConfig",
            "algorithm._target_=rlvr_lab.integrations.verl.RlvrAlgoConfig"]
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=base + overrides)


def test_hydra_keys_reach_the_dataclasses():
    cfg = compose_trainer(["actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_llds",
                           "+actor_rollout_ref.actor.policy_loss.llds.lam=0.1",
                           "algorithm.adv_estimator=rlvr_passk", "+algorithm.passk.k=8"])
    validate_config(cfg, use_reference_policy=False, use_critic=False)  # main_ppo's start-up check
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, RlvrPolicyLossConfig)
    assert actor.policy_loss.plan().aux_losses[0][1]["lam"] == 0.1
    algo = omega_conf_to_dataclass(cfg.algorithm)
    assert isinstance(algo, RlvrAlgoConfig) and algo.passk == {"k": 8}


@pytest.mark.parametrize("overrides, words", [
    (["actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_lp_reg"], "min-p proxy log-prob"),
    (["actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_llds", "+actor_rollout_ref.actor.policy_loss.llds.lamb=1"],
     "unknown parameter 'lamb'"),
])
def test_main_ppo_startup_check_fails_before_any_rollout(overrides, words):
    cfg = compose_trainer(overrides)
    with pytest.raises(InstantiationException, match=words):
        validate_config(cfg, use_reference_policy=False, use_critic=False)
