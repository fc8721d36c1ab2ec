"""The verl adapter's method table and its refusals; no verl needed (runs in the main venv too)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rlvr_lab.config import load_config
from rlvr_lab.presets import preset_names
from rlvr_lab.integrations.verl.presets import PRESETS, requirements
from rlvr_lab.integrations.verl.resolve import (
    ESTIMATOR_COMPONENTS,
    LOSS_COMPONENTS,
    UnsupportedInVerl,
    estimator_plan,
    loss_plan,
    verl_support,
)
from rlvr_lab.objectives import (
    ADVANTAGE_ESTIMATORS,
    AUX_LOSSES,
    POLICY_LOSSES,
    TOKEN_ADVANTAGE_MODIFIERS,
    TOKEN_LOSS_OVERRIDES,
)

torch.set_num_threads(1)

# What docs/scale-out.md promises: the methods whose loss (resp. estimator) side verl cannot feed.
LOSS_FAILS = {"llds_ma", "lp_reg", "hapo", "thr", "nthr", "spear"}
ESTIMATOR_FAILS = {"lp_reg", "hapo", "thr", "nthr", "spear", "psr", "nsr"}


def test_the_verl_methods_are_the_packaged_presets():
    # one copy: the table is read from the same files as `rlvr train --preset NAME`
    assert set(PRESETS) == {n for n in preset_names() if not n.startswith("div_prec")}
    for name, preset in PRESETS.items():
        cfg = load_config(None, presets=[name])
        assert preset.algo == cfg.algorithm and preset.minibatches == cfg.train.minibatches, name


def test_every_registered_component_has_a_verl_name():
    algos = [p.algo for p in PRESETS.values()]
    assert {a.policy_loss.name for a in algos} >= set(POLICY_LOSSES.names())
    assert {a.advantage.name for a in algos} >= set(ADVANTAGE_ESTIMATORS.names())
    assert {c.name for a in algos for c in a.token_overrides} >= set(TOKEN_LOSS_OVERRIDES.names())
    assert {c.name for a in algos for c in a.aux_losses} >= set(AUX_LOSSES.names())
    assert {c.name for a in algos for c in a.token_modifiers} >= set(TOKEN_ADVANTAGE_MODIFIERS.names())


def test_the_override_keys_are_the_registered_components():
    # the config dataclasses get one field per name: a new component needs no edit in the adapter
    assert set(LOSS_COMPONENTS) == {*POLICY_LOSSES.names(), *TOKEN_LOSS_OVERRIDES.names(), *AUX_LOSSES.names()}
    assert set(ESTIMATOR_COMPONENTS) == {*ADVANTAGE_ESTIMATORS.names(), *TOKEN_ADVANTAGE_MODIFIERS.names()}


def test_row_drops_are_read_from_the_registry_entry():
    # the entries' own `drops` decides, so verl never trains on a silently different denominator
    drop = {name for p in PRESETS.values() for name in requirements(p.algo).drops_rows}
    assert drop == {"psr", "nsr"}  # the presets' subset=true; GRPO-N keeps its rows by default
    grpo_n = PRESETS["grpo_n"].algo.model_copy(deep=True)
    grpo_n.token_modifiers[0].params["drop_positive_from_denominator"] = True
    assert requirements(grpo_n).drops_rows == ["grpo_n"]
    # the refusal names the parameter change that keeps the rows: a set parameter back to its default first
    with pytest.raises(UnsupportedInVerl, match=r"set \+algorithm.psr.subset=false to keep them"):
        estimator_plan("rlvr_psr")
    with pytest.raises(UnsupportedInVerl, match=r"set \+algorithm.grpo_n.drop_positive_from_denominator=false or "
                                                r"\+algorithm.grpo_n.mask_positive=false"):
        estimator_plan("rlvr_grpo_n", {"grpo_n": {"drop_positive_from_denominator": True}})


def test_parameter_dependent_needs_name_the_parameter_that_removes_them():
    with pytest.raises(UnsupportedInVerl, match=r"RL step number, to seed its random draw "
                                                r"\(not needed with clip_cov.seed=null\)"):
        loss_plan("rlvr_clip_cov", {"clip_cov": {"seed": 1}})
    with pytest.raises(UnsupportedInVerl, match=r"whole mini-batch.*\(not needed with llds.norm=code\)"):
        loss_plan("rlvr_llds", {"llds": {"norm": "paper"}})
    assert loss_plan("rlvr_llds").needs_action_ids and not loss_plan("rlvr_grpo").needs_action_ids


def test_support_table():
    support = verl_support()
    assert {n for n, (loss, _) in support.items() if loss} == LOSS_FAILS
    assert {n for n, (_, est) in support.items() if est} == ESTIMATOR_FAILS


@pytest.mark.parametrize("name, words", [
    ("lp_reg", "min-p proxy log-prob"),
    ("hapo", "per-token entropy"),
    ("thr", "token hidden reward"),
    ("nthr", "token hidden reward"),
    ("llds_ma", "answer span"),
    ("spear", "replay buffer"),
])
def test_unsupported_loss_names_what_is_missing(name, words):
    with pytest.raises(UnsupportedInVerl, match=words):
        loss_plan(f"rlvr_{name}")


def test_parameters_decide_support():
    with pytest.raises(UnsupportedInVerl, match="removes responses"):
        estimator_plan("rlvr_psr")
    assert estimator_plan("rlvr_psr", {"psr": {"subset": False}}).advantage_params["subset"] is False
    with pytest.raises(UnsupportedInVerl, match="whole mini-batch"):
        loss_plan("rlvr_llds", {"llds": {"norm": "paper"}})
    with pytest.raises(UnsupportedInVerl, match="RL step number"):
        loss_plan("rlvr_clip_cov", {"clip_cov": {"seed": 1}})
    assert loss_plan("rlvr_llds", {"llds": {"lam": 0.1}}).aux_losses == (
        ("llds", {"lam": 0.1, "gate": "action", "norm": "code", "preserve": "adv>=0", "mask_answer": False}),)


def test_bad_overrides_fail_with_the_key():
    with pytest.raises(ValueError, match="unknown parameter 'lamb' for 'llds'"):
        loss_plan("rlvr_llds", {"llds": {"lamb": 0.1}})
    with pytest.raises(ValueError, match="policy_loss.llds: rlvr_grpo has no 'llds' component"):
        loss_plan("rlvr_grpo", {"llds": {"lam": 0.1}})
    with pytest.raises(ValueError, match="not an rlvr-lab method; valid: .*rlvr_grpo"):
        loss_plan("rlvr_nope")


def test_aggregation_follows_the_preset_unless_overridden():
    assert loss_plan("rlvr_dr_grpo").aggregation == "seq-mean-token-sum-norm"
    assert loss_plan("rlvr_grpo", aggregation="seq-mean-token-mean").aggregation == "seq-mean-token-mean"
    with pytest.raises(ValueError, match="always aggregates with 'seq-mean-token-mean'"):
        loss_plan("rlvr_gspo", aggregation="token-mean")


def test_presets_do_not_import_an_engine():
    code = ("import sys, rlvr_lab.integrations.verl.resolve; "
            "print(sorted(m for m in ('verl', 'ray', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
