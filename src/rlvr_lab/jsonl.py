"""Reading JSONL files line by line with errors that name the file and line (no heavy imports)."""

from __future__ import annotations

import json
from typing import Any


def json_object(line: str, where: str) -> dict[str, Any]:
    """One JSONL line parsed as a JSON object; errors name ``where`` (``file:line``)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row
