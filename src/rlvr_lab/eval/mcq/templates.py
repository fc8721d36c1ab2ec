"""The three prompt formats of arXiv 2305.14596 and the continuation each one scores.

* ``no_choices``: ``{q}``; scores ``" " + choice``;
* ``string_choices``: ``question: {q}\\nanswer choices: {a, b, c, or d}\\nThe correct answer is:``;
  scores ``" " + choice``;
* ``enumerated``: ``Question: {q}\\nChoices:\\n A: {a}\\n B: {b}\\n ...Answer:``; scores ``" A"``, ``" B"``, ...

A demonstration is the same block followed by its answer: ``"{q} {answer}\\n"`` (no choices),
``"... The correct answer is: {answer}\\n\\n"`` (string choices), ``"... Answer: {letter}\\n\\n"``
(enumerated). The uncontextual premises of PMI_DC drop the demonstrations and the question:
``"?"``, ``"answer choices: {...}\\nThe correct answer is:"`` and ``"Choices:\\n A: ...\\nAnswer:"``.

Templates, joiner (``", "`` with ``", or "`` before the last choice), demonstration layout and the single
space between prompt and continuation follow ``main.py`` of the official code of arXiv 2305.14596. The
official prompts also open with a dataset-specific instruction line; here that is the optional
``instruction`` argument, empty by default.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rlvr_lab.eval.mcq.data import MCQuestion

Format = Literal["no_choices", "string_choices", "enumerated"]
FORMATS: tuple[str, ...] = ("no_choices", "string_choices", "enumerated")

LETTERS = string.ascii_uppercase
"""Symbols of the enumerated format, so at most 26 choices."""

NO_CHOICES_PREMISE = "?"
"""Uncontextual premise of the no-choices format: one token of context (the official code needs at least
one prompt token to score a continuation) and nothing about the question."""


def check_format(fmt: str) -> None:
    """Raise ValueError naming the allowed formats when ``fmt`` is not one of them."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; choose one of {', '.join(FORMATS)}")


def choice_string(choices: Sequence[str]) -> str:
    """All choices on one line: ``"a, b, c, or d"`` (two choices: ``"a, or b"``)."""
    if len(choices) < 2:
        raise ValueError(f"need at least 2 choices, got {len(choices)}")
    return ", ".join(choices[:-1]) + ", or " + choices[-1]


def letters(n_choices: int) -> list[str]:
    """The first ``n_choices`` letters, ``["A", "B", ...]``."""
    if not 1 <= n_choices <= len(LETTERS):
        raise ValueError(f"the enumerated format labels 1 to {len(LETTERS)} choices, got {n_choices}")
    return list(LETTERS[:n_choices])


def enumerated_choices(choices: Sequence[str]) -> str:
    """``"Choices:\\n A: a\\n B: b\\n"``."""
    return "Choices:\n" + "".join(f" {letter}: {text}\n" for letter, text in zip(letters(len(choices)), choices))


def question_block(question: MCQuestion, fmt: Format) -> str:
    """The question as the format asks it, ending where the model's answer starts (no trailing space)."""
    check_format(fmt)
    if fmt == "no_choices":
        return question.question
    if fmt == "string_choices":
        return (f"question: {question.question}\nanswer choices: {choice_string(question.choices)}\n"
                "The correct answer is:")
    return f"Question: {question.question}\n{enumerated_choices(question.choices)}Answer:"


def demonstration(question: MCQuestion, fmt: Format) -> str:
    """One solved in-context example: the question block, its gold answer and the format's separator."""
    block = question_block(question, fmt)
    if fmt == "no_choices":
        return f"{block} {question.choices[question.answer]}\n"
    if fmt == "string_choices":
        return f"{block} {question.choices[question.answer]}\n\n"
    return f"{block} {LETTERS[question.answer]}\n\n"


def build_prompt(question: MCQuestion, fmt: Format, demos: Sequence[MCQuestion] = (), *, instruction: str = "") -> str:
    """Instruction (if any, followed by a blank line), demonstrations in order, then the question block."""
    head = f"{instruction}\n\n" if instruction else ""
    return head + "".join(demonstration(demo, fmt) for demo in demos) + question_block(question, fmt)


def uncontextual_premise(question: MCQuestion, fmt: Format) -> str:
    """The PMI_DC domain premise of ``fmt``: no demonstrations, no question, the choices where the format
    shows them (the label-conditional premise of the official code)."""
    check_format(fmt)
    if fmt == "no_choices":
        return NO_CHOICES_PREMISE
    if fmt == "string_choices":
        return f"answer choices: {choice_string(question.choices)}\nThe correct answer is:"
    return f"{enumerated_choices(question.choices)}Answer:"


def choice_continuations(question: MCQuestion) -> list[str]:
    """Each choice string as scored after a prompt: one leading space, ``" " + choice``."""
    return [f" {text}" for text in question.choices]


def continuations(question: MCQuestion, fmt: Format) -> list[str]:
    """What ``fmt`` scores after its prompt: the choice strings, or the letters ``" A"``, ``" B"``, ..."""
    check_format(fmt)
    if fmt == "enumerated":
        return [f" {letter}" for letter in letters(len(question.choices))]
    return choice_continuations(question)
