"""Stalls of the machine itself, watched from above every audio thread.

On each CPU a child process at SCHED_FIFO 90 (above PipeWire's data threads at 88 and every
wavehost thread) sleeps 1 ms at a time and keeps its longest oversleep. Nothing on that CPU can
run ahead of it, so an oversleep of milliseconds is the machine held up as a whole (seen on the
2-core VM: 5-18 ms on both CPUs at once, a few times a minute, idle or not). An audio stream with
less buffering than such a stall under-runs through no fault of its own: a live test that fails
while one happened is measured again, one that fails without one fails. A stall of half a device
block already counts: a stream with a block of buffering must still wake up and do its work in
what is left of that block (a 48 kHz pulse loopback glitched once while the machine stalled
5.3 ms of its 5.33 ms block).

Run as a script (``python stall.py CPU``) it is the child: prints ``ready``, then on SIGTERM the
longest oversleep in ms and whether it got SCHED_FIFO.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

PRIORITY = 90
TICK_S = 0.001
ATTEMPTS = 5
STALL_BLOCKS = 0.5  # a stall this many device blocks long excuses a failed run


def _watch(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))
        realtime = 1
    except OSError:
        realtime = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    worst = 0.0
    t = time.perf_counter()
    while not stop:
        time.sleep(TICK_S)
        now = time.perf_counter()
        worst = max(worst, now - t - TICK_S)
        t = now
    print(f"{worst * 1e3:.3f} {realtime}", flush=True)


class StallWatch:
    """``with StallWatch() as w: ...``; afterwards ``w.worst_ms`` is the longest stall on any
    CPU (ms) and ``w.realtime`` whether every watcher ran at SCHED_FIFO (without it, ordinary
    scheduling delays count as stalls too)."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self.realtime = False
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> StallWatch:
        for cpu in sorted(os.sched_getaffinity(0)):
            proc = subprocess.Popen(
                [sys.executable, __file__, str(cpu)], stdout=subprocess.PIPE, text=True
            )
            self._procs.append(proc)
        for proc in self._procs:
            assert proc.stdout.readline().strip() == "ready", "the stall watcher did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        rows = []
        for proc in self._procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            out, _ = proc.communicate(timeout=10)
            rows.append(out.split())
        self.worst_ms = max(float(r[0]) for r in rows)
        self.realtime = all(r[1] == "1" for r in rows)

    def excuse(self, block_s: float) -> str | None:
        """Why a failed run says nothing about the stream: the machine stalled for at least half
        a device block (``block_s`` seconds); None when it did not, or when the watchers had no
        SCHED_FIFO (their oversleeps are then ordinary scheduling delays, no proof)."""
        if not self.realtime or self.worst_ms < STALL_BLOCKS * block_s * 1e3:
            return None
        return (
            f"the machine itself stalled {self.worst_ms:.1f} ms (a SCHED_FIFO {PRIORITY} "
            f"watcher overslept that long; a block is {block_s * 1e3:.1f} ms)"
        )


Check = Callable[[], None]


def measured_fairly(run: Callable[[int], tuple[Check, str | None]], block_s: float) -> None:
    """Measure and check, again where a failure says nothing about what is tested.

    ``run(attempt)`` measures once (under a :class:`StallWatch`) and returns the checks (a
    callable raising AssertionError) and what damaged its input upstream, before the stream under
    test (None: intact). A failed check is measured again, up to ``ATTEMPTS`` runs, only when its
    input was damaged or the machine stalled for half a device block (``block_s`` seconds)."""
    for attempt in range(1, ATTEMPTS + 1):
        with StallWatch() as watch:
            check, upstream = run(attempt)
        try:
            check()
            return
        except AssertionError as exc:
            excuse = upstream or watch.excuse(block_s)
            if excuse is None or attempt == ATTEMPTS:
                print(
                    f"\nrun {attempt} failed; its input: {upstream or 'intact'}; the machine's "
                    f"longest stall {watch.worst_ms:.1f} ms"
                )
                raise
            why = str(exc).splitlines()[0][:160]
            print(f"\nrun {attempt} failed ({why}); {excuse}: measured again")


if __name__ == "__main__":
    _watch(int(sys.argv[1]))
