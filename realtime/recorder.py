"""Recording a live run's engine input and output to files, off the real-time threads."""

from __future__ import annotations

import threading

import numpy as np
import soundfile as sf

from realtime.ring import Ring
from realtime.rt import go_realtime


class Recorder:
    """Writes each block's input and/or output to a float32 WAV file.

    :meth:`write` is called from the engine's worker (a SCHED_FIFO thread): it only copies the
    block into a ring (no disk I/O, no allocation). A writer thread of normal priority drains the
    rings to disk every ``period_s``. If the disk falls more than ``buffer_s`` behind, frames that
    do not fit are dropped and counted in :attr:`dropped` (the file is then that much shorter);
    the worker never waits. Input the engine dropped (its worker a whole ring behind) never
    reaches the worker, so it is absent from both files (``dropped_input`` in the report).
    :meth:`close` drains what is left and finalizes the files; the CLI calls it on every exit
    path.

    In a real-time run the writer takes SCHED_FIFO ``rt_priority`` (below the audio threads): it
    holds the GIL between its file writes, and a normal-priority holder preempted by the
    machine's other work would keep the audio threads waiting for the GIL until the scheduler
    ran it again (an inversion of priority through the GIL; both cores loaded, a FIFO thread
    waking every 5.3 ms: worst lateness 6.3–6.7 ms with the writer at normal priority, 3.9–4.8
    ms at FIFO 1).

    Args:
        rate: sample rate, Hz.
        channels: channels per frame.
        input_path: where to write the engine input, or None.
        output_path: where to write the engine output, or None.
        buffer_s: ring size per file, seconds of audio.
        period_s: how often the writer thread drains the rings, seconds.
        rt_priority: SCHED_FIFO priority of the writer thread (0: normal scheduling; where it is
            not allowed the thread keeps normal scheduling and :attr:`rt_error` says why).
    """

    def __init__(
        self,
        rate: int,
        channels: int,
        input_path: str | None,
        output_path: str | None,
        buffer_s: float = 10.0,
        period_s: float = 0.05,
        rt_priority: int = 0,
    ) -> None:
        self.buffer_s = buffer_s
        self.rt_priority = rt_priority
        self.rt_error: str | None = None
        capacity = max(1, round(buffer_s * rate))
        self._files: list[tuple[sf.SoundFile, Ring]] = [
            (sf.SoundFile(path, "w", rate, channels, "FLOAT"), Ring(capacity, channels))
            for path in (input_path, output_path)
            if path
        ]
        self._in = self._files[0][1] if input_path else None
        self._out = self._files[-1][1] if output_path else None
        self._scratch = np.zeros((min(capacity, 8192), channels), np.float32)
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._files:
            self._thread = threading.Thread(target=self._run, name="wavehost-recorder", daemon=True)
            self._thread.start()

    @property
    def active(self) -> bool:
        """Whether anything is being recorded."""
        return bool(self._files)

    @property
    def scheduling(self) -> str:
        """The writer's policy as the run report names it: ``"SCHED_FIFO N"`` or ``"normal
        scheduling"``."""
        if self.rt_priority > 0 and self.rt_error is None:
            return f"SCHED_FIFO {self.rt_priority}"
        return "normal scheduling"

    @property
    def dropped(self) -> int:
        """Frames lost because the disk fell ``buffer_s`` behind (per file, summed)."""
        return sum(ring.overflow for _, ring in self._files)

    def write(self, x: np.ndarray, y: np.ndarray) -> None:
        """Append one block: ``x`` input and ``y`` output, ``(frames, channels)``."""
        if self._in is not None:
            self._in.write(x)
        if self._out is not None:
            self._out.write(y)

    def _drain(self) -> None:
        for file, ring in self._files:
            while ring.available():
                n = ring.read(self._scratch[: min(ring.available(), len(self._scratch))])
                file.write(self._scratch[:n])

    def _run(self) -> None:
        if self.rt_priority > 0:
            self.rt_error = go_realtime(self.rt_priority)
        while not self._stop.wait(self._period_s):
            self._drain()

    def close(self) -> None:
        """Stop the writer thread, write what is left and finalize the files (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._drain()
        for file, _ in self._files:
            if not file.closed:
                file.close()
