"""Fault injection for the crash tests (scripts/stress_kill.py)."""
from __future__ import annotations

import os
import signal

CRASH_ENV = "AUDIOCOMP_CRASH_AT"


def crash_point(where: str) -> None:
    """With AUDIOCOMP_CRASH_AT='<text>:<n>', the n-th call whose `where` contains <text> kills this process
    with SIGKILL, as a power cut would."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    text, _, n = spec.rpartition(":")
    if text and text in where:
        count = crash_point.hits = getattr(crash_point, "hits", 0) + 1  # type: ignore[attr-defined]
        if count == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
