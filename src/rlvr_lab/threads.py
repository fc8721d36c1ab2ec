"""CPU thread counts, under one process-wide cap.

Every thread count rlvr-lab sets (``run.threads``, a command's ``--threads``, a sweep's threads per cell)
goes through :func:`set_threads`, which honours ``RLVR_LAB_MAX_THREADS`` when it is set. The cap is for
machines shared by several jobs, such as parallel test workers or runs started side by side: two torch
processes asking for more threads in all than there are cores slow each other many times over, because
idle OpenMP threads spin while they wait for work.
"""

from __future__ import annotations

import os

MAX_THREADS_ENV = "RLVR_LAB_MAX_THREADS"


def thread_cap() -> int | None:
    """The cap from ``RLVR_LAB_MAX_THREADS`` (a positive integer), or None when it is unset or empty."""
    raw = os.environ.get(MAX_THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        cap = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_THREADS_ENV} must be a positive integer, got {raw!r}") from None
    if cap < 1:
        raise ValueError(f"{MAX_THREADS_ENV} must be a positive integer, got {raw!r}")
    return cap


def available_cores(fallback: int = 1) -> int:
    """CPUs this process may run on (its affinity mask on Linux, else the machine's count), or ``fallback``."""
    try:
        return len(os.sched_getaffinity(0)) or fallback
    except AttributeError:  # not Linux
        return os.cpu_count() or fallback


def capped(threads: int) -> int:
    """``threads``, lowered to the cap when one is set."""
    cap = thread_cap()
    return threads if cap is None else min(threads, cap)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(capped(threads))``; None or 0 leaves torch's setting alone, apart from the cap."""
    import torch

    if threads:
        torch.set_num_threads(capped(threads))
        return
    cap = thread_cap()
    if cap is not None and torch.get_num_threads() > cap:
        torch.set_num_threads(cap)
