"""What an injected selector or judge call returns, and what the calls cost.

The selection code never talks to a model. A caller passes plain callables; each returns either the
reply text (``str``) or an object with a ``.text`` and, where the backend reports it, a ``.tokens``
count (such as :class:`Reply`). Calls are always counted; tokens are summed where they are reported.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """One model reply: its text and the number of tokens generated for it (None when not known)."""

    text: str
    tokens: int | None = None


@dataclass
class Usage:
    """Calls made and tokens spent by a selection method.

    ``tokens`` sums the counts the replies reported; ``calls_without_tokens`` counts the replies that
    reported none, so ``tokens`` is a complete total only when that count is 0.
    """

    calls: int = 0
    tokens: int = 0
    calls_without_tokens: int = 0

    def record(self, tokens: int | None) -> None:
        """Count one call that generated ``tokens`` tokens (None: not reported)."""
        self.calls += 1
        if tokens is None:
            self.calls_without_tokens += 1
        else:
            self.tokens += tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            tokens=self.tokens + other.tokens,
            calls_without_tokens=self.calls_without_tokens + other.calls_without_tokens,
        )


def read_reply(reply: object) -> tuple[str, int | None]:
    """``(text, tokens)`` of what a selector or judge callable returned.

    A ``str`` is the text with no token count; ``None`` (a backend that gave up) reads as empty text,
    which no parser accepts; any other object must have ``.text`` and may have ``.tokens``. A token
    count that is not a non-negative ``int`` is treated as not reported, except a negative one, which
    is a bug in the callable and raises ValueError.
    """
    if reply is None:
        return "", None
    if isinstance(reply, str):
        return reply, None
    if not hasattr(reply, "text"):
        raise TypeError(
            f"a selector or judge callable must return a str or an object with .text, got {type(reply).__name__}"
        )
    text = reply.text if isinstance(reply.text, str) else ""
    tokens = getattr(reply, "tokens", None)
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        return text, None
    if tokens < 0:
        raise ValueError(f"a reply reported a negative token count: {tokens}")
    return text, tokens


def as_rng(rng: random.Random | int) -> random.Random:
    """``rng`` itself, or a new ``random.Random`` seeded with the int ``rng``."""
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, int) and not isinstance(rng, bool):
        return random.Random(rng)
    raise TypeError(f"rng must be a random.Random or an int seed, got {type(rng).__name__}")
