"""Retrievers for search environments: a local BM25 index and a client for a retrieval service.

Every retriever answers a batch: ``search(queries, k) -> list[list[Passage]]``, one ranked list per
query, best first. ``format_passages`` renders a list the way Search-R1 shows it to the model
(arXiv 2503.09516; ``search_r1/llm_agent/generation.py::_passages2string``), and
``information_observation`` wraps that text in the ``<information>`` block appended after a search
(spec section 10.2). ``safe_search`` turns a failed retrieval into an observation that says so and
counts it, so a service outage never crashes a rollout and never passes unnoticed.

``BM25Retriever`` indexes a local JSONL corpus with ``bm25s`` (imported lazily) and caches the index
on disk. ``HttpRetriever`` speaks the request/response shape of Search-R1's retrieval server, and
``make_retrieval_server`` serves any retriever in that shape with the standard library.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.client
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from rlvr_lab.envs.qa_data import json_object

logger = logging.getLogger(__name__)

NO_RESULTS = "No passages found."
"""What ``format_passages`` shows for an empty result list."""

RETRIEVAL_FAILED = "Retrieval failed: the search engine returned an error. Try another query or answer."
"""The observation text ``safe_search`` gives every query of a failed batch.

It is fixed on purpose: observation tokens condition the policy, so exception messages (URLs,
ports, tracebacks that differ between runs) stay in the logs and ``SearchStats.last_error``.
"""


@dataclass(frozen=True)
class Passage:
    """One retrieved passage. ``score`` is the retriever's relevance score (None when not given)."""

    id: str
    title: str
    text: str
    score: float | None = None


class Retriever(Protocol):
    """Anything that ranks passages for a batch of queries."""

    def search(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        """Up to ``k`` passages per query, best first; one list per query, in query order."""
        ...


class RetrievalError(RuntimeError):
    """A retriever could not answer: the service is down, timed out, or answered something unusable."""


# --- observation text ------------------------------------------------------------------------


def format_passages(passages: Sequence[Passage]) -> str:
    """Search-R1's observation text: ``"Doc 1(Title: T) text\\n"`` per passage, numbered from 1.

    An empty list gives ``NO_RESULTS``. Search-R1's wiki-18 titles carry quotes (``Doc 1(Title:
    "Aaron") ...``); passages read by this module have them stripped, so titles show bare.
    """
    if not passages:
        return NO_RESULTS
    return "".join(f"Doc {j}(Title: {p.title}) {p.text}\n" for j, p in enumerate(passages, start=1))


def information_observation(text: str) -> str:
    """The forced text appended after a search: ``"\\n\\n<information>" + text.strip() + "</information>\\n\\n"``.

    As Search-R1's ``execute_predictions``; the whole string, tags included, is masked out of the loss.
    """
    return f"\n\n<information>{text.strip()}</information>\n\n"


@dataclass
class SearchStats:
    """Running counts of ``safe_search`` calls; a failed call fails every query in it."""

    calls: int = 0
    queries: int = 0
    failed_calls: int = 0
    failed_queries: int = 0
    last_error: str | None = None

    def metrics(self) -> dict[str, float]:
        """``search/queries``, ``search/failed_queries`` and ``search/failure_rate`` (0 when no queries)."""
        rate = self.failed_queries / self.queries if self.queries else 0.0
        return {
            "search/queries": float(self.queries),
            "search/failed_queries": float(self.failed_queries),
            "search/failure_rate": rate,
        }


def safe_search(
    retriever: Retriever, queries: Sequence[str], k: int, *, stats: SearchStats | None = None
) -> list[str]:
    """``format_passages`` of each query's results, or ``RETRIEVAL_FAILED`` for every query when the call fails.

    Any exception from the retriever (and a result with the wrong number of lists, or lists of anything
    but passages) counts as a failure in ``stats`` and is logged as a warning with its message; the
    rollout goes on. Wrap each returned text with ``information_observation``.
    """
    queries = list(queries)
    if stats is not None:
        stats.calls += 1
        stats.queries += len(queries)
    if not queries:
        return []
    try:
        results = retriever.search(queries, k)
        if len(results) != len(queries):
            raise RetrievalError(f"retriever returned {len(results)} result lists for {len(queries)} queries")
        texts = [format_passages(passages) for passages in results]  # a list of something else fails here
    except Exception as exc:  # noqa: BLE001  # any retriever failure becomes an observation, counted below
        error = f"{type(exc).__name__}: {exc}"
        logger.warning("retrieval failed for %d queries: %s", len(queries), error)
        if stats is not None:
            stats.failed_calls += 1
            stats.failed_queries += len(queries)
            stats.last_error = error
        return [RETRIEVAL_FAILED] * len(queries)
    return texts


# --- corpus ----------------------------------------------------------------------------------


def load_corpus(path: str | os.PathLike[str]) -> list[Passage]:
    """Passages from a JSONL corpus, one JSON object a line (blank lines skipped).

    Each object has ``text`` (and optionally ``title``), or Search-R1's ``contents``, ``"Title"\\ntext``
    (the first line is the title, one pair of surrounding quotes removed). ``id`` defaults to the
    passage's 0-based position. A missing, empty or malformed file raises an error naming the file
    and, for a bad line, its line number.
    """
    return list(_read_corpus(Path(path), hasher=None))


def _read_corpus(path: Path, *, hasher: Any | None) -> Iterator[Passage]:
    """Parse ``path`` line by line, feeding the raw bytes to ``hasher`` when given."""
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    count = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if hasher is not None:
                hasher.update(raw)
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({exc})") from exc
            if not line:
                continue
            row = json_object(line, f"{path}:{lineno}")
            try:
                yield passage_from_document(row, default_id=str(count))
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from exc
            count += 1
    if count == 0:
        raise ValueError(f"corpus {path} has no passages")


def passage_from_document(document: Mapping[str, Any], *, default_id: str = "", score: float | None = None) -> Passage:
    """A Passage from a corpus row or a retrieval-service document (``text``/``title`` or ``contents``)."""
    doc_id = str(document["id"]) if document.get("id") is not None else default_id
    if "text" in document:
        title, text = document.get("title", ""), document["text"]
    elif "contents" in document:
        if not isinstance(document["contents"], str):
            raise ValueError(f"'contents' must be a string, got {type(document['contents']).__name__}")
        title, _, text = document["contents"].partition("\n")
        title = _strip_quotes(title.strip())
    else:
        raise ValueError(f"a passage needs 'text' (and optionally 'title') or 'contents'; got keys {sorted(document)}")
    if not isinstance(title, str) or not isinstance(text, str):
        raise ValueError(f"'title' and 'text' must be strings, got {type(title).__name__} and {type(text).__name__}")
    for name, value in (("title", title), ("text", text)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a JSON "\ud800" escape: no tokenizer could encode the observation
            raise ValueError(f"{name!r} holds a lone UTF-16 surrogate") from None
    return Passage(id=doc_id, title=title, text=text.strip(), score=score)


def _strip_quotes(title: str) -> str:
    """``"Aaron"`` -> ``Aaron``; only one surrounding pair, so ``"Weird" Al`` keeps its quotes."""
    if len(title) >= 2 and title[0] == title[-1] == '"':
        return title[1:-1]
    return title


# --- BM25 ------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+")
_TOKENIZER_NAME = "lowercase-word-regex-v1"
_CACHE_FORMAT = 1


class BM25Retriever:
    """BM25 over a local JSONL corpus (see ``load_corpus``), with the index cached on disk.

    Title and text are indexed together, lowercased, split on ``\\w+``, with English stopwords
    removed when ``remove_stopwords``. The index lives in
    ``<cache_dir or the corpus's folder>/<corpus name>.bm25/<key>/``, where ``key`` hashes the corpus
    bytes, the tokenisation and the BM25 parameters: a changed corpus or setting builds a new index,
    an unchanged one loads. ``built_index`` says which happened. Passages without any query term
    (score 0) are not returned, so a list may be shorter than ``k``.
    """

    def __init__(
        self,
        corpus_path: str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        remove_stopwords: bool = True,
    ) -> None:
        import bm25s
        from bm25s.stopwords import STOPWORDS_EN

        if not k1 > 0:
            raise ValueError(f"k1 must be > 0, got {k1}")
        if not 0 <= b <= 1:
            raise ValueError(f"b must be in [0, 1], got {b}")
        methods = ("robertson", "lucene", "atire", "bm25l", "bm25+")
        if method not in methods:
            raise ValueError(f"unknown BM25 method {method!r}; valid methods: {', '.join(methods)}")
        self.corpus_path = Path(corpus_path)
        self._stopwords = frozenset(STOPWORDS_EN) if remove_stopwords else frozenset()
        hasher = hashlib.sha256()
        self.passages = list(_read_corpus(self.corpus_path, hasher=hasher))
        settings = {
            "format": _CACHE_FORMAT,
            "tokenizer": _TOKENIZER_NAME,
            "remove_stopwords": remove_stopwords,
            "k1": k1,
            "b": b,
            "method": method,
            "bm25s": bm25s.__version__,
        }
        hasher.update(json.dumps(settings, sort_keys=True).encode())
        root = Path(cache_dir) if cache_dir is not None else self.corpus_path.parent
        self.index_dir = root / f"{self.corpus_path.name}.bm25" / hasher.hexdigest()[:16]
        self._index = self._load_index(bm25s)
        self.built_index = self._index is None
        if self._index is None:
            self._index = bm25s.BM25(k1=k1, b=b, method=method)
            self._index.index([self.tokenize(f"{p.title} {p.text}") for p in self.passages], show_progress=False)
            self._save_index(settings)

    def __len__(self) -> int:
        return len(self.passages)

    def tokenize(self, text: str) -> list[str]:
        """The terms of ``text`` as indexed and queried."""
        return [token for token in _TOKEN.findall(text.lower()) if token not in self._stopwords]

    def search(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if not queries:
            return []
        top = min(k, len(self.passages))
        results = self._index.retrieve(
            [self.tokenize(query) for query in queries], k=top, show_progress=False, n_threads=0
        )
        return [
            [
                dataclasses.replace(self.passages[int(i)], score=float(score))
                for i, score in zip(indices, scores)
                if score > 0
            ]
            for indices, scores in zip(results.documents, results.scores)
        ]

    def _load_index(self, bm25s: Any) -> Any | None:
        """The cached index, or None when absent or unreadable (an unreadable one is removed)."""
        meta_path = self.index_dir / "rlvr_meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            index = bm25s.BM25.load(self.index_dir, show_progress=False)
            if meta["num_passages"] != len(self.passages) or index.scores["num_docs"] != len(self.passages):
                raise ValueError("passage count differs from the corpus")
        except Exception as exc:  # noqa: BLE001  # a broken cache is rebuilt, not fatal
            logger.warning("discarding unreadable BM25 cache %s (%s); rebuilding", self.index_dir, exc)
            shutil.rmtree(self.index_dir, ignore_errors=True)
            return None
        return index

    def _save_index(self, settings: Mapping[str, Any]) -> None:
        """Write the index to a temporary folder and rename it into place, so readers never see half an index."""
        try:
            self.index_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.index_dir.parent))
        except OSError as exc:  # e.g. a read-only folder: search still works, the next start rebuilds
            logger.warning("could not cache the BM25 index at %s: %s", self.index_dir, exc)
            return
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; a shared cache should be readable by others
            self._index.save(tmp, show_progress=False)
            meta = {"corpus": str(self.corpus_path), "num_passages": len(self.passages), "settings": dict(settings)}
            (tmp / "rlvr_meta.json").write_text(json.dumps(meta, indent=2))
            os.rename(tmp, self.index_dir)
        except OSError as exc:
            if not (self.index_dir / "rlvr_meta.json").is_file():  # not a concurrent build that won the race
                logger.warning("could not cache the BM25 index at %s: %s", self.index_dir, exc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# --- HTTP client -----------------------------------------------------------------------------


class HttpRetriever:
    """Client for a retrieval service shaped like Search-R1's ``retrieval_server.py``.

    Request: ``POST <url>/retrieve`` with ``{"queries": [...], "topk": k, "return_scores": true}``.
    Response: ``{"result": [[{"document": {"id", "contents": "\\"Title\\"\\ntext"}, "score": s}, ...], ...]}``
    (documents with ``title``/``text`` and bare documents without ``score`` are accepted too). ``url``
    may be the service root or the full ``.../retrieve`` endpoint.

    Connection errors, timeouts, HTTP 429 and 5xx are retried ``retries`` times with exponential
    backoff (``backoff_s``, doubled each time, at most ``max_backoff_s``); other HTTP errors and
    malformed answers are not. Every failure raises ``RetrievalError`` naming the endpoint.

    ``timeout_s`` bounds each attempt as a whole, not only each socket wait: every read of an ``http://``
    answer (status line, headers, body) gets only the time left before the attempt's deadline, so a service
    that trickles its answer times out too (over ``https://`` the body is bounded so, the headers per read).
    A body over ``max_response_bytes`` is refused.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_response_bytes: int = 64 << 20,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"retrieval url must start with http:// or https://, got {url!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        if backoff_s < 0 or max_backoff_s < 0:
            raise ValueError(f"backoff_s and max_backoff_s must be >= 0, got {backoff_s} and {max_backoff_s}")
        url = url.rstrip("/")
        self.endpoint = url if url.endswith("/retrieve") else f"{url}/retrieve"
        self.timeout_s, self.retries = timeout_s, retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_response_bytes = max_response_bytes
        self._opener = urllib.request.build_opener(_DeadlineHTTPHandler(), _DeadlineRedirectHandler())

    def search(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        queries = list(queries)
        if not queries:
            return []
        body = self._post({"queries": queries, "topk": k, "return_scores": True})
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, an over-long int, too deep a nesting
            raise RetrievalError(f"retrieval service {self.endpoint} answered malformed JSON: {body[:200]!r}") from exc
        try:
            return [ranked[:k] for ranked in _parse_results(answer, len(queries))]
        except (ValueError, TypeError, KeyError, OverflowError) as exc:  # OverflowError: float() of a huge int score
            raise RetrievalError(f"retrieval service {self.endpoint} answered an unexpected shape: {exc}") from exc

    def _post(self, payload: Mapping[str, Any]) -> bytes:
        """The response body, after up to ``retries`` retries of transient failures."""
        data = json.dumps(payload).encode()
        attempts = self.retries + 1
        for attempt in range(attempts):
            request = urllib.request.Request(
                self.endpoint, data=data, headers={"Content-Type": "application/json"}, method="POST"
            )
            request.deadline = deadline = time.monotonic() + self.timeout_s  # read by _DeadlineHTTPHandler
            try:
                with self._opener.open(request, timeout=self.timeout_s) as response:
                    return self._read_body(response, deadline=deadline)
            except urllib.error.HTTPError as exc:
                try:
                    detail = exc.read(200)  # not the whole body: a 4xx or 5xx page may be large or slow
                except (http.client.HTTPException, OSError):  # a body cut short or timed out
                    detail = b""
                if exc.code != 429 and exc.code < 500:
                    message = f"retrieval service {self.endpoint} answered HTTP {exc.code}: {detail!r}"
                    raise RetrievalError(message) from exc
                error: Exception = exc
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                error = exc  # URLError wraps refused connections; a timeout while reading is a bare TimeoutError
            if attempt + 1 < attempts:
                delay = min(self.backoff_s * 2**attempt, self.max_backoff_s)
                logger.info("retrieval at %s failed (%s); retry %d in %.2fs", self.endpoint, error, attempt + 1, delay)
                time.sleep(delay)
        raise RetrievalError(
            f"retrieval service {self.endpoint} failed after {attempts} attempt(s): {_describe(error)}"
        ) from error

    def _read_body(self, response: Any, *, deadline: float) -> bytes:
        """The body, read a socket chunk at a time: a TimeoutError past ``deadline`` (retried like any
        timeout), a RetrievalError past ``max_response_bytes`` (not retried)."""
        chunks, size = [], 0
        while chunk := response.read1(1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_response_bytes:
                raise RetrievalError(
                    f"retrieval service {self.endpoint} answered more than {self.max_response_bytes} bytes"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"the answer took longer than {self.timeout_s:g}s")
        return b"".join(chunks)


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each allowed only the time left before ``deadline`` (a per-read timeout alone lets
    a service that sends a byte now and then hold the client forever)."""

    def __init__(self, sock: Any, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline
        self._file = sock.makefile("rb", buffering=0)  # holds the socket open after the connection lets go

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(remaining)
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: Any, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp.close()
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


class _DeadlineConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    """urllib's ``http://`` handler with every read of the answer bounded by ``request.deadline``."""

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_DeadlineConnection, deadline=req.deadline), req)


class _DeadlineRedirectHandler(urllib.request.HTTPRedirectHandler):
    """A redirect keeps the attempt's deadline."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201  # urllib's signature
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.deadline = req.deadline
        return new


def _describe(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError) and reason is not None:
        error = reason if isinstance(reason, Exception) else error
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}"


def _parse_results(answer: Any, n_queries: int) -> list[list[Passage]]:
    if not isinstance(answer, dict) or "result" not in answer:
        raise ValueError(f"expected an object with 'result', got {str(answer)[:200]}")
    result = answer["result"]
    if not isinstance(result, list) or len(result) != n_queries:
        got = f"{len(result)} lists" if isinstance(result, list) else type(result).__name__
        raise ValueError(f"'result' must hold one list per query ({n_queries}), got {got}")
    ranked = []
    for q, items in enumerate(result):
        if not isinstance(items, list):
            raise ValueError(f"result[{q}] must be a list, got {type(items).__name__}")
        passages = []
        for j, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"result[{q}][{j}] must be an object, got {type(item).__name__}")
            document, score = (item["document"], item.get("score")) if "document" in item else (item, None)
            if not isinstance(document, dict):
                raise ValueError(f"result[{q}][{j}]['document'] must be an object, got {type(document).__name__}")
            try:
                passages.append(passage_from_document(document, score=None if score is None else float(score)))
            except ValueError as exc:
                raise ValueError(f"result[{q}][{j}]: {exc}") from exc
        ranked.append(passages)
    return ranked


# --- HTTP server -----------------------------------------------------------------------------


def make_retrieval_server(
    retriever: Retriever, host: str = "127.0.0.1", port: int = 8000, *, default_k: int = 3
) -> ThreadingHTTPServer:
    """A bound, not yet running, HTTP server answering ``POST /retrieve`` in Search-R1's shape.

    Run it with ``server.serve_forever()`` (in a thread for tests; ``port=0`` picks a free port, read
    it from ``server.server_address``) and stop it with ``server.shutdown(); server.server_close()``.
    ``topk`` defaults to ``default_k``; without ``return_scores`` each result is the bare document.
    Documents carry ``id``, ``title``, ``text`` and ``contents`` (``"Title"\\ntext``). A bad request
    gets HTTP 400, a retriever failure HTTP 500, each with ``{"error": message}``.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  # http.server's naming
            if self.path.rstrip("/") != "/retrieve":
                self._reply(404, {"error": f"unknown path {self.path}; POST /retrieve"})
                return
            try:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length))
                queries, k, with_scores = _parse_request(request, default_k)
            except (ValueError, TypeError) as exc:
                self._reply(400, {"error": str(exc)})
                return
            try:
                results = retriever.search(queries, k)
            except Exception as exc:  # noqa: BLE001  # report to the client instead of dropping the connection
                logger.exception("retriever failed while serving %d queries", len(queries))
                self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})
                return
            self._reply(200, {"result": [[_served(p, with_scores) for p in ranked] for ranked in results]})

        def _reply(self, status: int, payload: Mapping[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # http.server's signature
            logger.debug("%s " + format, self.address_string(), *args)

    return ThreadingHTTPServer((host, port), Handler)


def _parse_request(request: Any, default_k: int) -> tuple[list[str], int, bool]:
    if not isinstance(request, dict):
        raise ValueError("the request must be a JSON object")
    queries = request.get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise ValueError("'queries' must be a list of strings")
    k = request.get("topk") or default_k
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"'topk' must be a positive int, got {k!r}")
    return queries, k, bool(request.get("return_scores", False))


def _served(passage: Passage, with_score: bool) -> dict[str, Any]:
    document = {
        "id": passage.id,
        "title": passage.title,
        "text": passage.text,
        "contents": f'"{passage.title}"\n{passage.text}',
    }
    return {"document": document, "score": passage.score} if with_score else document
