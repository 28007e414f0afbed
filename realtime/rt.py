"""Real-time hygiene of the audio path: SCHED_FIFO scheduling for its threads, and keeping
Python's cyclic garbage collector from stalling them."""

from __future__ import annotations

import gc
import os
import threading
import time


def go_realtime(priority: int) -> str | None:
    """Put the calling thread under SCHED_FIFO ``priority``; return None, or why it could not
    (it needs root, CAP_SYS_NICE or an rtprio limit; the thread then keeps normal scheduling)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError, ValueError) as exc:
        return str(exc)
    return None


class GcFreeze:
    """Keeps the cyclic garbage collector off the audio path while streams run.

    A collection holds the GIL, and every audio callback here is Python: with torch loaded a
    full collection scans ~250 000 objects and stalls every thread for 120–150 ms (measured on
    the 2-core VM), a certain xrun at any block size. :meth:`hold` (the first of nested holds)
    moves every object alive now into the collector's permanent generation (``gc.freeze()``),
    so a collection while streaming scans only what was allocated since: tens of microseconds.
    :meth:`release` (the last) gives them back to the collector. Holds and releases come from
    control threads, never the audio thread.

    While held it counts the collections and the longest pause (s) they caused, in any thread;
    the figures stay readable after the release, until the next first hold. ``with
    gc_freeze:`` holds it for a block of code.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._t0 = 0.0
        self.collections = 0
        self.longest_s = 0.0

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                self.collections = 0
                self.longest_s = 0.0
                gc.freeze()
                gc.callbacks.append(self._on_gc)
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            if self._holders == 0:
                return
            self._holders -= 1
            if self._holders == 0:
                gc.callbacks.remove(self._on_gc)
                gc.unfreeze()

    @property
    def held(self) -> bool:
        return self._holders > 0

    def __enter__(self) -> GcFreeze:
        self.hold()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _on_gc(self, phase: str, info: dict) -> None:
        # runs in whichever thread triggered the collection, under the GIL: no overlap
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        pause = time.perf_counter() - self._t0
        self.collections += 1
        if pause > self.longest_s:
            self.longest_s = pause


gc_freeze = GcFreeze()
"""The process's one :class:`GcFreeze`: every stream holds it from ``start()`` to ``stop()``."""
