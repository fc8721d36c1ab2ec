"""rlvr-lab's objectives and observatory inside TRL's ``GRPOTrainer`` (TRL >= 1.16).

    from trl import GRPOConfig
    from rlvr_lab.integrations.trl import RlvrGRPOTrainer

    args = GRPOConfig(output_dir="out", num_generations=8, steps_per_generation=4, ...)
    trainer = RlvrGRPOTrainer(model="path/to/model", reward_funcs=reward_fn, args=args,
                              train_dataset=ds, method="llds")
    trainer.train()

TRL keeps what it does well: data, generation (vLLM included), reward functions, the optimiser
loop, distributed training. rlvr-lab takes over where the objective lives. This is TRL's own
pattern (``trl.experimental.gmpo.GMPOTrainer`` overrides only ``_compute_loss``; see
``shared/specs/INTEGRATIONS.md`` section 2):

* ``_generate_and_score_completions``: after TRL has generated and scored, the advantages are
  recomputed by the method's estimator and token modifiers. The method's per-row inputs are
  added: action ids, and for Lp-Reg or THR/NTHR one extra no-grad pass of the rollout policy that
  gives the proxy log-probs or the hidden-state scores.
* ``_prepare_inputs``: at the first micro-batch of each optimiser step, the token and sequence
  counts of the whole step. rlvr-lab normalises by them, so the accumulated gradient does not
  depend on how the step is split into micro-batches.
* ``_compute_loss``: TRL's fused forward gives (B, T) log-probs and entropies (full logits are
  never built). Then :func:`composed_loss` runs rlvr-lab's composition, the same as
  :func:`rlvr_lab.train.step.micro_batch_loss`: policy loss, token overrides, aggregation, KL,
  entropy bonus, auxiliary losses.

The method is named like rlvr-lab's presets (``method="llds"`` reads the packaged preset ``llds``), or
given as an ``algorithm`` block. ``overrides`` are ``key.path=value`` strings, as on the CLI.

Input mapping, TRL -> rlvr-lab
==============================

======================  =========================================================================
rlvr-lab                TRL
======================  =========================================================================
``input_ids``           ``cat(prompt_ids, completion_ids)``; ``response_start`` = prompt width
``attention_mask``      ``cat(prompt_mask, completion_mask)``
``loss_mask`` (B, T)    ``completion_mask * tool_mask`` (tool output never trains). A row that a
                        sample filter drops (PSR/NSR, GRPO-N) or that no reward function could
                        score (all ``None``) is masked out and left out of the sequence count.
                        That gives the same loss as removing the row.
``old_logprobs``        ``old_per_token_logps``. TRL computes it when the policy can move between
                        generation and loss: ``steps_per_generation > gradient_accumulation_steps``,
                        ``num_iterations > 1``, or vLLM importance-sampling correction. Otherwise
                        every micro-batch of a generation is trained before the first optimiser
                        step, and the current log-probs, detached, are exact (TRL's own rule).
``ref_logprobs``        ``ref_per_token_logps``. TRL computes it when ``beta != 0``. If the method
                        has ``algorithm.kl.coef > 0`` and ``beta == 0``, this trainer sets ``beta``
                        to that value on its copy of the args so that the reference model exists.
                        The weight of the KL loss is always ``algorithm.kl.coef``; TRL's ``beta``
                        only switches the reference on.
``rewards`` (B,)        Weighted sum of the reward functions (TRL's ``reward_weights``), plus
                        DAPO's overlong penalty when the method sets ``algorithm.overlong``.
``correct`` (B,)        Reward (of the ``correct_reward`` function, default the weighted sum)
                        ``> correct_threshold``. Feeds the likelihood signals and THR/NTHR's
                        correct set.
``group_ids``, ``G``    Generation order: TRL's sampler puts the ``num_generations`` completions
                        of a prompt in consecutive rows.
``advantages`` (B, T)   rlvr-lab's estimator on the (P, G) rewards, broadcast to tokens, then the
                        token modifiers. This replaces TRL's advantages (``scale_rewards``, eps 1e-4).
mini-batch              One optimiser step: ``gradient_accumulation_steps`` chunks of
                        ``per_device_train_batch_size`` rows. Counts are summed over processes and
                        divided by their number, because DDP averages the gradients.
``minibatches``         ``steps_per_generation // gradient_accumulation_steps``; ``epochs`` =
                        ``num_iterations``. TRL shuffles once per generation, not once per epoch.
``temperature``         ``args.temperature``. TRL's fused head divides the logits by it, as
                        rlvr-lab's scoring does.
``entropy``             Entropy of the current policy, from TRL's fused head.
``old_entropy``,        From the extra pass, which runs only for Lp-Reg and THR/NTHR.
``proxy_logprobs``,
THR scores
``ctx.global_step``     Index of the generation batch, counted from 0.
======================  =========================================================================

Metrics go to ``self._metrics[mode]`` under the native trainer's names, so dashboards compare runs
directly:

* Loss metrics (``grpo/pg_loss``, ``grpo/pg_clipfrac``, ``grpo/ppo_kl``, ``llds/*``, ...) are
  combined over the micro-batches of each optimiser step, as ``minibatch_update`` combines them:
  loss shares and counts are summed, rates are size-weighted means.
* The observatory's signals are computed once per generation batch, on its first pass: entropy
  summary, low-probability tokens, likelihood of correct and incorrect responses, ``kl/ref`` when a
  reference exists, ``logp/*`` and ``adv/*``. They use the rollout policy's log-probs. The entropy
  is the current policy's at the loss forward, which equals the rollout policy's in the first
  optimiser step of each generation. With Lp-Reg or THR the entropy comes from the extra pass
  instead and is exact.
* Estimator and filter metrics are logged at generation time.

The loss metrics replace TRL's own loss metrics: ``policy/entropy`` for ``entropy``, ``kl/ref`` and
``grpo/kl_loss`` for ``kl``, ``grpo/pg_clipfrac`` for ``clip_ratio/*``.

Not supported, each refused at construction with a message naming what to change (nothing is
silently dropped):

* Rollout-side methods that TRL's generation cannot do: DAPO's dynamic sampling, HAPO's adaptive
  sampling temperature, SPEAR's replay and tool-call bonus, rlvr-lab's search environments.
* TRL loss options that rlvr-lab's composition does not apply: ``top_entropy_quantile``,
  ``off_policy_mask_threshold``, ``importance_sampling_level="sequence"`` (use ``method="gspo"``),
  ``entropy_coef`` and adaptive entropy (use ``algorithm.entropy_coef``), ``delta``, vLLM
  importance-sampling correction.
* ``steps_per_generation`` that is not a multiple of ``gradient_accumulation_steps``: an optimiser
  step would then span two generations, and its token counts would not be known at its first
  micro-batch.

TRL options that only shape TRL's own loss are ignored, and the method's value is used instead:
``loss_type``, ``epsilon``, ``epsilon_high``, ``scale_rewards``, ``use_bias_correction_kl``, and
``beta``'s value (as above).

Importing this module does not import TRL. ``RlvrGRPOTrainer`` is built the first time it is
accessed; without TRL that access raises an ImportError that says how to install it.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rlvr_lab.config import Config, apply_override, build_config, deep_merge, parse_override, read_config_data
from rlvr_lab.objectives import (
    ADVANTAGE_ESTIMATORS,
    TOKEN_ADVANTAGE_MODIFIERS,
    Denominators,
    broadcast_to_tokens,
    denominators,
    overlong_penalty,
)
from rlvr_lab.objectives.thr import SCORE_KEY
from rlvr_lab.train.loop import advantage_summary, loss_spec
from rlvr_lab.train.methods import SINGLE_TURN_PROVIDES, Methods, both, check_inputs, startup_warnings
from rlvr_lab.train.observe import Observer
from rlvr_lab.train.step import (
    LossSpec,
    is_summed_metric,
    loss_from_logprobs,
    score_tokens,
    step_context,
    token_summary,
)
from rlvr_lab.presets import preset_names
from rlvr_lab.presets import preset_path as packaged_preset
from rlvr_lab.types import Batch

MIN_TRL_VERSION = (1, 16)
TESTED_TRL_VERSION = "1.16"

# Columns this trainer adds to TRL's generation batch. TRL shuffles and splits every (B, ...) tensor
# of that dict in unison, so each column follows its rows into the micro-batches.
REWARDS_KEY = "rlvr_rewards"  # (B,) float32, shaped sequence reward
CORRECT_KEY = "rlvr_correct"  # (B,) bool
GROUP_KEY = "rlvr_group_ids"  # (B,) long, prompt index in the (global) generation batch
KEEP_KEY = "rlvr_keep"  # (B,) bool, False for rows a sample filter dropped or no reward function scored
EXTRA_PREFIX = "rlvr_extra/"  # + name of a per-row method tensor (Batch.extras): action_ids, proxy_logprobs, ...

# Per-token inputs of multimodal models that TRL's forward takes from ``inputs``.
MULTIMODAL_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)

# TRL options that its own loss applies and rlvr-lab's composition does not: (field, default, what to do).
TRL_LOSS_OPTIONS = (
    ("top_entropy_quantile", 1.0, "the 80/20 high-entropy token mask is not an rlvr-lab component; leave it at 1.0"),
    ("off_policy_mask_threshold", None, "DeepSeek-V3.2's off-policy sequence mask is not an rlvr-lab component; leave it unset"),
    ("importance_sampling_level", "token", "for a sequence-level ratio use method='gspo'"),
    ("entropy_coef", 0.0, "set the entropy bonus with overrides=['algorithm.entropy_coef=...']"),
    ("use_adaptive_entropy", False, "adaptive entropy control is not an rlvr-lab component; leave it off"),
    ("delta", None, "INTELLECT-2's two-sided clip is not an rlvr-lab component (the nearest is the dual clip for "
                    "A < 0: overrides=['algorithm.policy_loss.params.clip_ratio_c=3.0']); leave it unset"),
)


# ---- the method: an rlvr-lab config read from a preset, checked against what TRL can do ------------------


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

    Exactly one of ``method`` (a preset name or YAML path; default ``"grpo"``) and ``algorithm`` (an
    ``algorithm`` block, as a mapping or an ``AlgorithmConfig``). ``overrides`` (``key.path=value``)
    come next. The batch layout from ``trl_args`` comes last, because TRL decides it. Raises a
    ``ValueError`` naming the key when the method needs something TRL cannot provide (see
    :func:`check_trl_support`).
    """
    if method is not None and algorithm is not None:
        raise ValueError("pass either method= (a preset name) or algorithm= (an algorithm block), not both")
    if algorithm is None:
        data = read_config_data(preset_path(method or "grpo"))  # what the YAML files say, `extends` merged
    else:
        block = algorithm.model_dump(mode="json") if hasattr(algorithm, "model_dump") else dict(algorithm)
        data = {"algorithm": block}
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


# ---- TRL's tensors as an rlvr-lab Batch, and the loss composition -----------------------------------------


def batch_from_trl(inputs: Mapping[str, Any]) -> Batch:
    """An rlvr-lab :class:`~rlvr_lab.types.Batch` over the rows of a TRL input dict (see the module table).

    ``advantages`` may be TRL's (B,) or this trainer's (B, T); ``old_logprobs`` stays None when TRL
    did not compute it (the caller fills in the current log-probs, detached).
    """
    prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
    B = completion_ids.shape[0]
    mask = inputs["completion_mask"].bool()  # (B, T)
    if inputs.get("tool_mask") is not None:
        mask = mask & inputs["tool_mask"].bool()
    keep = inputs.get(KEEP_KEY)
    if keep is not None:
        mask = mask & keep.bool().unsqueeze(-1)
    advantages = inputs.get("advantages")
    if advantages is not None and advantages.dim() == 1:
        advantages = broadcast_to_tokens(advantages, mask)
    extras = {k[len(EXTRA_PREFIX):]: v for k, v in inputs.items() if k.startswith(EXTRA_PREFIX)}
    if inputs.get(CORRECT_KEY) is not None:
        extras["correct"] = inputs[CORRECT_KEY].bool()
    rewards = inputs.get(REWARDS_KEY)
    group_ids = inputs.get(GROUP_KEY)
    device = completion_ids.device
    return Batch(
        input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
        attention_mask=torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1).bool(),
        response_start=prompt_ids.shape[1],
        loss_mask=mask,
        rewards=torch.zeros(B, device=device) if rewards is None else rewards,
        group_ids=torch.arange(B, device=device) if group_ids is None else group_ids,
        advantages=advantages,
        old_logprobs=inputs.get("old_per_token_logps"),
        ref_logprobs=inputs.get("ref_per_token_logps"),
        sampler_logprobs=inputs.get("sampling_per_token_logps"),
        extras=extras,
    )


def composed_loss(
    logprobs: torch.Tensor,
    entropy: torch.Tensor | None,
    mb: Batch,
    spec: LossSpec,
    den: Denominators | None,
    *,
    scale: float = 1.0,
    extras: dict[str, Any] | None = None,
    global_step: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """rlvr-lab's loss of one micro-batch from TRL's (B, T) ``logprobs`` (with grad) and ``entropy``: the
    native trainer's own composition (:func:`rlvr_lab.train.step.loss_from_logprobs`)."""
    return loss_from_logprobs(logprobs, entropy, mb, spec, den, scale=scale, extras=extras, global_step=global_step)


def rows_of(batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """TRL input dicts with the same columns (micro-batches of one generation) joined row-wise."""
    first = batches[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            out[key] = torch.cat([b[key] for b in batches])
        else:
            out[key] = value
    return out


def combined_rewards(
    rewards_per_func: torch.Tensor, weights: torch.Tensor, *, correct_column: int | None, correct_threshold: float,
    group_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rewards, correct, scorable), each (N,), from TRL's (N, F) per-function rewards (NaN: not scored).

    A row that no function scored gets its group's mean reward, so it does not move the group's
    baseline, and ``scorable`` False, so it never trains.
    """
    scorable = ~torch.isnan(rewards_per_func).all(dim=1)  # (N,)
    total = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)  # (N,)
    total = torch.where(scorable, total, torch.full_like(total, float("nan")))
    grouped = total.view(-1, group_size)  # (P, G)
    fill = torch.nanmean(grouped, dim=1, keepdim=True).nan_to_num(0.0).expand_as(grouped)
    rewards = torch.where(torch.isnan(grouped), fill, grouped).reshape(-1).float()
    source = rewards if correct_column is None else rewards_per_func[:, correct_column].nan_to_num(float("-inf"))
    correct = (source > correct_threshold) & scorable
    return rewards, correct, scorable


@dataclass
class Window:
    """What one optimiser step's micro-batches share: whole-step counts and method state."""

    den: Denominators | None
    extras: dict[str, Any]
    rows: int  # rows of the step on this process
    scale: float  # 1 with whole-step denominators; 1/micro-batches without (spec.global_normalization False)


# ---- the trainer (built on first access, so that importing this module does not import TRL) --------------


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _build_trainer_class():
    try:
        import trl
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as exc:
        raise ImportError(
            "rlvr_lab.integrations.trl.RlvrGRPOTrainer needs TRL >= 1.16: pip install 'rlvr-lab[trl]' "
            f"(import failed: {exc})"
        ) from exc
    if _version_tuple(trl.__version__) < MIN_TRL_VERSION:
        raise ImportError(f"RlvrGRPOTrainer needs TRL >= 1.16 (it overrides GRPOTrainer._compute_loss); found {trl.__version__}")
    if not trl.__version__.startswith(TESTED_TRL_VERSION):
        warnings.warn(
            f"RlvrGRPOTrainer was tested with TRL {TESTED_TRL_VERSION}.x and overrides private GRPOTrainer methods; "
            f"found {trl.__version__}", stacklevel=3,
        )

    class RlvrGRPOTrainer(GRPOTrainer):
        """TRL's ``GRPOTrainer`` with rlvr-lab's advantages, per-token loss and observatory.

        Args (besides ``GRPOTrainer``'s, which pass through unchanged):
            method: rlvr-lab preset name (``"grpo"``, ``"llds"``, ``"dr_grpo"``, ``"lp_reg"``, ...; see
                :func:`available_methods`) or a path to a YAML file. Default ``"grpo"``.
            algorithm: an rlvr-lab ``algorithm`` block instead of ``method``.
            overrides: ``key.path=value`` strings applied on top (e.g. ``"algorithm.kl.coef=0"``).
            correct_reward: name or index of the reward function whose value decides ``correct``
                (default: the weighted sum of all of them).
            correct_threshold: a response is correct when that reward is above this (default 0).

        After construction: ``rlvr_config`` (the validated rlvr-lab config), ``rlvr_spec`` (its
        :class:`~rlvr_lab.train.step.LossSpec`) and ``rlvr_methods``.
        """

        _tag_names = ["trl", "grpo", "rlvr-lab"]

        def __init__(
            self,
            model,
            reward_funcs=None,
            args=None,
            *,
            method: str | None = None,
            algorithm: Mapping[str, Any] | Any | None = None,
            overrides: Sequence[str] = (),
            correct_reward: str | int | None = None,
            correct_threshold: float = 0.0,
            **kwargs,
        ):
            if args is None:
                args = GRPOConfig(output_dir="trainer_output")
            check_trl_args(args)
            cfg = method_config(
                method, algorithm=algorithm, overrides=overrides, trl_args=args, num_processes=args.world_size
            )
            for message in trl_startup_warnings(cfg):
                warnings.warn(message, stacklevel=2)
            if cfg.algorithm.kl.coef > 0 and args.beta == 0.0:
                # TRL loads a reference model and computes ref_per_token_logps only when beta != 0; the KL weight
                # itself is rlvr-lab's algorithm.kl.coef. Work on a copy: the caller's args stay as they were.
                args = copy.copy(args)
                args.beta = cfg.algorithm.kl.coef
            super().__init__(model, reward_funcs, args=args, **kwargs)
            self.rlvr_config = cfg
            self.rlvr_spec = loss_spec(cfg)
            self.rlvr_methods = Methods(cfg, pad_token_id=self._tokenizer.pad_token_id or 0)
            self.rlvr_observer = Observer(cfg.observe)  # its signal functions only: no model, no gradient hooks
            self._rlvr_correct_column = self._resolve_reward_column(correct_reward)
            self._rlvr_correct_threshold = correct_threshold
            self._rlvr_rewards_per_func: torch.Tensor | None = None
            self._rlvr_context = None  # the mini-batch context function of the current generation
            self._rlvr_window: Window | None = None
            self._rlvr_sums: dict[str, float] = defaultdict(float)
            self._rlvr_rollout_parts: list[Batch] = []

        # ---- set-up helpers ------------------------------------------------------------------------

        def _resolve_reward_column(self, correct_reward: str | int | None) -> int | None:
            if correct_reward is None:
                return None
            names = list(self.reward_func_names)
            if isinstance(correct_reward, int):
                if not 0 <= correct_reward < len(names):
                    raise ValueError(f"correct_reward={correct_reward}: there are {len(names)} reward functions {names}")
                return correct_reward
            if correct_reward not in names:
                raise ValueError(f"correct_reward={correct_reward!r} is not a reward function; known: {names}")
            return names.index(correct_reward)

        @property
        def _generate_every(self) -> int:
            return self.args.steps_per_generation * self.num_iterations

        @property
        def rlvr_needs_old_pass(self) -> bool:
            """Lp-Reg's proxy log-probs or THR/NTHR's hidden-state scores: one extra no-grad pass per generation."""
            return bool(self.rlvr_methods.chunk_fns(self.rlvr_spec.temperature)) or self.rlvr_methods.needs_hidden

        # ---- generation: rewards, method inputs, advantages ----------------------------------------

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._rlvr_rewards_per_func = rewards_per_func  # (N, F) over all processes, NaN where not scored
            return rewards_per_func

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            mode = "train" if self.model.training else "eval"
            group_size = self.num_generations if mode == "train" else self.num_generations_eval
            step = self._step // self._generate_every  # RL step (generation batch), from 0
            batch, metrics = self.rlvr_rollout(out, group_size=group_size, step=step)
            out["advantages"] = batch.advantages  # (B, T): TRL's loss accepts token advantages too
            out[REWARDS_KEY] = batch.rewards
            out[CORRECT_KEY] = batch.extras.pop("correct")
            out[GROUP_KEY] = batch.group_ids
            out[KEEP_KEY] = batch.extras.pop("keep")
            out.update({EXTRA_PREFIX + k: v for k, v in batch.extras.items()})
            for key, value in metrics.items():
                self._metrics[mode][key].append(value)
            if mode == "train":
                self._rlvr_context = self.rlvr_methods.context(step)
                self._rlvr_rollout_parts = []
            return out

        def rlvr_rollout(self, out: dict[str, Any], *, group_size: int, step: int) -> tuple[Batch, dict[str, float]]:
            """This process's rows of a scored generation batch with rlvr-lab's rewards, inputs and advantages.

            The same stages as the native trainer's ``prepare`` and ``advantages``. Estimators see the
            (P, G) rewards of all processes; token modifiers see this process's rows, which must be
            whole groups for THR/NTHR.
            """
            cfg, methods, G = self.rlvr_config, self.rlvr_methods, group_size
            local = batch_from_trl(out)
            B, device = len(local), local.input_ids.device
            rewards_all, correct_all, scorable_all = combined_rewards(
                self._rlvr_rewards_per_func.to(device), self.reward_weights, correct_column=self._rlvr_correct_column,
                correct_threshold=self._rlvr_correct_threshold, group_size=G,
            )
            lengths_all = self.accelerator.gather(local.loss_mask.sum(-1))  # (N,) policy tokens
            metrics: dict[str, float] = {}
            ol = cfg.algorithm.overlong
            if ol is not None:
                response_lengths = self.accelerator.gather(out["completion_mask"].sum(-1)).cpu()
                penalty = overlong_penalty(response_lengths, max_len=ol.max_len, cache_len=ol.cache_len, factor=ol.factor)
                rewards_all = rewards_all + penalty.to(rewards_all.device)
                metrics["dapo/overlong_reward"] = float(penalty.mean())
                metrics["dapo/overlong_ratio"] = float((penalty < 0).float().mean())
            rows = slice(self.accelerator.process_index * B, (self.accelerator.process_index + 1) * B)
            local.rewards = rewards_all[rows]
            local.group_ids = torch.arange(len(rewards_all), device=device)[rows] // G
            local.extras["correct"] = correct_all[rows]
            methods.row_inputs(local)
            if self.rlvr_needs_old_pass:
                self._rlvr_old_pass(local, out)

            # the native trainer's `advantages`: estimator on (P, G), broadcast, token modifiers, sample filters
            ctx = step_context(local, None, entropy=None, global_step=step)
            ctx.group_size = G
            est_ctx = replace(ctx, rewards=rewards_all, correct=correct_all, response_lengths=lengths_all,
                              group_ids=torch.arange(len(rewards_all), device=device) // G)
            grouped = rewards_all.view(-1, G)  # (P, G)
            comp = cfg.algorithm.advantage
            seq_adv = ADVANTAGE_ESTIMATORS.get(comp.name)(grouped, est_ctx, **comp.params)  # (P, G)
            keep = methods.estimator_keep(grouped, est_ctx)
            metrics.update(methods.estimator_metrics(grouped, seq_adv, est_ctx, keep))
            filtered = keep is not None
            keep = None if keep is None else keep.reshape(-1)[rows]
            adv = broadcast_to_tokens(seq_adv.reshape(-1)[rows].to(device), local.loss_mask)  # (B, T)
            for mod in cfg.algorithm.token_modifiers:
                mod_keep = methods.modifier_keep(mod, adv, local.loss_mask, ctx)
                filtered |= mod_keep is not None
                keep = both(keep, mod_keep)
                adv, extra = TOKEN_ADVANTAGE_MODIFIERS.get(mod.name)(adv, local.loss_mask, ctx, **mod.params)
                metrics.update({k: float(v) for k, v in extra.items()})
            if filtered:
                metrics["filter/kept_rows"] = float(keep.sum())
                metrics["filter/dropped_rows"] = float((~keep).sum())
            unscorable = ~scorable_all[rows]
            if bool(unscorable.any()):
                metrics["rewards/unscorable_rows"] = float(unscorable.sum())
            local.advantages = adv
            local.extras["keep"] = both(keep, scorable_all[rows]) if keep is not None else scorable_all[rows].clone()
            return local, metrics

        @torch.no_grad()
        def _rlvr_old_pass(self, batch: Batch, out: Mapping[str, Any]) -> None:
            """rlvr-lab's old-policy pass for the methods that need more than sampled-token log-probs: the
            rollout policy's entropy, the Lp-Reg proxy (chunk-wise from the full logits) and THR's scores."""
            if out.get("pixel_values") is not None:
                raise ValueError("Lp-Reg and THR/NTHR need a text-only model here: the extra old-policy pass has no image inputs")
            methods, temperature = self.rlvr_methods, self.rlvr_spec.temperature
            model = self.accelerator.unwrap_model(self.model)
            old = score_tokens(
                model, batch, temperature=temperature, micro_batch_size=self.args.per_device_train_batch_size,
                with_entropy=True, chunk_fns=methods.chunk_fns(temperature), with_hidden=methods.needs_hidden,
            )
            batch.extras["old_entropy"] = old.entropy
            batch.extras.update(old.extras)
            if old.hidden is not None:
                scored = replace(batch, old_logprobs=old.logprobs if batch.old_logprobs is None else batch.old_logprobs)
                batch.extras[SCORE_KEY] = methods.token_hidden_reward(model, scored, old.hidden, temperature)

        # ---- the optimiser step's counts -----------------------------------------------------------

        def _prepare_inputs(self, generation_batch):
            inputs = super()._prepare_inputs(generation_batch)
            if self.model.training:
                ga = self.args.gradient_accumulation_steps
                if self._step % ga == 0:  # first micro-batch of an optimiser step: count the whole step
                    start = self._step % self.args.steps_per_generation
                    step_inputs = rows_of(self._buffered_inputs[start : start + ga])
                    self._rlvr_window = self.rlvr_window(step_inputs, ga, context=self._rlvr_context)
            return inputs

        def rlvr_window(self, step_inputs: Mapping[str, Any], micro_batches: int, *, context=None) -> Window:
            """Counts and method state of one optimiser step from all its rows (``step_inputs``).

            ``context`` is the generation's mini-batch context function (``Methods.context``: the
            Clip-Cov generator, LLDS's whole-step ``|Y_pre|``). None makes a fresh one for this step.
            """
            spec = self.rlvr_spec
            mini = batch_from_trl(step_inputs)
            keep = step_inputs.get(KEEP_KEY)
            kept = mini if keep is None else mini.select(keep.bool().nonzero().flatten())
            if context is None:
                context = self.rlvr_methods.context(self._step // self._generate_every)
            extras = context(kept)
            if not spec.global_normalization:
                return Window(den=None, extras=extras, rows=len(mini), scale=1.0 / micro_batches)
            local = denominators(kept.loss_mask, exclude_empty_sequences=spec.exclude_empty_sequences)
            counts = torch.tensor([local.num_tokens, local.num_sequences], device=mini.input_ids.device)
            total = self.accelerator.gather(counts.unsqueeze(0)).sum(0) / self.accelerator.num_processes
            den = Denominators(num_tokens=float(total[0]), num_sequences=float(total[1]))
            return Window(den=den, extras=extras, rows=len(mini), scale=1.0)

        # ---- the loss --------------------------------------------------------------------------------

        def rlvr_loss(
            self, model, inputs: Mapping[str, Any], window: Window | None = None
        ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Batch]:
            """rlvr-lab's loss of one TRL micro-batch: TRL's fused forward, then :func:`composed_loss`.

            ``window`` holds the optimiser step's counts and method state. Without it the micro-batch
            counts as a whole step, as in evaluation. Also returns the micro-batch as a
            :class:`Batch` with the rollout policy's log-probs and the entropy filled in, detached, for
            the signals.
            """
            mb = batch_from_trl(inputs)
            if window is None:
                window = self.rlvr_window(inputs, 1)
            prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
            logprobs, entropy, aux_loss = self._get_per_token_logps_and_entropies(
                model,
                torch.cat([prompt_ids, completion_ids], dim=1),
                torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1),
                completion_ids.size(1),
                compute_entropy=True,
                compute_aux_loss=self.aux_loss_enabled,
                **{k: inputs.get(k) for k in MULTIMODAL_KEYS},
            )
            loss, metrics = composed_loss(
                logprobs, entropy, mb, self.rlvr_spec, window.den, scale=window.scale, extras=window.extras,
                global_step=self._step // self._generate_every,
            )
            if self.aux_loss_enabled:  # MoE load balancing, as TRL adds it
                loss = loss + self.router_aux_loss_coef * aux_loss * len(mb) / window.rows
                metrics["moe/aux_loss"] = aux_loss.detach()
            if mb.old_logprobs is None:
                mb.old_logprobs = logprobs.detach()
            mb.extras.setdefault("old_entropy", entropy.detach())
            return loss, metrics, mb

        def _compute_loss(self, model, inputs):
            mode = "train" if self.model.training else "eval"
            window = self._rlvr_window if mode == "train" else None
            loss, metrics, mb = self.rlvr_loss(model, inputs, window)
            rows = window.rows if window is not None else len(mb)
            for key, value in metrics.items():
                self._rlvr_sums[key] += float(value) if is_summed_metric(key) else float(value) * len(mb) / rows
            last = mode == "eval" or (self._step + 1) % self.args.gradient_accumulation_steps == 0
            if last:
                for key, value in self._rlvr_sums.items():
                    self._metrics[mode][key].append(value)
                self._rlvr_sums = defaultdict(float)
            if mode == "train" and self._step % self._generate_every < self.args.steps_per_generation:
                self._rlvr_rollout_parts.append(mb)  # first pass over this generation: its rows, once each
                if len(self._rlvr_rollout_parts) == self.args.steps_per_generation:
                    for key, value in self.rlvr_signals(self._rlvr_rollout_parts).items():
                        self._metrics[mode][key].append(value)
                    self._rlvr_rollout_parts = []
            return loss

        def rlvr_signals(self, parts: Sequence[Batch]) -> dict[str, float]:
            """The observatory's per-step signals of one generation batch (the native trainer's
            ``token_summary``, ``Observer.before_update`` and ``advantage_summary``)."""
            batch = _join(parts)
            return {
                **token_summary(batch, batch.extras.get("old_entropy")),
                **self.rlvr_observer.before_update(batch),
                **advantage_summary(batch),
            }

    RlvrGRPOTrainer.__module__ = __name__
    RlvrGRPOTrainer.__qualname__ = "RlvrGRPOTrainer"
    return RlvrGRPOTrainer


def _join(parts: Sequence[Batch]) -> Batch:
    """Micro-batches of one generation (equal widths) as one detached batch."""
    def cat(get):
        values = [get(p) for p in parts]
        return None if any(v is None for v in values) else torch.cat([v.detach() for v in values])

    names = set.intersection(*(set(p.extras) for p in parts))
    return Batch(
        input_ids=cat(lambda p: p.input_ids), attention_mask=cat(lambda p: p.attention_mask),
        response_start=parts[0].response_start, loss_mask=cat(lambda p: p.loss_mask), rewards=cat(lambda p: p.rewards),
        group_ids=cat(lambda p: p.group_ids), advantages=cat(lambda p: p.advantages),
        old_logprobs=cat(lambda p: p.old_logprobs), ref_logprobs=cat(lambda p: p.ref_logprobs),
        extras={k: cat(lambda p, k=k: p.extras[k]) for k in names},
    )


def __getattr__(name: str):
    if name == "RlvrGRPOTrainer":
        cls = _build_trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "RlvrGRPOTrainer"})
