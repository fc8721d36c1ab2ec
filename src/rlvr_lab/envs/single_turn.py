"""A single-turn environment: render a prompt, take one response, score it.

Environments own two hooks: ``render`` (example -> prompt text) and ``score`` (responses ->
Scores). Multi-turn tool environments add a third, the step that injects forced tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlvr_lab.models.chat import render_prompt
from rlvr_lab.rewards import Rubric, Verifier, format_verifier, score_batch
from rlvr_lab.types import Score


@dataclass
class SingleTurnEnv:
    tokenizer: Any
    verifier: Verifier
    instruction: str = ""
    system_prompt: str | None = None
    use_chat_template: bool = True
    timeout_s: float = 5.0
    isolation: str = "thread"  # rlvr_lab.rewards.safe: thread or process

    def render(self, example: Mapping[str, Any]) -> str:
        question = example["question"]
        if self.instruction:
            question = f"{question}\n{self.instruction}"
        return render_prompt(
            self.tokenizer, question, system=self.system_prompt, use_chat_template=self.use_chat_template
        )

    def generate(self, engine, prompts: Sequence[Sequence[int]], params, *, seed: int = 0, temperature_fn=None):
        """One response per prompt, straight from the engine."""
        return engine.generate(prompts, params, seed=seed, temperature_fn=temperature_fn)

    def score(self, texts: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> list[Score]:
        return score_batch(self.verifier, texts, examples, timeout_s=self.timeout_s, isolation=self.isolation)


def task_rubric(task_verifier: Verifier, *, format_weight: float) -> Verifier:
    """Correctness (weight 1) plus an optional format reward; correctness stays the primary verdict."""
    if format_weight <= 0:
        return task_verifier
    return Rubric([("correct", task_verifier, 1.0), ("format", format_verifier(), format_weight)], primary="correct")
