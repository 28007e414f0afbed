"""Single-producer single-consumer ring buffer of float32 frames."""

from __future__ import annotations

import numpy as np

from realtime import kernels


class Ring:
    """A lock-free SPSC ring of ``capacity`` frames × ``channels`` float32 samples.

    One thread writes, one thread reads. The read and write counters are monotonic frame counts;
    each side updates only its own counter, after its copy (done by a numba ``nogil`` kernel)
    has returned, so the other side never sees a counter ahead of the data. Nothing allocates
    per block. A write that does not fit is truncated and the lost frames are counted in
    :attr:`overflow`; a read that finds too little is short and the missing frames are counted
    in :attr:`underflow`.

    Args:
        capacity: size in frames.
        channels: samples per frame.
    """

    def __init__(self, capacity: int, channels: int = 1) -> None:
        if capacity <= 0 or channels <= 0:
            raise ValueError(
                f"ring needs capacity > 0 and channels > 0, got {capacity}, {channels}"
            )
        self.capacity = capacity
        self.channels = channels
        self._buf = np.zeros((capacity, channels), np.float32)
        self._written = 0  # frames ever written (producer only)
        self._read = 0  # frames ever read (consumer only)
        self.overflow = 0  # frames dropped because the ring was full
        self.underflow = 0  # frames asked for but not there

    def available(self) -> int:
        """Frames ready to read."""
        return self._written - self._read

    def space(self) -> int:
        """Frames that can be written without overflow."""
        return self.capacity - (self._written - self._read)

    def write(self, frames: np.ndarray) -> int:
        """Append ``frames`` ``(n, channels)``; return how many fitted (the rest are counted)."""
        n = frames.shape[0]
        fit = min(n, self.space())
        if fit:
            kernels.ring_write(self._buf, frames[:fit], self._written % self.capacity)
            self._written += fit
        self.overflow += n - fit
        return fit

    def read(self, out: np.ndarray) -> int:
        """Fill ``out`` ``(n, channels)`` from the ring; return the frames read (from the start
        of ``out``; the rest of ``out`` is left untouched and counted as underflow)."""
        n = out.shape[0]
        got = min(n, self.available())
        if got:
            kernels.ring_read(self._buf, out[:got], self._read % self.capacity)
            self._read += got
        self.underflow += n - got
        return got

    def skip(self, n: int) -> int:
        """Drop up to ``n`` frames from the read side; return how many were dropped."""
        got = min(n, self.available())
        self._read += got
        return got
