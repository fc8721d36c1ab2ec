"""The verl command lines in docs/scale-out.md pass verl's own start-up checks (or stop where the page says).

Each ``<!-- verl-command: NAME expect=ok|lp_reg -->`` block is parsed: the overrides after
``verl.trainer.main_ppo`` are composed with verl's packaged ``ppo_trainer.yaml`` through Hydra and
checked by ``validate_config``, the first thing ``main_ppo`` does (it builds the actor config, so
rlvr-lab's ``RlvrPolicyLossConfig`` resolves the method there). Nothing here trains: that needs GPUs.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import torch

verl = pytest.importorskip("verl", reason="verl is installed only in the scale-out venv (make test-scale)")

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.errors import InstantiationException  # noqa: E402
from verl.utils.config import omega_conf_to_dataclass, validate_config  # noqa: E402

from rlvr_lab.integrations.verl import RlvrPolicyLossConfig  # noqa: E402

torch.set_num_threads(1)
DOC = Path(__file__).resolve().parents[2] / "docs" / "scale-out.md"
MARKER = re.compile(r"<!-- verl-command: (\S+) expect=(\S+) -->\n```bash\n(.*?)```", re.S)
SHELL_VARS = {"HOME": "/home/user", "TOOL": "/site-packages/rlvr_lab/integrations/verl/search_tool.py",
              "RLVR_RETRIEVER_URL": "http://127.0.0.1:8000/retrieve"}


def commands() -> dict[str, tuple[str, list[str]]]:
    """name -> (expectation, Hydra overrides of the block's main_ppo command)."""
    out = {}
    for name, expect, body in MARKER.findall(DOC.read_text()):
        line = next(ln for ln in body.replace("\\\n", " ").splitlines() if "verl.trainer.main_ppo" in ln)
        tokens = shlex.split(line.split("verl.trainer.main_ppo", 1)[1])
        out[name] = (expect, [re.sub(r"\$(\w+)", lambda m: SHELL_VARS[m.group(1)], t) for t in tokens])
    return out


COMMANDS = commands()


def startup(overrides: list[str]):
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    validate_config(cfg, use_reference_policy=cfg.actor_rollout_ref.actor.use_kl_loss, use_critic=False)
    return cfg


def test_the_page_has_the_four_command_lines():
    assert set(COMMANDS) == {"grpo-llds-1node", "grpo-llds-4nodes", "dapo-lpreg-1node", "dapo-lpreg-4nodes"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_passes_or_stops_at_startup_as_documented(name):
    expect, overrides = COMMANDS[name]
    if expect == "lp_reg":
        with pytest.raises(InstantiationException, match="min-p proxy log-prob"):
            startup(overrides)
        # the documented runnable variant: DAPO's loss, same trainer settings
        dapo = [o.replace("rlvr_lp_reg", "rlvr_dapo") for o in overrides if ".lp_reg." not in o]
        cfg = startup(dapo)
        assert omega_conf_to_dataclass(cfg.actor_rollout_ref.actor).policy_loss.plan().policy_params["clip_high"] == 0.28
        return
    cfg = startup(overrides)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, RlvrPolicyLossConfig)
    plan = actor.policy_loss.plan()
    assert plan.aux_losses[0][0] == "llds" and actor.loss_agg_mode == plan.aggregation
    assert cfg.algorithm.adv_estimator == actor.policy_loss.loss_mode == "rlvr_llds"
    # the keys the preset implies (checked at the first loss call) are set as the page says
    assert actor.use_kl_loss and actor.kl_loss_coef == plan.kl_coef and actor.entropy_coeff == plan.entropy_coef
    assert cfg.data.train_batch_size == plan.minibatches * actor.ppo_mini_batch_size
