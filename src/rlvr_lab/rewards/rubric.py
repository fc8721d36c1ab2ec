"""A Rubric: several verifiers combined by a weighted sum that keeps each part."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr_lab.rewards.safe import safe_score
from rlvr_lab.rewards.verifiers import Verifier
from rlvr_lab.types import Score


class Rubric:
    """``rubric(text, example) -> Score`` with ``value = sum(weight * part.value)``.

    ``parts`` is a sequence of ``(name, verifier, weight)``. The Score keeps every part's unweighted
    value in ``parts``; ``correct`` is the verdict of the ``primary`` part (default: the first);
    ``error`` joins the errors of the parts that failed, as ``"name: error"``. Each part runs through
    ``safe_score`` with ``timeout_s``, so one failing part leaves the others intact. Under
    ``score_batch``, give the batch a longer limit than the parts (or the Rubric ``timeout_s=None``):
    otherwise a hanging part times out the whole item and its other parts are lost.
    """

    def __init__(
        self,
        parts: Sequence[tuple[str, Verifier, float]],
        primary: str | None = None,
        *,
        timeout_s: float | None = 5.0,
    ) -> None:
        names = [name for name, _, _ in parts]
        if not names:
            raise ValueError("a Rubric needs at least one part")
        if len(set(names)) != len(names):
            raise ValueError(f"Rubric part names must be unique, got {names}")
        if primary is not None and primary not in names:
            raise ValueError(f"primary part {primary!r} is not one of the Rubric parts {names}")
        for name, _, weight in parts:
            if not math.isfinite(weight):
                raise ValueError(f"Rubric part {name!r} has a non-finite weight {weight}")
        self.parts = [(name, verifier, float(weight)) for name, verifier, weight in parts]
        self.primary = names[0] if primary is None else primary
        self.timeout_s = timeout_s

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.parts]

    def __call__(self, text: str, example: Mapping[str, Any]) -> Score:
        scores = {
            name: safe_score(verifier, text, example, timeout_s=self.timeout_s) for name, verifier, _ in self.parts
        }
        errors = [f"{name}: {score.error}" for name, score in scores.items() if score.error is not None]
        return Score(
            value=sum(weight * scores[name].value for name, _, weight in self.parts),
            correct=scores[self.primary].correct,
            error="; ".join(errors) or None,
            parts={name: score.value for name, score in scores.items()},
        )
