"""The ``verl.plugins`` entry point: registers every rlvr-lab method in verl's registries on ``import verl``.

verl >= 0.9 imports each entry point of the ``verl.plugins`` group at the end of ``verl/__init__.py``,
in the driver and in every Ray worker, unless ``VERL_USE_EXTERNAL_PLUGINS=none`` (or a list of names
without ``rlvr_lab``). For each preset ``p`` of :data:`~rlvr_lab.integrations.verl.presets.PRESETS`
this registers the policy loss ``rlvr_<p>`` and the advantage estimator ``rlvr_<p>``.

verl swallows any exception a plugin raises at DEBUG level, so this module logs every problem at
ERROR before raising, and checks itself after registering (all names present and bound to these
functions, verl version and the call contracts it relies on). A method verl cannot feed is still
registered: its functions raise a message naming what is missing (see ``resolve.py``).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging

from packaging.version import Version

logger = logging.getLogger("rlvr_lab.integrations.verl")

# Versions whose call sites this adapter was written against and tested with (verl 0.9.1): the
# keyword-only policy-loss call with rollout_is_weights, the 2-tuple return, config.global_batch_info
# and the verl.plugins entry-point group.
SUPPORTED = (Version("0.9.0"), Version("0.10.0"))
OLDEST_CONTRACT = Version("0.7.0")  # before 0.7 a policy loss returned a 4-tuple: refuse

# The keywords verl 0.9's ppo_loss passes (verl/workers/utils/losses.py).
LOSS_CALL_KEYWORDS = ("old_log_prob", "log_prob", "advantages", "response_mask", "loss_agg_mode", "config",
                      "rollout_is_weights")
AGG_LOSS_KEYWORDS = ("dp_size", "batch_num_tokens", "global_batch_size", "loss_scale_factor")

_registered: list[str] = []


def _fail(message: str) -> None:
    logger.error("rlvr-lab verl plugin: %s", message)
    raise ImportError(f"rlvr-lab verl plugin: {message}")


def check_version(version: str) -> None:
    """ERROR (and refuse) below the 2-tuple loss contract; WARNING outside the tested range."""
    v = Version(version)
    if v < OLDEST_CONTRACT:
        _fail(f"verl {version} is older than {OLDEST_CONTRACT}, whose policy losses return a different tuple; "
              f"install verl>={SUPPORTED[0]},<{SUPPORTED[1]} (pip install 'rlvr-lab[verl]')")
    if not SUPPORTED[0] <= v < SUPPORTED[1]:
        logger.warning(
            "rlvr-lab verl plugin: verl %s is outside the tested range [%s, %s); the methods are registered, but "
            "check the policy-loss call in verl/workers/utils/losses.py against rlvr_lab/integrations/verl/losses.py",
            version, SUPPORTED[0], SUPPORTED[1],
        )


def register() -> list[str]:
    """Register every preset as ``rlvr_<preset>`` (policy loss and advantage estimator); idempotent.

    Returns the registered names. Raises (after logging at ERROR) on any inconsistency.
    """
    if _registered:
        return list(_registered)
    import verl
    from verl.trainer.ppo import core_algos

    check_version(verl.__version__)
    from rlvr_lab.integrations.verl.advantages import make_estimator
    from rlvr_lab.integrations.verl.losses import make_policy_loss
    from rlvr_lab.integrations.verl.presets import PRESETS
    from rlvr_lab.integrations.verl.resolve import verl_name

    names = []
    for preset in PRESETS:
        name = verl_name(preset)
        for registry, kind in ((core_algos.POLICY_LOSS_REGISTRY, "policy loss"),
                               (core_algos.ADV_ESTIMATOR_REGISTRY, "advantage estimator")):
            if name in registry and getattr(registry[name], "rlvr_lab_preset", None) is None:
                _fail(f"verl already has a {kind} named {name!r} ({registry[name]!r}); refusing to overwrite it")
        core_algos.register_policy_loss(name)(make_policy_loss(preset))
        if name not in core_algos.ADV_ESTIMATOR_REGISTRY:  # register_adv_est refuses a second function
            core_algos.register_adv_est(name)(make_estimator(preset))
        names.append(name)
    self_check(names)
    _registered.extend(names)
    logger.info("rlvr-lab verl plugin: registered %d methods: %s", len(names), ", ".join(names))
    return names


def self_check(names: list[str]) -> None:
    """Every name resolves, through verl's own getters, to an rlvr-lab function with the expected call shape."""
    from verl.trainer.ppo import core_algos
    from verl.workers.config import ActorConfig

    problems = []
    for name in names:
        loss = core_algos.get_policy_loss_fn(name)
        est = core_algos.get_adv_estimator_fn(name)
        if getattr(loss, "rlvr_lab_preset", None) is None or getattr(est, "rlvr_lab_preset", None) is None:
            problems.append(f"{name} is not bound to rlvr-lab's functions")
            continue
        params = inspect.signature(loss).parameters
        missing = [k for k in LOSS_CALL_KEYWORDS if k not in params]
        if missing:
            problems.append(f"{name}'s policy loss does not take {missing}")
    agg = inspect.signature(core_algos.agg_loss).parameters
    if any(k not in agg for k in AGG_LOSS_KEYWORDS):
        problems.append(f"verl's agg_loss no longer takes {AGG_LOSS_KEYWORDS}; the global-batch normalisation "
                        "this adapter relies on has changed")
    if "global_batch_info" not in {f.name for f in dataclasses.fields(ActorConfig)}:
        problems.append("verl's ActorConfig has no global_batch_info; loss scale across GPUs would be wrong")
    if problems:
        _fail("self-check failed: " + "; ".join(problems))


try:
    register()
except Exception as exc:  # verl logs a plugin's exception only at DEBUG: make it visible, then re-raise
    if not isinstance(exc, ImportError) or "rlvr-lab verl plugin" not in str(exc):
        logger.error("rlvr-lab verl plugin: registration failed: %r", exc, exc_info=True)
    raise
