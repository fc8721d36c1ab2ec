"""Held-out evaluation: every sample of a model on a question set, and the metrics read from them.

:func:`sample_eval` draws a greedy response and ``n`` sampled responses per question and keeps each one
(:class:`EvalSample`: text, extracted answer, verdict, token count); :func:`summarize` turns them into
greedy accuracy, unbiased pass@k (arXiv 2107.03374, eq. 1) and maj@k, each with its standard error over
questions and one value per question (what a paired comparison of two models needs). The trainer's
before/after evaluation (:func:`evaluate`) and ``rlvr eval`` run the same two functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rlvr_lab.eval.majority import maj_at_k
from rlvr_lab.eval.passk import pass_at_k, standard_error
from rlvr_lab.rewards.extract import extract_answer
from rlvr_lab.rollout.sampling import SamplingParams

PER_PROMPT = "eval/per_prompt"
"""Key of an evaluation result's per-prompt values: ``{"eval/pass@1": [one value per prompt], ...}``. The
only non-float entry of the result; metric sinks other than ``metrics.jsonl`` keep floats only and skip it."""

GREEDY = -1
"""``EvalSample.sample`` of the greedy response; sampled responses are numbered 0..n-1."""


@dataclass(frozen=True)
class EvalSample:
    """One response to one question, as written to ``samples.jsonl``."""

    prompt_id: str
    sample: int  # GREEDY (-1) for the greedy response, else 0..n-1
    text: str
    answer: str | None  # the extracted final answer (``<answer>`` block or the configured fallback)
    score: float  # the verifier's reward
    correct: bool
    tokens: int  # response tokens generated

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalSamples:
    """All responses of one evaluation: ``greedy[i]`` and ``sampled[i]`` (n of them) answer question i."""

    prompt_ids: list[str]
    greedy: list[EvalSample] | None
    sampled: list[list[EvalSample]]

    @property
    def n(self) -> int:
        return len(self.sampled[0]) if self.sampled else 0

    def by_question(self) -> list[list[EvalSample]]:
        """Each question's samples, the greedy one first."""
        return [([self.greedy[i]] if self.greedy is not None else []) + group for i, group in enumerate(self.sampled)]


def _correct(score) -> bool:
    return bool(score.correct) if score.correct is not None else score.value > 0


def _prompt_id(example: Mapping[str, Any], index: int) -> str:
    return str(example["id"]) if example.get("id") is not None else str(index)


def sample_eval(
    engine,
    env,
    examples: Sequence[Mapping[str, Any]],
    *,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    greedy: bool = True,
    seed: int = 0,
    max_batch: int = 256,
    answer_fallback: str = "none",
    progress: Callable[[int], None] | None = None,
) -> EvalSamples:
    """A greedy response (when ``greedy``) and ``samples`` sampled ones for each of ``examples``.

    The n samples of a question are consecutive rows of one batch, so the engine encodes the question
    once and copies its cache (prompt sharing). Sampling is seeded per batch from ``seed``: the same
    questions, settings and seed give the same samples, for any model, which makes two models' results
    comparable question by question. ``progress(k)`` is called after each batch with the number of
    questions it finished (greedy and sampled passes each count half).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not examples:
        raise ValueError("no questions to evaluate")
    prompts = engine.encode([env.render(ex) for ex in examples])
    ids = [_prompt_id(ex, i) for i, ex in enumerate(examples)]

    def run(rows: Sequence[Sequence[int]], exs: Sequence[Mapping[str, Any]], params, batch_seed: int,
            owners: Sequence[int], numbers: Sequence[int]) -> list[EvalSample]:
        gen = env.generate(engine, rows, params, seed=batch_seed)
        scores = env.score(gen.texts, exs)
        lengths = gen.response_mask.sum(-1).tolist()
        return [EvalSample(ids[o], k, text, extract_answer(text, fallback=answer_fallback), float(s.value),
                           _correct(s), int(n_tok))
                for o, k, text, s, n_tok in zip(owners, numbers, gen.texts, scores, lengths)]

    greedy_out: list[EvalSample] | None = None
    if greedy:
        params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, stop_strings=tuple(stop_strings))
        greedy_out = []
        for lo in range(0, len(prompts), max_batch):
            hi = min(lo + max_batch, len(prompts))
            greedy_out += run(prompts[lo:hi], examples[lo:hi], params, seed, range(lo, hi), [GREEDY] * (hi - lo))
            if progress is not None:
                progress(hi - lo)
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, stop_strings=tuple(stop_strings))
    per_batch = max(1, max_batch // samples)
    sampled: list[list[EvalSample]] = []
    for lo in range(0, len(prompts), per_batch):
        hi = min(lo + per_batch, len(prompts))
        owners = [i for i in range(lo, hi) for _ in range(samples)]
        rows = run([prompts[i] for i in owners], [examples[i] for i in owners], params, seed + 1 + lo,
                   owners, [k for _ in range(lo, hi) for k in range(samples)])
        sampled += [rows[j * samples : (j + 1) * samples] for j in range(hi - lo)]
        if progress is not None:
            progress(hi - lo)
    return EvalSamples(ids, greedy_out, sampled)


def majority_correct(group: Sequence[EvalSample], k: int | None = None, *, seed: int = 0) -> float:
    """maj@k of one question's samples (B12): the most frequent extracted answer among k samples (ties: the
    first encountered; samples without an answer are dropped) scores as the verifier scored that answer.

    Answers are compared as extracted strings with whitespace collapsed; an answer counts as correct when the
    verifier marked a sample with that answer correct. For k below the number of samples this is the
    expectation over k-subsets (exact when there are at most 10^4 subsets, else 1000 seeded draws)."""
    answers, right = vote_inputs([s.answer for s in group], [s.correct for s in group])
    return maj_at_k(answers, right, k=k, equal_fn=same_or_among, rng=seed)


def vote_inputs(answers: Sequence[str | None], correct: Sequence[bool]) -> tuple[list[str | None], frozenset[str]]:
    """(the answers with whitespace collapsed, the set of those the verifier marked correct): what
    :func:`~rlvr_lab.eval.majority.maj_at_k` votes on, with :func:`same_or_among` as its ``equal_fn``."""
    voted = [" ".join(a.split()) if a is not None else None for a in answers]
    return voted, frozenset(a for a, ok in zip(voted, correct) if a is not None and ok)


def same_or_among(answer: str, other: str | frozenset[str]) -> bool:
    """Two answers vote together when equal; an answer is right when it is among the verified ones."""
    return answer in other if isinstance(other, frozenset) else answer == other


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def summarize(result: EvalSamples, *, ks: Sequence[int], maj: Sequence[int] = ()) -> dict[str, Any]:
    """Metrics of ``result``: ``eval/greedy_acc`` (when greedy was run), ``eval/pass@k`` for each of ``ks``,
    ``eval/maj@k`` for each of ``maj``, each mean over questions with ``..._se`` (standard error over
    questions), plus ``eval/n_prompts``, ``eval/samples`` and ``eval/response_tokens`` (mean tokens of a
    sampled response); and under :data:`PER_PROMPT` each metric's value per question, in question order.
    A 95% interval is :func:`~rlvr_lab.eval.intervals.normal_interval` of a mean and its ``_se``."""
    n = result.n
    bad = [k for k in (*ks, *maj) if not 1 <= k <= n]
    if bad:
        raise ValueError(f"k = {bad} needs 1 <= k <= samples per question ({n})")
    per_prompt: dict[str, list[float]] = {}
    if result.greedy is not None:
        per_prompt["eval/greedy_acc"] = [float(s.correct) for s in result.greedy]
    counts = [sum(s.correct for s in group) for group in result.sampled]
    for k in ks:
        per_prompt[f"eval/pass@{k}"] = [pass_at_k(n, c, k) for c in counts]
    for k in maj:
        per_prompt[f"eval/maj@{k}"] = [majority_correct(group, k, seed=i) for i, group in enumerate(result.sampled)]
    out: dict[str, Any] = {"eval/n_prompts": float(len(result.sampled)), "eval/samples": float(n)}
    for key, values in per_prompt.items():
        out[key] = _mean(values)
        out[f"{key}_se"] = standard_error(values)
    out["eval/response_tokens"] = _mean([float(s.tokens) for group in result.sampled for s in group])
    out[PER_PROMPT] = per_prompt
    return out


def evaluate(engine, env, examples: Sequence[Mapping[str, Any]], *, ks: Sequence[int], maj: Sequence[int] = (),
             **sampling: Any) -> dict[str, Any]:
    """:func:`summarize` of :func:`sample_eval` (``sampling``: its keyword arguments): the trainer's held-out
    evaluation."""
    return summarize(sample_eval(engine, env, examples, **sampling), ks=ks, maj=maj)
