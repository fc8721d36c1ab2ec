"""Pulling the final answer out of a model response.

The answer is the content of the last ``<answer>...</answer>`` block: models often restate a draft
answer while thinking, and the last one is what they commit to. When no block is present a named
fallback decides what, if anything, counts as the answer.
"""

from __future__ import annotations

import re

FALLBACKS: tuple[str, ...] = ("none", "last_number", "boxed", "last_line", "full")

# A number as written in prose: optional sign (not after a word or ")" so "5-3" gives 3, not -3),
# digits with optional thousands commas, optional decimals, optional "/denominator".
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER = re.compile(rf"(?:(?<![\w)])-)?(?:{_UNSIGNED})(?:/\d+)?")
_BOXED = "\\boxed{"
_BRACE = re.compile(r"[{}]")


def check_fallback(fallback: str) -> None:
    """Raise ValueError unless ``fallback`` is one of ``FALLBACKS``."""
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown answer fallback {fallback!r}; valid fallbacks: {', '.join(FALLBACKS)}")


def extract_answer(text: str, *, tag: str = "answer", fallback: str = "none") -> str | None:
    """The answer in ``text``: the stripped content of the last ``<tag>...</tag>``.

    A present but empty block gives ``""`` (the model answered with nothing; no fallback applies).
    Without a block, ``fallback`` decides:

    - ``"none"``: None.
    - ``"last_number"``: the last number, e.g. ``-3``, ``4.5``, ``3/4``; ``1,234`` gives ``1234``.
    - ``"boxed"``: the content of the last closed ``\\boxed{...}`` (nested braces allowed).
    - ``"last_line"``: the last non-empty line, stripped.
    - ``"full"``: the whole text, stripped.

    Every fallback returns None when it finds nothing. An unknown fallback raises ValueError.
    """
    check_fallback(fallback)
    tagged = tagged_contents(text, tag)
    if tagged:
        return tagged[-1].strip()
    return _FALLBACK_FNS[fallback](text)


def tagged_contents(text: str, tag: str) -> list[str]:
    """Raw contents of every ``<tag>...</tag>`` block in ``text``, in order (non-greedy, across lines).

    The same blocks as ``re.findall(r"<tag>(.*?)</tag>", text, re.DOTALL)``, found in linear time: that
    regex rescans the rest of the text from every unclosed ``<tag>`` (16 s for 100 kB of ``<answer>``).
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    blocks = []
    start = text.find(opening)
    while start != -1:
        begin = start + len(opening)
        end = text.find(closing, begin)
        if end == -1:  # no later opening tag has a close either
            break
        blocks.append(text[begin:end])
        start = text.find(opening, end + len(closing))
    return blocks


def last_number(text: str) -> str | None:
    """The last number in ``text`` with thousands commas removed, or None."""
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def last_boxed(text: str) -> str | None:
    """Stripped content of the last ``\\boxed{...}`` whose braces close, or None.

    One pass pairs every brace (a scan from each unclosed ``\\boxed{`` to the end of the text was
    quadratic: minutes for 100 kB of ``\\boxed{``).
    """
    first = text.find(_BOXED)
    if first == -1:
        return None
    closes = _closing_braces(text, first)
    start = text.rfind(_BOXED)
    while start != -1:
        brace = start + len(_BOXED) - 1
        if brace in closes:
            return text[brace + 1 : closes[brace]].strip()
        start = text.rfind(_BOXED, 0, start)
    return None


def _closing_braces(text: str, begin: int) -> dict[int, int]:
    """``{index of "{": index of the "}" that closes it}`` for the braces from ``begin`` on; unclosed ones are absent.

    A ``}`` with no open brace before it closes nothing, so each pair is the one a depth count started
    at its ``{`` would find.
    """
    opened: list[int] = []
    closes: dict[int, int] = {}
    for match in _BRACE.finditer(text, begin):
        if match.group() == "{":
            opened.append(match.start())
        elif opened:
            closes[opened.pop()] = match.start()
    return closes


def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _full(text: str) -> str | None:
    return text.strip() or None


_FALLBACK_FNS = {
    "none": lambda text: None,
    "last_number": last_number,
    "boxed": last_boxed,
    "last_line": _last_line,
    "full": _full,
}
