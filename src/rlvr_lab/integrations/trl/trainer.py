"""``RlvrGRPOTrainer``: TRL's ``GRPOTrainer`` with rlvr-lab's advantages, per-token loss and observatory.

Importing this module imports TRL (``rlvr_lab.integrations.trl`` loads it on first access to the
class). Every stage it runs is the native trainer's own function (:mod:`rlvr_lab.train.stages`,
:func:`rlvr_lab.train.step.loss_from_logprobs`); what is here is only where TRL's data comes from and
goes to.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

MIN_TRL_VERSION = (1, 16)
TESTED_TRL_VERSION = "1.16"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


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
        f"found {trl.__version__}", stacklevel=2,
    )

from rlvr_lab.integrations.trl.batch import (  # noqa: E402
    KEEP_KEY,
    MULTIMODAL_KEYS,
    Window,
    batch_from_trl,
    combined_rewards,
    join,
    rows_of,
    trl_columns,
)
from rlvr_lab.integrations.trl.method import check_trl_args, method_config, trl_startup_warnings  # noqa: E402
from rlvr_lab.objectives import Denominators, denominators  # noqa: E402
from rlvr_lab.train.loop import advantage_summary, loss_spec  # noqa: E402
from rlvr_lab.train.methods import Methods, both  # noqa: E402
from rlvr_lab.train.observe import Observer  # noqa: E402
from rlvr_lab.train.stages import old_policy_pass, sequence_advantages, shape_rewards, token_advantages  # noqa: E402
from rlvr_lab.train.step import accumulate_metrics, loss_from_logprobs, step_context, token_summary  # noqa: E402
from rlvr_lab.types import Batch  # noqa: E402


class RlvrGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with rlvr-lab's advantages, per-token loss and observatory.

    Args (besides ``GRPOTrainer``'s, which pass through unchanged):
        method: rlvr-lab preset name (see :func:`~rlvr_lab.integrations.trl.available_methods`) or a
            path to a YAML file. Default: rlvr-lab's default algorithm.
        algorithm: an rlvr-lab ``algorithm`` block instead of ``method``.
        overrides: ``key.path=value`` strings applied on top (e.g. ``"algorithm.kl.coef=0"``).
        correct_reward: name or index of the reward function whose value decides ``correct``
            (default: the weighted sum of all of them).
        correct_threshold: a response is correct when that reward is above this (default 0).

    After construction: ``rlvr_config`` (the validated rlvr-lab config), ``rlvr_spec`` (its
    :class:`~rlvr_lab.train.step.LossSpec`) and ``rlvr_methods``.
    """

    _tag_names = ["trl", "rlvr-lab"]

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
        """A component needs more than sampled-token log-probs from the rollout policy (a per-chunk
        function of its full logits, or its hidden states): one extra no-grad pass per generation."""
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
        out.update(trl_columns(batch))
        for key, value in metrics.items():
            self._metrics[mode][key].append(value)
        if mode == "train":
            self._rlvr_context = self.rlvr_methods.context(step, batch)
            self._rlvr_rollout_parts = []
        return out

    def rlvr_rollout(self, out: dict[str, Any], *, group_size: int, step: int) -> tuple[Batch, dict[str, float]]:
        """This process's rows of a scored generation batch with rlvr-lab's rewards, inputs and advantages.

        The native trainer's stages (:mod:`rlvr_lab.train.stages`): reward shaping and the estimator
        run on the (P, G) rewards of all processes, the token modifiers on this process's rows (which
        must be whole groups for a modifier that reads its group). Rows a sample filter drops stay in
        the batch with ``keep`` False: their tokens leave the loss, as if they were removed.
        """
        cfg, methods, G = self.rlvr_config, self.rlvr_methods, group_size
        local = batch_from_trl(out)
        B, device = len(local), local.input_ids.device
        rewards_all, correct_all, scorable_all = combined_rewards(
            self._rlvr_rewards_per_func.to(device), self.reward_weights, correct_column=self._rlvr_correct_column,
            correct_threshold=self._rlvr_correct_threshold, group_size=G,
        )
        response_lengths = self.accelerator.gather(out["completion_mask"].sum(-1))  # (N,) every response token
        rewards_all, metrics = shape_rewards(cfg, methods, rewards_all, response_lengths, step=step)
        rows = slice(self.accelerator.process_index * B, (self.accelerator.process_index + 1) * B)
        group_ids_all = torch.arange(len(rewards_all), device=device) // G
        local.rewards = rewards_all[rows]
        local.group_ids = group_ids_all[rows]
        local.extras["correct"] = correct_all[rows]
        methods.row_inputs(local)
        if self.rlvr_needs_old_pass:
            self._rlvr_old_pass(local, out)

        ctx = step_context(local, None, entropy=None, global_step=step)
        ctx.group_size = G
        est_ctx = replace(ctx, rewards=rewards_all, correct=correct_all, group_ids=group_ids_all,
                          response_lengths=self.accelerator.gather(local.loss_mask.sum(-1)))  # (N,) policy tokens
        seq_adv, keep, est_metrics = sequence_advantages(cfg, methods, rewards_all.view(-1, G), est_ctx)  # (P, G)
        keep = None if keep is None else keep.reshape(-1)[rows]
        adv, keep, mod_metrics = token_advantages(cfg, methods, seq_adv.reshape(-1)[rows], local.loss_mask, ctx, keep)
        metrics.update({**est_metrics, **mod_metrics})
        if keep is not None:  # as Methods.drop_rows reports the rows it removes
            metrics["filter/kept_rows"] = float(keep.sum())
            metrics["filter/dropped_rows"] = float((~keep).sum())
        scorable = scorable_all[rows]
        if not bool(scorable.all()):
            metrics["rewards/unscorable_rows"] = float((~scorable).sum())
        local.advantages = adv  # (B, T)
        local.extras["keep"] = scorable.clone() if keep is None else both(keep, scorable)
        return local, metrics

    def _rlvr_old_pass(self, batch: Batch, out: Mapping[str, Any]) -> None:
        """The native old-policy pass for what the components need beyond sampled-token log-probs;
        TRL's own old log-probs (or None: on-policy) stay as they are."""
        if out.get("pixel_values") is not None:
            raise ValueError("the extra old-policy pass (full logits or hidden states) has no image inputs: "
                             "this method needs a text-only model here")
        old_policy_pass(
            self.accelerator.unwrap_model(self.model), batch, self.rlvr_methods,
            temperature=self.rlvr_spec.temperature, micro_batch_size=self.args.per_device_train_batch_size,
            share_prompts=self.rlvr_spec.share_prompts, keep_logprobs=False,
        )

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
        components' ``minibatch_context`` hooks and the step's generator). None makes a fresh one.
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
        """rlvr-lab's loss of one TRL micro-batch: TRL's fused forward, then the native composition
        (:func:`~rlvr_lab.train.step.loss_from_logprobs`).

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
        loss, metrics = loss_from_logprobs(
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
        accumulate_metrics(self._rlvr_sums, metrics, len(mb) / rows)  # over the optimiser step, as minibatch_update
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
        batch = join(parts)
        return {
            **token_summary(batch, batch.extras.get("old_entropy")),
            **self.rlvr_observer.before_update(batch),
            **advantage_summary(batch),
        }
