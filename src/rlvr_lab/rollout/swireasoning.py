"""SwiReasoning: decoding that switches between latent and explicit thinking (arXiv 2510.05069).

Training-free. Each sequence alternates *thinking blocks*: in a latent block the model is fed the
probability-weighted mixture of its token embeddings, ``e_soft = p_t^T E``, instead of a sampled token; in
an explicit block it is fed the sampled token as usual. A block ends when the entropy of the next-token
distribution crosses the entropy it had when the block began (confidence rose: go explicit; fell again,
after at least ``window`` explicit steps: go back to latent). A cap on latent->explicit switches first
forces a "stop thinking" text and, past twice the cap, an answer prefix and a short answer budget.

Three pieces:

* :class:`SwirController`: the batched, per-sequence state machine (mode, reference entropy, dwell,
  lock, switch count, forced-token queue, answer budget) and the inputs it feeds next, with the α/β
  blends of the paper's code;
* :func:`soft_embedding`: ``probs @ E``;
* :class:`SwiReasoning`: the generation loop over the rollout engine's decoders and KV cache (prefill
  the prompts, then one input vector per row and step), which :class:`~rlvr_lab.rollout.engine.RolloutEngine`
  calls when it was built with a :class:`SwirConfig`.

What the returned ids mean. Every step appends the token ``y_t`` chosen at that step, latent steps too,
so the response is a *trace*: at a latent step the model was fed ``e_soft``, not ``y_t``.
``SwirGeneration.latent_mask`` marks the tokens whose own embedding was not the next input (latent steps,
and the latent->explicit switch step, which feeds a blend of ``e_soft`` and ``</think>``).

What trains. The trainer recomputes log-probs on the token trace, i.e. as if every token had been fed.
A latent token was never an action the model took (its action was the mixture), and a log-prob computed
for it from token inputs is not that of the distribution it was drawn from, so latent tokens are masked
out of ``loss_mask`` (:attr:`SwirGeneration.loss_mask`); tokens from the forced queue are *forced*
(``sampled_mask`` False) like any injected text. The explicit tokens that remain are trained with
log-probs recomputed on the token trace, whereas they were sampled in a context that held soft inputs:
their recomputed old log-probs are an off-policy stand-in for the sampler's. Training on SwiReasoning
rollouts is therefore off-policy (the sampler's own log-probs cannot serve as old log-probs: the config
refuses ``train.old_logprobs=sampler`` with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlvr_lab.rollout.engine import COMPACT_AT, _StopChecker
from rlvr_lab.rollout.sampling import SamplingParams, sample_next, tempered_entropy
from rlvr_lab.types import Generation

# At t=0 the soft embedding is pulled a tenth of the way towards a newline's embedding (the paper's code).
FIRST_STEP_KEEP = 0.9

# Single-token texts that count as "math": forced explicit, so numbers and formulas are always written
# out as tokens (arXiv 2510.05069 code, enabled in its run.py). Digits, single ASCII letters (variables),
# operator/bracket strings and these LaTeX commands.
MATH_OPERATOR_CHARS = frozenset("+-*/=<>^_()[]{}|%!\\")
LATEX_COMMANDS = frozenset({
    "\\frac", "\\dfrac", "\\sqrt", "\\times", "\\cdot", "\\div", "\\pm", "\\mp", "\\le", "\\leq", "\\ge",
    "\\geq", "\\neq", "\\approx", "\\pi", "\\infty", "\\sum", "\\prod", "\\int", "\\binom", "\\boxed",
    "\\left", "\\right", "\\log", "\\ln", "\\sin", "\\cos", "\\tan",
})


@dataclass(frozen=True)
class SwirConfig:
    """SwiReasoning's settings (defaults: the paper's code, spec B9.2)."""

    alpha0: float = 1.0
    """α₀: on an explicit->latent switch the soft embedding becomes ``α_t e_soft + (1-α_t) E[<think>]``,
    α_t rising linearly from α₀ to 1 over ``max_new_tokens`` (1: no blend)."""
    beta0: float = 0.7
    """β₀: on a latent->explicit switch the next input is ``β_t e_soft + (1-β_t) E[</think>]``."""
    window: int = 512
    """W: least explicit steps (dwell) before returning to latent."""
    max_switch_count: int | None = None
    """C_max: after C_max latent->explicit switches force ``convergence_text``; past 2·C_max force
    ``termination_text`` and stop ``answer_budget`` tokens later (None: no cap)."""
    convergence_text: str = "</think>"
    termination_text: str = "</think>\n\nThe final answer is"
    answer_budget: int = 32
    """Tokens allowed after ``termination_text`` has been written."""
    force_math_tokens: bool = True
    """Feed digits, single letters, operators and LaTeX commands as tokens even in a latent block."""
    think_text: str = "<think>"
    """Blended in on explicit->latent switches (its first token; "" skips the blend)."""
    end_think_text: str = "</think>"
    """Blended in on latent->explicit switches; sampling its first token locks the sequence explicit
    ("" skips both)."""
    first_step_text: str = "\n"
    """Blended into the t=0 soft embedding (its first token; "" skips). The paper's code uses the id of the
    two-character literal backslash-n, which we take to mean a newline."""
    start_latent: bool = True
    """Begin in a latent block (the paper); False begins explicit (ablations and tests)."""

    def __post_init__(self) -> None:
        for name in ("alpha0", "beta0"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.window < 1 or self.answer_budget < 1:
            raise ValueError(f"window and answer_budget must be >= 1, got {self.window}, {self.answer_budget}")
        if self.max_switch_count is not None and self.max_switch_count < 1:
            raise ValueError(f"max_switch_count must be >= 1 or None, got {self.max_switch_count}")


@dataclass(frozen=True)
class SwirTokenIds:
    """The token ids a :class:`SwirController` needs (None: that blend or lock is skipped)."""

    think: int | None = None
    end_think: int | None = None
    first_step: int | None = None
    convergence: tuple[int, ...] = ()
    termination: tuple[int, ...] = ()
    math: tuple[int, ...] = ()


def is_math_text(text: str) -> bool:
    """Whether a token's text (surrounding spaces ignored) is a number, a single letter, operators or a
    LaTeX command."""
    s = text.strip()
    if not s or not s.isascii():
        return False
    return (s.isdigit() or (len(s) == 1 and s.isalpha()) or all(c in MATH_OPERATOR_CHARS for c in s)
            or s in LATEX_COMMANDS)


def math_token_ids(tokenizer) -> tuple[int, ...]:
    """Ids of the tokenizer's non-special tokens whose decoded text :func:`is_math_text`."""
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    texts = tokenizer.batch_decode([[i] for i in ids])
    return tuple(i for i, text in zip(ids, texts) if is_math_text(text))


def token_ids(tokenizer, cfg: SwirConfig) -> SwirTokenIds:
    """Tokenise ``cfg``'s texts: the first token of each blend text (a model without ``<think>`` tokens
    gets the first piece of the text), all tokens of the forced texts."""

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False) if text else []

    def first(text: str) -> int | None:
        ids = encode(text)
        return ids[0] if ids else None

    return SwirTokenIds(
        think=first(cfg.think_text), end_think=first(cfg.end_think_text), first_step=first(cfg.first_step_text),
        convergence=tuple(encode(cfg.convergence_text)), termination=tuple(encode(cfg.termination_text)),
        math=math_token_ids(tokenizer) if cfg.force_math_tokens else (),
    )


def soft_embedding(probs_raw: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """The probability-weighted embedding mixture ``p^T E`` (arXiv 2510.05069).

    probs_raw (N, V) float, embed (V', d) with V' >= V (a padded embedding table) -> (N, d) in embed's dtype.
    """
    V = probs_raw.shape[-1]
    return probs_raw.to(embed.dtype) @ embed[:V]  # (N, d)


def entropy_of(probs: torch.Tensor) -> torch.Tensor:
    """(N, V) probabilities -> (N,) entropy in nats (0 log 0 = 0)."""
    return torch.special.entr(probs.float()).sum(-1)


@dataclass
class SwirStep:
    """What one controller step decided, per row (all (N,))."""

    tokens: torch.Tensor  # long: the step's token, y_t or the forced token that replaced it
    forced: torch.Tensor  # bool: the token came from the forced queue
    feed_latent: torch.Tensor  # bool: the next input is the soft embedding
    to_latent: torch.Tensor  # bool: explicit -> latent switch at this step
    to_explicit: torch.Tensor  # bool: latent -> explicit switch at this step
    blend_explicit: torch.Tensor  # bool: the next input is the β blend of e_soft and </think>
    finished: torch.Tensor  # bool: the answer budget ran out with this token
    entropy: torch.Tensor  # float32: H_t of the raw distribution

    def select(self, rows: torch.Tensor) -> SwirStep:
        return SwirStep(**{k: v.index_select(0, rows) for k, v in vars(self).items()})

    @property
    def token_not_fed(self) -> torch.Tensor:
        """(N,) bool: the next input is not this token's own embedding (soft mixture, or the β blend)."""
        return self.feed_latent | self.blend_explicit


class SwirController:
    """SwiReasoning's switching rule for a batch of sequences (arXiv 2510.05069; spec B9.1 steps 2-5).

    Per row: ``latent`` (the block's mode), ``h_ref`` (the entropy at the block's start), ``dwell``
    (steps since the last switch), ``locked`` (the model sampled ``</think>``: explicit from then on),
    ``switches`` (latent->explicit switches so far), a queue of forced tokens and an answer budget.
    """

    def __init__(self, cfg: SwirConfig, ids: SwirTokenIds, batch: int, *, max_new_tokens: int,
                 device: torch.device | str = "cpu"):
        self.cfg, self.ids, self.max_new_tokens = cfg, ids, max_new_tokens
        self.latent = torch.full((batch,), cfg.start_latent, dtype=torch.bool, device=device)
        self.h_ref = torch.zeros(batch, device=device)
        self.dwell = torch.zeros(batch, dtype=torch.long, device=device)
        self.locked = torch.zeros(batch, dtype=torch.bool, device=device)
        self.switches = torch.zeros(batch, dtype=torch.long, device=device)
        # answer tokens left after the termination text (-1: no budget running)
        self.budget = torch.full((batch,), -1, dtype=torch.long, device=device)
        self.queue: list[list[int]] = [[] for _ in range(batch)]
        self.math = torch.tensor(ids.math, dtype=torch.long, device=device)

    def select(self, rows: torch.Tensor) -> None:
        """Keep ``rows`` (the engine drops finished sequences)."""
        for name in ("latent", "h_ref", "dwell", "locked", "switches", "budget"):
            setattr(self, name, getattr(self, name).index_select(0, rows))
        self.queue = [self.queue[i] for i in rows.tolist()]

    def alpha(self, t: int) -> float:
        return self.cfg.alpha0 + (1 - self.cfg.alpha0) * t / self.max_new_tokens

    def beta(self, t: int) -> float:
        return self.cfg.beta0 + (1 - self.cfg.beta0) * t / self.max_new_tokens

    def step(self, t: int, probs_raw: torch.Tensor, sampled: torch.Tensor) -> SwirStep:
        """Step ``t`` given the raw next-token distribution (N, V) (temperature 1, unfiltered) and the
        sampled tokens (N,)."""
        return self.update(t, entropy_of(probs_raw), sampled)

    def update(self, t: int, entropy: torch.Tensor, sampled: torch.Tensor) -> SwirStep:
        """Step ``t`` given each row's entropy H_t (N,) and sampled token (N,): the state machine itself."""
        cfg, ids = self.cfg, self.ids
        if ids.end_think is not None:  # only the model's own </think> locks, not a forced one
            self.locked |= sampled == ids.end_think
        tokens, forced = sampled.clone(), torch.zeros_like(self.locked)
        for i, queue in enumerate(self.queue):
            if queue:
                tokens[i], forced[i] = queue.pop(0), True
        # the answer budget counts the free tokens after the termination text
        counting = (self.budget > 0) & ~forced
        self.budget -= counting.long()
        finished = counting & (self.budget == 0)
        entropy = entropy.float()
        no = torch.zeros_like(self.locked)
        if t == 0:
            self.h_ref = entropy.clone()
            to_latent, to_explicit = no, no.clone()
        else:
            self.dwell += 1
            # confidence rose above the block's starting level: write it out
            to_explicit = self.latent & (entropy < self.h_ref)
            # confidence fell again after at least W explicit steps: think latently
            to_latent = ~self.latent & (entropy > self.h_ref) & (self.dwell >= cfg.window) & ~self.locked
            switched = to_explicit | to_latent
            self.latent = (self.latent & ~to_explicit) | to_latent
            self.dwell = self.dwell.masked_fill(switched, 0)
            self.h_ref = torch.where(switched, entropy, self.h_ref)
            self.switches += to_explicit.long()
            if cfg.max_switch_count is not None and bool(to_explicit.any()):
                self._control_switches(to_explicit)
        explicit = ~self.latent | self.locked | forced
        if self.math.numel():
            explicit |= torch.isin(tokens, self.math)
        # the first explicit input after a latent block is a blend (forced tokens are fed as themselves)
        blend_explicit = to_explicit & ~forced if ids.end_think is not None else no
        return SwirStep(tokens=tokens, forced=forced, feed_latent=~explicit, to_latent=to_latent,
                        to_explicit=to_explicit, blend_explicit=blend_explicit, finished=finished, entropy=entropy)

    def _control_switches(self, to_explicit: torch.Tensor) -> None:
        """Spec B9.1 step 5: from C_max switches on, force the convergence text (unless a text is still
        being forced); past 2·C_max, the termination text and then the answer budget."""
        c_max = self.cfg.max_switch_count
        for i in to_explicit.nonzero().flatten().tolist():
            count = int(self.switches[i])
            if count > 2 * c_max:
                if int(self.budget[i]) < 0:  # terminate once
                    self.queue[i] = list(self.ids.termination)
                    self.budget[i] = self.cfg.answer_budget
            elif count >= c_max and not self.queue[i] and int(self.budget[i]) < 0:
                self.queue[i] = list(self.ids.convergence)

    def next_inputs(self, t: int, probs_raw: torch.Tensor, step: SwirStep, embed: torch.Tensor) -> torch.Tensor:
        """The input vectors (N, d) for step t+1 (spec B9.1 step 4): ``E[y_t]`` on explicit rows, the soft
        embedding on latent rows, with the t=0 newline blend, the α blend on explicit->latent switches and
        the β blend on latent->explicit switches. Forced tokens are always fed as themselves."""
        ids = self.ids
        x = F.embedding(step.tokens, embed)  # (N, d): e_tok
        rows = step.token_not_fed.nonzero().flatten()
        if rows.numel() == 0:
            return x
        e_soft = soft_embedding(probs_raw.index_select(0, rows), embed)  # (n, d)
        if t == 0 and ids.first_step is not None:
            e_soft = FIRST_STEP_KEEP * e_soft + (1 - FIRST_STEP_KEEP) * embed[ids.first_step]
        if ids.think is not None:
            a = self.alpha(t)
            e_soft = torch.where(step.to_latent[rows, None], a * e_soft + (1 - a) * embed[ids.think], e_soft)
        if ids.end_think is not None:
            b = self.beta(t)
            e_soft = torch.where(step.blend_explicit[rows, None], b * e_soft + (1 - b) * embed[ids.end_think], e_soft)
        x[rows] = e_soft
        return x


@dataclass
class SwirGeneration(Generation):
    """A :class:`Generation` decoded with SwiReasoning: the response ids are the trace of chosen tokens."""

    latent_mask: torch.Tensor | None = None  # (B, T) bool: the next input was not this token's embedding
    switches: torch.Tensor | None = None  # (B,) long: latent -> explicit switches

    @property
    def loss_mask(self) -> torch.Tensor:
        """(B, T) bool: sampled tokens that were fed as themselves (latent-step tokens never train)."""
        mask = self.sampled_mask & self.response_mask
        return mask if self.latent_mask is None else mask & ~self.latent_mask

    def rollout_metrics(self) -> dict[str, float]:
        """``swir/latent_frac`` (share of response tokens not fed as themselves), ``swir/forced_frac``
        (tokens from the forced queue) and ``swir/switches_mean`` (latent->explicit switches per response)."""
        n = max(float(self.response_mask.sum()), 1.0)
        forced = self.response_mask & ~self.sampled_mask
        return {"swir/latent_frac": float(self.latent_mask.sum()) / n, "swir/forced_frac": float(forced.sum()) / n,
                "swir/switches_mean": float(self.switches.float().mean())}


class SwiReasoning:
    """SwiReasoning decoding for one tokenizer: the engine calls :meth:`generate` in place of sampling."""

    def __init__(self, cfg: SwirConfig, tokenizer):
        self.cfg = cfg
        self.ids = token_ids(tokenizer, cfg)

    @torch.inference_mode()
    def generate(self, engine, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
                 seed: int = 0) -> SwirGeneration:
        """One SwiReasoning continuation per prompt with ``engine``'s decoder and cache.

        Step 0 forwards the (left-padded, shared) prompts; every later step forwards one vector per row. The
        token of each step is sampled with ``params`` (greedy for temperature 0) from the same logits whose
        unfiltered softmax gives the entropy and the soft embedding. Stops on EOS, a stop string, the answer
        budget or ``max_new_tokens``. Reproducible for given prompts, parameters and seed.
        """
        prompt_ids, prompt_mask = engine.left_pad(prompts)
        B, Lp = prompt_ids.shape
        T = params.max_new_tokens
        device = engine.device
        max_pos = getattr(engine.model.config, "max_position_embeddings", None)
        if max_pos is not None and Lp + T > max_pos:
            raise ValueError(f"prompt ({Lp}) + max_new_tokens ({T}) exceeds the model's {max_pos} positions")
        embed = engine.model.get_input_embeddings().weight  # (V', d)
        generator = torch.Generator(device=device).manual_seed(seed)
        stopper = _StopChecker(engine.tokenizer, engine.eos_ids, params.stop_strings)

        out_ids = torch.full((B, T), engine.pad_id, dtype=torch.long, device=device)
        out_logp = torch.zeros(B, T, dtype=torch.float32, device=device)
        out_ent = torch.zeros(B, T, dtype=torch.float32, device=device) if params.report_entropy else None
        out_valid = torch.zeros(B, T, dtype=torch.bool, device=device)
        out_sampled = torch.zeros(B, T, dtype=torch.bool, device=device)
        out_latent = torch.zeros(B, T, dtype=torch.bool, device=device)
        truncated = torch.ones(B, dtype=torch.bool, device=device)
        switches = torch.zeros(B, dtype=torch.long, device=device)

        logits, cache = engine.prefill(prompt_ids, prompt_mask, Lp + T)
        if logits.shape[-1] > embed.shape[0]:
            raise ValueError(f"the model scores {logits.shape[-1]} tokens but embeds only {embed.shape[0]}: "
                             "SwiReasoning's soft embedding needs one embedding per scored token")
        ctrl = SwirController(self.cfg, self.ids, B, max_new_tokens=T, device=device)
        rows = torch.arange(B, device=device)  # original row of each cache row
        alive = torch.ones(B, dtype=torch.bool, device=device)
        positions = prompt_mask.sum(-1)  # (B,)
        n_alive = B
        for t in range(T):
            raw = logits.float()
            probs = torch.softmax(raw, dim=-1)  # (N, V) raw distribution, temperature 1
            sampled, logp = sample_next(logits, params, generator)
            # H_t = logsumexp(x) - sum p x: what ctrl.step computes from probs, in faster kernels
            step = ctrl.update(t, torch.logsumexp(raw, dim=-1) - (probs * raw).sum(-1), sampled)
            live = alive.nonzero().flatten()
            r = rows[live]
            tok, forced = step.tokens[live], step.forced[live]
            out_ids[r, t] = tok
            out_logp[r, t] = logp[live].masked_fill(forced, 0.0)
            if out_ent is not None:
                out_ent[r, t] = tempered_entropy(logits[live], params).masked_fill(forced, 0.0)
            out_valid[r, t] = True
            out_sampled[r, t] = ~forced
            done = stopper.done(tok, out_ids, r, t) | step.finished[live]
            # a row's last token feeds nothing: it is not latent
            out_latent[r, t] = step.token_not_fed[live] & ~done & (t < T - 1)
            switches[r] = ctrl.switches[live]
            n_done = int(done.sum())
            if n_done:
                truncated[r[done]] = False
                alive[live[done]] = False
                n_alive -= n_done
            if n_alive == 0 or t == T - 1:
                break
            if n_alive <= COMPACT_AT * alive.numel():
                keep = alive.nonzero().flatten()
                cache.select(keep)
                ctrl.select(keep)
                rows, positions, probs, step = rows[keep], positions[keep], probs[keep], step.select(keep)
                alive = torch.ones(n_alive, dtype=torch.bool, device=device)
            x = ctrl.next_inputs(t, probs, step, embed)  # (N, d)
            logits = engine.decoder.step_embeds(x, positions, cache, Lp + t)
            positions = positions + 1

        width = int(out_valid.sum(-1).max())
        out_ids, out_logp, out_valid = out_ids[:, :width], out_logp[:, :width], out_valid[:, :width]
        out_sampled, out_latent = out_sampled[:, :width], out_latent[:, :width]
        texts = [
            stopper.cut(engine.tokenizer.decode(out_ids[i][out_valid[i]].tolist(), skip_special_tokens=True))
            for i in range(B)
        ]
        return SwirGeneration(
            prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=out_ids, response_mask=out_valid,
            sampled_mask=out_sampled, sampler_logprobs=out_logp, truncated=truncated, texts=texts,
            sampler_entropy=None if out_ent is None else out_ent[:, :width],
            latent_mask=out_latent, switches=switches,
        )
