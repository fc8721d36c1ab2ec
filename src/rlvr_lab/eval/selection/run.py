"""``rlvr select``: pick one of each question's sampled solutions with a language model as selector.

Reads the ``samples.jsonl`` that ``rlvr eval`` writes (one line per response with its question, text,
extracted answer and verifier verdict), runs GenSelect, the judge or the hybrid (arXiv 2511.13027) on each
question's sampled responses with the selector model, and reports the selected solution's accuracy against
the oracle (pass@n: any candidate right), random choice (pass@1) and majority vote (maj@n), the judge's
precision and recall against the verifier, and what the selection cost (selector calls and tokens).

Questions are selected ``wave`` at a time, and the selector calls they are waiting for are generated in one
batch (:class:`BatchedSelector`). Every prompt and reply is kept in ``selections.jsonl``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr_lab.envs.qa_data import jsonl_rows
from rlvr_lab.eval.evaluate import same_or_among, vote_inputs
from rlvr_lab.eval.selection.hybrid import hybrid_select
from rlvr_lab.eval.selection.metrics import (
    judge_quality,
    majority_vote_accuracy,
    oracle_accuracy,
    random_choice_accuracy,
    selection_accuracy,
)
from rlvr_lab.eval.selection.replies import Reply
from rlvr_lab.eval.selection.templates import (
    genselect_prompt,
    judge_prompt,
    load_template,
)

METHODS = ("genselect", "judge", "hybrid")
SELECT_FILE = "select.json"
TABLE_FILE = "select.md"
RECORDS_FILE = "selections.jsonl"


class SelectInputError(ValueError):
    """A samples file or setting ``rlvr select`` cannot use; the message says why."""


@dataclass
class Pool:
    """One question's candidates: the sampled responses of one model (the greedy one is not a candidate)."""

    model: str
    prompt_id: str
    question: str
    texts: list[str]
    answers: list[str | None]
    correct: list[bool]


REQUIRED = {"model": str, "prompt_id": str, "question": str, "sample": int, "text": str, "correct": bool}


def read_pools(path: str | Path, *, model: str | None = None, limit: int | None = None) -> list[Pool]:
    """The candidate pools of ``path`` (an ``rlvr eval`` samples file), question by question.

    With two models in the file (``rlvr eval --compare``) ``model`` picks one; a line that is not JSON or
    lacks a field raises :class:`SelectInputError` with its line number."""
    path = Path(path)
    if not path.is_file():
        raise SelectInputError(f"samples file not found: {path}")
    pools: dict[tuple[str, str], Pool] = {}
    models: list[str] = []
    try:
        rows = list(jsonl_rows(path))
    except ValueError as exc:
        raise SelectInputError(str(exc)) from None
    for where, row in rows:
        for name, kind in REQUIRED.items():
            if not isinstance(row.get(name), kind) or (kind is int and isinstance(row.get(name), bool)):
                raise SelectInputError(f"{where}: field {name!r} must be {kind.__name__}, got {row.get(name)!r}")
        if row["model"] not in models:
            models.append(row["model"])
        if row["sample"] < 0 or (model is not None and row["model"] != model):
            continue
        key = (row["model"], row["prompt_id"])
        pool = pools.setdefault(key, Pool(row["model"], row["prompt_id"], row["question"], [], [], []))
        pool.texts.append(row["text"])
        pool.answers.append(row.get("answer"))
        pool.correct.append(row["correct"])
    if model is not None and model not in models:
        raise SelectInputError(f"model {model!r} is not in {path}; it holds {models}")
    if model is None and len(models) > 1:
        raise SelectInputError(f"{path} holds samples of {len(models)} models {models}; pick one with --model")
    out = list(pools.values())
    if not out:
        raise SelectInputError(f"{path} has no sampled responses")
    return out[:limit] if limit is not None else out


@dataclass
class SelectSettings:
    method: str = "hybrid"
    n_s: int = 2  # survivors of the tournament before the judge (hybrid)
    n_j: int = 4  # verdicts per judged candidate
    group_size: int = 2
    order: str = "genselect_then_judge"
    temperature: float = 0.7  # the recipe's sampling for models other than gpt-oss and Qwen3
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0
    genselect_template: str = "genselect"
    judge_template: str = "judge"

    def selection_sizes(self) -> tuple[int, int]:
        """(n_s, n_j) of :func:`hybrid_select` for the method: GenSelect keeps 1, the judge skips the tournament."""
        if self.method == "genselect":
            return 1, 1
        if self.method == "judge":
            return -1, self.n_j
        return self.n_s, self.n_j


class BatchedSelector:
    """The selector model behind ``compare_fn``/``judge_fn``: prompts rendered with its chat template and
    generated in batches.

    Questions are selected concurrently, ``wave`` at a time, one thread each (:meth:`run_wave`). A thread
    that needs replies (a tournament round, or the ``n_j`` verdicts on one candidate) hands its prompts in
    and waits; when every question of the wave still running is waiting, all their prompts are generated in
    one engine call, ordered by question. The batches, and so the seeds and replies, do not depend on thread
    timing: a run is reproducible. With ``wave=1`` every request is its own batch.
    """

    def __init__(self, engine, settings: SelectSettings, *, wave: int = 16) -> None:
        from rlvr_lab.models.chat import render_prompt
        from rlvr_lab.rollout.sampling import SamplingParams

        if wave < 1:
            raise ValueError(f"wave must be >= 1, got {wave}")
        self.engine, self.render, self.wave = engine, render_prompt, wave
        self.params = SamplingParams(temperature=settings.temperature, top_p=settings.top_p,
                                     max_new_tokens=settings.max_new_tokens)
        self.seed = settings.seed
        self.batches = 0
        self._cv = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._active = 0

    def generate(self, prompts: list[str]) -> list[Reply]:
        """One engine call over ``prompts`` (selector prompts before the chat template)."""
        rendered = [self.render(self.engine.tokenizer, p) for p in prompts]
        ids = self.engine.encode(rendered)
        limit = getattr(getattr(self.engine.model, "config", None), "max_position_embeddings", None)
        longest = max(len(i) for i in ids)
        if limit is not None and longest + self.params.max_new_tokens > limit:
            raise SelectInputError(f"a selector prompt of {longest} tokens plus {self.params.max_new_tokens} new "
                                   f"tokens exceeds the selector's context of {limit}: use a shorter template, "
                                   "fewer candidates per game, a smaller --max-new-tokens or a larger model")
        gen = self.engine.generate(ids, self.params, seed=self.seed + self.batches)
        self.batches += 1
        lengths = gen.response_mask.sum(-1).tolist()
        return [Reply(text, int(n)) for text, n in zip(gen.texts, lengths)]

    def mapper(self, order: int, log: list[dict[str, Any]]) -> Callable[[Callable[[Any], str], Iterable[Any]], list]:
        """``map_fn`` for the question at position ``order`` of its wave: ``prompt_fn(item)`` builds each
        prompt; the replies come back in item order and every call is appended to ``log``."""

        def map_fn(prompt_fn: Callable[[Any], str], items: Iterable[Any]) -> list[Reply]:
            prompts = [prompt_fn(item) for item in items]
            if not prompts:
                return []
            replies = self._submit(order, prompts)
            log.extend({"prompt": p, "reply": r.text, "tokens": r.tokens} for p, r in zip(prompts, replies))
            return replies

        return map_fn

    def _submit(self, order: int, prompts: list[str]) -> list[Reply]:
        with self._cv:
            request: dict[str, Any] = {"order": order, "prompts": prompts, "replies": None, "error": None}
            self._pending.append(request)
            self._flush_if_all_waiting()
            while request["replies"] is None and request["error"] is None:
                self._cv.wait()
        if request["error"] is not None:
            raise request["error"]
        return request["replies"]

    def _flush_if_all_waiting(self) -> None:
        """With the lock held: when every running question is waiting, generate all their prompts at once."""
        if not self._pending or len(self._pending) < self._active:
            return
        batch = sorted(self._pending, key=lambda r: r["order"])
        self._pending = []
        try:
            replies = self.generate([p for r in batch for p in r["prompts"]])
        except Exception as exc:  # every waiting question sees the failure
            for r in batch:
                r["error"] = exc
        else:
            start = 0
            for r in batch:
                r["replies"], start = replies[start : start + len(r["prompts"])], start + len(r["prompts"])
        self._cv.notify_all()

    def run_wave(self, jobs: Sequence[Callable[[int], Any]]) -> list[Any]:
        """Run ``jobs`` (each called with its position) concurrently with batched generation; their results
        in order. The first exception raised by a job is raised here after every job has stopped."""
        results: list[Any] = [None] * len(jobs)
        errors: list[BaseException] = []
        with self._cv:
            self._active = len(jobs)

        def worker(position: int) -> None:
            try:
                results[position] = jobs[position](position)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
            finally:
                with self._cv:
                    self._active -= 1
                    self._flush_if_all_waiting()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


@dataclass
class PoolSelection:
    pool: Pool
    chosen: int | None
    games: int
    judge_calls: int
    failed_comparisons: int
    judge_parse_failures: int
    tokens: int
    verdicts: dict[int, list[bool | None]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)  # the selector's prompts and replies


def select_pool(pool: Pool, selector: BatchedSelector, settings: SelectSettings, templates: tuple[str, str],
                rng_seed: int, order: int = 0) -> PoolSelection:
    """Run the configured method on one question's candidates (``order``: its position in the selector's wave)."""
    genselect_t, judge_t = templates
    n_s, n_j = settings.selection_sizes()

    def game_prompt(group: tuple) -> str:
        return genselect_prompt(pool.question, [pool.texts[i] for i in group], genselect_t)

    def verdict_prompt(candidate: int, sample: int) -> str:
        return judge_prompt(pool.question, pool.texts[candidate], judge_t)

    calls: list[dict[str, Any]] = []
    result = hybrid_select(list(range(len(pool.texts))), game_prompt, verdict_prompt, n_s=n_s, n_j=n_j,
                           rng=rng_seed, order=settings.order, group_size=settings.group_size,
                           is_valid=lambda i: bool(pool.texts[i].strip()), map_fn=selector.mapper(order, calls))
    return PoolSelection(pool, result.chosen, result.games, result.judge_calls, result.failed_comparisons,
                         result.judge_parse_failures, sum(call["tokens"] for call in calls),
                         {c: list(record.verdicts) for c, record in result.judged.items()}, calls)


def _estimate(e) -> dict[str, Any]:
    return {"value": e.value, "low": e.low, "high": e.high, "n": e.n, "interval": e.method}


def summarize_selection(selections: Sequence[PoolSelection], settings: SelectSettings, seconds: float) -> dict:
    """Selection accuracy next to oracle, random and majority; judge quality; cost."""
    pools = [s.pool for s in selections]
    correct = [p.correct for p in pools]
    chosen_right = [s.chosen is not None and s.pool.correct[s.chosen] for s in selections]
    votes = [vote_inputs(p.answers, p.correct) for p in pools]  # per pool: (answers, the verified ones)
    out: dict[str, Any] = {
        "method": settings.method, "questions": len(pools), "candidates": sum(len(p.texts) for p in pools),
        "selected": _estimate(selection_accuracy(chosen_right)),
        "oracle": _estimate(oracle_accuracy(correct)),
        "random": _estimate(random_choice_accuracy(correct)),
        "majority": _estimate(majority_vote_accuracy([answers for answers, _ in votes], [right for _, right in votes],
                                                     equal_fn=same_or_among)),
        "selector_calls": sum(s.games + s.judge_calls for s in selections),
        "games": sum(s.games for s in selections), "judge_calls": sum(s.judge_calls for s in selections),
        "failed_comparisons": sum(s.failed_comparisons for s in selections),
        "judge_parse_failures": sum(s.judge_parse_failures for s in selections),
        "selector_tokens": sum(s.tokens for s in selections), "seconds": seconds,
        "settings": {k: v for k, v in vars(settings).items()},
    }
    verdicts, labels = [], []
    for s in selections:
        for candidate, vs in s.verdicts.items():
            verdicts += vs
            labels += [s.pool.correct[candidate]] * len(vs)
    if verdicts:
        q = judge_quality(verdicts, labels)
        out["judge"] = {"precision": _estimate(q.precision), "recall": _estimate(q.recall),
                        "accuracy": _estimate(q.accuracy), "verdicts": len(verdicts)}
    return out


def markdown_table(summary: dict[str, Any]) -> str:
    def cell(e: dict[str, Any]) -> str:
        return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    lines = ["| method | questions | selected | oracle (pass@n) | random (pass@1) | majority (maj@n) | "
             "selector calls | tokens |", "|---|---|---|---|---|---|---|---|",
             f"| {summary['method']} | {summary['questions']} | {cell(summary['selected'])} | "
             f"{cell(summary['oracle'])} | {cell(summary['random'])} | {cell(summary['majority'])} | "
             f"{summary['selector_calls']} | {summary['selector_tokens']} |"]
    if "judge" in summary:
        j = summary["judge"]
        lines += ["", f"judge against the verifier ({j['verdicts']} verdicts): precision {cell(j['precision'])}, "
                      f"recall {cell(j['recall'])}, accuracy {cell(j['accuracy'])}"]
    return "\n".join(lines) + "\n"


def run_select(samples: str | Path, selector_model: str, settings: SelectSettings, out: str | Path, *,
               model: str | None = None, questions: int | None = None, threads: int | None = None, wave: int = 16,
               progress: Callable[[int], Callable[[int], None]] | None = None) -> dict[str, Any]:
    """Select on every pool of ``samples`` with ``selector_model``; write select.json, select.md and
    selections.jsonl under ``out``; return the summary."""
    if settings.method not in METHODS:
        raise SelectInputError(f"method must be one of {METHODS}, got {settings.method!r}")
    if settings.n_j < 1 or settings.n_s < -1 or settings.n_s == 0:
        raise SelectInputError(f"need n_j >= 1 and n_s = -1 or >= 1, got n_s={settings.n_s}, n_j={settings.n_j}")
    try:
        templates = (load_template(settings.genselect_template, "genselect"),
                     load_template(settings.judge_template, "judge"))
    except (OSError, ValueError) as exc:
        raise SelectInputError(str(exc)) from exc
    pools = read_pools(samples, model=model, limit=questions)
    from rlvr_lab.eval.run import EvalRequest, eval_config, load_engine, resolve_model

    spec = resolve_model(selector_model)
    cfg = eval_config(EvalRequest(selector_model, threads=threads), spec)
    engine = load_engine(cfg)
    selector = BatchedSelector(engine, settings, wave=wave)
    tick = progress(len(pools)) if progress else None
    t0 = time.perf_counter()
    selections: list[PoolSelection] = []
    for lo in range(0, len(pools), selector.wave):
        def job(position: int, lo: int = lo) -> PoolSelection:
            return select_pool(pools[lo + position], selector, settings, templates, settings.seed + lo + position,
                               order=position)

        selections += selector.run_wave([job] * len(pools[lo : lo + selector.wave]))
        if tick is not None:
            tick(len(pools[lo : lo + selector.wave]))
    summary = summarize_selection(selections, settings, time.perf_counter() - t0)
    summary.update(samples=str(samples), selector=selector_model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / SELECT_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown_table(summary)
    (out / TABLE_FILE).write_text(table)
    with (out / RECORDS_FILE).open("w") as fh:
        for s in selections:
            fh.write(json.dumps({"model": s.pool.model, "prompt_id": s.pool.prompt_id, "chosen": s.chosen,
                                 "chosen_correct": s.chosen is not None and s.pool.correct[s.chosen],
                                 "games": s.games, "judge_calls": s.judge_calls, "tokens": s.tokens,
                                 "verdicts": {str(k): v for k, v in s.verdicts.items()}, "calls": s.calls}) + "\n")
    summary["table"] = table
    return summary

