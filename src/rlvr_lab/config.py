"""Validated run configuration: one model per component, field descriptions double as docs.

A config is a YAML file; ``extends:`` (a path or a list of paths, relative to the file, or the name of
a packaged preset such as ``grpo``) merges other files underneath it, presets (``--preset dapo`` or a
YAML path) merge on top, and ``key.path=value`` overrides from the command line come last. A wrong key, type or value fails at start-up naming the key,
the value and what is allowed.
"""

from __future__ import annotations

import copy
import inspect
import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlvr_lab.models.tiny import TinyModelConfig
from rlvr_lab.objectives.div_prec import div_prec_token_loss
from rlvr_lab.objectives.kl import KL_KINDS
from rlvr_lab.objectives.registry import (
    ADVANTAGE_ESTIMATORS,
    Registry,
    AGGREGATORS,
    AUX_LOSSES,
    POLICY_LOSSES,
    TOKEN_ADVANTAGE_MODIFIERS,
    TOKEN_LOSS_OVERRIDES,
)
from rlvr_lab.objectives.spear import TOOLCALL_KINDS
from rlvr_lab.presets import preset_names, preset_path


class ConfigError(ValueError):
    """A configuration problem, with the offending key in the message."""


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Strict):
    name: str = Field("run", description="Run name; the run directory is output_dir/name.")
    output_dir: str = Field("runs", description="Parent folder of run directories.")
    seed: int = Field(0, description="Seed for model init, data order and sampling.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="Where to run; auto picks cuda when present.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: leave torch's default).")
    overwrite: bool = Field(False, description="Allow writing into an existing run directory.")
    resume: Literal["off", "auto"] = Field(
        "off", description="auto: continue the latest run directory of this name (output_dir/name, name-2, ...) "
        "from its last checkpoint when its config matches this one apart from the step budget and the output "
        "options; otherwise start a new run directory, with a warning.")


class ModelConfig(_Strict):
    source: str = Field(
        "tiny",
        description="'tiny' (built from `tiny`), 'smollm2-135m-instruct' (packaged GGUF), a .gguf file or a local HF directory.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weight dtype.")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Shape of the tiny model.")
    use_chat_template: bool = Field(True, description="Render prompts with the tokenizer's chat template.")
    system_prompt: str | None = Field(None, description="Optional system message.")


class TaskConfig(_Strict):
    kind: Literal["reasoning_gym", "qa", "synthetic_kb"] = Field(
        "reasoning_gym",
        description="Where prompts and verifiers come from: a reasoning-gym task, a question-answering dataset "
        "(JSONL/Parquet, train_path/eval_path), or a generated multi-hop knowledge base (for search).",
    )
    name: str = Field("chain_sum", description="reasoning-gym task name (a label for the other kinds).")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="reasoning-gym dataset options; for synthetic_kb the generator's sizes (n_people, ...) and "
        "optionally `kinds` (question kinds to keep) and `hops` (1 and/or 2).",
    )
    train_path: str | None = Field(None, description="kind=qa: training questions (JSONL or Parquet with question/answers).")
    eval_path: str | None = Field(None, description="kind=qa: held-out questions (default: the last eval_size of train_path).")
    qa_reward: Literal["em", "f1", "search_r1"] = Field(
        "em", description="kind=qa/synthetic_kb: exact match, token F1, or Search-R1's format-aware EM reward."
    )
    train_size: int = Field(10_000, ge=1, description="Training prompts (cycled).")
    eval_size: int = Field(200, ge=1, description="Held-out prompts (a different seed than training).")
    min_train_questions: int | None = Field(
        None, ge=1, description="Refuse to train when fewer distinct training questions than this remain after the "
        "questions that also occur in the held-out set are removed (None: train.prompts_per_step, so that one step "
        "never has to ask a question twice; a small task space also gets a start-up warning).")
    seed: int = Field(1, description="Dataset seed; the held-out split uses seed + 1_000_003.")
    instruction: str = Field(
        "",
        description="Text appended to each question (e.g. how to format the answer); empty for none.",
    )
    partial_credit: bool = Field(
        False, description="Use reasoning-gym's partial-credit score as the reward (default: 1 if correct, else 0)."
    )
    answer_fallback: Literal["none", "last_number", "boxed", "last_line", "full"] = Field(
        "none", description="How to find the answer when there is no <answer> tag."
    )
    format_weight: float = Field(0.0, ge=0, description="Weight of the format reward added to correctness.")
    verifier_timeout_s: float = Field(5.0, gt=0, description="Per-response time limit of the verifier.")
    verifier_isolation: Literal["process", "thread"] = Field(
        "process", description="Where verifiers run: process (a forked child per batch, killed on a time-out, so "
        "a verifier that never returns leaves nothing behind; thread where fork does not exist) or thread (no "
        "fork; a hung verifier leaves one thread behind per time-out).")


class AdaptiveTemperatureConfig(_Strict):
    """HAPO adaptive temperature sampling (arXiv 2509.16591, section 8.5)."""

    tau: float = Field(0.05, ge=0, lt=1, description="τ_T: each token is drawn at T0·(1 + τ·clamp(ĥ, −1, 1)).")
    entropy_pivot: float = Field(0.8, ge=0, le=1, description="Quantile of the log-entropies used as the pivot of ĥ.")
    code_compat_sign: bool = Field(False, description="The released code's sign of scale_neg (every ĥ >= 0).")


class SwiReasoningConfig(_Strict):
    """SwiReasoning decoding (arXiv 2510.05069): latent blocks feed the probability-weighted embedding mixture,
    explicit blocks the sampled token; entropy trends switch between them. Used when rollout.mode=swireasoning.
    Latent-step tokens are masked out of the loss (see rlvr_lab.rollout.swireasoning)."""

    alpha0: float = Field(1.0, ge=0, le=1, description="α₀: weight of the soft embedding (vs <think>) on an explicit->latent switch, rising to 1 over the response budget (the paper tunes it per model: 0.1-1.0).")
    beta0: float = Field(0.7, ge=0, le=1, description="β₀: weight of the soft embedding (vs </think>) in the first input after a latent->explicit switch, rising to 1.")
    window: int = Field(512, ge=1, description="W: least explicit steps before returning to latent.")
    max_switch_count: int | None = Field(None, ge=1, description="C_max: force convergence_text from C_max latent->explicit switches on, termination_text past 2·C_max (None: no cap).")
    convergence_text: str = Field("</think>", description="Forced after C_max switches.")
    termination_text: str = Field("</think>\n\nThe final answer is", description="Forced past 2·C_max switches; answer_budget tokens later the response stops.")
    answer_budget: int = Field(32, ge=1, description="Tokens allowed after termination_text.")
    force_math_tokens: bool = Field(True, description="Feed digits, single letters, operators and LaTeX commands as tokens even in a latent block.")
    think_text: str = Field("<think>", description="Its first token is blended in on explicit->latent switches (\"\": no blend).")
    end_think_text: str = Field("</think>", description="Its first token is blended in on latent->explicit switches and, when sampled, locks the response explicit (\"\": neither).")
    first_step_text: str = Field("\n", description="Its first token is blended (0.1) into the first soft embedding (\"\": no blend).")
    start_latent: bool = Field(True, description="Begin in a latent block (the paper); false begins explicit.")


class RolloutConfig(_Strict):
    backend: Literal["auto", "native", "hf"] = Field("auto", description="Sampler path; auto uses the native KV-cache decoder when supported.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature for training rollouts.")
    top_k: int = Field(0, ge=0, description="Top-k filter (0: off).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus filter (1: off).")
    max_new_tokens: int = Field(64, ge=1, description="Longest response in tokens.")
    stop_strings: list[str] = Field(default_factory=lambda: ["</answer>"], description="Stop after any of these.")
    dtype: Literal["model", "bfloat16", "float32"] = Field(
        "model",
        description="Precision of the sampler: 'model' decodes in the policy's own dtype; 'bfloat16' decodes a "
        "float32 policy on bfloat16 copies of its weights (faster where the hardware has bf16 matmul: GPUs, "
        "CPUs with AMX or AVX512-BF16), while the policy and the trainer's recomputed log-probs stay float32. "
        "The sampled tokens then come from a slightly different distribution than the one trained on: "
        "rollout/sampler_logp_gap reports by how much. Evaluation samples through the same engine. Needs the "
        "native decoder (Llama-family models) and train.old_logprobs=recompute.",
    )
    adaptive_temperature: AdaptiveTemperatureConfig | None = Field(
        None,
        description="HAPO per-token temperature from the logits' entropy and the previous step's old-policy "
        "entropy statistics (None: the fixed temperature).",
    )
    mode: Literal["sample", "swireasoning"] = Field(
        "sample",
        description="How responses are decoded: 'sample' token by token, 'swireasoning' switching between "
        "latent and explicit thinking (arXiv 2510.05069; settings in rollout.swireasoning) for training "
        "rollouts and evaluation alike.",
    )
    swireasoning: SwiReasoningConfig = Field(
        default_factory=SwiReasoningConfig, description="SwiReasoning settings (used with rollout.mode=swireasoning)."
    )

    @model_validator(mode="after")
    def _check_adaptive(self) -> RolloutConfig:
        if self.adaptive_temperature is not None and self.temperature <= 0:
            raise ValueError("adaptive_temperature needs sampling: set rollout.temperature > 0 (it is T0)")
        if self.mode == "swireasoning" and self.adaptive_temperature is not None:
            raise ValueError("rollout.mode=swireasoning cannot take rollout.adaptive_temperature (HAPO): "
                             "SwiReasoning samples at the fixed rollout.temperature")
        return self

    def distribution_filters(self) -> list[tuple[str, Any, Any]]:
        """``(key, value, off)`` for each setting that makes the sampler draw from other than the full
        tempered distribution (top-k, top-p, an adaptive temperature): its log-probs then differ from the
        ones the trainer recomputes for the same tokens."""
        settings = (("rollout.top_k", self.top_k, 0), ("rollout.top_p", self.top_p, 1.0),
                    ("rollout.adaptive_temperature", self.adaptive_temperature, None))
        return [(key, value, off) for key, value, off in settings if value != off]

    def swireasoning_conflict(self, *, search_enabled: bool, old_logprobs: str) -> str | None:
        """Why ``mode=swireasoning`` cannot run with the rest of the config (None when it can)."""
        if self.mode != "swireasoning":
            return None
        if search_enabled:
            return ("rollout.mode=swireasoning cannot run with search.enabled=true: the multi-turn search "
                    "rollout decodes token by token")
        if old_logprobs == "sampler":
            return ("rollout.mode=swireasoning needs train.old_logprobs=recompute: the sampler's log-probs were "
                    "computed in contexts holding soft (latent) inputs, not on the token trace that trains")
        return None


class NamedComponent(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword hyperparameters of the component.")


class KLConfig(_Strict):
    coef: float = Field(0.0, ge=0, description="Weight of the KL-to-reference loss (0: no reference model).")
    kind: str = Field("k3", description=f"Estimator: one of {', '.join(KL_KINDS)}.")
    clamp: float | None = Field(10.0, gt=0, description="Clamp of the per-token estimate.")

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        return _one_of(v, KL_KINDS, "KL estimator")


# DAPO's window is L_max=20480, L_cache=4096 (arXiv 2503.14476, sec. 3.4): the ramp is a fifth of the budget.
DAPO_CACHE_FRACTION = 4096 / 20480


class OverlongConfig(_Strict):
    """DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13): 0, then linear, then -factor past L_max."""

    max_len: int | None = Field(
        None, ge=1,
        description="L_max: responses this long or longer get -factor (null: the response budget, "
        "rollout.max_new_tokens; a larger value than the budget is an error, it could never apply).",
    )
    cache_len: int | None = Field(
        None, ge=1,
        description="L_cache: length of the linear ramp before L_max (null: a fifth of L_max, DAPO's 4096/20480; "
        "the scaling to other budgets is inferred).",
    )
    factor: float = Field(1.0, ge=0, description="Penalty at and beyond L_max.")

    @model_validator(mode="after")
    def _check(self) -> OverlongConfig:
        if self.max_len is not None and self.cache_len is not None and self.cache_len > self.max_len:
            raise ValueError(f"cache_len={self.cache_len} must not exceed max_len={self.max_len}")
        return self


class DynamicSamplingConfig(_Strict):
    enabled: bool = Field(False, description="Drop groups whose metric has zero spread and sample more prompts (DAPO).")
    metric: Literal["acc", "reward"] = Field(
        "acc",
        description="What must vary within a kept group: 'acc' the verifier's correctness (DAPO: all-correct and "
        "all-wrong groups are dropped), 'reward' the shaped reward (verl's filter_groups.metric=seq_reward).",
    )
    max_gen_batches: int = Field(10, description="Most generation rounds per step (<= 0: unlimited).")


def _check_component(comp: NamedComponent, registry, where: str) -> None:
    """``where`` is the component's ``.params`` key; an unknown name is reported at its ``.name`` key."""
    try:
        entry = registry.entry(comp.name)
    except ValueError as exc:
        raise ValueError(f"{where.removesuffix('.params')}.name: {exc}") from None
    entry.check_params(comp.params, where=where)


class SpearToolcallConfig(_Strict):
    """SPEAR's intrinsic tool-call reward ``min(cap, per_call·n_calls)·w(step)`` (spec 7.2)."""

    kind: str = Field("cosine", description=f"Curriculum w(step): one of {', '.join(TOOLCALL_KINDS)}.")
    per_call: float = Field(0.1, ge=0, description="Bonus per tool call.")
    cap: float = Field(1.0, ge=0, description="Largest bonus per response.")
    schedule_steps: int = Field(200, ge=1, description="T_tool: the cosine weight reaches 0 at this RL step.")
    posneg: bool = Field(False, description="The _posneg_decay variant: correct responses get 1[n > 0]·w.")

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        return _one_of(v, TOOLCALL_KINDS, "tool-call schedule")


class SpearReplayConfig(_Strict):
    """SPEAR's self-imitation replay (spec 7.3): buffer, trigger, recalibration and the replay loss."""

    buffer_size: int | None = Field(
        None, ge=1,
        description="Most trajectories per replay batch; unit of the trigger (null: a quarter of the rollout "
        "batch, prompts_per_step·group_size/4, so that replay fires every step or two at typical accuracies; "
        "inferred: SPEAR's 2048 counts per-turn samples of long agent episodes, many per rollout batch).",
    )
    trigger: float = Field(1.5, gt=0, description="Replay when replayable trajectories > trigger × buffer_size.")
    tolerate_steps: int = Field(5, ge=0, description="Drop entries more than this many steps older than the newest.")
    capacity: int | None = Field(None, ge=1, description="Hard bound on stored trajectories (None: 2·trigger·buffer_size).")
    baseline_size: int = Field(10240, ge=1, description="Group-mean rewards kept for the replay baseline.")
    percentile: float = Field(50.0, ge=0, le=100, description="Baseline percentile of the history (P50).")
    advantage_weight: float | None = Field(
        None, gt=0, le=1, description="None: recalibrate A = r − b; a value: replay the stored advantages times it."
    )
    keep_zero: bool = Field(True, description="Keep recalibrated A = 0 samples (the official code does).")
    coef: float = Field(1.0, ge=0, description="c of the replay coefficient c·(1 − cos(π·step/T))/2.")
    warmup_steps: int = Field(100, ge=0, description="T_replay: the coefficient reaches c at this RL step.")
    minibatches: int = Field(1, ge=1, description="Optimiser steps per replay batch.")
    policy_loss: NamedComponent = Field(
        default_factory=lambda: NamedComponent(
            name=POLICY_LOSSES.default, params={"clip_low": 0.2, "clip_high": 0.28, "clip_ratio_c": None}
        ),
        description="Policy loss of the replay batch (its stored old log-probs make the ratio off-policy).",
    )
    token_overrides: list[NamedComponent] = Field(
        default_factory=list, description="Token-loss overrides on the replay batch only (SPEAR: Clip-Cov 0.02/2/60)."
    )
    entropy_coef: float = Field(0.001, ge=0, description="Entropy bonus of the replay loss.")
    kl_coef: float = Field(0.0, ge=0, le=0, description="KL to the reference on replay: SPEAR uses none (only 0 is supported).")

    @model_validator(mode="after")
    def _check(self) -> SpearReplayConfig:
        _check_component(self.policy_loss, POLICY_LOSSES, "algorithm.spear.replay.policy_loss.params")
        for i, comp in enumerate(self.token_overrides):
            _check_component(comp, TOKEN_LOSS_OVERRIDES, f"algorithm.spear.replay.token_overrides[{i}].params")
            needs = set(TOKEN_LOSS_OVERRIDES.entry(comp.name).needs) - {"entropy"}
            if needs:  # stored trajectories carry tokens, old log-probs and advantages only
                raise ValueError(
                    f"algorithm.spear.replay.token_overrides[{i}]: {comp.name!r} needs {sorted(needs)}, "
                    "which replayed trajectories do not carry"
                )
        if self.buffer_size is not None:
            self.check_capacity()
        return self

    def check_capacity(self) -> None:
        threshold = self.trigger * self.buffer_size
        if self.capacity is not None and self.capacity <= threshold:
            raise ValueError(
                f"capacity={self.capacity} must exceed trigger*buffer_size={threshold}, otherwise replay never triggers"
            )


class SpearRolloutFilterConfig(_Strict):
    type: Literal["std"] = Field("std", description="Rank groups by the standard deviation of their rewards.")
    ratio: float = Field(0.75, gt=0, le=1, description="Share of groups kept (the highest-std ones).")


class SpearConfig(_Strict):
    """SPEAR (arXiv 2509.22601): tool-call curriculum, self-imitation replay, group filter."""

    toolcall: SpearToolcallConfig | None = Field(
        default_factory=SpearToolcallConfig,
        description="Intrinsic tool-call reward (0 for single-turn rollouts, which make no tool calls).",
    )
    replay: SpearReplayConfig | None = Field(default_factory=SpearReplayConfig, description="Self-imitation replay.")
    rollout_filter: SpearRolloutFilterConfig | None = Field(
        None, description="Keep the groups with the highest reward std before the update (None: keep all)."
    )


class AlgorithmConfig(_Strict):
    advantage: NamedComponent = Field(default_factory=lambda: NamedComponent(name=ADVANTAGE_ESTIMATORS.default))
    policy_loss: NamedComponent = Field(
        default_factory=lambda: NamedComponent(
            name=POLICY_LOSSES.default, params={"clip_low": 0.2, "clip_high": 0.2}
        )
    )
    token_modifiers: list[NamedComponent] = Field(
        default_factory=list, description="Token-advantage modifiers applied in order (e.g. GRPO-N, NTHR)."
    )
    token_overrides: list[NamedComponent] = Field(
        default_factory=list, description="Per-token loss overrides applied after the base clip, in order (Clip-Cov, KL-Cov, Lp-Reg)."
    )
    aux_losses: list[NamedComponent] = Field(
        default_factory=list, description="Auxiliary losses added to the policy loss, each with its own normalisation (e.g. LLDS)."
    )
    aggregation: str = Field("token-mean", description="Loss reduction; one of the registered modes.")
    t_norm: int | None = Field(None, ge=1, description="T_norm of seq-mean-token-sum-norm (default: the longest possible response: rollout.max_new_tokens, times the turns with search, plus observations).")
    global_normalization: bool = Field(True, description="Normalise by whole-mini-batch counts (exact under micro-batching).")
    exclude_empty_sequences: bool = Field(False, description="Leave empty responses out of B in seq-mean modes.")
    legacy_no_batch_norm: bool = Field(False, description="seq-mean-token-sum-norm without 1/B (verl <= 0.8, SPEAR).")
    kl: KLConfig = Field(default_factory=KLConfig)
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus weight.")
    overlong: OverlongConfig | None = Field(None, description="DAPO soft overlong punishment (None: off).")
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig)
    spear: SpearConfig | None = Field(None, description="SPEAR's tool-call reward and self-imitation replay (None: off).")

    @model_validator(mode="after")
    def _check_names(self) -> AlgorithmConfig:
        for where, registry, comp in self.components():
            _check_component(comp, registry, f"{where}.params")
        try:
            AGGREGATORS.entry(self.aggregation)
        except ValueError as exc:
            raise ValueError(f"algorithm.aggregation: {exc}") from None
        return self

    def components(self) -> list[tuple[str, Registry, NamedComponent]]:
        """Every configured objective component: (config key, registry, component)."""
        out = [("algorithm.advantage", ADVANTAGE_ESTIMATORS, self.advantage),
               ("algorithm.policy_loss", POLICY_LOSSES, self.policy_loss)]
        for field_name, registry in (("token_modifiers", TOKEN_ADVANTAGE_MODIFIERS),
                                     ("token_overrides", TOKEN_LOSS_OVERRIDES), ("aux_losses", AUX_LOSSES)):
            out += [(f"algorithm.{field_name}[{i}]", registry, c) for i, c in enumerate(getattr(self, field_name))]
        return out

    @property
    def effective_aggregation(self) -> str:
        """The policy loss may force its own mode (GSPO: seq-mean-token-mean)."""
        return POLICY_LOSSES.entry(self.policy_loss.name).meta.get("aggregation", self.aggregation)


class OptimConfig(_Strict):
    name: Literal["adamw", "muon", "specgd"] = Field(
        "adamw", description="Optimiser: adamw; muon or specgd on the hidden weight matrices with AdamW on "
        "embeddings, LM head, norms and biases (rlvr_lab.optim; one lr, the spectral step scaled to AdamW's RMS).")
    lr: float = Field(1e-5, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = Field((0.9, 0.99))
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    schedule: Literal["constant", "cosine", "linear"] = Field("constant", description="Decay after warmup.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global grad norm (None: off).")


# Hyperparameters of the div_prec warm-start loss (everything keyword-only but the ignore index).
_DIV_PREC_PARAMS = tuple(
    n for n, p in inspect.signature(div_prec_token_loss).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "ignore_index"
)


class SFTLossConfig(_Strict):
    name: Literal["cross_entropy", "div_prec"] = Field(
        "cross_entropy", description="Warm-start objective: next-token cross-entropy or Diversity-or-Precision."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="div_prec: beta, lambda_top, lambda_tail, k, w_max (arXiv 2512.22955)."
    )

    @model_validator(mode="after")
    def _check_params(self) -> SFTLossConfig:
        allowed = _DIV_PREC_PARAMS if self.name == "div_prec" else ()
        for key in self.params:
            if key not in allowed:
                raise ValueError(
                    f"sft.loss.params: unknown parameter {key!r} for {self.name!r}; allowed: {list(allowed) or 'none'}"
                )
        k, w_max = self.params.get("k", 0), self.params.get("w_max", 1.0)
        w_max_ok = isinstance(w_max, (int, float)) and w_max > 0  # a string would raise TypeError, not name the key
        if not isinstance(k, int) or k < 0 or not w_max_ok:
            raise ValueError(f"sft.loss.params: div_prec needs an int k >= 0 and w_max > 0, got k={k!r}, w_max={w_max!r}")
        return self


class SFTSelectConfig(_Strict):
    """Warm-start data selection by For-Value (arXiv 2508.10180): score the warm-start's examples with the
    model about to be trained, keep the best fraction, and train the same number of steps on those."""

    fraction: float = Field(
        0.5, gt=0, le=1,
        description="Share of the warm-start's distinct examples kept: the ceil(fraction x n) highest For-Value "
        "scores against the validation mean. The warm-start cycles over them for its steps x batch_size examples.",
    )
    val_size: int = Field(
        32, ge=1,
        description="Validation examples the scores are taken against: the last val_size examples of the "
        "(decontaminated) training set, never the held-out eval set, and never warm-started on (our choice; "
        "the paper leaves the validation set to the user).",
    )
    batch_size: int = Field(8, ge=1, description="Examples per scoring forward pass.")
    vocab: Literal["all", "topk"] = Field(
        "all", description="Vocabulary rows of the representations: all (exact) or topk (per-batch top-32 predictions)."
    )


class SFTConfig(_Strict):
    loss: SFTLossConfig = Field(default_factory=SFTLossConfig, description="The warm-start objective.")
    steps: int = Field(0, ge=0, description="Supervised warm-start steps before RL (0: skip).")
    batch_size: int = Field(32, ge=1)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=20, schedule="cosine"))
    target_template: str = Field("<answer>{answer}</answer>", description="Supervised response; {answer} is the reference.")
    init_from: str | None = Field(
        None,
        description="A checkpoint holding the result of this same warm-start (set by `rlvr sweep` when cells share "
        "one): its weights are loaded instead of training; RL prompts still start after the steps x batch_size "
        "warm-start examples, as if it had been trained here.",
    )
    select: SFTSelectConfig | None = Field(
        None,
        description="Keep only the warm-start examples with the highest For-Value scores (None: train on all). "
        "Not run when init_from loads the warm-start's weights.",
    )


class KeepBestConfig(_Strict):
    metric: str = Field(description="A key of the RL step records in metrics.jsonl, e.g. reward/mean.")
    mode: Literal["max", "min"] = Field("max", description="Whether larger or smaller is better.")


class TrainConfig(_Strict):
    steps: int = Field(50, ge=0, description="RL steps (one rollout batch each).")
    prompts_per_step: int = Field(16, ge=1, description="Prompts P per rollout batch.")
    group_size: int = Field(8, ge=1, description="Responses G per prompt.")
    minibatches: int = Field(
        1, ge=1,
        description="Optimiser steps per rollout batch (off-policy after the first). Methods that act only "
        "off-policy (LLDS, KL-Cov, HAPO's clip, GSPO, clip-higher) refuse 1 mini-batch with 1 epoch.",
    )
    epochs: int = Field(1, ge=1, description="Passes over the rollout batch.")
    micro_batch_size: int = Field(32, ge=1, description="Sequences per forward/backward (gradient accumulation).")
    shuffle: Literal["rows", "groups"] = Field(
        "groups",
        description="How mini-batches are drawn: 'groups' (default) whole groups in random order, so a "
        "mini-batch holds the G responses of P/minibatches prompts, as in verl's split: every optimiser step "
        "sees each of its prompts' correct and wrong responses together (group-relative advantages that "
        "sum to zero per group) and share_prompts runs each prompt once per mini-batch. 'rows' draws "
        "uniformly from all responses, as TRL does (the committed experiments in experiments/ ran with it "
        "and pin it).",
    )
    share_prompts: bool = Field(
        True,
        description="Run each distinct prompt of a micro-batch once and the responses on top of its keys and "
        "values (same log-probs and gradients as the full pass up to float rounding, much cheaper when a "
        "group repeats a long prompt).",
    )
    old_logprobs: Literal["recompute", "sampler"] = Field(
        "recompute",
        description="Where the old-policy log-probs (and entropies) come from: 'recompute' runs the policy over "
        "the batch before the update; 'sampler' takes what the rollout engine reported while sampling, which "
        "saves that forward pass. Equal up to float rounding when the rollout draws from the full tempered "
        "distribution with the weights being trained (no top-k/top-p, no adaptive temperature); in bf16 or "
        "with a separate inference engine the two can drift apart.",
    )
    allow_inert_methods: bool = Field(
        False,
        description="Run a configuration in which a method can have no effect (e.g. LLDS with one mini-batch "
        "and one epoch) with a warning instead of refusing it at start-up.",
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)
    log_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(
        0, ge=0, description="Save a checkpoint every N RL steps (0: only at the end); each one holds the trainer "
        "state for an exact resume (rlvr train --resume RUN_DIR).")
    keep_checkpoints: int = Field(2, ge=1, description="How many periodic checkpoints to keep (the newest).")
    max_nonfinite_steps: int = Field(
        3, ge=0, description="Stop (with a checkpoint of the last good weights) after this many RL steps in a row "
        "whose every update was skipped for a non-finite loss or gradient (0: never stop).")
    keep_best: KeepBestConfig | None = Field(
        None, description="Also keep the periodic checkpoint with the best value of a step metric (None: off).")

    @model_validator(mode="after")
    def _check_batches(self) -> TrainConfig:
        batch = self.prompts_per_step * self.group_size
        if batch % self.minibatches:
            raise ValueError(
                f"prompts_per_step*group_size={batch} must be divisible by minibatches={self.minibatches}"
            )
        return self


class EvalConfig(_Strict):
    enabled: bool = Field(True, description="Evaluate before and after RL.")
    every: int = Field(0, ge=0, description="Also evaluate every N RL steps (0: only before/after).")
    samples: int = Field(8, ge=1, description="Samples per prompt n for pass@k.")
    k: list[int] = Field(default_factory=lambda: [1, 8], description="k values for unbiased pass@k (each <= samples).")
    maj: list[int] | None = Field(
        None, description="k values for maj@k, majority vote over k samples (each <= samples); None: all samples."
    )
    temperature: float = Field(1.0, ge=0, description="Sampling temperature for pass@k.")
    greedy: bool = Field(True, description="Also measure greedy accuracy.")

    @model_validator(mode="after")
    def _check_k(self) -> EvalConfig:
        bad = [k for k in (*self.k, *(self.maj or ())) if not 1 <= k <= self.samples]
        if bad:
            raise ValueError(f"k values {bad} must be between 1 and samples={self.samples}")
        return self

    def maj_ks(self) -> list[int]:
        """The k of each maj@k to report: ``maj``, or all samples when it is None."""
        return list(self.maj) if self.maj is not None else [self.samples]


class WandbConfig(_Strict):
    enabled: bool = Field(False, description="Mirror the metrics to a Weights & Biases run (needs `rlvr-lab[wandb]`).")
    project: str = Field("rlvr-lab", description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team or user); None: your default.")
    mode: Literal["offline", "online"] = Field(
        "offline", description="offline writes under RUN_DIR/wandb with no account or network (`wandb sync` uploads later)."
    )


class MlflowConfig(_Strict):
    enabled: bool = Field(False, description="Mirror the metrics to an MLflow run (needs `rlvr-lab[mlflow]`).")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; None: a local file store in RUN_DIR/mlruns (offline).")
    experiment: str = Field("rlvr-lab", description="MLflow experiment name.")


class ObserveConfig(_Strict):
    lld_every: int = Field(
        10, ge=0,
        description="Re-score every N-th rollout batch after the update to measure likelihood displacement (0: off); one extra forward pass.",
    )
    low_prob_threshold: float = Field(0.02, gt=0, lt=1, description="Sampled tokens below this probability count as low-probability.")
    phase_detector: bool = Field(True, description="Label each step (stagnation, decay, collapse, entropy collapse).")
    on_alert: Literal["warn", "checkpoint", "stop"] = Field(
        "warn", description="What to do on entering a decay or collapse phase: warn, also save a checkpoint, or stop the run."
    )
    probe_prompts: int = Field(
        16, ge=0,
        description="Fixed probe set: this many held-out prompts with stored responses, re-scored every probe_every steps (0: off).",
    )
    probe_samples: int = Field(4, ge=1, description="Stored responses per probe prompt (sampled once, at the start of RL).")
    probe_every: int = Field(5, ge=1, description="Re-score the probe set every N RL steps (one forward pass over the probes).")
    probe_file: str | None = Field(
        None,
        description="Re-use the probe responses stored by another run (its probes.json), so runs are compared on the same responses.",
    )
    inactive_steps: int = Field(
        5, ge=0,
        description="Warn when a method has changed nothing (its count of tokens acted on is 0) for this many "
        "consecutive RL steps: the run is then the same as without it (0: never warn).",
    )
    grad_groups: int = Field(4, ge=0, description="Log the gradient norm of this many bands of layers plus embedding and head (0: off).")
    tensorboard: bool = Field(True, description="Write TensorBoard event files to RUN_DIR/tensorboard.")
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    report: bool = Field(True, description="Write RUN_DIR/report.html (interactive plots) when the run ends.")


class SearchConfig(_Strict):
    """Search-R1-style tool use (arXiv 2503.09516): multi-turn rollouts with a retriever."""

    enabled: bool = Field(False, description="Roll out with the search tool (multi-turn) instead of one response.")
    retriever: Literal["bm25", "http"] = Field("bm25", description="Local BM25 index over `corpus`, or a retrieval service at `url`.")
    corpus: str | None = Field(None, description="JSONL corpus {id, title, text} for BM25; synthetic_kb tasks write their own.")
    index_cache: str | None = Field(None, description="Where the BM25 index is cached (default: beside the corpus).")
    url: str | None = Field(None, description="Retrieval service (Search-R1's /retrieve request/response shape).")
    http_timeout_s: float = Field(30.0, gt=0, description="Per-request time limit of the retrieval service.")
    http_retries: int = Field(2, ge=0, description="Retries (with backoff) of a failed request.")
    top_k: int = Field(3, ge=1, description="Passages per search.")
    max_turns: int = Field(2, ge=0, description="Tool calls per response; one last model turn follows without a call.")
    max_obs_tokens: int = Field(500, ge=1, description="Longest observation (passage text) in tokens.")
    instruction: str | None = Field(None, description="Prompt before the question (None: the Search-R1 task description).")
    invalid_message: str | None = Field(None, description="Observation after an invalid action (None: Search-R1's message).")
    invalid_action_penalty: float = Field(
        0.0, ge=0,
        description="Subtracted from the reward per invalid action (SPEAR's base recipe uses 0.1, arXiv 2509.22601; "
        "per-action counting is inferred).",
    )

    @model_validator(mode="after")
    def _check_source(self) -> SearchConfig:
        if self.enabled and self.retriever == "http" and not self.url:
            raise ValueError("search.retriever=http needs search.url")
        return self


class Config(_Strict):
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    observe: ObserveConfig = Field(default_factory=ObserveConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    @model_validator(mode="after")
    def _check_task_and_search(self) -> Config:
        if self.task.kind == "qa" and not self.task.train_path:
            raise ValueError("task.kind=qa needs task.train_path (JSONL or Parquet)")
        if self.search.enabled and self.search.retriever == "bm25" and not self.search.corpus and self.task.kind != "synthetic_kb":
            raise ValueError("search with the bm25 retriever needs search.corpus (only synthetic_kb tasks make their own)")
        r = self.rollout
        conflict = r.swireasoning_conflict(search_enabled=self.search.enabled, old_logprobs=self.train.old_logprobs)
        if conflict:
            raise ValueError(conflict)
        if self.train.old_logprobs == "sampler":
            # the sampler's log-probs are those of the distribution it drew from: the same as the
            # recomputed ones only when that is the full tempered distribution the loss uses
            filters = r.distribution_filters()
            if filters:
                key, value, off = filters[0]
                raise ValueError(f"train.old_logprobs=sampler needs {key}={off} (got {value!r}): the sampler's "
                                 "log-probs would be of a filtered or per-token-tempered distribution; "
                                 "use train.old_logprobs=recompute")
            if r.dtype not in ("model", self.model.dtype):
                raise ValueError(f"train.old_logprobs=sampler cannot take rollout.dtype={r.dtype} with model.dtype="
                                 f"{self.model.dtype}: the old policy's log-probs would come from the {r.dtype} "
                                 "copy, not the policy being trained; use train.old_logprobs=recompute")
        self._resolve_overlong()
        self._resolve_replay()
        for where, registry, comp in self.algorithm.components():
            entry = registry.entry(comp.name)
            check = entry.meta.get("check_config")
            problem = check(entry.with_defaults(comp.params), self) if check is not None else None
            if problem:
                raise ValueError(f"{where} {comp.name!r}: {problem}")
        inert = inert_methods(self)
        if inert and not self.train.allow_inert_methods:
            raise ValueError(
                "\n  ".join(inert) + "\n  Use train.minibatches >= 2 or train.epochs >= 2 (an "
                "off-policy step), or set train.allow_inert_methods=true to run anyway with a warning."
            )
        return self

    def max_response_tokens(self) -> int:
        """The longest response a rollout can produce: one turn, or with search every model turn plus every
        observation (T_norm of seq-mean-token-sum-norm when ``algorithm.t_norm`` is unset; DAPO's L_max)."""
        turn, s = self.rollout.max_new_tokens, self.search
        return turn if not s.enabled else turn * (s.max_turns + 1) + s.max_obs_tokens * s.max_turns

    def _resolve_overlong(self) -> None:
        """DAPO's L_max defaults to the response budget; one beyond it could never apply."""
        ol, budget = self.algorithm.overlong, self.max_response_tokens()
        if ol is None:
            return
        if ol.max_len is None:
            ol.max_len = budget
        elif ol.max_len > budget:
            raise ValueError(
                f"algorithm.overlong.max_len={ol.max_len} exceeds the response budget of {budget} tokens "
                "(rollout.max_new_tokens): no response could reach it; leave it null to use the budget"
            )
        if ol.cache_len is None:
            ol.cache_len = max(1, round(DAPO_CACHE_FRACTION * ol.max_len))
        elif ol.cache_len > ol.max_len:
            raise ValueError(f"algorithm.overlong.cache_len={ol.cache_len} must not exceed max_len={ol.max_len}")


    def _resolve_replay(self) -> None:
        """SPEAR's replay buffer defaults to a quarter of the rollout batch."""
        replay = self.algorithm.spear.replay if self.algorithm.spear is not None else None
        if replay is not None and replay.buffer_size is None:
            replay.buffer_size = max(1, self.train.prompts_per_step * self.train.group_size // 4)
            replay.check_capacity()


def replay_never_triggers(cfg: Config) -> str | None:
    """Why SPEAR's replay can never fire with this configuration (None when it can).

    At most G-1 responses of a group have a positive advantage, entries older than ``tolerate_steps``
    are evicted and at most ``capacity`` are kept, so no more than
    ``min(capacity, (tolerate_steps + 1)·P·(G-1))`` trajectories are ever stored at once.
    """
    spear = cfg.algorithm.spear
    if spear is None or spear.replay is None:
        return None
    r, t = spear.replay, cfg.train
    groups = t.prompts_per_step
    if spear.rollout_filter is not None:
        groups = max(1, int(spear.rollout_filter.ratio * groups))
    most = (r.tolerate_steps + 1) * groups * (t.group_size - 1)
    if r.capacity is not None:
        most = min(most, r.capacity)
    threshold = r.trigger * r.buffer_size
    if most > threshold:
        return None
    return (f"SPEAR's replay can never trigger: it needs more than trigger*buffer_size={threshold:g} replayable "
            f"trajectories, but at most {most} are ever stored ({groups} groups x {t.group_size - 1} positive "
            f"responses x {r.tolerate_steps + 1} steps); lower algorithm.spear.replay.buffer_size (null: a quarter "
            "of the rollout batch) or raise tolerate_steps")


def inert_methods(cfg: Config) -> list[str]:
    """One sentence per configured component that can have no effect because the run never takes an
    off-policy step (one mini-batch, one epoch: the policy has not moved when the loss is evaluated)."""
    if cfg.train.minibatches > 1 or cfg.train.epochs > 1:
        return []
    out = []
    for where, registry, comp in cfg.algorithm.components():
        reason = registry.entry(comp.name).inert_without_off_policy(comp.params)
        if reason:
            out.append(f"{where} {comp.name!r} needs an off-policy step: with train.minibatches=1 and "
                       f"train.epochs=1 {reason}.")
    return out


# ---- loading -------------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; nested mappings merge, everything else replaces.

    A component's parameters belong to its name: when ``top`` gives a mapping a different
    ``name``, the old ``params``/``config`` are dropped before merging, so switching the policy
    loss or the task never inherits the previous one's options.
    """
    out = copy.deepcopy(base)
    for key, value in top.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if "name" in value and value["name"] != old.get("name"):
                old = {k: v for k, v in old.items() if k not in ("params", "config")}
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config_file(ref: str | Path, base: Path | None = None) -> Path:
    """A config file by path (relative to ``base`` for ``extends:``, else to the working directory) or,
    when no such file exists, a packaged preset by name (``dapo``, ``dapo.yaml``)."""
    path = Path(ref) if base is None else base / ref
    if path.is_file():
        return path
    try:
        return preset_path(str(ref))
    except KeyError:
        raise ConfigError(f"config file not found: {path} (and no packaged preset of that name; presets: "
                          f"{', '.join(preset_names())})") from None


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config 'extends' cycle: {' -> '.join(map(str, seen + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except ValueError as exc:  # PyYAML's int() of a number over Python's 4300-digit limit
        raise ConfigError(f"{path}: not usable YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    parents = data.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(parent, str) for parent in parents):
        raise ConfigError(f"{path}: extends: must be a config file or preset name, or a list of them "
                          f"(got {_short_repr(parents)})")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = deep_merge(merged, _read_yaml(resolve_config_file(parent, path.parent), seen + (path,)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], value parsed as YAML, so 3 is an int and [1,2] a list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # also an over-long int or too deep a nesting
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    top: Any = value
    for part in reversed(path):
        top = {part: top}
    return deep_merge(data, top)


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 160
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 6
_SHORT.maxlevel = 2


def _short_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` in at most ``limit`` characters, however large or deeply shared the value (YAML
    aliases can make a small file a huge one): an error names the bad value, it never dumps it."""
    try:
        text = _SHORT.repr(value)
    except ValueError:  # an int over Python's 4300-digit limit has no repr
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (value {_short_repr(err['input'])})")
        elif isinstance(err.get("input"), (dict, list)):  # a model-level check: the message names the keys
            named = loc == "<top level>" or msg.startswith((f"{loc}.", f"{loc}["))
            lines.append(f"  {msg}" if named else f"  {loc}: {msg}")
        else:
            lines.append(f"  {loc}: {msg} (got {_short_repr(err.get('input'))})")
    return "invalid config:\n" + "\n".join(lines)


def _suggest_unknown_keys(data: dict[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    """Name the valid keys next to each unknown one."""
    hints = []
    for key, value in data.items():
        fields = model.model_fields
        if key not in fields:
            hints.append(f"  {prefix}{key}: allowed keys are {', '.join(fields)}")
            continue
        annotation = fields[key].annotation
        if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            hints.extend(_suggest_unknown_keys(value, annotation, f"{prefix}{key}."))
    return hints


def build_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        message = _format_validation_error(exc)
        hints = _suggest_unknown_keys(data, Config)
        if hints:
            message += "\n" + "\n".join(hints)
        raise ConfigError(message) from None
    except ValueError as exc:  # registry errors raised inside validators
        raise ConfigError(f"invalid config: {exc}") from None


def read_config_data(ref: str | Path) -> dict[str, Any]:
    """A config file's (or packaged preset's) data with its ``extends`` merged, before validation: values
    that default to others (DAPO's L_max, SPEAR's buffer) stay unresolved until the whole config is built."""
    return _read_yaml(resolve_config_file(ref))


def load_config(path: str | Path | None, *, presets: list[str | Path] = (), overrides: list[str] = ()) -> Config:
    """Read ``path`` (or the defaults), merge presets on top, apply ``key=value`` overrides, validate."""
    data: dict[str, Any] = _read_yaml(resolve_config_file(path)) if path is not None else {}
    for preset in presets:
        data = deep_merge(data, _read_yaml(resolve_config_file(preset)))
    for text in overrides:
        keys, value = parse_override(text)
        data = apply_override(data, keys, value)
    return build_config(data)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
