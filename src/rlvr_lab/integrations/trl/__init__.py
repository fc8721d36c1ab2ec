"""rlvr-lab's objectives and observatory inside TRL's ``GRPOTrainer`` (TRL >= 1.16).

    from trl import GRPOConfig
    from rlvr_lab.integrations.trl import RlvrGRPOTrainer, available_methods

    args = GRPOConfig(output_dir="out", num_generations=8, steps_per_generation=4, ...)
    trainer = RlvrGRPOTrainer(model="path/to/model", reward_funcs=reward_fn, args=args,
                              train_dataset=ds, method=preset)  # preset: one of available_methods()
    trainer.train()

TRL keeps what it does well: data, generation (vLLM included), reward functions, the optimiser
loop, distributed training. rlvr-lab takes over where the objective lives. This is TRL's own
pattern (``trl.experimental.gmpo.GMPOTrainer`` overrides only ``_compute_loss``; see
``shared/specs/INTEGRATIONS.md`` section 2). Every rlvr-lab stage is the native trainer's own
function (:mod:`rlvr_lab.train.stages`, :func:`rlvr_lab.train.step.loss_from_logprobs`):

* ``_generate_and_score_completions``: after TRL has generated and scored, the rewards are shaped
  (:func:`~rlvr_lab.train.stages.shape_rewards`) and the advantages recomputed by the method's
  estimator and token modifiers (:func:`~rlvr_lab.train.stages.sequence_advantages`,
  :func:`~rlvr_lab.train.stages.token_advantages`). The method's per-row inputs are added: action
  ids, and, when a component needs the rollout policy's full logits or hidden states (its registry
  ``needs``), one extra no-grad pass (:func:`~rlvr_lab.train.stages.old_policy_pass`, keeping TRL's
  old log-probs).
* ``_prepare_inputs``: at the first micro-batch of each optimiser step, the token and sequence
  counts of the whole step. rlvr-lab normalises by them, so the accumulated gradient does not
  depend on how the step is split into micro-batches.
* ``_compute_loss``: TRL's fused forward gives (B, T) log-probs and entropies (full logits are
  never built). Then :func:`~rlvr_lab.train.step.loss_from_logprobs`, the native micro-batch loss:
  policy loss, token overrides, aggregation, KL, entropy bonus, auxiliary losses.

The method is named like rlvr-lab's presets (``method=<name>`` reads the packaged preset of that
name), or given as an ``algorithm`` block; with neither, rlvr-lab's default algorithm runs.
``overrides`` are ``key.path=value`` strings, as on the CLI.

Modules: :mod:`.method` (the method's config and what TRL can run), :mod:`.batch` (TRL's tensors as
rlvr-lab's), :mod:`.trainer` (the ``GRPOTrainer`` subclass, the only one that imports TRL).

Input mapping, TRL -> rlvr-lab
==============================

======================  =========================================================================
rlvr-lab                TRL
======================  =========================================================================
``input_ids``           ``cat(prompt_ids, completion_ids)``; ``response_start`` = prompt width
``attention_mask``      ``cat(prompt_mask, completion_mask)``
``loss_mask`` (B, T)    ``completion_mask * tool_mask`` (tool output never trains). A row that a
                        component's ``sample_filter`` drops or that no reward function could
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
``rewards`` (B,)        Weighted sum of the reward functions (TRL's ``reward_weights``), then
                        :func:`~rlvr_lab.train.stages.shape_rewards` (DAPO's overlong penalty when
                        the method sets ``algorithm.overlong``).
``correct`` (B,)        Reward (of the ``correct_reward`` function, default the weighted sum)
                        ``> correct_threshold``. Feeds the likelihood signals and the components
                        that read a verdict.
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
``old_entropy``,        From the extra old-policy pass, which runs only when a component needs
method extras           the full logits or the hidden states.
``ctx.global_step``     Index of the generation batch, counted from 0.
======================  =========================================================================

Metrics go to ``self._metrics[mode]`` under the native trainer's names, so dashboards compare runs
directly:

* Loss metrics (``grpo/pg_loss``, ``grpo/pg_clipfrac``, ``grpo/ppo_kl``, ``<component>/*``, ...) are
  combined over the micro-batches of each optimiser step, as ``minibatch_update`` combines them:
  loss shares and counts are summed, rates are size-weighted means.
* The observatory's signals are computed once per generation batch, on its first pass: entropy
  summary, low-probability tokens, likelihood of correct and incorrect responses, ``kl/ref`` when a
  reference exists, ``logp/*`` and ``adv/*``. They use the rollout policy's log-probs. The entropy
  is the current policy's at the loss forward, which equals the rollout policy's in the first
  optimiser step of each generation. When the extra old-policy pass runs, the entropy comes from it
  instead and is exact.
* Estimator and filter metrics are logged at generation time.

The loss metrics replace TRL's own loss metrics: ``policy/entropy`` for ``entropy``, ``kl/ref`` and
``grpo/kl_loss`` for ``kl``, ``grpo/pg_clipfrac`` for ``clip_ratio/*``.

Not supported, each refused at construction with a message naming what to change (nothing is
silently dropped):

* Rollout-side methods that TRL's generation cannot do: DAPO's dynamic sampling, HAPO's adaptive
  sampling temperature, SPEAR's replay and tool-call bonus, rlvr-lab's search environments.
* TRL loss options that rlvr-lab's composition does not apply: ``top_entropy_quantile``,
  ``off_policy_mask_threshold``, ``importance_sampling_level="sequence"`` (pick a method whose policy
  loss has a sequence-level ratio), ``entropy_coef`` and adaptive entropy (use
  ``algorithm.entropy_coef``), ``delta``, vLLM importance-sampling correction.
* ``steps_per_generation`` that is not a multiple of ``gradient_accumulation_steps``: an optimiser
  step would then span two generations, and its token counts would not be known at its first
  micro-batch.

TRL options that only shape TRL's own loss are ignored, and the method's value is used instead:
``loss_type``, ``epsilon``, ``epsilon_high``, ``scale_rewards``, ``use_bias_correction_kl``, and
``beta``'s value (as above).

Importing this package does not import TRL. ``RlvrGRPOTrainer`` is loaded the first time it is
accessed; without TRL that access raises an ImportError that says how to install it.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlvr_lab.integrations.trl.batch import (
    CORRECT_KEY,
    EXTRA_PREFIX,
    GROUP_KEY,
    KEEP_KEY,
    MULTIMODAL_KEYS,
    REWARDS_KEY,
    Window,
    batch_from_trl,
    combined_rewards,
    rows_of,
    trl_columns,
)
from rlvr_lab.integrations.trl.method import (
    TRL_LOSS_OPTIONS,
    available_methods,
    check_trl_args,
    check_trl_support,
    method_config,
    preset_path,
    trl_shape,
    trl_startup_warnings,
)

__all__ = [
    "CORRECT_KEY",
    "EXTRA_PREFIX",
    "GROUP_KEY",
    "KEEP_KEY",
    "MULTIMODAL_KEYS",
    "REWARDS_KEY",
    "TRL_LOSS_OPTIONS",
    "RlvrGRPOTrainer",
    "Window",
    "available_methods",
    "batch_from_trl",
    "check_trl_args",
    "check_trl_support",
    "combined_rewards",
    "method_config",
    "preset_path",
    "rows_of",
    "trl_columns",
    "trl_shape",
    "trl_startup_warnings",
]


def __getattr__(name: str) -> Any:
    if name == "RlvrGRPOTrainer":  # imports TRL, on first access only
        cls = importlib.import_module("rlvr_lab.integrations.trl.trainer").RlvrGRPOTrainer
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "RlvrGRPOTrainer"})
