"""The native trainer: supervised warm-start, then GRPO-family RL, on one machine.

``Trainer.run`` reads as the algorithm: for each step, roll out a group of responses per prompt,
score them, recompute old (and reference) log-probs, compute advantages, update the policy in
mini-batches, log, evaluate and checkpoint. What individual methods (LLDS, Lp-Reg, THR, HAPO,
SPEAR, ...) need from these stages is answered by :class:`rlvr_lab.train.methods.Methods`.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlvr_lab.config import Config, RolloutConfig, dump_config
from rlvr_lab.eval.evaluate import PER_PROMPT, evaluate
from rlvr_lab.eval.passk import paired_difference
from rlvr_lab.objectives.aggregate import masked_mean
from rlvr_lab.models import DTYPES, load_model_and_tokenizer
from rlvr_lab.objectives import informative_groups
from rlvr_lab.rewards import summarize_scores
from rlvr_lab.rollout.engine import RolloutEngine
from rlvr_lab.rollout.multiturn import MultiTurnGeneration
from rlvr_lab.rollout.sampling import SamplingParams
from rlvr_lab.threads import set_threads
from rlvr_lab.train.batching import batch_from_generation, concat_batches
from rlvr_lab.atomic import atomic_write_text
from rlvr_lab.diagnostics.sinks import truncate_jsonl
from rlvr_lab.faults import fault_point
from rlvr_lab.train.checkpoint import load_weights, make_run_dir, prune_checkpoints, save_checkpoint
from rlvr_lab.train.environment import build_env, build_tasks
from rlvr_lab.train.methods import (
    SINGLE_TURN_PROVIDES,
    TOOL_USE_PROVIDES,
    FixedSchedule,
    Methods,
    check_inputs,
    startup_warnings,
)
from rlvr_lab.diagnostics.probes import ProbeSet
from rlvr_lab.train.observe import Observer, build_sinks, probe_batch
from rlvr_lab.train.optim import build_optimizer, build_scheduler
from rlvr_lab.train.resume import (
    STATE_VERSION,
    auto_resume_dir,
    completed_steps,
    config_differences,
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    set_rng_state,
)
from rlvr_lab.train.sft import forvalue_select, supervised_warmstart
from rlvr_lab.train.stages import old_policy_pass, sequence_advantages, shape_rewards, token_advantages
from rlvr_lab.train.step import LossSpec, policy_update, score_tokens, step_context, token_summary
from rlvr_lab.types import Batch

EVAL_SEED = 12345
PROBE_SEED = 271828


def pick_device(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def make_engine(model, tokenizer, rollout: RolloutConfig) -> RolloutEngine:
    """The rollout engine ``rollout`` asks for: plain sampling, or SwiReasoning decoding (arXiv 2510.05069)."""
    swir = None
    if rollout.mode == "swireasoning":
        from rlvr_lab.rollout.swireasoning import SwirConfig

        swir = SwirConfig(**rollout.swireasoning.model_dump())
    dtype = None if rollout.dtype == "model" else DTYPES[rollout.dtype]
    return RolloutEngine(model, tokenizer, backend=rollout.backend, swireasoning=swir, dtype=dtype)


def max_response_tokens(cfg: Config) -> int:
    """The longest response a rollout can produce (:meth:`Config.max_response_tokens`)."""
    return cfg.max_response_tokens()


def loss_spec(cfg: Config) -> LossSpec:
    algo = cfg.algorithm
    return LossSpec(
        policy_loss=algo.policy_loss.name,
        policy_params=dict(algo.policy_loss.params),
        aggregation=algo.effective_aggregation,
        t_norm=float(algo.t_norm or max_response_tokens(cfg)),
        global_normalization=algo.global_normalization,
        exclude_empty_sequences=algo.exclude_empty_sequences,
        legacy_no_batch_norm=algo.legacy_no_batch_norm,
        kl_coef=algo.kl.coef,
        kl_kind=algo.kl.kind,
        kl_clamp=algo.kl.clamp,
        entropy_coef=algo.entropy_coef,
        temperature=cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0,
        token_overrides=tuple((c.name, dict(c.params)) for c in algo.token_overrides),
        aux_losses=tuple((c.name, dict(c.params)) for c in algo.aux_losses),
        share_prompts=cfg.train.share_prompts,
    )


@dataclass
class Rollout:
    """One step's training data and what was measured while collecting it."""

    batch: Batch | None
    metrics: dict[str, float] = field(default_factory=dict)
    sample_texts: list[str] = field(default_factory=list)


class Trainer:
    def __init__(self, cfg: Config, *, reporter=None, resume_dir: Path | str | None = None):
        """``resume_dir``: continue that run directory from its last checkpoint (:mod:`rlvr_lab.train.resume`);
        ``cfg`` must equal the run's own config apart from the step budget and the output options."""
        self.cfg = cfg
        self.report = reporter or (lambda kind, **kw: None)
        self.resume_dir = None if resume_dir is None else Path(resume_dir)
        self.resume_state: dict[str, Any] | None = None

    # ---- set-up --------------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        check_inputs(cfg, TOOL_USE_PROVIDES if cfg.search.enabled else SINGLE_TURN_PROVIDES)
        self.warnings = startup_warnings(cfg)
        for message in self.warnings:
            warnings.warn(message, stacklevel=2)
            self.report("warning", message=message)
        set_threads(cfg.run.threads)
        torch.manual_seed(cfg.run.seed)
        self.device = pick_device(cfg.run.device)
        resume_step = None
        if self.resume_dir is None and cfg.run.resume == "auto":
            self.resume_dir, message = auto_resume_dir(cfg)
            self.report("warning" if self.resume_dir is None and "differs" in message else "info", message=message)
        if self.resume_dir is not None:
            self.run_dir, resume_step = self.prepare_resume()
        else:
            self.run_dir = make_run_dir(cfg.run.output_dir, cfg.run.name, overwrite=cfg.run.overwrite)
        atomic_write_text(self.run_dir / "config.yaml", dump_config(cfg))
        self.metrics = build_sinks(cfg, self.run_dir, resume_step=resume_step)
        loaded = load_model_and_tokenizer(
            cfg.model.source, tiny=cfg.model.tiny, dtype=cfg.model.dtype, device=self.device, seed=cfg.run.seed
        )
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.train_task, self.eval_task, corpus = build_tasks(cfg, self.run_dir)
        self.env = build_env(cfg, self.tokenizer, self.train_task, corpus)
        # Held-out means held out: training never sees a question that is also in the eval set.
        eval_questions = set(self.eval_task.questions())
        self.train_indices = [i for i, q in enumerate(self.train_task.questions()) if q not in eval_questions]
        self.check_training_pool(len(self.eval_task), len(eval_questions))
        self.engine = make_engine(self.model, self.tokenizer, cfg.rollout)
        self.methods = Methods(cfg, pad_token_id=self.engine.pad_id)
        self.spec = loss_spec(cfg)
        if cfg.train.old_logprobs == "sampler" and (self.methods.chunk_fns(self.spec.temperature) or self.methods.needs_hidden):
            raise ValueError("train.old_logprobs=sampler cannot feed this objective: it needs the recomputing "
                             "old-policy pass (Lp-Reg's proxy log-probs or THR's hidden states); "
                             "use train.old_logprobs=recompute")
        self.observer = Observer(cfg.observe, self.model)
        self.generator = torch.Generator().manual_seed(cfg.run.seed)
        ds = cfg.algorithm.dynamic_sampling  # prompt offsets: warm-start examples first, then RL rounds
        self.sft_offset = cfg.sft.steps * cfg.sft.batch_size
        self.rounds_per_step_hint = max(1, ds.max_gen_batches) if ds.enabled else 1
        self.ref_model = None
        self.best: dict[str, Any] | None = None  # train.keep_best: the best periodic checkpoint so far
        self.nonfinite = {"total": 0, "streak": 0}  # skipped optimiser steps; RL steps in a row with all skipped
        self.summary: dict[str, Any] = {
            "run_dir": str(self.run_dir),
            "model": cfg.model.source,
            "task": cfg.task.name,
            "params": sum(p.numel() for p in self.model.parameters()),
            "train_questions_dropped_as_eval_duplicates": len(self.train_task) - len(self.train_indices),
            "distinct_train_questions": self.pool["distinct_left"],
            "rollout_backend": self.engine.backend,
            "rollout_dtype": str(self.engine.decoder.dtype).removeprefix("torch."),
            "warnings": self.warnings,
        }
        if self.resume_state is not None:
            self.restore(self.resume_state)
        self.report("setup", summary=self.summary, config=cfg)

    def check_training_pool(self, n_eval: int, n_eval_distinct: int) -> None:
        """Data hygiene: held-out questions are removed from the training set; say how much that took and how
        many distinct training questions are left, and refuse below ``task.min_train_questions``."""
        cfg = self.cfg
        questions = self.train_task.questions()
        distinct = len({questions[i] for i in self.train_indices})
        dropped = len(self.train_task) - len(self.train_indices)
        self.pool = {"train_questions": len(self.train_task), "dropped_as_eval_duplicates": dropped,
                     "distinct_left": distinct}
        numbers = (f"{dropped:,} of {len(self.train_task):,} training questions were dropped as duplicates of the "
                   f"{n_eval:,} held-out ones ({n_eval_distinct:,} distinct), leaving {distinct:,} distinct training questions")
        floor = cfg.task.min_train_questions or cfg.train.prompts_per_step
        if distinct < floor:
            raise ValueError(f"{numbers}, fewer than task.min_train_questions={floor}: the "
                             f"task space of {cfg.task.name!r} is too small for this held-out set; use a larger task "
                             "space (task.config), fewer held-out questions (task.eval_size), or lower the floor")
        per_step = cfg.train.prompts_per_step
        if dropped > len(self.train_task) // 2 or distinct < 10 * per_step:
            message = (f"{numbers} ({distinct / per_step:.1f} steps' worth of {per_step} prompts): the held-out set "
                       "covers much of this task's space, so training will repeat questions often")
            self.warnings.append(message)
            warnings.warn(message, stacklevel=3)
            self.report("warning", message=message)

    # ---- exact resume ----------------------------------------------------------------------------

    def prepare_resume(self) -> tuple[Path, int | None]:
        """Check the run directory and the config, read the last checkpoint's state, and cut
        ``metrics.jsonl`` back to what it held at that checkpoint. Returns (run dir, first RL step to run),
        the step None when no checkpoint exists yet (the run starts over in the same directory)."""
        run_dir = self.resume_dir
        saved_config = run_dir / "config.yaml"
        if not saved_config.is_file():
            raise FileNotFoundError(f"{run_dir} is not a run directory: it holds no config.yaml")
        import yaml

        differences = config_differences(yaml.safe_load(saved_config.read_text()), self.cfg.model_dump(mode="json"))
        if differences:
            raise ValueError(f"cannot resume {run_dir}: the config differs from the run's in "
                             f"{len(differences)} key(s) beyond the step budget and output options:\n  "
                             + "\n  ".join(differences))
        checkpoint = latest_checkpoint(run_dir)
        done = completed_steps(run_dir)
        if done is not None and (checkpoint is None or done >= self.cfg.train.steps):
            raise ValueError(f"nothing to resume in {run_dir}: it completed {done} RL steps"
                             + ("" if checkpoint else " and kept no periodic checkpoint to continue from")
                             + f" (train.steps={self.cfg.train.steps})")
        self.resume_state = None if checkpoint is None else load_trainer_state(checkpoint)
        if checkpoint is None:  # killed before its first checkpoint: start over in the same directory
            shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        if self.resume_state is not None:
            self.resume_state["checkpoint"] = str(checkpoint)
        keep = 0 if self.resume_state is None else self.resume_state["metrics_lines"]
        metrics = run_dir / "metrics.jsonl"
        dropped, torn = truncate_jsonl(metrics, keep) if metrics.exists() else (0, False)
        where = f"RL step {self.resume_state['step']} ({checkpoint})" if checkpoint else "the start (no checkpoint yet)"
        message = f"resuming {run_dir} from {where}: {dropped} later line(s) of metrics.jsonl dropped and rerun"
        if torn:
            message += "; its last line was cut off mid-write and is dropped"
        self.report("warning", message=message)
        if torn:
            warnings.warn(message, stacklevel=3)
        return run_dir, None if self.resume_state is None else self.resume_state["step"] + 1

    def trainer_state(self, step: int, optimizer, scheduler) -> dict[str, Any]:
        """Everything beyond the weights that the next step depends on (:mod:`rlvr_lab.train.resume`)."""
        return {
            "version": STATE_VERSION, "step": step, "metrics_lines": self.metrics.sinks[0].lines,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": rng_state(self.generator), "summary": copy.deepcopy(self.summary),
            "warnings": list(self.warnings), "methods": self.methods.state_dict(),
            "observer": self.observer.state_dict(), "best": self.best, "nonfinite": dict(self.nonfinite),
            "reference": None if self.ref_model is None else self.ref_model.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """The weights and the non-optimiser state of ``state``'s checkpoint (the optimiser, scheduler and
        generators are restored in :meth:`run`, once they exist)."""
        load_weights(self.model, Path(state["checkpoint"]))
        self.methods.load_state_dict(state["methods"])
        self.observer.load_state_dict(state["observer"], self.engine.pad_id)
        if state["reference"] is not None:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
            self.ref_model.load_state_dict(state["reference"])
        resumes = [*state["summary"].get("resumed", []), {"from_step": state["step"], "checkpoint": state["checkpoint"]}]
        self.summary = {**state["summary"], "resumed": resumes}
        self.warnings = list(state["warnings"])
        self.best = state["best"]
        self.nonfinite = dict(state["nonfinite"])

    def train_examples(self, n: int, offset: int) -> list[dict[str, Any]]:
        """``n`` training examples from position ``offset`` on, cycling over the decontaminated set."""
        idx = self.train_indices
        return [self.train_task[idx[(offset + i) % len(idx)]] for i in range(n)]

    # ---- stages ----------------------------------------------------------------------------------

    def warm_start(self) -> None:
        cfg = self.cfg.sft
        if cfg.steps == 0:
            return
        t0 = time.perf_counter()
        if cfg.init_from:
            load_weights(self.model, Path(cfg.init_from))
            self.summary["sft"] = {"steps": cfg.steps, "loaded_from": cfg.init_from,
                                   "seconds": time.perf_counter() - t0}
            return

        def on_step(step: int, record: dict[str, float]) -> None:
            self.metrics.write({"stage": "sft", "step": step, **record})
            self.report("sft_step", step=step, total=cfg.steps, record=record)

        next_examples = lambda step, n: self.train_examples(n, step * n)  # noqa: E731
        selection: dict[str, Any] = {}
        if cfg.select is not None:
            next_examples, selection = self.select_warmstart()
        history = supervised_warmstart(
            self.model, self.tokenizer, self.env.render,
            next_examples,
            steps=cfg.steps, batch_size=cfg.batch_size, optim=cfg.optim,
            target_template=cfg.target_template, on_step=on_step,
            loss=cfg.loss.name, loss_params=cfg.loss.params, targets=self.demonstrations(),
        )
        self.summary["sft"] = {"steps": cfg.steps, "final_loss": history[-1]["sft/loss"],
                               "seconds": time.perf_counter() - t0, **selection}

    def select_warmstart(self):
        """``sft.select``: For-Value scores of the warm-start's distinct examples against the last ``val_size``
        training examples. Returns ``next_examples(step, n)``, cycling over the kept ones in training order, and a
        summary; writes every score to ``sft_select.jsonl``. RL prompts are unchanged (they start after the warm-start's
        steps x batch_size examples either way)."""
        cfg = self.cfg.sft
        sel = cfg.select
        idx = self.train_indices
        if len(idx) <= sel.val_size:
            raise ValueError(f"sft.select.val_size={sel.val_size} leaves no example to select from: the training set "
                             f"has {len(idx)} examples after decontamination")
        val_start = len(idx) - sel.val_size
        pool_pos = list(range(min(cfg.steps * cfg.batch_size, val_start)))  # the distinct positions the warm-start reads
        pool = [self.train_task[idx[p]] for p in pool_pos]
        val = [self.train_task[idx[p]] for p in range(val_start, len(idx))]
        t0 = time.perf_counter()
        kept, scores = forvalue_select(self.model, self.tokenizer, self.env.render, pool, val, fraction=sel.fraction,
                                       target_template=cfg.target_template, targets=self.demonstrations(),
                                       batch_size=sel.batch_size, vocab=sel.vocab)
        chosen = [pool[k] for k in kept]
        kept_set = set(kept)
        with (self.run_dir / "sft_select.jsonl").open("w") as handle:
            for k, p in enumerate(pool_pos):
                handle.write(json.dumps({"position": p, "train_index": idx[p], "score": scores[k], "kept": k in kept_set}) + "\n")
        summary = {"select": {"pool": len(pool), "kept": len(chosen), "val": len(val), "seconds": time.perf_counter() - t0,
                              "file": str(self.run_dir / "sft_select.jsonl")}}
        return (lambda step, n: [chosen[(step * n + i) % len(chosen)] for i in range(n)]), summary

    def demonstrations(self):
        """Warm-start targets from the environment (search trajectories), or None for the template."""
        demo = getattr(self.env, "demonstration", None)
        if demo is None:
            return None

        def targets(examples):
            pairs = [demo(ex) for ex in examples]
            return [ids for ids, _ in pairs], [mask for _, mask in pairs]

        return targets

    def evaluate(self, label: str, step: int) -> dict[str, float]:
        ecfg, rcfg = self.cfg.eval, self.cfg.rollout
        t0 = time.perf_counter()
        self.report("eval_start", label=label)
        result = evaluate(
            self.engine, self.env, self.eval_task.examples(len(self.eval_task)),
            samples=ecfg.samples, ks=ecfg.k, maj=ecfg.maj_ks(), temperature=ecfg.temperature,
            max_new_tokens=rcfg.max_new_tokens, stop_strings=rcfg.stop_strings,
            greedy=ecfg.greedy, seed=EVAL_SEED, answer_fallback=self.cfg.task.answer_fallback,
        )
        result["eval/seconds"] = time.perf_counter() - t0
        self.metrics.write({"stage": "eval", "label": label, "step": step, **result})
        self.summary.setdefault("eval", {})[label] = result
        self.report("eval", label=label, result=result)
        return result

    def make_probes(self) -> None:
        """The fixed probe set: held-out prompts with stored responses (made now by the policy about to
        be trained, or read from ``observe.probe_file``), scored once here for reference log-probs."""
        obs = self.cfg.observe
        if obs.probe_prompts == 0:
            return
        if obs.probe_file:
            probes = ProbeSet.load(obs.probe_file)
            vocab = self.model.get_input_embeddings().num_embeddings
            if probes.max_token_id >= vocab:
                raise ValueError(f"probe file {obs.probe_file} has token id {probes.max_token_id}, beyond this "
                                 f"model's vocabulary ({vocab}); probe files only carry over between runs of one tokenizer")
        else:
            examples = self.eval_task.examples(min(obs.probe_prompts, len(self.eval_task)))
            prompt_ids = self.engine.encode([self.env.render(ex) for ex in examples])
            S = obs.probe_samples
            gen = self.env.generate(self.engine, [p for p in prompt_ids for _ in range(S)], self.sampling_params(), seed=PROBE_SEED)
            scores = self.env.score(gen.texts, [ex for ex in examples for _ in range(S)])
            probes = ProbeSet.from_rows(
                gen.prompt_ids, gen.prompt_mask, gen.response_ids, gen.response_mask, gen.loss_mask,
                [bool(s.correct) for s in scores], gen.texts,
                meta={"task": self.cfg.task.name, "model": self.cfg.model.source, "prompts": len(examples), "samples": S},
            )
        ref = self.rescore(probe_batch(probes, self.engine.pad_id).to(self.device))
        self.observer.set_probes(probes, ref, self.engine.pad_id)
        probes.save(self.run_dir / "probes.json")
        n_correct = sum(probes.correct)
        self.summary["probes"] = {"responses": len(probes), "correct": n_correct, "file": str(self.run_dir / "probes.json")}

    def sampling_params(self) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(
            temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
            max_new_tokens=r.max_new_tokens, stop_strings=tuple(r.stop_strings),
            report_entropy=self.cfg.train.old_logprobs == "sampler",
        )

    def rollout_round(self, step: int, round_: int) -> tuple[Batch, torch.Tensor, dict[str, float], list[str]]:
        """Sample G responses for each of P fresh prompts and score them."""
        tcfg = self.cfg.train
        P, G = tcfg.prompts_per_step, tcfg.group_size
        offset = self.sft_offset + (step * self.rounds_per_step_hint + round_) * P
        examples = self.train_examples(P, offset)
        prompt_ids = self.engine.encode([self.env.render(ex) for ex in examples])
        t0 = time.perf_counter()
        gen = self.env.generate(
            self.engine, [p for p in prompt_ids for _ in range(G)], self.sampling_params(),
            seed=self.cfg.run.seed * 1_000_003 + step * 1009 + round_, temperature_fn=self.methods.temperature_fn(),
        )
        generate_s = time.perf_counter() - t0
        fault_point("rollout", step)
        repeated = [ex for ex in examples for _ in range(G)]
        scores = self.env.score(gen.texts, repeated)
        rewards = torch.tensor([s.value for s in scores], dtype=torch.float32)
        metrics = summarize_scores(scores)
        tool = tool_use_rows(gen)
        rewards, shaping = shape_rewards(
            self.cfg, self.methods, rewards, gen.response_lengths, step=step - 1, tool_calls=tool.get("tool_calls"),
            invalid_actions=gen.counts.get("invalid_action", torch.zeros(len(gen))) if tool else None,
        )
        metrics.update(shaping)
        if tool:
            metrics.update(tool_use_metrics(gen, generate_s))
        if hasattr(gen, "rollout_metrics"):  # a decoding mode's own counts (SwiReasoning's latent share)
            metrics.update(gen.rollout_metrics())
        lengths = gen.response_lengths.float()
        metrics.update({
            "rollout/response_len_mean": float(lengths.mean()),
            "rollout/response_len_max": float(lengths.max()),
            "rollout/clip_ratio_len": float(gen.truncated.float().mean()),
        })
        group_ids = torch.arange(P).repeat_interleave(G) + round_ * P
        correct = torch.tensor([float(bool(s.correct)) for s in scores]).view(P, G)
        batch = batch_from_generation(gen, rewards, group_ids)
        batch.extras["correct"] = correct.view(-1).bool()
        batch.extras.update(tool)
        return batch, correct, metrics, gen.texts[:G]

    def collect(self, step: int) -> Rollout:
        """Rollout rounds until P informative groups (DAPO dynamic sampling) or one round without it."""
        tcfg, ds = self.cfg.train, self.cfg.algorithm.dynamic_sampling
        P, G = tcfg.prompts_per_step, tcfg.group_size
        kept: list[Batch] = []
        round_metrics: list[dict[str, float]] = []
        n_kept, round_, samples = 0, 0, []
        while True:
            batch, correct, metrics, texts = self.rollout_round(step, round_)
            samples = samples or texts
            rewards = batch.rewards.view(P, G)
            metrics["groups/frac_all_correct"] = float((correct.min(1).values == 1).float().mean())
            metrics["groups/frac_all_wrong"] = float((correct.max(1).values == 0).float().mean())
            round_metrics.append(metrics)
            round_ += 1
            if not ds.enabled:
                kept, n_kept = [batch], P
                break
            keep = informative_groups(correct if ds.metric == "acc" else rewards)
            if keep.any():
                rows = keep.repeat_interleave(G).nonzero().flatten()
                kept.append(batch.select(rows))
                n_kept += int(keep.sum())
            if n_kept >= P or (ds.max_gen_batches > 0 and round_ >= ds.max_gen_batches):
                break
        metrics = {k: sum(m.get(k, 0.0) for m in round_metrics) / len(round_metrics) for k in round_metrics[0]}
        if ds.enabled:
            metrics["dapo/num_gen_batches"] = float(round_)
            metrics["dapo/kept_groups"] = float(n_kept)
        metrics.update(self.methods.rollout_metrics())
        if not kept:
            return Rollout(batch=None, metrics=metrics, sample_texts=samples)
        batch = concat_batches(kept, self.tokenizer.pad_token_id)
        if ds.enabled and n_kept > P:  # trim to exactly P groups
            batch = batch.select(torch.arange(P * G))
        return Rollout(batch=batch, metrics=metrics, sample_texts=samples)

    def advantages(self, batch: Batch, step: int) -> tuple[Batch, dict[str, float]]:
        """Sequence advantages from the estimator, broadcast to tokens, then the token modifiers;
        finally the rows that sample filters (PSR/NSR subsets, GRPO-N, SPEAR's group filter) drop."""
        G = self.cfg.train.group_size
        ctx = step_context(batch, None, entropy=None, global_step=step - 1)
        ctx.group_size = G
        seq_adv, keep, metrics = sequence_advantages(self.cfg, self.methods, batch.rewards.view(-1, G), ctx)
        keep = None if keep is None else keep.reshape(-1)
        adv, keep, mod_metrics = token_advantages(self.cfg, self.methods, seq_adv.reshape(-1), batch.loss_mask, ctx, keep)
        metrics.update(mod_metrics)
        batch.advantages = adv
        batch, filter_metrics = self.methods.drop_rows(batch, keep)
        return batch, {**metrics, **filter_metrics}

    def prepare(self, batch: Batch) -> Batch:
        """Everything from the old (and reference) policy without gradient: log-probs, entropy, the
        chunk-wise extras (Lp-Reg proxy) and, for THR/NTHR, the token hidden reward. With
        ``train.old_logprobs=sampler`` the old log-probs and entropies are the sampler's and no old
        pass runs."""
        mbs, temperature = self.cfg.train.micro_batch_size, self.spec.temperature
        batch = batch.to(self.device)
        self.methods.row_inputs(batch)
        if self.cfg.train.old_logprobs == "sampler":
            batch.old_logprobs = batch.sampler_logprobs
            batch.extras["old_entropy"] = batch.extras.pop("sampler_entropy")
        else:
            self.old_pass(batch, temperature, mbs)
        self.methods.after_old_pass(batch)
        if self.ref_model is not None:
            batch.ref_logprobs = score_tokens(
                self.ref_model, batch, temperature=temperature, micro_batch_size=mbs, with_entropy=False,
                share_prompts=self.spec.share_prompts,
            ).logprobs
        return batch

    def sampler_gap(self, batch: Batch) -> dict[str, float]:
        """``rollout/sampler_logp_gap``: the mean absolute difference, per sampled token, between the log-prob
        the sampler drew it with and the one the trainer recomputed for the old policy. Float rounding
        (about 1e-6) when both run in the same precision; larger with ``rollout.dtype=bfloat16``. Only where
        the two describe the same distribution: recomputed old log-probs, plain sampling from the full
        tempered distribution (no top-k/top-p, no adaptive temperature, no SwiReasoning)."""
        r = self.cfg.rollout
        comparable = (self.cfg.train.old_logprobs == "recompute" and r.mode == "sample" and r.temperature > 0
                      and not r.distribution_filters())
        if not comparable or batch.sampler_logprobs is None or batch.old_logprobs is None:
            return {}
        gap = (batch.sampler_logprobs.float() - batch.old_logprobs.float()).abs()
        return {"rollout/sampler_logp_gap": float(masked_mean(gap, batch.loss_mask))}

    def old_pass(self, batch: Batch, temperature: float, mbs: int) -> None:
        """The old policy's log-probs, entropies and method extras, recomputed over the batch."""
        old_policy_pass(self.model, batch, self.methods, temperature=temperature, micro_batch_size=mbs,
                        share_prompts=self.spec.share_prompts)

    def update(self, batch: Batch, step: int, optimizer, scheduler) -> dict[str, float]:
        """The on-policy update, then the methods' extra updates on other data (SPEAR's replay)."""
        tcfg = self.cfg.train
        record = self.methods.remember(batch, step - 1)
        record.update(policy_update(
            self.model, optimizer, scheduler, batch, self.spec, minibatches=tcfg.minibatches, epochs=tcfg.epochs,
            micro_batch_size=tcfg.micro_batch_size, max_grad_norm=tcfg.optim.max_grad_norm,
            generator=self.generator, context=self.methods.context(step - 1, batch), global_step=step - 1,
            grad_groups=self.observer.grad_groups, shuffle=tcfg.shuffle,
        ))
        extra = self.methods.extra_update(step - 1, self.generator, self.spec)
        record.update(extra.metrics)
        if extra.batch is not None:  # its own optimiser steps; the LR schedule counts on-policy steps only
            out = policy_update(
                self.model, optimizer, FixedSchedule(), extra.batch.to(self.device), extra.spec,
                minibatches=extra.minibatches, epochs=1, micro_batch_size=tcfg.micro_batch_size,
                max_grad_norm=tcfg.optim.max_grad_norm, generator=self.generator,
                context=self.methods.context(step - 1, extra.batch), global_step=step - 1,
            )
            record.update({f"{extra.prefix}{k.replace('/', '_')}": v for k, v in out.items()})
        return record

    def rescore(self, batch: Batch):
        """(B, T) log-probs of the batch's tokens under the current (updated) policy."""
        return score_tokens(
            self.model, batch, temperature=self.spec.temperature,
            micro_batch_size=self.cfg.train.micro_batch_size, with_entropy=False,
            share_prompts=self.spec.share_prompts,
        ).logprobs

    def watch_phase(self, step: int, record: dict[str, Any]) -> bool:
        """Label the step; on entering a decay or collapse phase act as configured. True: stop the run."""
        report = self.observer.phase(step, record)
        if report is None:
            return False
        record["phase/label"] = report.label
        if not report.alert:
            return False
        evidence = ", ".join(f"{k}={v:.4g}" for k, v in report.evidence.items())
        message = f"step {step}: entered {', '.join(report.entered)} ({evidence}); action: {report.action}"
        self.summary.setdefault("phase_alerts", []).append({"step": step, "entered": list(report.entered),
                                                            "evidence": report.evidence, "action": report.action})
        self.report("warning", message=message)
        if report.action == "checkpoint":
            self.save(f"alert-step-{step}", step)
        return report.action == "stop"

    def freeze_reference(self) -> None:
        """Keep a frozen copy of the current policy as the KL reference (only when KL is used)."""
        if self.cfg.algorithm.kl.coef > 0:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)

    def save(self, name: str, step: int, trainer_state: dict[str, Any] | None = None) -> Path:
        return save_checkpoint(self.model, self.tokenizer, self.run_dir / "checkpoints" / name,
                               meta={"rl_step": step, "config": self.cfg.model_dump(mode="json")},
                               trainer_state=trainer_state)

    def count_nonfinite(self, step: int, record: dict[str, Any]) -> bool:
        """The non-finite guard: an optimiser step whose loss or gradient is NaN or Inf is skipped (the weights
        and the optimiser state stay as they were); count them in ``train/skipped_steps``, warn when a whole RL
        step was skipped, and return True after ``train.max_nonfinite_steps`` such steps in a row (stop)."""
        skipped, taken = record.get("policy/skipped_steps", 0.0), record.get("policy/optimizer_steps", 0.0)
        self.nonfinite["total"] += int(skipped)
        self.nonfinite["streak"] = self.nonfinite["streak"] + 1 if taken and skipped >= taken else 0
        record["train/skipped_steps"] = float(self.nonfinite["total"])
        if self.nonfinite["streak"]:
            self.report("warning", message=f"step {step}: every update skipped for a non-finite loss or gradient "
                                           f"({self.nonfinite['streak']} step(s) in a row)")
        limit = self.cfg.train.max_nonfinite_steps
        return bool(limit) and self.nonfinite["streak"] >= limit

    def periodic_checkpoint(self, step: int, record: dict[str, Any], optimizer, scheduler) -> None:
        """``checkpoints/step-N`` with the trainer state for an exact resume; keeps the newest
        ``train.keep_checkpoints`` and, with ``train.keep_best``, the best one by that metric."""
        tcfg = self.cfg.train
        path = self.run_dir / "checkpoints" / f"step-{step}"
        if tcfg.keep_best is not None:
            value = record.get(tcfg.keep_best.metric)
            maximise = tcfg.keep_best.mode == "max"
            if value is not None and math.isfinite(value) and (
                self.best is None or (value > self.best["value"] if maximise else value < self.best["value"])
            ):
                self.best = {"metric": tcfg.keep_best.metric, "value": float(value), "step": step, "path": str(path)}
                self.summary["best_checkpoint"] = self.best
        self.save(path.name, step, trainer_state=self.trainer_state(step, optimizer, scheduler))
        prune_checkpoints(self.run_dir / "checkpoints", tcfg.keep_checkpoints,
                          protect=None if self.best is None else Path(self.best["path"]))

    def write_report(self) -> None:
        """RUN_DIR/report.html from what the run wrote; a failure here is a warning, never the run's error."""
        if not self.cfg.observe.report:
            return
        try:
            from rlvr_lab.diagnostics.report import write_report

            atomic_write_text(self.run_dir / "summary.json", json.dumps(self.summary, indent=2, default=float))
            self.summary["report"] = str(write_report([self.run_dir]))
        except Exception as exc:  # noqa: BLE001 - the report must not hide the run's own outcome
            message = f"could not write the report: {type(exc).__name__}: {exc}"
            warnings.warn(message, stacklevel=2)
            self.report("warning", message=message)

    # ---- the loop --------------------------------------------------------------------------------

    def rl_step(self, step: int, optimizer, scheduler) -> tuple[dict[str, float], list[str]]:
        """One RL step: roll out and score, old-policy pass, advantages, update; its record and samples."""
        t0 = time.perf_counter()
        rollout = self.collect(step)
        record: dict[str, float] = {**rollout.metrics, "time/rollout_s": time.perf_counter() - t0}
        if rollout.batch is None:
            record["policy/skipped_updates"] = 1.0
        else:
            batch = self.prepare(rollout.batch)
            record.update(self.sampler_gap(batch))
            batch, adv_metrics = self.advantages(batch, step)
            record.update(adv_metrics)
            record.update(token_summary(batch, batch.extras.get("old_entropy")))
            record.update(self.observer.before_update(batch))
            record.update(advantage_summary(batch))
            record.update(self.update(batch, step, optimizer, scheduler))
            fault_point("update", step)
            if self.observer.wants_displacement(step):
                record.update(self.observer.displacement(batch, self.rescore(batch)))
        if self.observer.wants_probe(step):
            record.update(self.observer.probe(self.rescore(self.observer.probe_inputs.to(self.device))))
        record["time/step_s"] = time.perf_counter() - t0
        return record, rollout.sample_texts

    def run(self) -> dict[str, Any]:
        if not hasattr(self, "run_dir"):
            self.setup()
        cfg, tcfg = self.cfg, self.cfg.train
        state = self.resume_state
        step = 0 if state is None else state["step"]
        status = "completed"
        try:
            if state is None:
                self.warm_start()
                if cfg.eval.enabled:
                    self.evaluate("before_rl", 0)
                self.make_probes()
                self.freeze_reference()
            opt = tcfg.optim
            optimizer = build_optimizer(self.model, lr=opt.lr, weight_decay=opt.weight_decay, betas=opt.betas,
                                        name=opt.name)
            total_opt_steps = tcfg.steps * tcfg.minibatches * tcfg.epochs
            scheduler = build_scheduler(optimizer, warmup_steps=opt.warmup_steps, total_steps=total_opt_steps, schedule=opt.schedule)
            if state is not None:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                set_rng_state(state["rng"], self.generator)
            for step in range(step + 1, tcfg.steps + 1):
                record, samples = self.rl_step(step, optimizer, scheduler)
                record["optim/lr"] = scheduler.get_last_lr()[0]
                nonfinite = self.count_nonfinite(step, record)
                for message in self.methods.inactivity(step, record):
                    self.warnings.append(message)
                    self.report("warning", message=message)
                stop = self.watch_phase(step, record)
                self.metrics.write({"stage": "rl", "step": step, **record})
                self.report("rl_step", step=step, total=tcfg.steps, record=record, samples=samples)
                if stop:
                    status = f"stopped by the phase detector at RL step {step}: {record['phase/label']}"
                    break
                if nonfinite:
                    self.summary["nonfinite_checkpoint"] = str(self.save(f"nonfinite-step-{step}", step))
                    status = (f"stopped at RL step {step}: {self.nonfinite['streak']} consecutive steps with a "
                              "non-finite loss or gradient (every update skipped; the checkpoint holds the last good weights)")
                    break
                if cfg.eval.enabled and cfg.eval.every and step % cfg.eval.every == 0 and step < tcfg.steps:
                    self.evaluate(f"step_{step}", step)
                if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0:
                    self.periodic_checkpoint(step, record, optimizer, scheduler)
            if cfg.eval.enabled:
                self.evaluate("after_rl", step)
            self.summary["final_checkpoint"] = str(self.save("final", step))
        except BaseException as exc:  # keep what we have on a crash or Ctrl-C
            status = f"failed at RL step {step}: {type(exc).__name__}: {exc}"
            if hasattr(self, "model"):
                self.summary["crash_checkpoint"] = str(self.save(f"crash-step-{step}", step))
            raise
        finally:
            self.summary["status"] = status
            self.summary["rl_steps_done"] = step
            if hasattr(self, "run_dir"):
                self.metrics.close()
                self.write_report()
                atomic_write_text(self.run_dir / "summary.json", json.dumps(self.summary, indent=2, default=float))
            self.report("done", summary=self.summary)
        return self.summary


def tool_use_rows(gen) -> dict[str, torch.Tensor]:
    """Per-row objective inputs of a multi-turn generation (none for a single-turn one)."""
    if not isinstance(gen, MultiTurnGeneration):
        return {}
    zeros = torch.zeros(len(gen))
    return {
        "action_ids": gen.action_ids.cpu(),
        "answer_mask": gen.answer_mask.cpu(),
        "valid_searches": gen.counts.get("valid_search", zeros),
        "tool_calls": gen.counts.get("tool_calls", zeros),
    }


def tool_use_metrics(gen: MultiTurnGeneration, generate_s: float) -> dict[str, float]:
    """Search-R1's rollout statistics (spec 10.2) and the tool's share of the rollout time."""
    n = float(len(gen))
    count = {name: float(v.sum()) for name, v in gen.counts.items()}
    turns = float(gen.turns.float().sum())
    tool_s = count.get("tool_seconds", 0.0)
    return {
        "search/turns_mean": turns / n,
        "search/valid_searches_mean": count.get("valid_search", 0.0) / n,
        "search/frac_searched": float((gen.counts.get("valid_search", torch.zeros(1)) > 0).float().mean()),
        "search/invalid_action_rate": count.get("invalid_action", 0.0) / max(turns, 1.0),
        "search/answered_rate": count.get("answered", 0.0) / n,
        "search/failed_searches": count.get("failed_search", 0.0),
        "search/tool_seconds": tool_s,
        # the tool runs on worker threads, overlapped with decoding: summed call time over rollout wall time
        "search/tool_time_share": tool_s / max(generate_s, 1e-9),
        "state_tokens/coverage": float(gen.sampled_mask.sum()) / max(float(gen.response_mask.sum()), 1.0),
    }


def advantage_summary(batch: Batch) -> dict[str, float]:
    adv = batch.advantages[batch.loss_mask]
    if not adv.numel():
        return {"adv/mean": 0.0, "adv/abs_mean": 0.0, "adv/frac_zero": 1.0}
    return {"adv/mean": float(adv.mean()), "adv/abs_mean": float(adv.abs().mean()),
            "adv/frac_zero": float((adv == 0).float().mean())}


def accuracy_gain(summary: dict[str, Any], key: str = "eval/pass@1") -> tuple[float, float]:
    """(after - before, its standard error) of an eval metric in a run summary.

    Both evaluations score the same held-out prompts, so when the summary keeps their per-prompt values
    (``evaluate`` stores them under ``PER_PROMPT``) the error is that of the per-prompt differences
    (paired). Without them (runs recorded before those were kept) it falls back to
    ``sqrt(se_before**2 + se_after**2)``, which treats the two as independent and, since a question
    solved before tends to be solved after, overstates the error.
    """
    before, after = summary["eval"]["before_rl"], summary["eval"]["after_rl"]
    values_before = before.get(PER_PROMPT, {}).get(key)
    values_after = after.get(PER_PROMPT, {}).get(key)
    if values_before is not None and values_after is not None:
        _, se = paired_difference(values_before, values_after)
    else:
        se = math.sqrt(before.get(f"{key}_se", 0.0) ** 2 + after.get(f"{key}_se", 0.0) ** 2)
    return after[key] - before[key], se
