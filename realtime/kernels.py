"""Hot loops of the audio path, compiled with numba ``nogil`` so they never hold the GIL.

Arrays are float32 ``(frames, channels)`` C-contiguous unless said otherwise. The functions
never allocate: the caller owns every buffer.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def ring_write(buf: np.ndarray, src: np.ndarray, start: int) -> None:
    """Copy ``src`` into the circular ``buf`` starting at frame ``start`` (already wrapped)."""
    cap = buf.shape[0]
    n = src.shape[0]
    first = min(n, cap - start)
    for i in range(first):
        buf[start + i] = src[i]
    for i in range(n - first):
        buf[i] = src[first + i]


@njit(nogil=True, cache=True)
def ring_read(buf: np.ndarray, dst: np.ndarray, start: int) -> None:
    """Copy ``dst.shape[0]`` frames from the circular ``buf`` at frame ``start`` into ``dst``."""
    cap = buf.shape[0]
    n = dst.shape[0]
    first = min(n, cap - start)
    for i in range(first):
        dst[i] = buf[start + i]
    for i in range(n - first):
        dst[first + i] = buf[i]


@njit(nogil=True, cache=True)
def sanitize(x: np.ndarray) -> int:
    """Replace NaN/Inf samples of ``x`` in place by 0; return how many there were."""
    bad = 0
    flat = x.reshape(-1)
    for i in range(flat.shape[0]):
        v = flat[i]
        if not np.isfinite(v):
            flat[i] = 0.0
            bad += 1
    return bad


@njit(nogil=True, cache=True)
def count_nonfinite(x: np.ndarray) -> int:
    """How many samples of the 2-D ``x`` (any layout) are NaN or Inf."""
    bad = 0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if not np.isfinite(x[i, j]):
                bad += 1
    return bad


@njit(nogil=True, cache=True)
def polyphase(
    hist: np.ndarray, taps: np.ndarray, up: int, down: int, m0: int, base: int, out: np.ndarray
) -> None:
    """Polyphase FIR resampling by ``up/down``.

    ``hist`` holds input frames with absolute indices ``base .. base + len(hist) - 1``;
    ``taps`` is ``(up, K)``: ``taps[p, i]`` weights input ``floor(u / up) - i`` for the output
    at upsampled position ``u = m * down`` with phase ``p = u % up``. Fills ``out`` with the
    outputs ``m0 .. m0 + len(out) - 1``.
    """
    n_out = out.shape[0]
    channels = out.shape[1]
    k = taps.shape[1]
    for j in range(n_out):
        u = (m0 + j) * down
        p = u % up
        newest = u // up - base
        for c in range(channels):
            acc = 0.0
            for i in range(k):
                acc += taps[p, i] * hist[newest - i, c]
            out[j, c] = acc


@njit(nogil=True, cache=True)
def delay_line(buf: np.ndarray, pos: int, x: np.ndarray, out: np.ndarray, delay: int) -> int:
    """Write ``x`` into the circular ``buf`` at ``pos`` and read the same frames ``delay``
    frames late into ``out``. Needs ``len(buf) >= delay + len(x)``. Returns the new ``pos``."""
    cap = buf.shape[0]
    n = x.shape[0]
    for i in range(n):
        buf[(pos + i) % cap] = x[i]
    for i in range(n):
        out[i] = buf[(pos + i - delay) % cap]
    return (pos + n) % cap


@njit(nogil=True, cache=True)
def crossfade(wet: np.ndarray, dry: np.ndarray, out: np.ndarray, g0: float, g1: float) -> None:
    """``out = g·wet + (1 − g)·dry`` with the wet gain ``g`` ramping linearly from ``g0`` (first
    frame) to ``g1`` (last frame)."""
    n = out.shape[0]
    step = (g1 - g0) / max(n - 1, 1)
    for i in range(n):
        g = g0 + step * i
        for c in range(out.shape[1]):
            out[i, c] = g * wet[i, c] + (1.0 - g) * dry[i, c]


@njit(nogil=True, cache=True)
def declick(out: np.ndarray, offset: np.ndarray, ramp: np.ndarray) -> None:
    """Add ``offset[c]·ramp[i]`` to ``out[i, c]`` for the first ``len(ramp)`` frames: removes a
    step at the start of ``out`` by letting it decay away."""
    n = min(out.shape[0], ramp.shape[0])
    for i in range(n):
        for c in range(out.shape[1]):
            out[i, c] += offset[c] * ramp[i]


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel for each float32 2-D layout it can meet
    live, off the audio thread: numba compiles a new layout on its first call, holding the GIL
    for a second or more. Plugin output is often Fortran-ordered (a stereo ``(1, 2, n)`` tensor
    seen as ``(n, 2)``), and a device buffer cut to fewer channels is strided ('A')."""
    c = np.zeros((4, 2), np.float32)
    layouts = (c, np.zeros((4, 2), np.float32, order="F"), np.zeros((4, 4), np.float32)[:, ::2])
    buf = np.zeros((8, 2), np.float32)
    for x in layouts:
        ring_write(buf, x, 6)
        ring_read(buf, x, 6)
        count_nonfinite(x)
    for out in (c, layouts[2]):
        crossfade(c, c, out, 1.0, 0.0)
        declick(out, np.zeros(2, np.float32), np.zeros(4, np.float32))
    sanitize(c)
    polyphase(buf, np.zeros((2, 3), np.float32), 2, 1, 4, 0, c)
    delay_line(buf, 0, c, c, 2)
