"""Reading JSONL files line by line with errors that name the file and line (no heavy imports)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

# A byte that is not UTF-8, as the "surrogateescape" error handler leaves it in the text.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# A \u escape of a UTF-16 surrogate: the only way a JSON line can spell a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def read_lines(path: str | os.PathLike[str], *, error: type[ValueError] = ValueError) -> Iterator[str]:
    """The lines of a UTF-8 text file, as ``open(path, encoding="utf-8")`` reads them.

    A line holding bytes that are not UTF-8 raises ``error`` naming ``file:line``; text-mode reading
    would raise a UnicodeDecodeError naming neither, at an offset into its read-ahead buffer.
    """
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            bad = _UNDECODABLE.search(line)
            if bad is not None:
                byte = ord(bad.group()) - 0xDC00
                raise error(f"{path}:{number}: not UTF-8 text (byte 0x{byte:02x} at character {bad.start() + 1})")
            yield line


def json_object(line: str, where: str) -> dict[str, Any]:
    """One JSONL line parsed as a JSON object; errors name ``where`` (``file:line``).

    Beyond invalid JSON, three valid-looking lines are refused here rather than failing later without a
    location: nesting deeper than Python's recursion limit, an integer over Python's 4300-digit limit,
    and a string holding a lone UTF-16 surrogate (``"\\ud800"``), which no tokenizer can encode.
    """
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from exc
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # int("9" * 5000) refuses to convert
        raise ValueError(f"{where}: not usable JSON ({exc})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if _SURROGATE_ESCAPE.search(line):
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff escape)") from None
    return row
