"""Running verifiers so that a failure is a counted error Score, never a crash or a silent zero.

A verifier that raises gives ``Score(0.0, correct=False, error="<ExcType>: message")``; one that runs
past its time limit gives ``error="timeout after <t>s"``. Two ways to keep time:

* ``isolation="process"`` (what the trainer uses where ``fork`` exists): the batch is scored in a forked
  child process that sends each Score back as it is made; a child that overruns an item's limit is killed
  (SIGKILL) and a fresh one goes on from the next item. A verifier that never returns costs a fork, not a
  thread or a process that stays behind; one that crashes the interpreter costs that item only.
* ``isolation="thread"``: a daemon thread; a hung verifier is abandoned (Python cannot kill a thread), so
  each one leaves a thread behind, but it never blocks the run or interpreter exit. No fork, so it is the
  cheaper choice for verifiers known to return, and the one Rubric parts use inside a batch.
"""

from __future__ import annotations

import math
import multiprocessing
import numbers
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr_lab.rewards.verifiers import Verifier
from rlvr_lab.types import Score

TIMEOUT_ERROR = "timeout after"
"""Marks a timeout error: ``"timeout after 5s"``, or ``"part: timeout after 5s"`` from a Rubric."""


def safe_score(verifier: Verifier, text: str, example: Mapping[str, Any], *, timeout_s: float | None = 5.0) -> Score:
    """``verifier(text, example)`` as a Score, with exceptions and timeouts turned into error Scores.

    ``timeout_s=None`` runs the verifier in the calling thread with no time limit.
    """
    return score_batch(verifier, [text], [example], timeout_s=timeout_s)[0]


def score_batch(
    verifier: Verifier,
    texts: Sequence[str],
    examples: Sequence[Mapping[str, Any]],
    *,
    timeout_s: float | None = 5.0,
    isolation: str = "thread",
) -> list[Score]:
    """One Score per ``(texts[i], examples[i])``, each limited to ``timeout_s`` seconds.

    Items are scored in order in one worker (a daemon thread, or with ``isolation="process"`` a forked
    child process). When an item runs out of time it gets a timeout Score, its worker is abandoned
    (thread) or killed (process), and the remaining items continue in a fresh one.
    """
    if len(texts) != len(examples):
        raise ValueError(f"score_batch needs one example per text, got {len(texts)} texts and {len(examples)} examples")
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
    if timeout_s is None:
        return [_run_one(verifier, text, example) for text, example in zip(texts, examples)]
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
    if not texts:
        return []
    scores: list[Score | None] = [None] * len(texts)
    start = 0
    watch = _watch_process if isolation == "process" and process_isolation_available() else _watch_thread
    while start < len(texts):
        start = watch(verifier, texts, examples, scores, start, timeout_s)
    return scores  # type: ignore[return-value]  # every slot is filled once the loop ends


ISOLATIONS = ("thread", "process")


def process_isolation_available() -> bool:
    """Whether verifiers can run in forked child processes here (POSIX; not Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


def _watch_thread(verifier, texts, examples, scores, start: int, timeout_s: float) -> int:
    return _Worker(verifier, texts, examples, scores, start).watch(timeout_s)


def _watch_process(verifier, texts, examples, scores: list[Score | None], start: int, timeout_s: float) -> int:
    """Score items ``start, ...`` in a forked child until one overruns ``timeout_s`` (the child is killed) or
    the child dies; return where the next child should go on. The child inherits the verifier and the items
    (nothing is pickled on the way in); Scores come back one by one through a pipe."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_score_in_child, args=(verifier, texts, examples, start, send), daemon=True,
                        name="rlvr-verifier")
    child.start()
    send.close()  # the parent's copy: EOF on ``receive`` once the child is gone
    item = start
    try:
        while item < len(texts):
            if not receive.poll(timeout_s):
                scores[item] = Score(0.0, correct=False, error=f"{TIMEOUT_ERROR} {timeout_s:g}s")
                return item + 1
            try:
                index, score = receive.recv()
            except EOFError:  # the child died without a word (a crash in C code, os._exit, a signal)
                child.join()
                scores[item] = Score(0.0, correct=False, error=f"verifier process died (exit code {child.exitcode})")
                return item + 1
            scores[index] = score
            item = index + 1
        return item
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()


def _score_in_child(verifier, texts, examples, start: int, send) -> None:
    for i in range(start, len(texts)):
        try:
            score = _run_one(verifier, texts[i], examples[i])
        except BaseException as exc:  # noqa: BLE001  # SystemExit and the like: still one Score per item
            score = _error_score(exc)
        try:
            send.send((i, score))
        except Exception as exc:  # noqa: BLE001  # a Score whose details cannot be pickled
            send.send((i, Score(0.0, correct=False, error=f"verifier result could not be sent back: {exc}")))
    send.close()


class _Worker:
    """Scores items ``start, start + 1, ...`` in a daemon thread, started at once; ``watch`` keeps time."""

    def __init__(
        self,
        verifier: Verifier,
        texts: Sequence[str],
        examples: Sequence[Mapping[str, Any]],
        scores: list[Score | None],
        start: int,
    ) -> None:
        self.verifier, self.texts, self.examples, self.scores = verifier, texts, examples, scores
        self.current = start  # index of the item being scored; guarded by self.changed
        self.abandoned = False  # set by the watcher on a timeout; the thread then writes nothing more
        self.changed = threading.Condition()
        threading.Thread(target=self._run, name="rlvr-verifier", daemon=True).start()

    def _run(self) -> None:
        for i in range(self.current, len(self.texts)):
            try:
                score = _run_one(self.verifier, self.texts[i], self.examples[i])
            except BaseException as exc:  # noqa: BLE001  # e.g. SystemExit; only the main thread gets Ctrl-C
                score = _error_score(exc)
            with self.changed:
                if self.abandoned:
                    return
                self.scores[i] = score
                self.current = i + 1
                self.changed.notify()

    def watch(self, timeout_s: float) -> int:
        """Wait until the thread finishes or an item overruns ``timeout_s``; return where to resume."""
        with self.changed:
            while self.current < len(self.texts):
                item, deadline = self.current, time.monotonic() + timeout_s
                while self.current == item:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.abandoned = True
                        self.scores[item] = Score(0.0, correct=False, error=f"{TIMEOUT_ERROR} {timeout_s:g}s")
                        return item + 1
                    self.changed.wait(remaining)
        return len(self.texts)


def _run_one(verifier: Verifier, text: str, example: Mapping[str, Any]) -> Score:
    """``verifier(text, example)`` as a Score; an exception or an unusable result becomes an error Score."""
    try:
        result = verifier(text, example)
    except Exception as exc:  # noqa: BLE001  # any verifier failure must be counted, not crash the run
        return _error_score(exc)
    return _as_score(result)


def _error_score(exc: BaseException) -> Score:
    return Score(0.0, correct=False, error=f"{type(exc).__name__}: {exc}")


def _as_score(result: Any) -> Score:
    """A verifier's result as a Score: a number becomes its value, a bool also its verdict."""
    if isinstance(result, Score):
        score = result
    elif isinstance(result, bool):
        score = Score(value=float(result), correct=result)
    elif isinstance(result, numbers.Real):
        score = Score(value=float(result))
    else:
        error = f"verifier returned {type(result).__name__}, expected a Score or a number"
        return Score(0.0, correct=False, error=error)
    if not math.isfinite(score.value):
        return Score(0.0, correct=False, error=f"verifier returned a non-finite value {score.value}")
    return score


def summarize_scores(scores: Sequence[Score]) -> dict[str, float]:
    """Batch reward metrics.

    - ``reward/mean``, ``reward/std`` (population): over all scores; absent for an empty batch.
    - ``reward/accuracy``: mean of ``correct`` over scores that have a verdict; absent if none do.
    - ``reward/verifier_errors``: scores whose verifier raised or misbehaved (timeouts excluded).
    - ``reward/timeouts``: scores whose verifier ran out of time.
    - ``reward/part/<name>``: mean of each Rubric part over the scores that have it.
    """
    timeouts = sum(1 for s in scores if s.error is not None and TIMEOUT_ERROR in s.error)
    metrics = {
        "reward/verifier_errors": float(sum(1 for s in scores if s.error is not None) - timeouts),
        "reward/timeouts": float(timeouts),
    }
    if scores:
        values = [s.value for s in scores]
        metrics["reward/mean"] = statistics.fmean(values)
        metrics["reward/std"] = statistics.pstdev(values)
    verdicts = [float(s.correct) for s in scores if s.correct is not None]
    if verdicts:
        metrics["reward/accuracy"] = statistics.fmean(verdicts)
    for name, values in _part_values(scores).items():
        metrics[f"reward/part/{name}"] = statistics.fmean(values)
    return metrics


def _part_values(scores: Sequence[Score]) -> dict[str, list[float]]:
    by_name: dict[str, list[float]] = {}
    for score in scores:
        for name, value in score.parts.items():
            by_name.setdefault(name, []).append(value)
    return by_name
