"""Name-to-function registries, one per kind of objective component.

Every registry fails loudly on an unknown name (listing the valid ones) and checks keyword
parameters against the function's signature, so a misspelt hyperparameter in a YAML file is
caught at start-up, not silently ignored.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class UnknownNameError(ValueError):
    """An unknown registry key or parameter name."""


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Any]
    # Extra facts about the component that the trainer must honour (e.g. a forced aggregation mode).
    meta: Mapping[str, Any] = field(default_factory=dict)

    def keyword_params(self) -> dict[str, inspect.Parameter]:
        """Keyword-only hyperparameters of the function, by name."""
        sig = inspect.signature(self.fn)
        return {n: p for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def check_params(self, params: Mapping[str, Any], *, where: str) -> None:
        allowed = self.keyword_params()
        for key in params:
            if key not in allowed:
                raise UnknownNameError(
                    f"{where}: unknown parameter {key!r} for {self.name!r}; "
                    f"allowed: {sorted(allowed) or 'none'}"
                )


class Registry:
    """A named collection of components of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name=name, fn=fn, meta=dict(meta))
            return fn

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint}; valid: {', '.join(self.names())}"
            ) from None

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).fn

    def annotate(self, name: str, **meta: Any) -> None:
        """Add facts to a registered component's ``meta`` (e.g. a metrics hook declared by the trainer).

        A key that is already set to a different value is an error: annotations add, never overwrite.
        """
        entry = self.entry(name)
        clash = [k for k, v in meta.items() if k in entry.meta and entry.meta[k] is not v]
        if clash:
            raise ValueError(f"{self.kind} {name!r}: meta {clash} is already set")
        self._entries[name] = Entry(name=name, fn=entry.fn, meta={**entry.meta, **meta})


ADVANTAGE_ESTIMATORS = Registry("advantage estimator")
TOKEN_ADVANTAGE_MODIFIERS = Registry("token-advantage modifier")
POLICY_LOSSES = Registry("policy loss")
TOKEN_LOSS_OVERRIDES = Registry("token-loss override")
AUX_LOSSES = Registry("auxiliary loss")
AGGREGATORS = Registry("aggregation mode")
