"""Attentiveness report of one model on one multiple-choice set, per prompt format and number of shots.

For every question, three sets of choice probabilities are scored (:mod:`rlvr_lab.eval.mcq.scoring`):

* ``p_all`` / ``p_first``: the format's continuations after the full prompt (demonstrations + question),
  all tokens / first token only;
* ``p_uncond``: the choice strings after the premise ``"?"``, the PMI_DC denominator the official code of
  arXiv 2305.14596 uses for every format ("unconditional PMI"; in the enumerated format it divides the
  probability of a letter by that of its choice string, as that code does);
* ``p_premise``: the format's own continuations after its uncontextual premise (choices shown, question and
  demonstrations left out): the "label-conditional PMI" denominator. In the no-choices format it is the
  same as ``p_uncond``.

From them: sequence-scoring accuracy (argmax of ``p_all``, the paper's headline accuracy), first-token
accuracy, the two PMI_DC accuracies (Holtzman et al., arXiv 2104.08315), probability mass on the choices,
the share of SFC-resolved questions and the accuracy bounds of
:func:`rlvr_lab.eval.mcq.attentiveness.accuracy_bounds`. Greedy generation (the paper's invalid-answer
rate) is not run.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr_lab.eval.mcq.attentiveness import (
    accuracy_bounds,
    mean_interval,
    pmi_dc_log,
    predict,
    prob_mass,
    sfc_resolved,
    wilson_interval,
)
from rlvr_lab.eval.mcq.data import MCQuestion, load_mcq, load_offline_mcq
from rlvr_lab.eval.mcq.scoring import ContinuationScore, ScoreCache, logprobs_to_probs, score_continuations
from rlvr_lab.eval.mcq.templates import (
    FORMATS,
    NO_CHOICES_PREMISE,
    Format,
    build_prompt,
    check_format,
    choice_continuations,
    continuations,
    uncontextual_premise,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Interval = tuple[float, float]


@dataclass(frozen=True)
class QuestionRecord:
    """What one question gave under one format and number of shots (one JSONL line)."""

    index: int  # position of the question in the evaluated set
    id: str
    format: str
    n_demos: int
    demo_indices: list[int]  # positions of the demonstrations, in prompt order
    choices: list[str]
    answer: int
    logp_all: list[float]  # (m,) summed log-prob of each scored continuation, nats
    p_all: list[float]  # (m,) exp(logp_all): P(continuation | prompt), all tokens
    p_first: list[float]  # (m,) probability of the first continuation token
    p_uncond: list[float]  # (m,) P(" " + choice | "?")
    p_premise: list[float]  # (m,) P(continuation | the format's uncontextual premise)
    prob_mass: float  # sum of p_all over distinct choices
    prob_mass_first: float  # the same with p_first
    resolved: bool  # SFC-resolved: 1 - prob_mass < top-1 minus top-2 of p_all
    predicted: int  # argmax of p_all
    correct: bool
    first_token_predicted: int
    first_token_correct: bool
    pmi_predicted: int  # argmax of p_all / p_uncond
    pmi_correct: bool
    pmi_label_conditional_predicted: int  # argmax of p_all / p_premise
    pmi_label_conditional_correct: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AttentivenessResult:
    """Summary of one (format, shots) run. Accuracies and ``prob_mass`` are fractions in [0, 1];
    ``pct_resolved`` is a percentage. Intervals are 95%: Wilson score intervals for the proportions
    (accuracies, resolved share, bounds), the normal approximation for the mean probability mass."""

    format: str
    n_demos: int
    seed: int
    n_questions: int
    accuracy: float  # sequence scoring (all tokens), the headline accuracy
    accuracy_ci: Interval
    first_token_accuracy: float
    first_token_accuracy_ci: Interval
    pmi_accuracy: float  # PMI_DC with the "?" premise
    pmi_accuracy_ci: Interval
    pmi_label_conditional_accuracy: float  # PMI_DC with the format's own premise
    pmi_label_conditional_accuracy_ci: Interval
    prob_mass: float  # mean over questions of the probability mass on the choices
    prob_mass_ci: Interval
    pct_resolved: float  # % of questions whose prediction surface-form competition cannot change
    pct_resolved_ci: Interval
    accuracy_lower: float  # every unresolved question counted wrong
    accuracy_lower_ci: Interval
    accuracy_upper: float  # every unresolved question counted right
    accuracy_upper_ci: Interval
    resolved_accuracy: float | None  # accuracy on the resolved questions alone; None when there are none
    records: list[QuestionRecord] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """Every field but the per-question records."""
        out = asdict(self)
        del out["records"]
        return out


def draw_demos(
    questions: Sequence[MCQuestion],
    index: int,
    n_demos: int,
    seed: int,
    *,
    text_counts: Mapping[str, int] | None = None,
) -> list[int]:
    """Positions of ``n_demos`` demonstrations for question ``index``, drawn without replacement from the
    other questions of the set.

    A question never demonstrates itself, nor does any question with the same text (a duplicate would
    give its answer away). The draw depends on ``(seed, index)`` only, so the result does not depend on
    which other questions are evaluated, and it is nested: the ``k``-shot demonstrations are the first
    ``k`` of the ``k + 1``-shot ones. ``text_counts`` (how often each stripped question text occurs) can
    be passed to save a pass over the set per call.
    """
    if n_demos < 0:
        raise ValueError(f"n_demos must be >= 0, got {n_demos}")
    if n_demos == 0:
        return []
    text = questions[index].question.strip()
    counts = text_counts if text_counts is not None else Counter(q.question.strip() for q in questions)
    available = len(questions) - counts[text]
    if available < n_demos:
        raise ValueError(f"question {index} needs {n_demos} demonstrations but the set has only {available} "
                         "other questions")
    rng = random.Random(f"{seed}/demos/{index}")
    chosen: list[int] = []
    while len(chosen) < n_demos:  # rejection sampling: cheap per question even on a large set
        j = min(int(rng.random() * len(questions)), len(questions) - 1)
        if j not in chosen and questions[j].question.strip() != text:
            chosen.append(j)
    return chosen


def attentiveness_report(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[MCQuestion],
    fmt: Format,
    n_demos: int = 0,
    seed: int = 0,
    batch_size: int = 8,
    *,
    evaluate: Sequence[int] | None = None,
    instruction: str = "",
    cache: ScoreCache | None = None,
) -> AttentivenessResult:
    """Score ``questions`` under prompt format ``fmt`` with ``n_demos`` in-context demonstrations.

    Args:
        model, tokenizer: a causal LM and its tokenizer (e.g. from ``load_model_and_tokenizer``).
        questions: the set; demonstrations are drawn from it (:func:`draw_demos`).
        fmt: ``"no_choices"``, ``"string_choices"`` or ``"enumerated"``.
        n_demos: in-context demonstrations per question.
        seed: seeds the demonstration draw.
        batch_size: sequences per forward pass.
        evaluate: positions of the questions to score (default: all); the others can still be demonstrations.
        instruction: optional first line of every full prompt (not of the PMI premises).
        cache: share one :data:`ScoreCache` across calls on the same model to skip repeated scoring
            (the ``"?"`` denominators are the same for every format and number of shots).

    Returns:
        An :class:`AttentivenessResult` with one :class:`QuestionRecord` per evaluated question.
    """
    check_format(fmt)
    indices = list(range(len(questions))) if evaluate is None else list(evaluate)
    if not indices:
        raise ValueError("no questions to evaluate")
    cache = {} if cache is None else cache
    text_counts = Counter(q.question.strip() for q in questions)
    demos = [draw_demos(questions, i, n_demos, seed, text_counts=text_counts) for i in indices]
    asked = [questions[i] for i in indices]
    options = [continuations(q, fmt) for q in asked]
    prompts = [build_prompt(q, fmt, [questions[j] for j in d], instruction=instruction) for q, d in zip(asked, demos)]

    def score(prompt_list: Sequence[str], option_list: Sequence[Sequence[str]]) -> list[list[ContinuationScore]]:
        return score_continuations(model, tokenizer, prompt_list, option_list, batch_size=batch_size, cache=cache)

    cond = score(prompts, options)
    uncond = score([NO_CHOICES_PREMISE] * len(asked), [choice_continuations(q) for q in asked])
    premise = score([uncontextual_premise(q, fmt) for q in asked], options)

    records = []
    for i, q, d, c_scores, u_scores, l_scores in zip(indices, asked, demos, cond, uncond, premise):
        logp_all = [s.logprob for s in c_scores]
        p_all = logprobs_to_probs(logp_all)
        p_first = logprobs_to_probs([s.first_logprob for s in c_scores])
        predicted = predict(logp_all)
        first_predicted = predict(p_first)
        pmi_predicted = predict(pmi_dc_log(logp_all, [s.logprob for s in u_scores]))
        lc_predicted = predict(pmi_dc_log(logp_all, [s.logprob for s in l_scores]))
        records.append(QuestionRecord(
            index=i, id=q.id, format=fmt, n_demos=n_demos, demo_indices=d, choices=list(q.choices), answer=q.answer,
            logp_all=logp_all, p_all=p_all, p_first=p_first,
            p_uncond=logprobs_to_probs([s.logprob for s in u_scores]),
            p_premise=logprobs_to_probs([s.logprob for s in l_scores]),
            prob_mass=prob_mass(p_all, q.choices), prob_mass_first=prob_mass(p_first, q.choices),
            resolved=sfc_resolved(p_all, q.choices),
            predicted=predicted, correct=q.is_correct(predicted),
            first_token_predicted=first_predicted, first_token_correct=q.is_correct(first_predicted),
            pmi_predicted=pmi_predicted, pmi_correct=q.is_correct(pmi_predicted),
            pmi_label_conditional_predicted=lc_predicted, pmi_label_conditional_correct=q.is_correct(lc_predicted),
        ))
    return summarize(records, fmt=fmt, n_demos=n_demos, seed=seed)


def summarize(records: Sequence[QuestionRecord], *, fmt: str, n_demos: int, seed: int) -> AttentivenessResult:
    """Dataset-level numbers and 95% intervals from per-question records."""
    if not records:
        raise ValueError("no records")
    n = len(records)

    def proportion(flags: Sequence[bool]) -> tuple[float, Interval]:
        hits = sum(flags)
        return hits / n, wilson_interval(hits, n)

    correct = [r.correct for r in records]
    resolved = [r.resolved for r in records]
    accuracy, accuracy_ci = proportion(correct)
    first, first_ci = proportion([r.first_token_correct for r in records])
    pmi, pmi_ci = proportion([r.pmi_correct for r in records])
    lc, lc_ci = proportion([r.pmi_label_conditional_correct for r in records])
    share, share_ci = proportion(resolved)
    lower, upper = accuracy_bounds(correct, resolved)
    masses = [r.prob_mass for r in records]
    n_resolved = sum(resolved)
    return AttentivenessResult(
        format=fmt, n_demos=n_demos, seed=seed, n_questions=n,
        accuracy=accuracy, accuracy_ci=accuracy_ci,
        first_token_accuracy=first, first_token_accuracy_ci=first_ci,
        pmi_accuracy=pmi, pmi_accuracy_ci=pmi_ci,
        pmi_label_conditional_accuracy=lc, pmi_label_conditional_accuracy_ci=lc_ci,
        prob_mass=sum(masses) / n, prob_mass_ci=mean_interval(masses),
        pct_resolved=100.0 * share, pct_resolved_ci=(100.0 * share_ci[0], 100.0 * share_ci[1]),
        accuracy_lower=lower, accuracy_lower_ci=wilson_interval(round(lower * n), n),
        accuracy_upper=upper, accuracy_upper_ci=wilson_interval(round(upper * n), n),
        resolved_accuracy=(sum(c for c, r in zip(correct, resolved) if r) / n_resolved) if n_resolved else None,
        records=list(records),
    )


def run_mcq(
    model_source: str,
    data: str | os.PathLike[str] | None = None,
    formats: Sequence[str] = FORMATS,
    shots: Sequence[int] = (0, 1),
    seed: int = 0,
    batch_size: int = 8,
    out_jsonl: str | os.PathLike[str] | None = None,
    *,
    max_questions: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    instruction: str = "",
) -> list[AttentivenessResult]:
    """Load a model and report attentiveness for every (format, shots) pair, formats outermost.

    Args:
        model_source: anything ``load_model_and_tokenizer`` accepts (``"tiny"``, ``"smollm2-135m-instruct"``,
            a ``.gguf`` file, a model directory).
        data: a JSONL file (:func:`rlvr_lab.eval.mcq.data.load_mcq`); None uses the shipped offline set.
        formats: prompt formats to run.
        shots: numbers of in-context demonstrations to run.
        seed: demonstration draw (and the tiny model's initialisation).
        batch_size: sequences per forward pass.
        out_jsonl: if given, every per-question record of every run is written there, one JSON object a line.
        max_questions: score only the first this many questions (all of them remain demonstration candidates).
        device, dtype: passed to ``load_model_and_tokenizer``.
        instruction: optional first line of every prompt.

    Returns:
        One :class:`AttentivenessResult` per (format, shots), the rows of :func:`format_table`.
    """
    for fmt in formats:
        check_format(fmt)
    if not shots or any(k < 0 for k in shots):
        raise ValueError(f"shots must be a non-empty list of numbers >= 0, got {list(shots)}")
    if max_questions is not None and max_questions <= 0:
        raise ValueError(f"max_questions must be > 0 or None, got {max_questions}")
    questions = load_offline_mcq() if data is None else load_mcq(data)
    evaluate = None if max_questions is None else range(min(max_questions, len(questions)))

    from rlvr_lab.models.loading import load_model_and_tokenizer

    loaded = load_model_and_tokenizer(model_source, device=device, dtype=dtype, seed=seed)
    cache: ScoreCache = {}
    results = [
        attentiveness_report(loaded.model, loaded.tokenizer, questions, fmt, n_demos, seed, batch_size,
                             evaluate=evaluate, instruction=instruction, cache=cache)
        for fmt in formats
        for n_demos in shots
    ]
    if out_jsonl is not None:
        write_records(results, out_jsonl)
    return results


def write_records(results: Sequence[AttentivenessResult], path: str | os.PathLike[str]) -> None:
    """Every per-question record of ``results`` as JSONL (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for result in results:
            for record in result.records:
                handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")


def format_table(results: Sequence[AttentivenessResult]) -> str:
    """A Markdown table, one row per result; all numbers in %, 95% intervals in brackets."""
    header = ("| format | shots | n | accuracy | first-token acc. | PMI_DC acc. | PMI_DC acc. (label-cond.) "
              "| prob. mass | SFC-resolved | acc. bounds if SFC resolved |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(
            f"| {r.format} | {r.n_demos} | {r.n_questions} | {_pct(r.accuracy, r.accuracy_ci)} "
            f"| {_pct(r.first_token_accuracy, r.first_token_accuracy_ci)} | {_pct(r.pmi_accuracy, r.pmi_accuracy_ci)} "
            f"| {_pct(r.pmi_label_conditional_accuracy, r.pmi_label_conditional_accuracy_ci)} "
            f"| {_pct(r.prob_mass, r.prob_mass_ci)} | {r.pct_resolved:.1f} [{r.pct_resolved_ci[0]:.1f}, "
            f"{r.pct_resolved_ci[1]:.1f}] | {100 * r.accuracy_lower:.1f} to {100 * r.accuracy_upper:.1f} |"
        )
    return "\n".join(lines)


def _pct(value: float, interval: Interval) -> str:
    low, high = max(0.0, interval[0]), min(1.0, interval[1])  # the normal interval of a mean can overshoot
    return f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


__all__ = [
    "AttentivenessResult",
    "QuestionRecord",
    "attentiveness_report",
    "draw_demos",
    "format_table",
    "run_mcq",
    "summarize",
    "write_records",
]
