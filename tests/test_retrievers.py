"""Retrievers: BM25 ranking and its on-disk cache, corpus errors, the HTTP client against loopback
servers (happy path, timeout, refused connection, malformed JSON, retries), and failures turned
into observations."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rlvr_lab.envs.retrievers import (
    NO_RESULTS,
    RETRIEVAL_FAILED,
    BM25Retriever,
    HttpRetriever,
    Passage,
    RetrievalError,
    SearchStats,
    format_passages,
    information_observation,
    load_corpus,
    make_retrieval_server,
    safe_search,
)

CORPUS = [
    {"id": "d0", "title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"id": "d1", "title": "Berlin", "text": "Berlin is the capital of Germany, on the river Spree."},
    {"id": "d2", "title": "Volcano", "text": "A volcano is a rupture in the crust of a planet."},
    {"id": "d3", "title": "Photosynthesis", "text": "Plants turn light, water and carbon dioxide into sugar."},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", CORPUS)


# --- observation text ------------------------------------------------------------------------


def test_format_passages_numbers_docs_like_search_r1():
    passages = [Passage("a", "Paris", "Capital of France."), Passage("b", "Lyon", "A city.", score=1.5)]
    assert format_passages(passages) == "Doc 1(Title: Paris) Capital of France.\nDoc 2(Title: Lyon) A city.\n"
    assert format_passages([]) == NO_RESULTS


def test_information_observation_strips_and_wraps():
    assert information_observation("Doc 1(Title: A) x\n") == "\n\n<information>Doc 1(Title: A) x</information>\n\n"


# --- BM25 ------------------------------------------------------------------------------------


def test_bm25_ranks_the_matching_passage_first(corpus: Path, tmp_path: Path):
    retriever = BM25Retriever(corpus, cache_dir=tmp_path / "cache")
    results = retriever.search(["capital of Germany", "how do plants make sugar from light", "volcano crust"], k=2)
    assert [ranked[0].id for ranked in results] == ["d1", "d3", "d2"]
    first = results[0][0]
    assert (first.title, first.text) == ("Berlin", CORPUS[1]["text"])
    assert all(len(ranked) <= 2 for ranked in results)
    scores = [p.score for p in results[0]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0


def test_bm25_returns_no_passage_for_a_query_without_known_terms(corpus: Path, tmp_path: Path):
    retriever = BM25Retriever(corpus, cache_dir=tmp_path / "cache")
    assert retriever.search(["zzzz qqqq", "", "the of"], k=3) == [[], [], []]  # "the of": stopwords only
    assert retriever.search([], k=3) == []
    assert len(retriever.search(["capital"], k=10)[0]) == 2  # k above the corpus size is clamped; only matches come back


def test_bm25_cache_is_reused_and_rebuilt_when_the_corpus_changes(corpus: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    first = BM25Retriever(corpus, cache_dir=cache)
    assert first.built_index and (first.index_dir / "rlvr_meta.json").is_file()
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.index_dir.iterdir()}

    second = BM25Retriever(corpus, cache_dir=cache)
    assert not second.built_index
    assert second.index_dir == first.index_dir
    assert {p.name: p.stat().st_mtime_ns for p in first.index_dir.iterdir()} == mtimes  # nothing rewritten
    assert second.search(["capital of Germany"], k=1)[0][0].id == "d1"

    write_jsonl(corpus, [*CORPUS, {"id": "d4", "title": "Rome", "text": "Rome is the capital of Italy."}])
    third = BM25Retriever(corpus, cache_dir=cache)
    assert third.built_index and third.index_dir != first.index_dir
    assert third.search(["capital of Italy"], k=1)[0][0].id == "d4"

    other_settings = BM25Retriever(corpus, cache_dir=cache, k1=1.2)
    assert other_settings.built_index and other_settings.index_dir != third.index_dir


def test_bm25_default_cache_sits_next_to_the_corpus(corpus: Path):
    retriever = BM25Retriever(corpus)
    assert retriever.index_dir.parent == corpus.parent / "corpus.jsonl.bm25"


def test_bm25_rebuilds_a_broken_cache(corpus: Path, tmp_path: Path):
    first = BM25Retriever(corpus, cache_dir=tmp_path / "cache")
    (first.index_dir / "vocab.index.json").write_text("{not json")
    again = BM25Retriever(corpus, cache_dir=tmp_path / "cache")
    assert again.built_index
    assert again.search(["capital of France"], k=1)[0][0].id == "d0"


def test_bm25_works_when_the_cache_cannot_be_written(corpus: Path, tmp_path: Path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    retriever = BM25Retriever(corpus, cache_dir=blocked)
    assert retriever.built_index and not retriever.index_dir.exists()
    assert retriever.search(["capital of France"], k=1)[0][0].id == "d0"


def test_contents_field_splits_title_and_text(tmp_path: Path):
    path = write_jsonl(tmp_path / "wiki.jsonl", [{"id": "7", "contents": '"Aaron"\nAaron is a prophet.\nMore text.'}, {"contents": "Plain\nbody"}])
    passages = load_corpus(path)
    assert passages[0] == Passage("7", "Aaron", "Aaron is a prophet.\nMore text.")
    assert passages[1] == Passage("1", "Plain", "body")  # id defaults to the position


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("", "has no passages"),
        ("\n\n", "has no passages"),
        ('{"id": 1, "text": "ok"}\n{"id": 2, "text": "broken"\n', "corpus.jsonl:2: not valid JSON"),
        ('{"id": 1, "text": "ok"}\n\n{"id": 3, "body": "x"}\n', "corpus.jsonl:3: a passage needs 'text'"),
        ('["a list"]\n', "corpus.jsonl:1: expected a JSON object"),
        ('{"id": 1, "text": 5}\n', "corpus.jsonl:1: 'title' and 'text' must be strings"),
    ],
)
def test_malformed_corpus_errors_name_the_line(tmp_path: Path, lines: str, message: str):
    path = tmp_path / "corpus.jsonl"
    path.write_text(lines)
    with pytest.raises(ValueError, match=message):
        BM25Retriever(path, cache_dir=tmp_path / "cache")


def test_missing_corpus_and_bad_settings(tmp_path: Path, corpus: Path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        BM25Retriever(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown BM25 method 'bm99'"):
        BM25Retriever(corpus, method="bm99")
    with pytest.raises(ValueError, match="k must be a positive int"):
        BM25Retriever(corpus, cache_dir=tmp_path / "cache").search(["x"], k=0)


# --- HTTP client against loopback servers -----------------------------------------------------


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[str]:
    """Run ``server`` in a thread; yield its URL; stop it."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def service(corpus: Path, tmp_path: Path) -> Iterator[str]:
    """Our own server over a BM25 index of the test corpus."""
    with serving(make_retrieval_server(BM25Retriever(corpus, cache_dir=tmp_path / "cache"), port=0)) as url:
        yield url


class Stub:
    """A scripted service: each request pops the next reply ``(status, body bytes, delay_s)``."""

    def __init__(self, replies: list[tuple[int, bytes, float]]) -> None:
        self.replies = replies
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                stub.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                status, body, delay = stub.replies.pop(0) if stub.replies else (500, b"{}", 0.0)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def search_r1_reply(queries: int) -> bytes:
    """A reply in the exact shape of Search-R1's retrieval_server.py with return_scores=True."""
    docs = [{"document": {"id": "12", "contents": '"Berlin"\nBerlin is the capital of Germany.'}, "score": 0.83}]
    return json.dumps({"result": [docs] * queries}).encode()


def test_http_client_against_our_server(service: str):
    retriever = HttpRetriever(service, timeout_s=5)
    results = retriever.search(["capital of Germany", "volcano crust"], k=2)
    assert [ranked[0].id for ranked in results] == ["d1", "d2"]
    assert results[0][0].title == "Berlin" and results[0][0].score > 0
    assert HttpRetriever(service + "/retrieve/").endpoint == service + "/retrieve"


def test_http_client_reads_search_r1_replies_and_sends_its_request():
    stub = Stub([(200, search_r1_reply(2), 0.0)])
    with serving(stub.server) as url:
        results = HttpRetriever(url).search(["q1", "q2"], k=3)
    assert stub.requests == [{"queries": ["q1", "q2"], "topk": 3, "return_scores": True}]
    assert results == [[Passage("12", "Berlin", "Berlin is the capital of Germany.", 0.83)]] * 2


def test_http_client_times_out_with_the_url_in_the_error():
    stub = Stub([(200, search_r1_reply(1), 1.0)])
    with serving(stub.server) as url:
        start = time.monotonic()
        with pytest.raises(RetrievalError, match=rf"{url}/retrieve failed after 1 attempt\(s\): timed out"):
            HttpRetriever(url, timeout_s=0.2, retries=0).search(["q"], k=1)
        assert time.monotonic() - start < 0.9


def test_http_client_reports_a_service_that_is_down():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(RetrievalError, match=rf"{url}/retrieve failed after 3 attempt\(s\): .*(refused|Errno)"):
        HttpRetriever(url, retries=2, backoff_s=0.01).search(["q"], k=1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops</html>", "answered malformed JSON"),
        (b'{"answer": []}', "unexpected shape: expected an object with 'result'"),
        (json.dumps({"result": [[]] * 3}).encode(), r"one list per query \(2\), got 3 lists"),
        (json.dumps({"result": [[{"document": {"id": 1}}], []]}).encode(), r"result\[0\]\[0\]: a passage needs"),
    ],
)
def test_http_client_rejects_malformed_answers_without_retrying(body: bytes, message: str):
    stub = Stub([(200, body, 0.0), (200, search_r1_reply(2), 0.0)])
    with serving(stub.server) as url:
        with pytest.raises(RetrievalError, match=message) as info:
            HttpRetriever(url, retries=3, backoff_s=0.01).search(["q1", "q2"], k=1)
    assert f"{url}/retrieve" in str(info.value)
    assert len(stub.requests) == 1


def test_http_client_retries_server_errors_then_succeeds():
    stub = Stub([(503, b"busy", 0.0), (500, b"boom", 0.0), (200, search_r1_reply(1), 0.0)])
    with serving(stub.server) as url:
        results = HttpRetriever(url, retries=2, backoff_s=0.01).search(["q"], k=1)
    assert len(stub.requests) == 3
    assert results[0][0].title == "Berlin"


def test_http_client_gives_up_after_its_retries_and_does_not_retry_client_errors():
    stub = Stub([(503, b"busy", 0.0)] * 2 + [(400, b'{"error": "bad topk"}', 0.0)])
    with serving(stub.server) as url:
        with pytest.raises(RetrievalError, match=r"failed after 2 attempt\(s\): HTTP 503"):
            HttpRetriever(url, retries=1, backoff_s=0.01).search(["q"], k=1)
        with pytest.raises(RetrievalError, match="answered HTTP 400: .*bad topk"):
            HttpRetriever(url, retries=3, backoff_s=0.01).search(["q"], k=1)
    assert len(stub.requests) == 3


def test_our_server_rejects_bad_requests(service: str):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{service}/retrieve", data=b'{"queries": "not a list"}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400
    assert "must be a list of strings" in json.loads(info.value.read())["error"]


# --- failures as observations ----------------------------------------------------------------


class Broken:
    def search(self, queries, k):
        raise RetrievalError("retrieval service http://10.0.0.1:8000/retrieve failed after 3 attempt(s): timed out")


class WrongLength:
    def search(self, queries, k):
        return [[]]


def test_safe_search_formats_results(corpus: Path, tmp_path: Path):
    stats = SearchStats()
    texts = safe_search(BM25Retriever(corpus, cache_dir=tmp_path / "cache"), ["capital of Germany", "zzzz"], 1, stats=stats)
    assert texts == [f"Doc 1(Title: Berlin) {CORPUS[1]['text']}\n", NO_RESULTS]
    assert stats.metrics() == {"search/queries": 2.0, "search/failed_queries": 0.0, "search/failure_rate": 0.0}


def test_safe_search_turns_failures_into_counted_observations():
    stats = SearchStats()
    assert safe_search(Broken(), ["a", "b"], 3, stats=stats) == [RETRIEVAL_FAILED, RETRIEVAL_FAILED]
    assert safe_search(WrongLength(), ["a", "b"], 3, stats=stats) == [RETRIEVAL_FAILED, RETRIEVAL_FAILED]
    assert safe_search(Broken(), [], 3, stats=stats) == []
    assert (stats.calls, stats.queries, stats.failed_calls, stats.failed_queries) == (3, 4, 2, 4)
    assert "1 result lists for 2 queries" in stats.last_error
    assert stats.metrics()["search/failure_rate"] == 1.0
    assert "10.0.0.1" not in RETRIEVAL_FAILED  # the model never sees the URL


def test_safe_search_over_a_dead_service():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stats = SearchStats()
    texts = safe_search(HttpRetriever(f"http://127.0.0.1:{port}", retries=0), ["q"], 3, stats=stats)
    assert texts == [RETRIEVAL_FAILED]
    assert stats.failed_queries == 1 and f"127.0.0.1:{port}/retrieve" in stats.last_error
