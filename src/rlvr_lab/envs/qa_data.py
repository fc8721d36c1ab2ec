"""Question-answer datasets (NQ, HotpotQA and the like) from JSONL or Parquet files.

Rows need a ``question`` and gold answers under ``golden_answers`` (FlashRAG and Search-R1's raw
files), ``answers`` or ``answer``, each a string or a list of strings (numbers become strings); the
first of these fields present and not null wins. Every example comes back as
``{"question": str, "answers": list[str], "id": str, "metadata": dict}``, where ``metadata`` holds
the row's other fields. Parquet needs ``pyarrow`` (the ``parquet`` extra), imported only when a
Parquet file is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rlvr_lab.jsonl import json_object, read_lines

ANSWER_FIELDS: tuple[str, ...] = ("golden_answers", "answers", "answer")
"""Where gold answers are looked for, in order."""

SUFFIXES: tuple[str, ...] = (".jsonl", ".parquet")


def load_qa_dataset(path: str | os.PathLike[str], *, limit: int | None = None) -> list[dict[str, Any]]:
    """The examples of ``path`` (``.jsonl`` or ``.parquet``), in file order, at most ``limit`` of them.

    ``id`` is the row's ``id`` as a string, or its 0-based position. A missing file, an unknown
    suffix, a row without a question or answers, or an empty file raises an error naming the row.
    """
    path = Path(path)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if not path.is_file():
        raise FileNotFoundError(f"QA dataset not found: {path}")
    if path.suffix not in SUFFIXES:
        raise ValueError(f"unsupported QA dataset file {path}; valid suffixes: {', '.join(SUFFIXES)}")
    rows = jsonl_rows(path) if path.suffix == ".jsonl" else _parquet_rows(path)
    examples = []
    for index, (where, row) in enumerate(rows):
        if limit is not None and index >= limit:
            break
        try:
            examples.append(qa_example(row, default_id=str(index)))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
    if not examples and limit != 0:
        raise ValueError(f"QA dataset {path} has no rows")
    return examples


def qa_example(row: Mapping[str, Any], *, default_id: str) -> dict[str, Any]:
    """One row as ``{"question", "answers", "id", "metadata"}``; raises ValueError saying what is wrong."""
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"needs a non-empty string 'question', got {question!r:.80}")
    field = next((name for name in ANSWER_FIELDS if row.get(name) is not None), None)
    if field is None:
        raise ValueError(f"needs gold answers in one of {', '.join(ANSWER_FIELDS)}; got fields {sorted(row)}")
    golds = row[field]
    if _is_scalar_answer(golds):
        golds = [golds]
    if not isinstance(golds, (list, tuple)) or not golds or not all(map(_is_scalar_answer, golds)):
        raise ValueError(f"{field!r} must be a string or a non-empty list of strings, got {golds!r:.80}")
    skip = {"question", "id", field}
    return {
        "question": question.strip(),
        "answers": [str(gold) for gold in golds],
        "id": str(row["id"]) if row.get("id") is not None else default_id,
        "metadata": {key: value for key, value in row.items() if key not in skip},
    }


def _is_scalar_answer(value: Any) -> bool:
    """A string, or a number (``8`` becomes ``"8"``); not a bool, dict or list."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("<path>:<line>", row)`` for each non-blank line."""
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        yield where, json_object(line, where)


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("<path> row <i>", row)`` for each row, read with pyarrow."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(f"reading {path} needs pyarrow: pip install 'rlvr-lab[parquet]'") from exc
    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield f"{path} row {i}", row
