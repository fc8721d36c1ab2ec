"""One home per method: outside its own module under ``objectives/`` (and its preset file), no code in
``src/`` spells a registered method's name; the trainer, config validation, ``rlvr list`` and the
adapters read the registry's declarations instead."""

from __future__ import annotations

import ast
from pathlib import Path

from rlvr_lab.objectives.registry import AGGREGATORS, all_registries

SRC = Path(__file__).resolve().parents[1] / "src" / "rlvr_lab"
HOMES = ("objectives", "presets")  # the methods' modules and their packaged YAML presets


def method_names() -> set[str]:
    return {n for r in all_registries() for n in r.names()}


def string_literals(tree: ast.AST) -> list[ast.Constant]:
    """String constants that are code, not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


def test_no_method_name_is_spelled_outside_its_home():
    names = method_names()
    assert {"llds", "grpo", "ppo_clip", "clip_cov"} <= names and not names & set(AGGREGATORS.names())
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] in HOMES:
            continue
        tree = ast.parse(path.read_text())
        found += [f"{path.relative_to(SRC)}:{n.lineno}: {n.value!r}" for n in string_literals(tree) if n.value in names]
    assert not found, "method names spelled outside objectives/:\n" + "\n".join(found)


def test_the_check_sees_a_spelled_name(tmp_path):
    tree = ast.parse('"""Docstrings may name llds."""\nif name == "llds":\n    pass\n')
    assert [n.value for n in string_literals(tree)] == ["llds"]
