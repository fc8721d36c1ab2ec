"""The synthetic knowledge base: fixed by its seed, every answer in the corpus, 2-hop questions that
need two passages, files the loaders read back, and BM25 finding the entity a question names."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from rlvr_lab.envs.qa_data import load_qa_dataset
from rlvr_lab.envs.retrievers import BM25Retriever, load_corpus
from rlvr_lab.envs.synthetic_kb import generate_kb, write_corpus, write_questions


@pytest.fixture(scope="module")
def kb():
    return generate_kb(seed=0)


def has_word(text: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", text) is not None


def test_same_seed_same_kb_other_seed_other_kb(kb):
    assert generate_kb(seed=0) == kb
    other = generate_kb(seed=1)
    assert [p["title"] for p in other.passages] != [p["title"] for p in kb.passages]


def test_sizes_and_ids(kb):
    small = generate_kb(seed=5, n_countries=2, n_cities=3, n_companies=4, n_people=5)
    assert Counter(p["id"].split("-")[0] for p in small.passages) == {"country": 2, "city": 3, "company": 4, "person": 5}
    assert len(kb.passages) == 200
    assert len({p["id"] for p in kb.passages}) == len(kb.passages)
    assert len({q["id"] for q in kb.questions}) == len(kb.questions)
    assert {q["hops"] for q in kb.questions} == {1, 2}
    assert len(kb.questions) > 800


def test_names_are_unique_and_never_inside_one_another(kb):
    words = [w.lower() for p in kb.passages for w in p["title"].split()]
    assert len(set(words)) == len(words)
    assert not any(a != b and a in b for a in words for b in words)


def test_every_answer_is_in_the_last_supporting_passage(kb):
    for q in kb.questions:
        (answer,) = q["answers"]
        assert len(answer.split()) == 1  # short answers, so exact match works
        assert has_word(kb.passage(q["support"][-1])["text"], answer), q


def test_questions_name_their_entity(kb):
    for q in kb.questions:
        assert q["entity"] == q["support"][0]
        assert kb.passage(q["entity"])["title"] in q["question"]


def test_two_hop_questions_need_two_distinct_passages(kb):
    two_hop = [q for q in kb.questions if q["hops"] == 2]
    assert len(two_hop) > 300
    for q in two_hop:
        first, second = (kb.passage(pid) for pid in q["support"])
        assert first["id"] != second["id"]
        assert has_word(first["text"], second["title"])  # the first passage leads to the second
        assert not has_word(first["text"], q["answers"][0])  # which alone holds the answer
        assert second["title"] not in q["question"]  # the bridge entity is not given away


def test_files_round_trip_through_the_loaders(kb, tmp_path: Path):
    corpus = load_corpus(write_corpus(kb, tmp_path / "kb" / "corpus.jsonl"))
    assert [(p.id, p.title, p.text) for p in corpus] == [(p["id"], p["title"], p["text"]) for p in kb.passages]
    examples = load_qa_dataset(write_questions(kb, tmp_path / "kb" / "qa.jsonl"))
    assert [e["answers"] for e in examples] == [q["answers"] for q in kb.questions]
    assert examples[0]["metadata"]["hops"] == kb.questions[0]["hops"]


def test_bad_sizes():
    with pytest.raises(ValueError, match="n_cities must be an int >= 8"):
        generate_kb(n_cities=5)
    with pytest.raises(ValueError, match="n_companies must be an int >= 1"):
        generate_kb(n_companies=0)


def test_bm25_finds_the_named_entity_for_one_hop_questions(kb, tmp_path: Path):
    retriever = BM25Retriever(write_corpus(kb, tmp_path / "corpus.jsonl"))
    one_hop = [q for q in kb.questions if q["hops"] == 1]
    results = retriever.search([q["question"] for q in one_hop], k=3)
    top1 = sum(ranked[0].id == q["entity"] for q, ranked in zip(one_hop, results) if ranked)
    assert top1 / len(one_hop) > 0.9
    # and the answer of a 2-hop question is reachable: search the bridge entity by name
    q = next(q for q in kb.questions if q["hops"] == 2)
    bridge = kb.passage(q["support"][1])
    assert retriever.search([bridge["title"]], k=1)[0][0].id == bridge["id"]
