"""The adapters never spell a registered component's name: they read its registry entry (STYLE habit 16)."""

from __future__ import annotations

import re
from pathlib import Path

from rlvr_lab.objectives.registry import all_registries

ADAPTERS = Path(__file__).resolve().parents[2] / "src" / "rlvr_lab" / "integrations"


def test_no_component_name_is_spelled_in_the_adapters():
    names = {n for registry in all_registries() for n in registry.names()}
    quoted = re.compile(r"""["'`](%s)["'`]""" % "|".join(map(re.escape, sorted(names))))
    found = [f"{path.relative_to(ADAPTERS)}:{i}: {line.strip()}"
             for path in sorted(ADAPTERS.rglob("*.py")) for i, line in enumerate(path.read_text().splitlines(), 1)
             if quoted.search(line)]
    assert not found, "\n".join(found)
