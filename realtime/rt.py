"""Real-time (SCHED_FIFO) scheduling for the threads of the audio path."""

from __future__ import annotations

import os


def go_realtime(priority: int) -> str | None:
    """Put the calling thread under SCHED_FIFO ``priority``; return None, or why it could not
    (it needs root, CAP_SYS_NICE or an rtprio limit; the thread then keeps normal scheduling)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError, ValueError) as exc:
        return str(exc)
    return None
