"""Name-to-function registries, one per kind of objective component: each entry is a method's one home.

A component registers its function together with everything the rest of rlvr-lab needs to know about
it: its typed parameters with their allowed values (:class:`Param`), the paper it comes from, the
inputs it needs from the trainer, whether it needs an off-policy step to have any effect, and its
hooks (sample filter, metrics). Config validation, the trainer, ``rlvr list`` and the adapters read
these declarations; a wrong name, an unknown parameter or a value out of range fails at start-up,
naming the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class UnknownNameError(ValueError):
    """An unknown registry key or parameter name."""


class InvalidParamError(ValueError):
    """A parameter value outside what the component allows."""


_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}


@dataclass(frozen=True)
class Param:
    """Allowed values of one keyword hyperparameter: a type, optional bounds or choices, ``None`` or not.

    ``int`` values are accepted for ``float`` parameters; ``bool`` is never taken for a number.
    """

    type: type
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    help: str = ""

    def allowed(self) -> str:
        """What is allowed, in words (used in error messages and ``rlvr list``)."""
        if self.choices is not None:
            text = "one of " + ", ".join(map(str, self.choices))
        else:
            bounds = [f"{op} {v:g}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                      if v is not None]
            text = _TYPE_NAMES.get(self.type, self.type.__name__) + (" " + " and ".join(bounds) if bounds else "")
        return text + (" or null" if self.nullable else "")

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else what is allowed."""
        if value is None:
            return None if self.nullable else self.allowed()
        if self.type is float:
            ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif self.type is int:
            ok_type = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok_type = isinstance(value, self.type)
        if not ok_type:
            return self.allowed()
        if self.choices is not None and value not in self.choices:
            return self.allowed()
        if self.type in (int, float):
            v = float(value)
            if v != v or (self.ge is not None and not v >= self.ge) or (self.gt is not None and not v > self.gt) \
                    or (self.le is not None and not v <= self.le) or (self.lt is not None and not v < self.lt):
                return self.allowed()
        return None

    def bad_example(self) -> Any:
        """A value this parameter refuses (for tests of start-up validation)."""
        if self.choices is not None:
            return "no-such-choice"
        if self.type not in (int, float):
            return "maybe" if self.type is bool else 12345
        step = 1 if self.type is int else 0.5
        for value in (None if self.ge is None else self.ge - step, self.gt, None if self.le is None else self.le + step,
                      self.lt):
            if value is not None:
                return self.type(value)
        return "not-a-number"


def Float(*, ge=None, gt=None, le=None, lt=None, nullable=False, help="") -> Param:  # noqa: A002, N802
    return Param(float, ge=ge, gt=gt, le=le, lt=lt, nullable=nullable, help=help)


def Int(*, ge=None, gt=None, le=None, lt=None, nullable=False, help="") -> Param:  # noqa: A002, N802
    return Param(int, ge=ge, gt=gt, le=le, lt=lt, nullable=nullable, help=help)


def Bool(*, help="") -> Param:  # noqa: A002, N802
    return Param(bool, help=help)


def Choice(*choices: str, nullable=False, help="") -> Param:  # noqa: A002, N802
    return Param(str, choices=tuple(choices), nullable=nullable, help=help)


def Str(*, help="") -> Param:  # noqa: A002, N802
    return Param(str, help=help)


# What a component without an off-policy step (one mini-batch, one epoch) loses: a sentence, or a
# function of the component's full parameters that returns the sentence, or None when nothing is lost.
OffPolicy = str | Callable[[Mapping[str, Any]], "str | None"] | None


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Any]
    params: Mapping[str, Param] = field(default_factory=dict)
    """Typed keyword hyperparameters with their allowed values."""
    paper: str = ""
    """Where the method comes from (arXiv id and section)."""
    summary: str = ""
    """One line on what the method does (``rlvr list``)."""
    needs: tuple[str, ...] = ()
    """Inputs beyond sampled-token log-probs the trainer must provide (``entropy``, ``proxy_logprobs``,
    ``action_ids``, ``token_hidden_reward``, ...)."""
    off_policy: OffPolicy = None
    """What the component cannot do when the policy has not moved before its loss is evaluated."""
    acts_on: tuple[str, str] | None = None
    """(metric, condition): the metric that counts what the component changed in a step (tokens zeroed,
    regularised, penalised), and in words what it takes for that count to be above 0. The trainer warns
    when the count stays 0, because the update is then the same as without the component."""
    # Further facts and hooks, each read by name by the trainer or an adapter:
    #   sample_filter  rows it trains on (removes the rest from the batch)
    #   drops_if       params -> bool: whether the sample filter removes rows with these parameters
    #   metrics        group metrics of an estimator, once per rollout
    #   aggregation    a loss-reduction mode the policy loss forces
    #   proxy_fn, proxy_params   a per-chunk function of the old-policy pass (Lp-Reg's proxy)
    #   extra_needs    params -> set of inputs needed only with these parameters (LLDS-MA's answer mask)
    #   minibatch_context   (advantages, loss_mask, **params) -> ctx.extras computed over a whole mini-batch
    #   step_context   (per-row inputs of the step's batch, **params) -> ctx.extras computed over the RL step
    #   binary_outcomes     True: reads rewards as correct/incorrect (needs 0/1 rewards or a verdict)
    #   group_relative      True: a group whose rewards are all equal gets advantage 0
    #   check_config   (params, cfg) -> problem or None: a check against the rest of the run config
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def drops_rows(self) -> bool:
        return "sample_filter" in self.meta

    def drops(self, params: Mapping[str, Any]) -> bool:
        """Whether the sample filter removes responses with these parameters."""
        if not self.drops_rows:
            return False
        rule = self.meta.get("drops_if")
        return True if rule is None else bool(rule(self.with_defaults(params)))

    def settings_without(self, params: Mapping[str, Any], inputs: set[str]) -> list[str]:
        """``key=value`` changes of one boolean or choice parameter after which the component no longer
        needs any of ``inputs`` (what to tell a user whose rollout cannot provide them)."""
        full = self.with_defaults(params)
        out = []
        for key, spec in self.params.items():
            options = (True, False) if spec.type is bool else spec.choices or ()
            for value in options:
                if value != full[key] and not self.needs_for({**full, key: value}) & inputs:
                    out.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
                    break
        return out

    def needs_for(self, params: Mapping[str, Any]) -> set[str]:
        """The inputs this component needs with these parameters (``needs`` plus ``extra_needs``)."""
        extra = self.meta.get("extra_needs")
        return set(self.needs) | (set(extra(self.with_defaults(params))) if extra is not None else set())

    def keyword_params(self) -> dict[str, inspect.Parameter]:
        """Keyword-only hyperparameters of the function, by name."""
        sig = inspect.signature(self.fn)
        return {n: p for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def defaults(self) -> dict[str, Any]:
        return {n: p.default for n, p in self.keyword_params().items()}

    def with_defaults(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The component's keyword defaults overlaid with ``params``."""
        return {**self.defaults(), **params}

    def check_params(self, params: Mapping[str, Any], *, where: str) -> None:
        """Unknown names and values outside the declared ranges fail, naming key, value and what is allowed."""
        allowed = self.keyword_params()
        for key, value in params.items():
            if key not in allowed:
                raise UnknownNameError(
                    f"{where}: unknown parameter {key!r} for {self.name!r}; "
                    f"allowed: {sorted(allowed) or 'none'}"
                )
            spec = self.params.get(key)
            problem = spec.problem(value) if spec is not None else None
            if problem is not None:
                raise InvalidParamError(f"{where}.{key}={value!r} is not allowed for {self.name!r}: must be {problem}")

    def inert_without_off_policy(self, params: Mapping[str, Any]) -> str | None:
        """What this component loses when the policy never moves before its loss (None: nothing)."""
        if self.off_policy is None or isinstance(self.off_policy, str):
            return self.off_policy
        return self.off_policy(self.with_defaults(params))


class Registry:
    """A named collection of components of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str, *, declared: bool = True):
        self.kind = kind
        # declared: every keyword parameter of a component must come with a Param (user-facing
        # hyperparameters); aggregation modes take trainer-computed keywords and declare none.
        self.declared = declared
        self.default: str | None = None  # the component a config gets when it names none
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        *,
        params: Mapping[str, Param] | None = None,
        paper: str = "",
        summary: str = "",
        needs: tuple[str, ...] = (),
        off_policy: OffPolicy = None,
        acts_on: tuple[str, str] | None = None,
        **meta: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            entry = Entry(name=name, fn=fn, params=dict(params or {}), paper=paper, summary=summary,
                          needs=tuple(needs), off_policy=off_policy, acts_on=acts_on, meta=dict(meta))
            if self.declared:
                _check_declarations(self.kind, entry)
            self._entries[name] = entry
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
            close = difflib.get_close_matches(name, self.names(), n=3) or [
                n for n in self.names() if name and (n.startswith(name) or name.startswith(n))][:3]
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint}; valid: {', '.join(self.names())}"
            ) from None

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).fn


def _check_declarations(kind: str, entry: Entry) -> None:
    """Every keyword parameter is declared, every declaration names one, and every default is allowed."""
    keyword = entry.keyword_params()
    missing, extra = sorted(set(keyword) - set(entry.params)), sorted(set(entry.params) - set(keyword))
    if missing or extra:
        raise TypeError(f"{kind} {entry.name!r}: undeclared parameters {missing}, declared but absent {extra}")
    for key, spec in entry.params.items():
        default = keyword[key].default
        if default is inspect.Parameter.empty or spec.problem(default) is not None:
            raise TypeError(f"{kind} {entry.name!r}: default {key}={default!r} is not {spec.allowed()}")


def all_registries() -> tuple[Registry, ...]:
    """The registries of configurable components (aggregation modes are chosen by a config key)."""
    return (ADVANTAGE_ESTIMATORS, TOKEN_ADVANTAGE_MODIFIERS, POLICY_LOSSES, TOKEN_LOSS_OVERRIDES, AUX_LOSSES)


ADVANTAGE_ESTIMATORS = Registry("advantage estimator")
TOKEN_ADVANTAGE_MODIFIERS = Registry("token-advantage modifier")
POLICY_LOSSES = Registry("policy loss")
TOKEN_LOSS_OVERRIDES = Registry("token-loss override")
AUX_LOSSES = Registry("auxiliary loss")
AGGREGATORS = Registry("aggregation mode", declared=False)
