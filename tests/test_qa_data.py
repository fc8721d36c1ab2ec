"""QA datasets from JSONL and Parquet: answer fields, ids, metadata, and errors that name the row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr_lab.envs.qa_data import load_qa_dataset

ROWS = [
    {"id": "test_0", "question": "who got the first nobel prize in physics?", "golden_answers": ["Wilhelm Conrad Röntgen"]},
    {"question": "  where is the eiffel tower?  ", "answers": ["Paris", "Paris, France"], "level": "easy"},
    {"id": 17, "question": "how many legs has a spider?", "answer": 8},
    {"id": "hp1", "question": "capital of France?", "answer": "Paris", "golden_answers": None, "answers": ["Paris", "Lutetia"]},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    return path


def test_jsonl_rows_become_question_answers_id(tmp_path: Path):
    examples = load_qa_dataset(write_jsonl(tmp_path / "nq.jsonl", ROWS[:2]))
    assert examples == [
        {
            "question": "who got the first nobel prize in physics?",
            "answers": ["Wilhelm Conrad Röntgen"],
            "id": "test_0",
            "metadata": {},
        },
        {"question": "where is the eiffel tower?", "answers": ["Paris", "Paris, France"], "id": "1", "metadata": {"level": "easy"}},
    ]


def test_answer_fields_in_order_and_scalars_become_lists(tmp_path: Path):
    examples = load_qa_dataset(write_jsonl(tmp_path / "qa.jsonl", ROWS[2:]))
    assert examples[0]["answers"] == ["8"] and examples[0]["id"] == "17"
    # golden_answers is null, so "answers" (before "answer") wins; the unused field stays in metadata
    assert examples[1]["answers"] == ["Paris", "Lutetia"]
    assert examples[1]["metadata"] == {"answer": "Paris", "golden_answers": None}


def test_limit(tmp_path: Path):
    path = write_jsonl(tmp_path / "nq.jsonl", ROWS)
    assert [e["id"] for e in load_qa_dataset(path, limit=2)] == ["test_0", "1"]
    assert load_qa_dataset(path, limit=0) == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([ROWS[0], {"id": "x", "answers": ["a"]}], r"nq.jsonl:2: needs a non-empty string 'question'"),
        ([{"question": "q?"}], r"nq.jsonl:1: needs gold answers in one of golden_answers, answers, answer"),
        ([{"question": "q?", "golden_answers": []}], r"nq.jsonl:1: 'golden_answers' must be a string or a non-empty list"),
        ([{"question": "q?", "answers": [{"text": "a"}]}], r"nq.jsonl:1: 'answers' must be a string or a non-empty list"),
        ([], "has no rows"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, rows: list, message: str):
    path = tmp_path / "nq.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match=message):
        load_qa_dataset(path)


def test_bad_files(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_qa_dataset(tmp_path / "missing.jsonl")
    csv = tmp_path / "nq.csv"
    csv.write_text("question,answer\n")
    with pytest.raises(ValueError, match=r"valid suffixes: \.jsonl, \.parquet"):
        load_qa_dataset(csv)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q?", "answer": "a"}\n{"question": \n')
    with pytest.raises(ValueError, match="broken.jsonl:2: not valid JSON"):
        load_qa_dataset(broken)


def test_parquet_matches_jsonl(tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {"id": "a", "question": "q1?", "golden_answers": ["x", "y"]},
        {"id": "b", "question": "q2?", "golden_answers": ["z"]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "hotpot.parquet")
    from_parquet = load_qa_dataset(tmp_path / "hotpot.parquet")
    assert from_parquet == load_qa_dataset(write_jsonl(tmp_path / "hotpot.jsonl", rows))
    assert from_parquet[0]["answers"] == ["x", "y"]


def test_parquet_bad_row_is_named(tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist([{"question": "q?", "answer": "a"}, {"question": "", "answer": "b"}]), tmp_path / "d.parquet")
    with pytest.raises(ValueError, match=r"d.parquet row 1: needs a non-empty string 'question'"):
        load_qa_dataset(tmp_path / "d.parquet")
