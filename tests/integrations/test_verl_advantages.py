"""verl's ``compute_advantage`` with rlvr-lab's estimators against the native ``Trainer.advantages``."""

from __future__ import annotations


import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="verl is installed only in the scale-out venv (make test-scale)")

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402

from rlvr_lab.config import load_config  # noqa: E402
from rlvr_lab.integrations.verl import RlvrAlgoConfig  # noqa: E402
from rlvr_lab.integrations.verl.presets import PRESETS  # noqa: E402
from rlvr_lab.integrations.verl.resolve import UnsupportedInVerl  # noqa: E402
from rlvr_lab.train.loop import Trainer  # noqa: E402
from rlvr_lab.train.methods import Methods  # noqa: E402
from rlvr_lab.types import Batch  # noqa: E402

torch.set_num_threads(1)
P, G, L = 4, 4, 6
B = P * G
ESTIMATOR_OK = [n for n in PRESETS if n not in {"lp_reg", "hapo", "thr", "nthr", "spear", "psr", "nsr"}]
# rewards per group: mixed, all correct, all wrong, mixed
REWARDS = torch.tensor([1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1], dtype=torch.float32)


def response_mask() -> torch.Tensor:
    lengths = torch.tensor([6, 3, 5, 2, 4, 6, 1, 3, 6, 6, 2, 5, 4, 3, 6, 2])
    return torch.arange(L) < lengths.unsqueeze(-1)  # (B, L)


def native_advantages(name: str, overrides: list[str] = ()) -> torch.Tensor:
    """``Trainer.advantages`` of the native trainer for the preset (groups of G contiguous rows)."""
    preset = PRESETS[name]
    over = [f"train.group_size={G}", *overrides]
    cfg = load_config(None, presets=[preset.name], overrides=over)
    trainer = Trainer(cfg)
    trainer.methods = Methods(cfg)
    mask = response_mask()
    batch = Batch(
        input_ids=torch.zeros(B, 1 + L, dtype=torch.long), attention_mask=torch.ones(B, 1 + L, dtype=torch.bool),
        response_start=1, loss_mask=mask, rewards=REWARDS.clone(), group_ids=torch.arange(P).repeat_interleave(G),
        extras={"correct": REWARDS.bool()},
    )
    out, _ = trainer.advantages(batch, step=1)
    assert len(out) == B  # no rows dropped for the methods verl runs
    return out.advantages


def verl_data(perm: torch.Tensor | None = None) -> DataProto:
    """verl's batch: the reward on the last response token, one uid per prompt, rows optionally shuffled
    (verl's trainer.balance_batch reorders rows before the advantage)."""
    mask = response_mask()
    last = mask.sum(-1) - 1
    token_rewards = torch.zeros(B, L)
    token_rewards[torch.arange(B), last.clamp_min(0)] = REWARDS
    uid = np.array([f"prompt-{i // G}" for i in range(B)], dtype=object)
    if perm is not None:
        mask, token_rewards, uid = mask[perm], token_rewards[perm], uid[perm.numpy()]
    return DataProto.from_dict(tensors={"token_level_rewards": token_rewards, "response_mask": mask.long()},
                               non_tensors={"uid": uid})


def verl_advantages(name: str, config, perm: torch.Tensor | None = None) -> torch.Tensor:
    data = compute_advantage(verl_data(perm), adv_estimator=f"rlvr_{name}", num_repeat=G, config=config)
    torch.testing.assert_close(data.batch["returns"], data.batch["advantages"])
    return data.batch["advantages"]


@pytest.mark.parametrize("name", ESTIMATOR_OK)
def test_compute_advantage_equals_native(name):
    want = native_advantages(name)
    config = RlvrAlgoConfig(adv_estimator=f"rlvr_{name}")
    torch.testing.assert_close(verl_advantages(name, config), want)
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(verl_advantages(name, config, perm), want[perm])


def test_estimator_parameters_from_the_dataclass_and_from_plain_omegaconf():
    want = native_advantages("passk", ["algorithm.advantage.params.k=2"])
    assert not torch.equal(want, native_advantages("passk"))
    dataclass_cfg = RlvrAlgoConfig(adv_estimator="rlvr_passk", passk={"k": 2})
    omegaconf_cfg = OmegaConf.create({"adv_estimator": "rlvr_passk", "passk": {"k": 2}})  # what verl 0.9 passes
    torch.testing.assert_close(verl_advantages("passk", dataclass_cfg), want)
    torch.testing.assert_close(verl_advantages("passk", omegaconf_cfg), want)


@pytest.mark.parametrize("name", ["psr", "nsr"])
def test_psr_nsr_run_without_subsetting_and_refuse_it(name):
    want = native_advantages(name, ["algorithm.advantage.params.subset=false"])
    config = RlvrAlgoConfig(adv_estimator=f"rlvr_{name}", **{name: {"subset": False}})
    torch.testing.assert_close(verl_advantages(name, config), want)
    with pytest.raises(UnsupportedInVerl, match="removes responses"):
        RlvrAlgoConfig(adv_estimator=f"rlvr_{name}")
    with pytest.raises(UnsupportedInVerl, match="removes responses"):
        verl_advantages(name, OmegaConf.create({"adv_estimator": f"rlvr_{name}"}))


@pytest.mark.parametrize("name", ["thr", "nthr", "lp_reg", "hapo", "spear"])
def test_estimators_of_methods_verl_cannot_feed_refuse(name):
    with pytest.raises(UnsupportedInVerl):
        verl_advantages(name, OmegaConf.create({"adv_estimator": f"rlvr_{name}"}))


def test_ragged_groups_are_refused():
    data = verl_data()
    data.non_tensor_batch["uid"][0] = "prompt-1"  # group 0 has 3 rows, group 1 has 5
    with pytest.raises(ValueError, match="groups of equal size"):
        compute_advantage(data, adv_estimator="rlvr_grpo", num_repeat=G, config=RlvrAlgoConfig(adv_estimator="rlvr_grpo"))
