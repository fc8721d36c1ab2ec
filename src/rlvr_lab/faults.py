"""Fault injection for the resume tests: ``RLVR_LAB_FAULT=point:step[,point:step...]`` makes the training
process kill itself with SIGKILL when it reaches ``point`` at RL ``step`` (``point:*`` at any step), the way
a machine's out-of-memory killer or a pre-empted job would: no handler runs, nothing is flushed.

Points: ``rollout`` (responses generated, not yet scored), ``update`` (between the policy update and the
step's record), ``checkpoint_write`` (a checkpoint's files written under their temporary name, not yet
renamed) and ``metrics_write`` (half of the step's ``metrics.jsonl`` line written and flushed). Unset, a
fault point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "RLVR_LAB_FAULT"
POINTS = ("rollout", "update", "checkpoint_write", "metrics_write")


def armed(point: str, step: int) -> bool:
    """Whether ``RLVR_LAB_FAULT`` asks for a kill at ``point`` in RL ``step``."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    for item in spec.split(","):
        name, _, at = item.strip().partition(":")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown fault point {name!r}; allowed: {', '.join(POINTS)}")
        if name == point and at in ("*", str(step)):
            return True
    return False


def kill_now() -> None:
    """SIGKILL this process (no cleanup, no flush beyond what was already flushed)."""
    os.kill(os.getpid(), signal.SIGKILL)


def fault_point(point: str, step: int) -> None:
    if armed(point, step):
        kill_now()
