"""Real-time (SCHED_FIFO) scheduling for the threads of the audio path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def go_realtime(priority: int) -> str | None:
    """Put the calling thread under SCHED_FIFO ``priority``; return None, or why it could not
    (it needs root, CAP_SYS_NICE or an rtprio limit; the thread then keeps normal scheduling)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError, ValueError) as exc:
        return str(exc)
    return None


@contextmanager
def realtime_children(priority: int) -> Iterator[str | None]:
    """Threads started inside the block (PortAudio's callback thread, libpulse's mainloop that
    feeds the server) inherit SCHED_FIFO ``priority``; the calling thread gets its own policy back
    on exit. Yields None, or why the priority could not be raised."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    why = go_realtime(priority)
    try:
        yield why
    finally:
        if why is None:
            os.sched_setscheduler(0, policy, param)
