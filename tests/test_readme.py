"""README tables that are generated from the code stay in step with it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_methods_table_is_generated_from_the_declarations():
    script = load_script("methods_table")
    block = load_script("readme_blocks").read_block(script.START, script.END)
    assert block == script.table(), "README's methods table is stale: run python scripts/methods_table.py --write"
    assert "| `kl_cov` |" in block and "an off-policy step" in block


def test_readme_results_table_is_generated_from_the_committed_summaries():
    from rlvr_lab.lab.results import results_table

    script = load_script("experiment_results")
    block = load_script("readme_blocks").read_block(script.START, script.END)
    assert block == results_table(ROOT / "experiments" / "results"), \
        "README's results table is stale: run python scripts/experiment_results.py --readme"
