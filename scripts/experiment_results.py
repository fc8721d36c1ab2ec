"""Summaries of finished experiment sweeps, and README's table of results generated from them.

    python scripts/experiment_results.py sweeps/entropy_mechanism   # write experiments/results/<name>.json
    python scripts/experiment_results.py --readme                   # regenerate README's results table

A summary holds the numbers only (means, 95% intervals over seeds, paired differences, verdicts, compute),
never the runs; the claims come from ``experiments/<name>.yaml``. ``tests/test_readme.py`` checks that
README's table is what the committed summaries give.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlvr_lab.lab.results import results_table, write_summary

sys.path.insert(0, str(Path(__file__).parent))
from readme_blocks import write_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
START, END = "<!-- experiments:start -->", "<!-- experiments:end -->"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweeps", nargs="*", type=Path, help="finished sweep directories to summarise")
    ap.add_argument("--readme", action="store_true", help="regenerate README's table from experiments/results/")
    args = ap.parse_args()
    for sweep in args.sweeps:
        name = sweep.resolve().name
        spec = ROOT / "experiments" / f"{name}.yaml"
        print(write_summary(sweep, RESULTS, spec if spec.is_file() else None))
    if args.readme:
        write_block(results_table(RESULTS), START, END)


if __name__ == "__main__":
    main()
