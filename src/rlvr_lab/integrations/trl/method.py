"""The method of a TRL run: an rlvr-lab config read from a preset, checked against what TRL can do.

Imports no TRL: ``GRPOConfig`` objects are read by duck typing, so all of this is testable without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlvr_lab.config import Config, apply_override, build_config, deep_merge, parse_override, read_config_data
from rlvr_lab.presets import preset_names
from rlvr_lab.presets import preset_path as packaged_preset
from rlvr_lab.train.methods import SINGLE_TURN_PROVIDES, check_inputs, startup_warnings

# TRL options that its own loss applies and rlvr-lab's composition does not: (field, default, what to do).
TRL_LOSS_OPTIONS = (
    ("top_entropy_quantile", 1.0, "the 80/20 high-entropy token mask is not an rlvr-lab component; leave it at 1.0"),
    ("off_policy_mask_threshold", None, "DeepSeek-V3.2's off-policy sequence mask is not an rlvr-lab component; leave it unset"),
    ("importance_sampling_level", "token", "for a sequence-level ratio pick a method whose policy loss has one "
                                           "(`rlvr list` describes each policy loss)"),
    ("entropy_coef", 0.0, "set the entropy bonus with overrides=['algorithm.entropy_coef=...']"),
    ("use_adaptive_entropy", False, "adaptive entropy control is not an rlvr-lab component; leave it off"),
    ("delta", None, "INTELLECT-2's two-sided clip is not an rlvr-lab component (the nearest is the dual clip for "
                    "A < 0: overrides=['algorithm.policy_loss.params.clip_ratio_c=3.0']); leave it unset"),
)


def available_methods() -> list[str]:
    """Preset names that ``method=`` accepts (the packaged presets, :mod:`rlvr_lab.presets`)."""
    return preset_names()


def preset_path(method: str) -> Path:
    """The packaged preset ``method``, or ``method`` itself when it is a path to a YAML file."""
    path = Path(method)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    try:
        return packaged_preset(method)
    except KeyError:
        raise ValueError(f"unknown method {method!r}; presets: {', '.join(available_methods())}. "
                         "Pass algorithm={...} or a path to a YAML file instead.") from None


def trl_shape(trl_args: Any, *, num_processes: int = 1) -> dict[str, Any]:
    """The rlvr-lab config keys that TRL's batch layout decides, from a ``GRPOConfig`` (duck-typed)."""
    ga = trl_args.gradient_accumulation_steps
    spg = trl_args.steps_per_generation or ga
    generation_rows = trl_args.per_device_train_batch_size * num_processes * spg
    return {
        "run": {"seed": trl_args.seed},
        "rollout": {"temperature": trl_args.temperature, "max_new_tokens": trl_args.max_completion_length},
        "train": {
            "group_size": trl_args.num_generations,
            "prompts_per_step": generation_rows // trl_args.num_generations,
            "minibatches": max(1, spg // ga),
            "epochs": trl_args.num_iterations,
            "micro_batch_size": trl_args.per_device_train_batch_size,
        },
    }


def method_config(
    method: str | None = None,
    *,
    algorithm: Mapping[str, Any] | Any | None = None,
    overrides: Sequence[str] = (),
    trl_args: Any | None = None,
    num_processes: int = 1,
) -> Config:
    """The validated rlvr-lab :class:`~rlvr_lab.config.Config` of a TRL run.

    At most one of ``method`` (a preset name or YAML path) and ``algorithm`` (an ``algorithm`` block,
    as a mapping or an ``AlgorithmConfig``); with neither, rlvr-lab's default algorithm (what
    ``rlvr train`` runs without a preset). ``overrides`` (``key.path=value``) come next. The batch
    layout from ``trl_args`` comes last, because TRL decides it. Raises a ``ValueError`` naming the key
    when the method needs something TRL cannot provide (see :func:`check_trl_support`).
    """
    if method is not None and algorithm is not None:
        raise ValueError("pass either method= (a preset name) or algorithm= (an algorithm block), not both")
    if method is not None:
        data = read_config_data(preset_path(method))  # what the YAML files say, `extends` merged
    elif algorithm is not None:
        block = algorithm.model_dump(mode="json") if hasattr(algorithm, "model_dump") else dict(algorithm)
        data = {"algorithm": block}
    else:
        data = {}
    for text in overrides:
        keys, value = parse_override(text)
        data = apply_override(data, keys, value)
    if trl_args is not None:
        data = deep_merge(data, trl_shape(trl_args, num_processes=num_processes))
    cfg = build_config(data)
    check_trl_support(cfg)
    return cfg


def check_trl_support(cfg: Config) -> None:
    """Refuse the parts of a method that need rlvr-lab's own rollout (never drop them silently)."""
    algo, problems = cfg.algorithm, []
    if algo.dynamic_sampling.enabled:
        problems.append(
            "algorithm.dynamic_sampling: DAPO's resampling of all-equal groups needs rlvr-lab's rollout loop; "
            "TRL generates one fixed batch per step. Add 'algorithm.dynamic_sampling.enabled=false' to overrides."
        )
    if algo.spear is not None:
        problems.append(
            "algorithm.spear: SPEAR's replay buffer and tool-call bonus run in rlvr-lab's loop, not in TRL. "
            "Add 'algorithm.spear=null' to overrides to keep the rest of the method."
        )
    if cfg.rollout.adaptive_temperature is not None:
        problems.append(
            "rollout.adaptive_temperature: HAPO's per-token sampling temperature needs rlvr-lab's sampler; TRL "
            "samples at args.temperature. Add 'rollout.adaptive_temperature=null' to overrides to train with "
            "HAPO's advantages and loss at a fixed temperature."
        )
    if cfg.search.enabled:
        problems.append("search.enabled: rlvr-lab's search environment is its own rollout; with TRL use its tools=.")
    if problems:
        raise ValueError("this method cannot run inside TRL's GRPOTrainer as configured:\n  " + "\n  ".join(problems))
    check_inputs(cfg, SINGLE_TURN_PROVIDES)


def check_trl_args(args: Any) -> None:
    """Refuse TRL options that TRL's loss would apply and rlvr-lab's composition would not."""
    problems = []
    for name, default, advice in TRL_LOSS_OPTIONS:
        value = getattr(args, name, default)
        if value != default:
            problems.append(f"{name}={value!r}: {advice}")
    if getattr(args, "use_vllm", False) and getattr(args, "vllm_importance_sampling_correction", False):
        problems.append(
            "vllm_importance_sampling_correction=True: rlvr-lab's losses do not apply TRL's sampler-mismatch "
            "ratio; set it to False"
        )
    ga, spg = args.gradient_accumulation_steps, args.steps_per_generation or args.gradient_accumulation_steps
    if spg % ga:
        problems.append(
            f"steps_per_generation={spg} with gradient_accumulation_steps={ga}: rlvr-lab normalises each optimiser "
            "step by its own token and sequence counts, which are known only when every optimiser step's micro-batches "
            "come from one generation batch. Use a multiple of gradient_accumulation_steps (TRL's default is equal)."
        )
    if problems:
        raise ValueError("GRPOConfig options that rlvr-lab's objectives do not apply:\n  " + "\n  ".join(problems))


def trl_startup_warnings(cfg: Config) -> list[str]:
    """rlvr-lab's start-up warnings with the batch-layout advice in TRL's terms."""
    return [
        f"{message} In TRL: minibatches = steps_per_generation / gradient_accumulation_steps and epochs = "
        "num_iterations, so set steps_per_generation = 2 x gradient_accumulation_steps or num_iterations >= 2."
        for message in startup_warnings(cfg)
    ]
