"""Editable prompt templates for GenSelect and the judge, and selector/judge callables built on them.

Templates are ``str.format`` strings with named fields (write a literal brace as ``{{`` or ``}}``):

- GenSelect: ``{problem}`` and ``{candidates}`` (required), ``{num_candidates}`` (optional). The
  candidates are labelled "[Solution 1]" ... "[Solution g]" and the reply must end with
  ``<best_solution>i</best_solution>``.
- Judge: ``{problem}`` and ``{solution}`` (required). The reply must end with "Judgement: Yes" or
  "Judgement: No".

The built-in texts are ours; the reply formats are those of arXiv 2511.13027's recipe, which the
parsers in :mod:`rlvr_lab.eval.selection.parse` read.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GENSELECT_TEMPLATE = """\
You are given a math problem and {num_candidates} candidate solutions to it. Check each solution \
carefully, step by step, and decide which one is the most likely to be complete and correct. \
Judge the mathematics, not the length or the style.

Problem:
{problem}

{candidates}

Finish your reply with the number of the best solution in this exact format:
<best_solution>i</best_solution>
where i is between 1 and {num_candidates}."""

JUDGE_TEMPLATE = """\
You are given a math problem and a proposed solution. Check the solution carefully, step by step. \
It is correct only if every step is justified and the final result is right; a missing case, an \
unjustified claim or a wrong answer makes it incorrect.

Problem:
{problem}

Proposed solution:
{solution}

End your reply with exactly one line, "Judgement: Yes" if the solution is correct or \
"Judgement: No" if it is not."""

TEMPLATES: dict[str, str] = {"genselect": GENSELECT_TEMPLATE, "judge": JUDGE_TEMPLATE}
"""Built-in templates by kind."""

FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "genselect": (frozenset({"problem", "candidates"}), frozenset({"num_candidates"})),
    "judge": (frozenset({"problem", "solution"}), frozenset()),
}
"""``kind -> (required fields, optional fields)``."""

CANDIDATE_LABEL = "[Solution {index}]"


def template_fields(template: str) -> set[str]:
    """The names of the fields in a ``str.format`` template; ValueError on broken braces or unnamed fields."""
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        base = name.split(".")[0].split("[")[0]
        if not base or base.isdigit():
            raise ValueError("template fields must be named, like {problem}; found an unnamed field {}")
        names.add(base)
    return names


def check_template(template: str, kind: str) -> None:
    """Raise ValueError naming the problem unless ``template`` has every required field of ``kind``
    and no field the formatter will not fill."""
    if kind not in FIELDS:
        raise ValueError(f"unknown template kind {kind!r}; valid kinds: {', '.join(FIELDS)}")
    required, optional = FIELDS[kind]
    fields = template_fields(template)
    missing = sorted(required - fields)
    unknown = sorted(fields - required - optional)
    if missing:
        raise ValueError(f"{kind} template is missing required field(s) {', '.join('{' + f + '}' for f in missing)}")
    if unknown:
        allowed = ", ".join("{" + f + "}" for f in sorted(required | optional))
        raise ValueError(
            f"{kind} template uses unknown field(s) {', '.join('{' + f + '}' for f in unknown)}; allowed: {allowed} "
            "(write a literal brace as {{ or }})"
        )


def load_template(path_or_name: str | Path, kind: str | None = None) -> str:
    """A checked template: a built-in one by name (``"genselect"``, ``"judge"``) or the text of a file.

    For a file, ``kind`` says which fields it must have; without it the kind is read from the fields
    (``{candidates}`` means GenSelect, ``{solution}`` the judge). ValueError when the file's fields do
    not fit, naming the file and the missing or unknown fields; FileNotFoundError for a missing file.
    """
    if isinstance(path_or_name, str) and path_or_name in TEMPLATES:
        if kind is not None and kind != path_or_name:
            raise ValueError(f"built-in template {path_or_name!r} is not a {kind!r} template")
        return TEMPLATES[path_or_name]
    path = Path(path_or_name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no template file {str(path)!r} (built-in template names: {', '.join(TEMPLATES)})"
        )
    text = path.read_text(encoding="utf-8")
    try:
        if kind is None:
            kind = _guess_kind(text)
        check_template(text, kind)
    except ValueError as error:
        raise ValueError(f"template file {str(path)!r}: {error}") from None
    return text


def _guess_kind(template: str) -> str:
    fields = template_fields(template)
    if "candidates" in fields and "solution" not in fields:
        return "genselect"
    if "solution" in fields and "candidates" not in fields:
        return "judge"
    raise ValueError(
        "cannot tell the template's kind: a GenSelect template has {candidates}, a judge template {solution}, "
        "and it needs exactly one of them (or pass kind=)"
    )


def format_candidates(solutions: Sequence[str]) -> str:
    """The solutions labelled "[Solution 1]", "[Solution 2]", ..., separated by blank lines."""
    return "\n\n".join(f"{CANDIDATE_LABEL.format(index=i)}\n{s}" for i, s in enumerate(solutions, start=1))


def genselect_prompt(problem: str, solutions: Sequence[str], template: str = GENSELECT_TEMPLATE) -> str:
    """The GenSelect prompt showing ``solutions`` in order ("[Solution 1]" is ``solutions[0]``)."""
    return template.format(problem=problem, candidates=format_candidates(solutions), num_candidates=len(solutions))


def judge_prompt(problem: str, solution: str, template: str = JUDGE_TEMPLATE) -> str:
    """The judge prompt for one solution."""
    return template.format(problem=problem, solution=solution)


def prompt_compare_fn(
    problem: str,
    solutions: Sequence[str],
    generate: Callable[[str, int], Any],
    template: str = GENSELECT_TEMPLATE,
) -> Callable[[tuple], Any]:
    """A GenSelect ``compare_fn`` over candidate ids that index ``solutions``.

    Each game calls ``generate(prompt, seed)`` once and returns its reply (a ``str`` or an object with
    ``.text`` and ``.tokens``); ``seed`` counts this selector's calls from 0, so every game gets its own.
    """
    check_template(template, "genselect")
    calls = 0

    def compare_fn(group: tuple) -> Any:
        nonlocal calls
        seed, calls = calls, calls + 1
        return generate(genselect_prompt(problem, [solutions[i] for i in group], template), seed)

    return compare_fn


def prompt_judge_fn(
    problem: str,
    solutions: Sequence[str],
    generate: Callable[[str, int], Any],
    template: str = JUDGE_TEMPLATE,
) -> Callable[[int, int], Any]:
    """A ``judge_fn(candidate_id, sample)`` that calls ``generate(prompt, sample)`` on ``solutions[candidate_id]``.

    The sample number is the seed, so the ``n_j`` verdicts on one solution are independent samples.
    """
    check_template(template, "judge")

    def judge_fn(candidate_id: int, sample: int) -> Any:
        return generate(judge_prompt(problem, solutions[candidate_id], template), sample)

    return judge_fn
