"""Re-read the phases of finished runs with the current phase detector.

    python scripts/relabel_phases.py sweeps/lld/runs/*/seed*

Replays each run's RL steps from its ``metrics.jsonl`` through :class:`rlvr_lab.diagnostics.phases.PhaseDetector`
(default thresholds, as the trainer uses them) and rewrites ``phase/label``; the label the run recorded is kept
as ``phase/label_recorded`` where it differs. For runs made before a detector fix, so that their reports and
comparisons show what the detector now says. The file is replaced atomically.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

from rlvr_lab.diagnostics.phases import PhaseConfig, PhaseDetector


def relabel(run_dir: Path) -> Counter:
    """Relabel one run in place; returns how many steps changed from which label to which."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    detector = PhaseDetector(PhaseConfig())
    changes: Counter = Counter()
    for row in rows:
        if row.get("stage") != "rl" or "phase/label" not in row:
            continue
        recorded = row.get("phase/label_recorded", row["phase/label"])
        label = detector.update(row["step"], row).label
        row["phase/label"] = label
        if label != recorded:
            row["phase/label_recorded"] = recorded
            changes[(recorded, label)] += 1
        else:
            row.pop("phase/label_recorded", None)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (each with a metrics.jsonl)")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        if not (run_dir / "metrics.jsonl").is_file():
            parser.error(f"{run_dir}: no metrics.jsonl")
        changes = relabel(run_dir)
        said = ", ".join(f"{a} -> {b} x{n}" for (a, b), n in changes.items()) or "no change"
        print(f"{run_dir}: {said}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
