"""Fuzzed bad input (issue 22, "Fuzzed bad input"): configs, data files and retriever answers.

Every property says what a bad input must produce, and nothing else may happen: no other exception,
no hang past the time limit.

* configs: a valid Config, or a ``ConfigError`` that names the offending key (or, for a file that cannot
  be read as a YAML mapping, the file), short enough that it never dumps the resolved config;
* data files: the rows, or a ``ValueError`` (each reader's own subclass) whose message starts with
  ``file:line`` of the first bad line (``file`` alone for a file without rows);
* retriever answers: the passages, or a ``RetrievalError`` naming the endpoint, within the client's time
  limit; inside a rollout, a failed search is an observation and a count, never an exception.

Hypothesis runs derandomized with no example database, so CI sees the same cases every time. The
example counts per family are the constants below; the README quotes them.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from rlvr_lab.analysis.detect import load_texts
from rlvr_lab.analysis.value import ValueInputError, ValueSettings, count_samples, read_samples
from rlvr_lab.config import Config, ConfigError, load_config
from rlvr_lab.envs.qa_data import load_qa_dataset
from rlvr_lab.envs.retrievers import (
    RETRIEVAL_FAILED,
    HttpRetriever,
    Passage,
    RetrievalError,
    SearchStats,
    load_corpus,
    safe_search,
)
from rlvr_lab.envs.search import SearchEnv
from rlvr_lab.eval.mcq.data import MCQDataError, load_mcq
from rlvr_lab.eval.run import EvalInputError, eval_questions
from rlvr_lab.models.tokenizer import build_char_tokenizer
from rlvr_lab.presets import preset_names, preset_path
from rlvr_lab.rewards.qa import qa_exact_match_verifier

# Examples per property; a family's count is the sum over its properties.
CONFIG_VALUE_EXAMPLES = 200
CONFIG_UNKNOWN_KEY_EXAMPLES = 100
CONFIG_YAML_EXAMPLES = 150
CONFIG_OVERRIDE_EXAMPLES = 150
DATA_FILE_EXAMPLES = 150  # each file goes through all six JSONL readers
RETRIEVER_SHAPE_EXAMPLES = 150
RETRIEVER_HTTP_EXAMPLES = 60
RETRIEVER_TIMING_EXAMPLES = 12
RETRIEVER_OBJECT_EXAMPLES = 100
RETRIEVER_ROLLOUT_EXAMPLES = 20

FAMILY_EXAMPLES = {
    "configs": CONFIG_VALUE_EXAMPLES + CONFIG_UNKNOWN_KEY_EXAMPLES + CONFIG_YAML_EXAMPLES + CONFIG_OVERRIDE_EXAMPLES,
    "data files": DATA_FILE_EXAMPLES,
    "retriever answers": RETRIEVER_SHAPE_EXAMPLES + RETRIEVER_HTTP_EXAMPLES + RETRIEVER_TIMING_EXAMPLES
    + RETRIEVER_OBJECT_EXAMPLES + RETRIEVER_ROLLOUT_EXAMPLES,
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One folder for a property's files, rewritten by every example."""
    return tmp_path_factory.mktemp("fuzz")


FUZZ = settings(
    deadline=None,  # time limits are asserted per call, against the bound each property states
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

MAX_MESSAGE = 2000
"""Longest acceptable error message (beyond the path it names): a message names, it never dumps."""


# ---- configs -------------------------------------------------------------------------------------------------


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X`` or ``X | None``, not ``list[X]``), or None."""
    if typing.get_origin(annotation) not in (None, typing.Union, types.UnionType):
        return None
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _sections(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], type[BaseModel]]]:
    """Every nested config model with its key path (the top level is ``()``)."""
    yield prefix, model
    for name, field in model.model_fields.items():
        inner = _model_of(field.annotation)
        if inner is not None:
            yield from _sections(inner, (*prefix, name))


def _leaves(data: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Key paths of the non-mapping values of a dumped config."""
    for key, value in data.items():
        if isinstance(value, dict) and value and key not in ("params", "config"):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _key_paths(data: object, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of a loaded YAML document."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, str(key))
            yield from _key_paths(value, (*prefix, str(key)))


SECTIONS = list(_sections(Config))
LEAVES = sorted(_leaves(Config().model_dump(mode="json")))

WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([-1, 0, 1, 2**63, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "auto", "none", "null", "1e-3", "[1, 2", "{a: 1", "yes", "0x10", "grpo", "k9"]),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(-5, 5), max_size=2),
)


def _nest(path: tuple[str, ...], value: object) -> dict:
    for part in reversed(path):
        value = {part: value}
    return value  # type: ignore[return-value]


def _check_config_error(message: str, *, names: list[str]) -> None:
    """A ConfigError message: it names one of ``names`` and stays short."""
    assert any(name in message for name in names), f"names none of {names}: {message}"
    assert len(message) < MAX_MESSAGE, f"{len(message)} characters: {message[:300]}..."
    assert all(len(line) < 500 for line in message.splitlines()), message
    assert "Traceback" not in message


@given(key=st.sampled_from(LEAVES), value=WRONG_VALUES)
@settings(FUZZ, max_examples=CONFIG_VALUE_EXAMPLES)
def test_config_a_wrong_value_fails_naming_its_key(scratch, key, value):
    """Any value at any key: a valid config, or a ConfigError naming that key: its dotted path, or for a
    check across fields (``train: ... divisible by minibatches=3``) or a missing sibling
    (``algorithm.advantage.name: Field required``) its section's path and its own name or the sibling's."""
    path = scratch / "run.yaml"
    path.write_text(yaml.safe_dump(_nest(key, value)))
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        message, dotted, section = str(exc), ".".join(key), ".".join(key[:-1])
        across_fields = f"  {section}" in message and (key[-1] in message or f"{section}.name: Field required" in message)
        assert dotted in message or (section and across_fields), message
        _check_config_error(message, names=[dotted, section or dotted])
        event("ConfigError naming the key" if dotted in message else "ConfigError naming the section and field")
    else:
        assert isinstance(cfg, Config)
        event("valid config")


@given(where=st.sampled_from(SECTIONS), name=st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True),
       value=WRONG_VALUES)
@settings(FUZZ, max_examples=CONFIG_UNKNOWN_KEY_EXAMPLES)
def test_config_an_unknown_key_fails_naming_it(scratch, where, name, value):
    (prefix, model) = where
    assume(name not in model.model_fields and not (prefix == () and name == "extends"))
    path = scratch / "run.yaml"
    path.write_text(yaml.safe_dump(_nest(prefix, {name: value})))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    _check_config_error(message, names=[".".join((*prefix, name))])
    assert "unknown key" in message
    event("ConfigError naming the unknown key")


PRESET_TEXTS = [preset_path(name).read_text() for name in preset_names()]
YAML_NOISE = st.sampled_from(list(":-[]{},&*!|>'\"%@`#?\t\n ") + ["  ", ": ", "- ", "\n  ", "!!python/none", "*x", "&a"])


@st.composite
def broken_yaml(draw) -> bytes:
    """A packaged preset with characters inserted, deleted or replaced, cut short, or made not UTF-8."""
    text = draw(st.sampled_from(PRESET_TEXTS))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        noise = draw(YAML_NOISE)
        if action == "insert":
            text = text[:at] + noise + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        elif action == "replace":
            text = text[:at] + noise + text[at + len(noise):]
        else:
            text = text[:at]
    raw = text.encode()
    if draw(st.booleans()) and draw(st.booleans()):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"])) + raw[at:]
    return raw


@given(raw=broken_yaml())
@settings(FUZZ, max_examples=CONFIG_YAML_EXAMPLES)
def test_config_a_broken_yaml_file_fails_naming_the_file_or_the_key(scratch, raw):
    """A mangled file: a valid config, a ConfigError naming the file (unreadable YAML, not UTF-8, not a
    mapping, a bad ``extends``), or a validation error naming the keys it lists."""
    path = scratch / "broken.yaml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("invalid config"):  # the file read, its content did not validate
            data = yaml.safe_load(raw.decode())
            keys = [".".join(path) for path in _key_paths(data)] + [".".join(leaf) for leaf in LEAVES]
            _check_config_error(message, names=keys + [path[-1] for path in _key_paths(data)])
            event("ConfigError naming a key")
        else:
            _check_config_error(message, names=[str(path.resolve()), str(path.parent.resolve())])
            event("ConfigError naming the file")
    else:
        event("valid config")


OVERRIDE_TEXT = st.one_of(
    st.text(max_size=40),
    st.builds(lambda key, raw: f"{'.'.join(key)}={raw}", st.sampled_from(LEAVES), st.text(max_size=30)),
    st.builds(lambda key, raw: f"{key}={raw}", st.from_regex(r"[a-z.]{0,20}", fullmatch=True), st.text(max_size=10)),
)


@given(overrides=st.lists(OVERRIDE_TEXT, min_size=1, max_size=3))
@settings(FUZZ, max_examples=CONFIG_OVERRIDE_EXAMPLES)
def test_config_any_override_text_gives_a_config_or_a_config_error(overrides):
    """``key.path=value`` from the command line, with any text: a Config, or a ConfigError naming the
    override (one that cannot be read) or a key it set (one whose value does not validate)."""
    try:
        cfg = load_config(None, overrides=overrides)
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("invalid config"):
            keys = [text.split("=", 1)[0].split(".") for text in overrides]
            names = [".".join(key[:i]) for key in keys for i in range(1, len(key) + 1)] + [key[-1] for key in keys]
            event("ConfigError naming a key")
        else:
            names = [repr(text) for text in overrides]
            event("ConfigError naming the override")
        _check_config_error(message, names=[name for name in names if name])
    else:
        assert isinstance(cfg, Config)
        event("valid config")


def test_config_file_problems_name_the_file(tmp_path):
    """The fixed cases the fuzzers found, one line each."""
    cases = {
        "not_utf8.yaml": (b"run:\n  name: \xff\n", ":2: not UTF-8"),
        "deep.yaml": (b"task:\n  config: " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        "huge_int.yaml": (b"train:\n  steps: " + b"9" * 5000, "not usable YAML"),
        "extends_int.yaml": (b"extends: 3\n", "extends: must be"),
        "extends_list.yaml": (b"extends: [grpo, 7]\n", "extends: must be"),
    }
    for name, (raw, expected) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(ConfigError, match=expected) as info:
            load_config(tmp_path / name)
        assert str((tmp_path / name).resolve()) in str(info.value)
    with pytest.raises(ConfigError, match=r"algorithm\.policy_loss\.name: unknown policy loss 'nope'"):
        load_config(None, overrides=["algorithm.policy_loss.name=nope"])
    with pytest.raises(ConfigError, match=r"algorithm\.aggregation: unknown"):
        load_config(None, overrides=["algorithm.aggregation=nope"])
    with pytest.raises(ConfigError, match=r"sft\.loss\.params: .*w_max='abc'"):
        load_config(None, overrides=["sft.loss.name=div_prec", "sft.loss.params={w_max: abc}"])
    with pytest.raises(ConfigError, match=r"run\.seed: .*\(got '9+\.\.\.9+'\)"):  # an int YAML cannot convert stays text, cut short
        load_config(None, overrides=["run.seed=" + "9" * 5000])
    aliases = "a: &a [" + ", ".join(["x"] * 9) + "]\n"  # 9**6 references to one list: the message stays short
    for level in "bcdef":
        previous = chr(ord(level) - 1)
        aliases += f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
    (tmp_path / "laughs.yaml").write_text(aliases)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "laughs.yaml")
    assert all(len(line) < 300 for line in str(info.value).splitlines())


# ---- data files ----------------------------------------------------------------------------------------------

# Text a JSON string may hold that every reader accepts (no lone surrogates: those are a defect below).
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
NONBLANK = st.builds(str.__add__, st.characters(codec="utf-8", exclude_categories=("Zs", "Zl", "Zp", "Cc")), TEXT)


@st.composite
def good_row(draw) -> dict:
    """A row every JSONL reader accepts: QA (question, answers), multiple choice (question, choices,
    answer), detection (text, label), For-Value (prompt, response) and corpus (title, text)."""
    row = {
        "question": draw(NONBLANK),
        "answers": draw(st.lists(st.one_of(NONBLANK, st.integers(-999, 999)), min_size=1, max_size=3)),
        "choices": ["yes", "no"],
        "answer": draw(st.sampled_from([0, 1])),
        "text": draw(TEXT),
        "title": draw(TEXT),
        "label": draw(st.sampled_from([0, 1])),
        "prompt": draw(TEXT),
        "response": draw(TEXT),
    }
    if draw(st.booleans()):
        row["id"] = draw(st.one_of(TEXT, st.integers(0, 10**6)))
    return row


BIG_JSON = json.dumps(["x"] * 60_000)  # a 300 kB list, where a string belongs


class Line(bytes):
    """A file line whose repr stays short in Hypothesis's report of a failing case."""

    def __repr__(self) -> str:
        return super().__repr__() if len(self) <= 200 else f"<{len(self)} bytes: {bytes(self[:80])!r}...>"


@st.composite
def bad_line(draw) -> bytes:
    """A line every reader refuses, one defect each."""
    kind = draw(st.sampled_from([
        "not_json", "truncated", "not_object", "no_fields", "wrong_types", "big_wrong_type",
        "not_utf8", "lone_surrogate", "deep", "huge_int",
    ]))
    row = draw(good_row())
    if kind == "not_json":
        text = draw(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1, max_size=30))
        assume(text.strip())
        try:
            json.loads(text)
        except ValueError:
            return text.encode()
        assume(False)
    if kind == "truncated":
        line = json.dumps(row)
        return line[: draw(st.integers(1, len(line) - 1))].encode()
    if kind == "not_object":
        return json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), TEXT, st.none()))).encode()
    if kind == "no_fields":
        return json.dumps({"other": draw(TEXT)}).encode()
    if kind == "wrong_types":
        wrong = draw(st.sampled_from([None, 3, [], {}, True]))
        return json.dumps({**row, "question": wrong, "text": wrong, "prompt": wrong}).encode()
    if kind == "big_wrong_type":
        return f'{{"question": {BIG_JSON}, "text": {BIG_JSON}, "prompt": {BIG_JSON}, "answers": ["a"]}}'.encode()
    if kind == "not_utf8":
        line = json.dumps(row, ensure_ascii=False).encode()
        at = draw(st.integers(0, len(line)))
        return line[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"])) + line[at:]
    if kind == "lone_surrogate":
        field = draw(st.sampled_from(["question", "text", "prompt", "title"]))
        return json.dumps({**row, field: "a\ud800b"}).encode()
    if kind == "deep":
        depth = draw(st.integers(2000, 50_000))
        return b'{"question": ' + b"[" * depth + b"]" * depth + b"}"
    return b'{"question": ' + b"9" * draw(st.integers(4301, 20_000)) + b"}"


@st.composite
def jsonl_file(draw) -> tuple[list[bytes], int | None, int]:
    """``(lines, first bad line number or None, good rows)`` of a file mixing good, blank and bad lines."""
    lines: list[bytes] = []
    first_bad, good = None, 0
    for number in range(1, draw(st.integers(0, 8)) + 1):
        kind = draw(st.sampled_from(["good", "good", "good", "blank", "bad"]))
        if kind == "good":
            lines.append(json.dumps(draw(good_row()), ensure_ascii=draw(st.booleans())).encode())
            good += first_bad is None
        elif kind == "blank":
            lines.append(draw(st.sampled_from([b"", b"   ", b"\t"])))
        else:
            lines.append(Line(draw(bad_line())))
            first_bad = number if first_bad is None else first_bad
    return lines, first_bad, good


def eval_data_questions(path: Path) -> list[dict]:
    """The questions ``rlvr eval --data PATH`` would ask."""
    cfg = load_config(None, overrides=["task.kind=qa", f"task.train_path={path}", f"task.eval_path={path}"])
    return eval_questions(cfg)[1]


TOKENIZER = build_char_tokenizer()
READERS = {
    "qa": (lambda path: load_qa_dataset(path), ValueError, True),
    "eval --data": (eval_data_questions, EvalInputError, True),
    "mcq": (lambda path: load_mcq(path), MCQDataError, True),
    "detect": (lambda path: load_texts(path), ValueError, True),
    "corpus": (lambda path: load_corpus(path), ValueError, True),
    "value": (lambda path: list(read_samples(path, TOKENIZER, ValueSettings(max_prompt_tokens=8, max_response_tokens=8))),
              ValueInputError, False),
}
"""name: (read the file, the error it raises, whether a file without rows is an error)."""


def _check_read(name: str, read, error: type[ValueError], refuses_empty: bool, path: Path, first_bad: int | None,
                good: int) -> None:
    if first_bad is None and (good or not refuses_empty):
        rows = read(path)
        assert len(rows) == good
        if currently_in_test_context():
            event(f"{name}: rows" if good else f"{name}: no rows")
        return
    with pytest.raises(error) as info:
        read(path)
    message = str(info.value)
    prefix = f"{path}:{first_bad}:" if first_bad is not None else f"{path}"
    assert message.startswith(prefix) or (first_bad is None and str(path) in message), message[:300]
    assert len(message) < MAX_MESSAGE + len(str(path)), f"{len(message)} characters: {message[:300]}"
    if currently_in_test_context():  # outcome counts for --hypothesis-show-statistics
        event(f"{name}: error at file:line" if first_bad is not None else f"{name}: error naming the empty file")


@given(file=jsonl_file())
@settings(FUZZ, max_examples=DATA_FILE_EXAMPLES)
def test_data_file_rows_or_an_error_at_the_first_bad_line(scratch, file):
    """Good, blank and bad lines mixed: with no bad line every reader returns the good rows; otherwise each
    raises its own ValueError naming ``file:line`` of the first bad line. An empty file is an error naming
    the file (For-Value's reader returns no samples; its caller says so)."""
    lines, first_bad, good = file
    path = scratch / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if lines else b""))
    for name, (read, error, refuses_empty) in READERS.items():
        _check_read(name, read, error, refuses_empty, path, first_bad, good)


@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \n\t\n"], ids=["empty", "newlines", "blanks"])
def test_data_file_without_rows(tmp_path, content):
    """No rows: every reader but For-Value's raises its error naming the file; For-Value's yields nothing."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    for name, (read, error, refuses_empty) in READERS.items():
        _check_read(name, read, error, refuses_empty, path, None, 0)


def test_data_file_with_a_10_mb_line(tmp_path):
    """A 10 MB question is a question; a 10 MB line that is not one fails naming its line, briefly."""
    question = "why " * 2_500_000
    good = tmp_path / "big.jsonl"
    good.write_text(json.dumps({"question": question, "answers": ["x"]}) + "\n")
    start = time.monotonic()
    assert load_qa_dataset(good)[0]["question"] == question.strip()
    assert time.monotonic() - start < 5
    for name, line in {
        "cut.jsonl": json.dumps({"question": question, "answers": ["x"]})[:-2],
        "list.jsonl": json.dumps({"question": [question], "answers": ["x"]}),
        "answers.jsonl": json.dumps({"question": "q", "answers": [[question]]}),
    }.items():
        (tmp_path / name).write_text('{"question": "q", "answers": ["a"]}\n' + line + "\n")
        with pytest.raises(ValueError) as info:
            load_qa_dataset(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}:2:") and len(str(info.value)) < MAX_MESSAGE


def test_data_file_line_counts_and_utf8(tmp_path):
    """The For-Value progress count reads the same lines, with the same error, as the reader."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"prompt": "a", "response": "b"}\n\n' + b'{"prompt": "\xff"}\n')
    with pytest.raises(ValueInputError, match=rf"^{path}:3: not UTF-8 text \(byte 0xff"):
        count_samples(path)


# ---- retriever answers ---------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What the scripted service does with the next request."""

    status: bytes = b"HTTP/1.1 200 OK\r\n"
    headers: bytes = b""
    body: bytes = b""
    length: int | None = None  # Content-Length to announce (None: the body's length)
    delay_s: float = 0.0  # before the status line
    chunk: int = 1 << 20  # bytes per send
    gap_s: float = 0.0  # pause between sends
    hold_s: float = 0.0  # keep the connection open this long after the last send


class ScriptedService(socketserver.ThreadingTCPServer):
    """A raw TCP service speaking as much HTTP as the plan says; every plan ends within its own time, and
    closing the server waits for its handlers, so no thread outlives the test."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.plan = Plan()
        service = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                plan = service.plan
                _read_request(self.request)
                try:
                    time.sleep(plan.delay_s)
                    length = len(plan.body) if plan.length is None else plan.length
                    head = plan.status + plan.headers + f"Content-Length: {length}\r\n\r\n".encode()
                    data = head + plan.body
                    for start in range(0, len(data), plan.chunk):
                        self.request.sendall(data[start:start + plan.chunk])
                        if plan.gap_s:
                            time.sleep(plan.gap_s)
                    time.sleep(plan.hold_s)
                except OSError:
                    pass  # the client gave up

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def _read_request(sock: socket.socket) -> None:
    """Read one HTTP request (headers and Content-Length body) so the client is not reset mid-send."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return
        body += chunk


@pytest.fixture(scope="module")
def service() -> Iterator[ScriptedService]:
    server = ScriptedService()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _document() -> st.SearchStrategy:
    """A retrieval-service document: mostly well formed, often not."""
    return st.one_of(
        st.fixed_dictionaries({"id": st.one_of(st.text(max_size=5), st.integers()), "contents": st.text(max_size=30)}),
        st.fixed_dictionaries({"title": st.text(max_size=10), "text": st.text(max_size=30)}),
        st.dictionaries(st.sampled_from(["id", "title", "text", "contents", "score"]), JSON_VALUES, max_size=4),
        JSON_VALUES,
    )


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)


@st.composite
def service_answer(draw, n_queries: int) -> bytes:
    """A body the service might send for ``n_queries`` queries: right, nearly right or wrong."""
    kind = draw(st.sampled_from(["search_r1", "search_r1", "json", "bytes", "surrogate", "deep", "huge_int", "huge_score"]))
    if kind == "search_r1":
        n_lists = draw(st.sampled_from([n_queries, n_queries, 0, n_queries + 1]))
        items = st.one_of(
            st.fixed_dictionaries({"document": _document(), "score": st.one_of(st.floats(), st.integers(), JSON_VALUES)}),
            _document(),
        )
        result = draw(st.lists(st.lists(items, max_size=4), min_size=n_lists, max_size=n_lists))
        answer = draw(st.sampled_from([{"result": result}, {"results": result}, result, {"result": result, "x": 1}]))
        return json.dumps(answer).encode()
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "surrogate":
        return json.dumps({"result": [[{"document": {"id": "1", "contents": '"T"\nbad \ud800 text'}, "score": 1.0}]] * n_queries}).encode()
    if kind == "deep":
        return b'{"result": ' + b"[" * draw(st.integers(1000, 100_000)) + b"}"
    if kind == "huge_int":
        return b'{"result": [' + b"7" * 5000 + b"]}"
    return json.dumps({"result": [[{"document": {"id": "1", "contents": "x"}, "score": 10**400}]] * n_queries}).encode()


TIMEOUT_S = 0.3
SLACK_S = 0.5


def _check_search(retriever: HttpRetriever, queries: list[str], k: int, bound_s: float, *, again: bool = True) -> None:
    """Passages in the right shape, or a RetrievalError naming the endpoint; within ``bound_s``.

    A search over the bound is run once more and fails only if it is over again: a client that waits too
    long does so every time, a busy machine pausing the process does not.
    """
    start = time.monotonic()
    try:
        results = retriever.search(queries, k)
    except RetrievalError as exc:
        assert retriever.endpoint in str(exc)
        assert len(str(exc)) < MAX_MESSAGE
        reason = str(exc).split(retriever.endpoint, 1)[1].split(":")[0].strip()
        event(f"RetrievalError: {reason}")
    else:
        event("passages")
        assert len(results) == len(queries)
        for ranked in results:
            assert len(ranked) <= k
            for passage in ranked:
                assert isinstance(passage, Passage) and isinstance(passage.title, str) and isinstance(passage.text, str)
                (passage.title + passage.text).encode("utf-8")  # every observation can be tokenized
                assert passage.score is None or isinstance(passage.score, float)
    elapsed = time.monotonic() - start
    if elapsed >= bound_s and again:
        _check_search(retriever, queries, k, bound_s, again=False)
        return
    assert elapsed < bound_s, f"{elapsed:.2f}s > {bound_s:.2f}s, twice"


@given(data=st.data(), n_queries=st.integers(1, 3), k=st.integers(1, 3))
@settings(FUZZ, max_examples=RETRIEVER_SHAPE_EXAMPLES)
def test_retriever_answers_of_any_shape(service, data, n_queries, k):
    """A 200 answer with any body: passages, or a RetrievalError naming the endpoint, never retried."""
    body = data.draw(service_answer(n_queries))
    service.plan = Plan(body=body)
    retriever = HttpRetriever(service.url, timeout_s=TIMEOUT_S, retries=2, backoff_s=0.01)
    _check_search(retriever, [f"q{i}" for i in range(n_queries)], k, bound_s=TIMEOUT_S + SLACK_S)


@given(
    status=st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 204 No Content\r\n", b"HTTP/1.1 301 Moved\r\n",
                            b"HTTP/1.1 400 Bad\r\n", b"HTTP/1.1 404 Nope\r\n", b"HTTP/1.1 429 Slow down\r\n",
                            b"HTTP/1.1 500 Oops\r\n", b"HTTP/1.1 503 Busy\r\n", b"HTTP/1.1 999 What\r\n",
                            b"HTTP/1.0 200\r\n", b"garbage\r\n", b"", b"HTTP/1.1 200 OK\r\nX-" + b"a" * 70_000 + b"\r\n"]),
    headers=st.sampled_from([b"", b"Content-Type: text/html\r\n", b"Transfer-Encoding: chunked\r\n",
                             b"Content-Encoding: gzip\r\n", b"Location: http://127.0.0.1:9/\r\n"]),
    body=st.one_of(st.binary(max_size=100), st.just(b'{"result": [[]]}')),
    length_delta=st.sampled_from([None, -5, 0, 7]),
    retries=st.integers(0, 1),
)
@settings(FUZZ, max_examples=RETRIEVER_HTTP_EXAMPLES)
def test_retriever_broken_http(service, status, headers, body, length_delta, retries):
    """Statuses, headers, framing (a Content-Length that lies, chunked without chunks): a result or a
    RetrievalError, within the attempts' time limits."""
    length = None if length_delta is None else max(0, len(body) + length_delta)
    service.plan = Plan(status=status, headers=headers, body=body, length=length, hold_s=2 * TIMEOUT_S)
    retriever = HttpRetriever(service.url, timeout_s=TIMEOUT_S, retries=retries, backoff_s=0.01)
    _check_search(retriever, ["q"], 1, bound_s=(retries + 1) * TIMEOUT_S + 0.01 + SLACK_S)


@given(
    delay_s=st.sampled_from([0.0, 0.1, 0.5]),
    chunk=st.sampled_from([1, 7, 1 << 20]),
    gap_s=st.sampled_from([0.0, 0.02, 0.1]),
    hold_s=st.sampled_from([0.0, 1.0]),
    length_delta=st.sampled_from([0, 50]),
)
@settings(FUZZ, max_examples=RETRIEVER_TIMING_EXAMPLES)
def test_retriever_slow_answers_end_within_the_time_limit(service, delay_s, chunk, gap_s, hold_s, length_delta):
    """A service that stalls before answering, trickles its status line, headers or body, or announces more
    than it sends: the search ends within the time limit plus slack, as a result or a RetrievalError."""
    body = json.dumps({"result": [[{"document": {"id": "1", "contents": '"T"\n' + "t" * 60}, "score": 1.0}]]}).encode()
    service.plan = Plan(body=body, length=len(body) + length_delta, delay_s=delay_s, chunk=chunk, gap_s=gap_s, hold_s=hold_s)
    retriever = HttpRetriever(service.url, timeout_s=TIMEOUT_S, retries=0)
    _check_search(retriever, ["q"], 1, bound_s=TIMEOUT_S + SLACK_S)


def test_retriever_trickled_answer_times_out():
    """The case that found the fix: one byte every 50 ms never tripped the per-read socket timeout, so a
    1 KB answer took a minute (headers alone 3.6 s); now each attempt ends at its deadline."""
    body = json.dumps({"result": [[{"document": {"id": "1", "contents": "x" * 1000}}]]}).encode()
    server = ScriptedService()
    server.plan = Plan(body=body, chunk=1, gap_s=0.05)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        with pytest.raises(RetrievalError, match="timed out"):
            HttpRetriever(server.url, timeout_s=0.3, retries=1, backoff_s=0.01).search(["q"], 1)
        assert time.monotonic() - start < 2 * 0.3 + 0.01 + SLACK_S
    finally:
        server.shutdown()
        server.server_close()


def test_retriever_10_mb_answers(service):
    """A 10 MB answer: a valid one is read (the rollout cuts the observation to max_obs_tokens), a
    malformed one is a short RetrievalError; one over max_response_bytes is refused unread."""
    valid = json.dumps({"result": [[{"document": {"id": "1", "contents": '"T"\n' + "w " * 5_000_000}, "score": 1.0}]]})
    service.plan = Plan(body=valid.encode())
    env = SearchEnv(tokenizer=TOKENIZER, verifier=qa_exact_match_verifier(),
                    retriever=HttpRetriever(service.url, timeout_s=5, retries=0), max_obs_tokens=20)
    start = time.monotonic()
    reply = env.reply("<search>q</search>")
    assert time.monotonic() - start < 3  # encoding all 10 MB took the character tokenizer 40 s
    assert reply.counts["failed_search"] == 0.0 and len(env.observation_ids(reply.observation)) < 60
    service.plan = Plan(body=valid.encode()[:-3])
    with pytest.raises(RetrievalError, match="malformed JSON") as info:
        HttpRetriever(service.url, timeout_s=5, retries=0).search(["q"], 1)
    assert len(str(info.value)) < MAX_MESSAGE
    service.plan = Plan(body=valid.encode())
    with pytest.raises(RetrievalError, match="more than 1000000 bytes"):
        HttpRetriever(service.url, timeout_s=5, retries=0, max_response_bytes=1_000_000).search(["q"], 1)


class Scripted:
    """A retriever object that returns ``value`` or raises ``error``."""

    def __init__(self, value: object = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error

    def search(self, queries, k):
        if self.error is not None:
            raise self.error
        return self.value


ERRORS = st.sampled_from([RetrievalError("down"), TimeoutError("slow"), ValueError("bad"), KeyError("k"),
                          TypeError("t"), RuntimeError("r"), OSError(104, "reset"), RecursionError("deep"),
                          UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")])
PASSAGES = st.builds(Passage, id=st.text(max_size=3), title=st.text(max_size=5), text=st.text(max_size=10),
                     score=st.one_of(st.none(), st.floats()))


@given(data=st.data(), queries=st.lists(st.text(max_size=5), max_size=3))
@settings(FUZZ, max_examples=RETRIEVER_OBJECT_EXAMPLES)
def test_retriever_failures_become_counted_observations(data, queries):
    """Whatever a retriever raises or returns: one observation per query, and every failed query counted."""
    n = data.draw(st.sampled_from([len(queries), len(queries), len(queries) + 1]))
    item = st.one_of(PASSAGES, JSON_VALUES)
    retriever = data.draw(st.one_of(
        st.builds(Scripted, error=ERRORS),
        st.builds(Scripted, value=st.lists(st.lists(PASSAGES, max_size=2), min_size=n, max_size=n)),
        st.builds(Scripted, value=st.lists(st.one_of(st.lists(item, max_size=2), JSON_VALUES), min_size=n, max_size=n)),
        st.builds(Scripted, value=JSON_VALUES),
    ))
    stats = SearchStats()
    texts = safe_search(retriever, queries, 3, stats=stats)
    assert len(texts) == len(queries) and all(isinstance(text, str) for text in texts)
    failed = [text == RETRIEVAL_FAILED for text in texts]
    assert stats.failed_queries == sum(failed) and stats.queries == len(queries)
    assert all(failed) or not any(failed)  # a call fails as a whole
    event("failed search, counted" if stats.failed_calls else "observations")


@given(data=st.data())
@settings(FUZZ, max_examples=RETRIEVER_ROLLOUT_EXAMPLES)
def test_retriever_answers_inside_a_rollout_turn(service, data):
    """Through the search environment: any answer is an observation plus counts, never an exception."""
    service.plan = Plan(body=data.draw(service_answer(1)))
    env = SearchEnv(tokenizer=TOKENIZER, verifier=qa_exact_match_verifier(),
                    retriever=HttpRetriever(service.url, timeout_s=TIMEOUT_S, retries=0), max_obs_tokens=30)
    reply = env.reply("<search>capital of France</search>")
    assert reply.counts["valid_search"] == 1.0 and reply.counts["failed_search"] in (0.0, 1.0)
    event("failed search, counted" if reply.counts["failed_search"] else "observation")
    assert reply.observation.startswith("\n\n<information>") and reply.observation.endswith("</information>\n\n")
    env.observation_ids(reply.observation)
