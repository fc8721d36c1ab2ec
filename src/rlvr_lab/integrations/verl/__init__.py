"""rlvr-lab's methods inside verl: ``loss_mode=rlvr_<method>`` and ``adv_estimator=rlvr_<method>``.

Install ``rlvr-lab[verl]`` on every node; verl (>= 0.9) then loads :mod:`.plugin` through the
``verl.plugins`` entry point on ``import verl``, which registers one policy loss and one advantage
estimator per method preset (see :data:`.presets.PRESETS` and ``docs/scale-out.md``)::

    python3 -m verl.trainer.main_ppo ... \\
        algorithm.adv_estimator=rlvr_<preset> \\
        actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_<preset> \\
        actor_rollout_ref.actor.policy_loss._target_=rlvr_lab.integrations.verl.RlvrPolicyLossConfig

Modules: :mod:`.presets` (the methods by name, what each needs), :mod:`.resolve` (name + overrides ->
components, and the refusal of methods verl cannot feed), :mod:`.losses` and :mod:`.advantages` (the
functions verl calls), :mod:`.config` (the dataclasses that carry hyperparameters), :mod:`.plugin`
(registration and self-check). Only :mod:`.presets` and :mod:`.resolve` work without verl installed;
the names below load verl on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RlvrPolicyLossConfig": "rlvr_lab.integrations.verl.config",
    "RlvrAlgoConfig": "rlvr_lab.integrations.verl.config",
    "register": "rlvr_lab.integrations.verl.plugin",
    "PRESETS": "rlvr_lab.integrations.verl.presets",
    "UnsupportedInVerl": "rlvr_lab.integrations.verl.resolve",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    # Hydra resolves `_target_=rlvr_lab.integrations.verl.RlvrPolicyLossConfig` through this.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
