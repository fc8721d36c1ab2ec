"""Multiple-choice questions: the JSONL format, its loader, and the small offline set shipped with the package.

One question per line::

    {"question": "What is 2 + 3?", "choices": ["4", "5", "6", "7"], "answer": 1, "id": "q0"}

* ``question``: a non-empty string.
* ``choices``: a list of at least two non-empty strings.
* ``answer``: the gold choice, as a 0-based index (an int), as one of the choice strings, or as a letter
  ``"A"``..``"Z"`` (``"A"`` is the first choice). A string that is both a choice and the letter of a
  *different* choice is rejected as ambiguous; give the index instead.
* ``id`` (optional): a string or an int; defaults to the question's 0-based position in the file.
  Any other field is kept in ``MCQuestion.metadata``.

Duplicates: a choice string may occur more than once in a question. It is scored as often as it occurs,
but the probability mass counts it once and a prediction counts as correct when its *string* equals the
gold string, so predicting either copy of a duplicated gold answer is right. Two identical questions in a
file stay two questions; neither is ever used as a demonstration for the other.

The shipped set (:func:`load_offline_mcq`) turns three reasoning-gym tasks with short answers into four-way
multiple choice with generated distractors; :func:`build_offline_mcq` regenerates it exactly.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from rlvr_lab.eval.mcq.templates import LETTERS
from rlvr_lab.jsonl import json_object, read_lines

T = TypeVar("T")

OFFLINE_FILE = "offline_mcq.jsonl"
"""Name of the shipped set inside ``rlvr_lab/eval/mcq/data/``."""

OFFLINE_N_PER_TASK = 50
OFFLINE_SEED = 0
"""Arguments of :func:`build_offline_mcq` that produced the shipped file (150 questions)."""

OFFLINE_TASKS: dict[str, dict[str, int]] = {
    "chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
    "spell_backward": {"min_word_len": 3, "max_word_len": 7},
    "letter_counting": {"min_words": 3, "max_words": 6},
}
"""reasoning-gym tasks of the shipped set and their configs: short prompts, answers of a few characters."""

N_OFFLINE_CHOICES = 4


class MCQDataError(ValueError):
    """A multiple-choice file line that is not valid; the message names the file, line and field."""


@dataclass(frozen=True)
class MCQuestion:
    """One multiple-choice question; ``choices[answer]`` is the gold choice."""

    question: str
    choices: tuple[str, ...]
    answer: int
    id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"question must be a non-empty string, got {self.question!r}")
        if len(self.choices) < 2 or not all(isinstance(c, str) and c.strip() for c in self.choices):
            raise ValueError(f"choices must be at least 2 non-empty strings, got {self.choices!r}")
        valid_index = isinstance(self.answer, int) and not isinstance(self.answer, bool)
        if not valid_index or not 0 <= self.answer < len(self.choices):
            raise ValueError(f"answer must be an index in [0, {len(self.choices)}), got {self.answer!r}")

    @property
    def gold(self) -> str:
        """The gold choice string."""
        return self.choices[self.answer]

    def is_correct(self, predicted: int) -> bool:
        """Whether choice ``predicted`` is the gold answer, compared as strings (duplicates both count)."""
        return self.choices[predicted] == self.gold

    def to_json(self) -> dict[str, Any]:
        """The JSONL row: ``question``, ``choices``, ``answer`` (index), ``id``, then the metadata fields."""
        return {"question": self.question, "choices": list(self.choices), "answer": self.answer, "id": self.id,
                **self.metadata}


# --- loading -----------------------------------------------------------------------------------


def load_mcq(path: str | os.PathLike[str], *, limit: int | None = None) -> list[MCQuestion]:
    """The questions of a JSONL file (format in the module docstring), in file order, at most ``limit``.

    Blank lines are skipped. Raises ``FileNotFoundError`` for a missing file and :class:`MCQDataError`
    (a ValueError) naming ``path:line`` and the field for bad JSON, a missing or mistyped field, an
    answer out of range, or a file without questions.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"multiple-choice file not found: {path}")
    return parse_mcq_lines(read_lines(path, error=MCQDataError), where=str(path), limit=limit)


def parse_mcq_lines(lines: Iterable[str], *, where: str = "<lines>", limit: int | None = None) -> list[MCQuestion]:
    """:func:`load_mcq` on lines already read; ``where`` names their source in error messages."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    questions: list[MCQuestion] = []
    for line_number, line in enumerate(lines, start=1):
        if limit is not None and len(questions) >= limit:
            break
        if not line.strip():
            continue
        try:
            row = json_object(line, f"{where}:{line_number}")
        except ValueError as exc:
            raise MCQDataError(str(exc)) from None
        try:
            questions.append(mcq_from_row(row, default_id=str(len(questions))))
        except MCQDataError as exc:
            raise MCQDataError(f"{where}:{line_number}: {exc}") from None
    if not questions and limit != 0:
        raise MCQDataError(f"{where}: no questions")
    return questions


def mcq_from_row(row: dict[str, Any], *, default_id: str) -> MCQuestion:
    """One JSON object as an :class:`MCQuestion`; raises :class:`MCQDataError` naming the bad field."""
    for name in ("question", "choices", "answer"):
        if name not in row:
            raise MCQDataError(f"missing field {name!r} (fields present: {sorted(row)})")
    question = row["question"]
    if not isinstance(question, str) or not question.strip():
        raise MCQDataError(f"field 'question' must be a non-empty string, got {question!r:.80}")
    choices = row["choices"]
    if not isinstance(choices, list):
        raise MCQDataError(f"field 'choices' must be a list of strings, got {type(choices).__name__}")
    if len(choices) < 2:
        raise MCQDataError(f"field 'choices' needs at least 2 choices, got {len(choices)}")
    for index, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            raise MCQDataError(f"field 'choices' item {index} must be a non-empty string, got {choice!r:.80}")
    answer = resolve_answer(row["answer"], choices)
    raw_id = row.get("id", default_id)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise MCQDataError(f"field 'id' must be a string or an int, got {raw_id!r:.80}")
    metadata = {key: value for key, value in row.items() if key not in ("question", "choices", "answer", "id")}
    return MCQuestion(question=question, choices=tuple(choices), answer=answer, id=str(raw_id), metadata=metadata)


def resolve_answer(answer: Any, choices: Sequence[str]) -> int:
    """The gold index from an int index, a choice string (its first occurrence) or a letter ``"A"``..``"Z"``."""
    m = len(choices)
    if isinstance(answer, bool):
        raise MCQDataError(f"field 'answer' must be an int index, a choice string or a letter, got {answer!r:.80}")
    if isinstance(answer, int):
        if not 0 <= answer < m:
            raise MCQDataError(f"field 'answer' index {answer} is out of range for {m} choices (0 to {m - 1})")
        return answer
    if not isinstance(answer, str):
        raise MCQDataError(
            f"field 'answer' must be an int index, a choice string or a letter, got {type(answer).__name__} {answer!r:.80}"
        )
    as_choice = choices.index(answer) if answer in choices else None
    as_letter = LETTERS.index(answer) if len(answer) == 1 and answer in LETTERS[:m] else None
    if as_choice is not None and as_letter is not None and as_choice != as_letter:
        raise MCQDataError(
            f"field 'answer' {answer!r:.80} is ambiguous: it is choice {as_choice} and the letter of choice {as_letter}; "
            "give the index instead"
        )
    if as_choice is not None:
        return as_choice
    if as_letter is not None:
        return as_letter
    raise MCQDataError(
        f"field 'answer' {answer!r:.80} is neither one of the choices {list(choices)!r:.200} nor a letter A to {LETTERS[m - 1]}"
    )


def write_mcq(questions: Iterable[MCQuestion], path: str | os.PathLike[str]) -> None:
    """Write questions as JSONL (the format :func:`load_mcq` reads), one per line, UTF-8."""
    Path(path).write_text(mcq_jsonl(questions), encoding="utf-8")


def mcq_jsonl(questions: Iterable[MCQuestion]) -> str:
    """The JSONL text of ``questions``: one compact, key-ordered JSON object per line."""
    return "".join(json.dumps(q.to_json(), ensure_ascii=False) + "\n" for q in questions)


# --- the shipped offline set -------------------------------------------------------------------


def offline_mcq_path() -> Path:
    """Where the shipped set lives inside the installed package."""
    return Path(str(resources.files("rlvr_lab.eval.mcq") / "data" / OFFLINE_FILE))


def load_offline_mcq(*, limit: int | None = None) -> list[MCQuestion]:
    """The shipped offline set: 150 four-way questions from reasoning-gym tasks (see :func:`build_offline_mcq`)."""
    return load_mcq(offline_mcq_path(), limit=limit)


def build_offline_mcq(n_per_task: int = OFFLINE_N_PER_TASK, seed: int = OFFLINE_SEED) -> list[MCQuestion]:
    """Four-way multiple-choice questions built from the reasoning-gym tasks of ``OFFLINE_TASKS``.

    For each task, ``n_per_task`` items of ``reasoning_gym.create_dataset(task, size=n_per_task, seed=seed)``
    keep their question text and gold answer; three distractors are added and the gold answer is put at a
    uniformly drawn position:

    * numbers (``chain_sum``, ``letter_counting``): the answer plus an offset from ±1, ±2, ±3, ±5, ±10,
      never negative for a count;
    * reversed words (``spell_backward``): the word spelt forwards (the classic slip), two neighbouring
      letters swapped, one letter replaced, one inner letter dropped.

    No choice is a prefix of another (so the probability mass of a question cannot count one string's
    probability twice, see :func:`rlvr_lab.eval.mcq.attentiveness.prob_mass`), and all choices differ.
    Randomness comes from ``random.Random(f"{seed}/{task}/{index}").random()`` alone, the one part of
    Python's generator whose stream is guaranteed across versions, so the set is reproducible. The tasks are
    interleaved, so the first N questions (``rlvr mcq --questions N``) hold all of them.
    """
    if n_per_task <= 0:
        raise ValueError(f"n_per_task must be > 0, got {n_per_task}")
    from rlvr_lab.rewards.verifiers import create_reasoning_gym_dataset

    per_task: list[list[MCQuestion]] = []
    for task, config in OFFLINE_TASKS.items():
        dataset = create_reasoning_gym_dataset(task, config=config, size=n_per_task, seed=seed)
        questions: list[MCQuestion] = []
        per_task.append(questions)
        for index in range(n_per_task):
            item = dataset[index]
            rng = random.Random(f"{seed}/{task}/{index}")
            gold = str(item["answer"])
            if task == "spell_backward":
                distractors = _word_distractors(gold, item["metadata"]["word"], rng)
            else:
                distractors = _number_distractors(int(gold), rng, non_negative=task == "letter_counting")
            position = _below(rng, N_OFFLINE_CHOICES)
            choices = distractors[:position] + [gold] + distractors[position:]
            questions.append(MCQuestion(question=item["question"], choices=tuple(choices), answer=position,
                                        id=f"{task}-{index}", metadata={"task": task}))
    # interleaved (one question of each task in turn), so that the first N questions mix the tasks
    return [q for group in zip(*per_task) for q in group]


def stable_shuffle(items: Sequence[T], rng: random.Random) -> list[T]:
    """A Fisher-Yates shuffle of a copy of ``items`` driven by ``rng.random()`` only (reproducible across
    Python versions, unlike ``random.shuffle``, whose integer draws may change)."""
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = _below(rng, i + 1)
        out[i], out[j] = out[j], out[i]
    return out


def _below(rng: random.Random, n: int) -> int:
    """An integer in ``[0, n)`` from one ``rng.random()`` draw."""
    return min(int(rng.random() * n), n - 1)


NUMBER_OFFSETS: tuple[int, ...] = (-10, -5, -3, -2, -1, 1, 2, 3, 5, 10)


def _number_distractors(gold: int, rng: random.Random, *, non_negative: bool) -> list[str]:
    candidates = [gold + offset for offset in stable_shuffle(NUMBER_OFFSETS, rng)]
    texts = [str(value) for value in candidates if not (non_negative and value < 0)]
    return _pick_distractors(str(gold), texts)


def _word_distractors(gold: str, word: str, rng: random.Random) -> list[str]:
    candidates = [word]  # spelt forwards: the answer a model that ignores "backward" gives
    for _ in range(40):
        kind = _below(rng, 3)
        if kind == 0:  # swap two neighbouring letters
            i = _below(rng, len(gold) - 1)
            candidates.append(gold[:i] + gold[i + 1] + gold[i] + gold[i + 2:])
        elif kind == 1:  # replace one letter
            i = _below(rng, len(gold))
            candidates.append(gold[:i] + "abcdefghijklmnopqrstuvwxyz"[_below(rng, 26)] + gold[i + 1:])
        elif len(gold) > 3:  # drop an inner letter (dropping the last one would leave a prefix)
            i = 1 + _below(rng, len(gold) - 2)
            candidates.append(gold[:i] + gold[i + 1:])
    return _pick_distractors(gold, candidates)


def _pick_distractors(gold: str, candidates: Iterable[str]) -> list[str]:
    """The first ``N_OFFLINE_CHOICES - 1`` candidates that differ from and are no prefix of any choice kept."""
    kept = [gold]
    for text in candidates:
        if all(not (text.startswith(other) or other.startswith(text)) for other in kept):
            kept.append(text)
        if len(kept) == N_OFFLINE_CHOICES:
            return kept[1:]
    raise RuntimeError(f"could not find {N_OFFLINE_CHOICES - 1} distractors for {gold!r}")
