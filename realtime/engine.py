"""The live engine: the audio callback and, in threaded mode, the worker that runs the plugins.

``inline``: the callback runs the :class:`~realtime.processor.Processor` itself. Latency: the
processor's. Only for plugins far under the block budget.

``threaded`` (default): the callback only copies (numba ``nogil`` kernels, no torch, no
allocation, no waiting locks): input into a ring, a wake-up byte into a pipe, output from a
ring. A worker thread runs the processor. The output ring is primed with one block plus the
safety margin, which is the extra latency that buys isolation from compute jitter. When the
worker is late (a deadline miss) the callback crossfades to the dry input delayed by exactly
the engine latency, counts the miss and fades back to wet once the worker has caught up.

Adaptive margin (default): a miss after start-up grows the margin by the frames that were
missing, up to ``max_margin_blocks``: the late wet frames are played when they arrive and the
dry path is delayed as much, so a stream whose callbacks come in bursts (a device period
larger than the block) settles at the margin it needs. Every change is logged and reported.
Without it, or at the cap, late wet frames are discarded to keep the latency fixed.

A stall longer than the input ring (64 blocks) drops input (counted): the callback notes where
the hole falls in the worker's output stream, plays those blocks dry and owes nothing for them,
so the wet path comes back on the declared timeline, with no stale wet audio in between.
Before a stream starts, :meth:`Engine.start` runs a few blocks of silence through the path so
that a TorchScript plugin's first-call compilation is not paid live.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from realtime import kernels
from realtime.latency import LatencyReport
from realtime.processor import Processor
from realtime.ring import Ring
from realtime.rt import go_realtime
from realtime.stats import BlockTimer

MODES = ("threaded", "inline")
DECLICK_MS = 4.0  # a step in the output is faded away over this (half-cosine)
STARTUP_S = 0.1


@dataclass
class EngineCounters:
    """Counts the status line and the final report show."""

    callbacks: int = 0
    misses: int = 0  # blocks where the worker was late (threaded) or over budget (inline)
    startup_misses: int = 0  # the same in the first STARTUP_S: the device pre-filling its
    # output buffer calls back in a burst before any input has arrived (output is silence then)
    missed_frames: int = 0
    nonfinite_input: int = 0  # input samples that were NaN/Inf (replaced by 0)
    dropped_input: int = 0  # input frames lost because the worker fell too far behind


class _Gaps:
    """Holes in the wet stream, for the callback alone (nothing shared, nothing allocated).

    A block of input dropped because the worker is a whole input ring behind never comes out
    of it: the output ring's stream lacks those frames. Each hole is kept as (position in that
    stream, frames), the position counted in frames written to the output ring (the prime
    included); consecutive drops at one position make one hole. ``capacity`` bounds the holes
    pending at once (each needs real frames between it and the next).
    """

    def __init__(self, capacity: int) -> None:
        self._pos = [0] * capacity
        self._left = [0] * capacity
        self._head = 0
        self._count = 0

    def add(self, pos: int, frames: int) -> None:
        cap = len(self._pos)
        if self._count:
            tail = (self._head + self._count - 1) % cap
            if self._pos[tail] == pos:
                self._left[tail] += frames
                return
        i = (self._head + self._count) % cap
        self._pos[i], self._left[i] = pos, frames
        self._count += 1

    def next(self) -> int:
        """Position of the first hole still ahead, or -1."""
        return self._pos[self._head] if self._count else -1

    def take(self, frames: int) -> int:
        """Pass up to ``frames`` of the first hole; return how many."""
        k = min(frames, self._left[self._head])
        self._left[self._head] -= k
        if self._left[self._head] == 0:
            self._head = (self._head + 1) % len(self._pos)
            self._count -= 1
        return k


class Engine:
    """Runs a :class:`Processor` against a duplex stream's callback.

    Args:
        processor: the signal path; its ``rate_in == rate_out`` is the device rate and its
            ``block`` the device block, frames.
        mode: ``"threaded"`` or ``"inline"``.
        margin_blocks: extra blocks of output buffering in threaded mode (latency for safety);
            the floor of the adaptive margin.
        adaptive: let misses grow the margin (threaded mode), up to ``max_margin_blocks``.
        max_margin_blocks: the adaptive margin's cap, blocks.
        on_block: called by the worker (never the callback) with each block's input and
            output ``(frames, channels)``, e.g. to record them; must not keep the arrays.
        rt_priority: SCHED_FIFO priority for the worker thread (0: normal scheduling). Needs
            root, CAP_SYS_NICE or an rtprio limit; without them the worker keeps normal
            scheduling and :attr:`worker_rt` says why.
    """

    def __init__(
        self,
        processor: Processor,
        *,
        mode: str = "threaded",
        margin_blocks: int = 0,
        adaptive: bool = True,
        max_margin_blocks: int = 8,
        on_block: Callable[[np.ndarray, np.ndarray], None] | None = None,
        rt_priority: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"engine mode must be one of {MODES}, got {mode!r}")
        if processor.rate_in != processor.rate_out:
            raise ValueError("a live engine needs the same device rate in and out")
        kernels.warm_up()
        self.processor = processor
        self.mode = mode
        self.rate = processor.rate_in
        self.block = processor.block
        self.channels = ch = processor.chain.channels
        self.margin_blocks = margin_blocks if mode == "threaded" else 0
        self.adaptive = adaptive and mode == "threaded"
        self.max_margin = max(max_margin_blocks, self.margin_blocks) * self.block  # frames
        self.grown = 0  # frames the adaptive margin added
        self._margin_log = np.zeros((32, 2), np.int64)  # (callback index, margin frames)
        self._margin_changes = 0
        self.on_block = on_block
        self.counters = EngineCounters()
        self.timer = BlockTimer(self.block / self.rate)
        self._startup_callbacks = max(4, round(STARTUP_S * self.rate / self.block))
        self.buffered = (1 + self.margin_blocks) * self.block if mode == "threaded" else 0
        self.delay = round(processor.latency.total) + self.buffered  # engine latency, samples
        b = self.block
        self._in = np.zeros((b, ch), np.float32)
        self._wet = np.zeros((b, ch), np.float32)
        self._dry = np.zeros((b, ch), np.float32)
        most = self.delay + self.max_margin - self.margin_blocks * b
        self._dry_line = np.zeros((most + 2 * b, ch), np.float32)
        self._dry_pos = 0
        ramp_n = max(2, round(DECLICK_MS * 1e-3 * self.rate))
        self._ramp = (0.5 + 0.5 * np.cos(np.pi * np.arange(ramp_n) / ramp_n)).astype(np.float32)
        self._jump = False  # the timeline moved (margin grew): fade the step at the next block
        self._offset = np.zeros(ch, np.float32)
        self._last_out = np.zeros(ch, np.float32)
        self._last_dry = np.zeros(ch, np.float32)
        self._wet_gain = 1.0
        self._miss_log = np.zeros(64, np.int64)  # callback index of the first 64 misses
        self._debt = 0  # wet frames owed to the timeline: discard them when they arrive
        self._in_ring = Ring(64 * b, ch)
        # after a stall the worker may write a whole input ring of late frames, behind the frames
        # in flight (the prime and the grown margin) and a block fed meanwhile, before the
        # callback skips the late ones: a smaller ring would drop a block and shift the timeline
        self._out_ring = Ring(self._in_ring.capacity + self.buffered + self.max_margin + b, ch)
        self._fed = 0  # frames that will come out of the worker (the prime included)
        self._taken = 0  # frames read or skipped from the output ring
        self._gaps = _Gaps((self._in_ring.capacity + self._out_ring.capacity) // b + 2)
        self._work_in = np.zeros((b, ch), np.float32)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._running = False
        self._worker: threading.Thread | None = None
        self.worker_error = ""
        self.rt_priority = rt_priority
        self.worker_rt = "normal scheduling"

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Warm the path up, prime the rings and start the worker (threaded mode). Call before
        the stream starts."""
        torch.set_num_threads(1)  # before the warm-up: no intra-op pool (inheriting SCHED_FIFO)
        self.processor.warm_up()
        self._out_ring.write(np.zeros((self.buffered, self.channels), np.float32))
        self._fed, self._taken = self.buffered, 0
        sys.setswitchinterval(0.0005)  # the callback waits for the GIL at most this long
        self._running = True
        if self.mode == "threaded":
            self._worker = threading.Thread(target=self._work, name="wavehost-worker", daemon=True)
            self._worker.start()

    def stop(self) -> None:
        """Stop and join the worker (after the stream has stopped)."""
        self._running = False
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # ---- audio thread ------------------------------------------------------------------------

    def callback(self, indata: np.ndarray, outdata: np.ndarray, status: int) -> None:
        """The duplex stream callback: ``indata``/``outdata`` ``(frames, channels)`` float32."""
        n = indata.shape[0]
        c = self.counters
        c.callbacks += 1
        x = self._in[:n]
        x[:] = indata[:, : self.channels]
        c.nonfinite_input += kernels.sanitize(x)
        if self.mode == "inline":
            self._inline(x, outdata)
            return
        if self._in_ring.space() >= n:
            self._in_ring.write(x)
            self._fed += n
        else:  # the worker is a whole ring behind: this block will never come out of it
            c.dropped_input += n
            self._gaps.add(self._fed, n)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")
        dry = self._dry[:n]
        self._dry_pos = kernels.delay_line(self._dry_line, self._dry_pos, x, dry, self.delay)
        wet = self._wet[:n]
        out = outdata[:, : self.channels]
        jumped, self._jump = self._jump, False
        if self._debt:
            self._settle_debt()
        if not self._debt and self._room(n) >= n and self._out_ring.available() >= n:
            self._out_ring.read(wet)
            self._taken += n
            if self._wet_gain < 1.0:  # recovering: fade the wet path back in over this block
                kernels.crossfade(wet, dry, out, self._wet_gain, 1.0)
                self._wet_gain = 1.0
            else:
                out[:] = wet
        else:
            self._miss(n, wet, dry, out)
        if jumped:
            self._offset[:] = self._last_out - out[0]  # continue from where we were
            kernels.declick(out, self._offset, self._ramp)
        if outdata.shape[1] > self.channels:
            outdata[:, self.channels :] = out[:, -1:]
        self._last_out[:] = out[n - 1]
        self._last_dry[:] = dry[n - 1]

    def _settle_debt(self) -> None:
        """Discard owed wet frames as they arrive; a hole in the stream pays its share."""
        while self._debt:
            want = self._room(self._debt)
            if want <= 0:  # at a hole (never behind one: reads stop at holes)
                if self._gaps.next() != self._taken:
                    return
                self._debt -= self._gaps.take(self._debt)
                continue
            got = self._out_ring.skip(want)
            self._taken += got
            self._debt -= got
            if got < want:
                return

    def _room(self, n: int) -> int:
        """Output-ring frames that may be read or skipped before the next hole (at most
        ``n``)."""
        hole = self._gaps.next()
        return n if hole < 0 else min(n, hole - self._taken)

    def _miss(self, n: int, wet: np.ndarray, dry: np.ndarray, out: np.ndarray) -> None:
        """Play dry for a block whose wet frames are late, or never come: frames that fall in
        a hole are passed and owe nothing, and no margin grows for them."""
        c = self.counters
        if c.callbacks <= self._startup_callbacks:
            c.startup_misses += 1
        else:
            if c.misses < self._miss_log.shape[0]:
                self._miss_log[c.misses] = c.callbacks - 1
            c.misses += 1
        got = 0
        missing = n
        hole = False
        if not self._debt:
            got = self._out_ring.read(wet[: self._room(n)])
            self._taken += got
            missing = n - got
            if missing and self._gaps.next() == self._taken:
                missing -= self._gaps.take(missing)
                hole = True
        c.missed_frames += n - got
        margin = self.margin_blocks * self.block + self.grown
        startup = c.callbacks <= self._startup_callbacks
        grow = self.adaptive and not startup and not hole and not self._debt
        if missing and grow and margin + missing <= self.max_margin:
            self.grown += missing  # keep the late frames: they play next, `missing` later
            self.delay += missing
            self._jump = True
            if self._margin_changes < self._margin_log.shape[0]:
                self._margin_log[self._margin_changes] = (c.callbacks - 1, margin + missing)
                self._margin_changes += 1
        else:
            self._debt += missing
        if got >= 2:  # fade out over the wet frames that did arrive, then dry
            kernels.crossfade(wet[:got], dry[:got], out[:got], self._wet_gain, 0.0)
            out[got:] = dry[got:]
        else:  # nothing to fade over: start from dry and let the step decay away
            out[:] = dry
            if self._wet_gain > 0.0:
                self._offset[:] = self._last_out - self._last_dry
                kernels.declick(out, self._offset, self._ramp)
        self._wet_gain = 0.0

    def _inline(self, x: np.ndarray, outdata: np.ndarray) -> None:
        t0 = time.perf_counter()
        y = self.processor.process(x)
        outdata[:, : self.channels] = y
        if outdata.shape[1] > self.channels:
            outdata[:, self.channels :] = y[:, -1:]
        dt = time.perf_counter() - t0
        self.timer.add(dt)
        if dt > self.timer.budget_s:
            self.counters.misses += 1
        if self.on_block is not None:
            self.on_block(x, y)

    # ---- worker thread -----------------------------------------------------------------------

    def _work(self) -> None:
        if self.rt_priority > 0:
            why = go_realtime(self.rt_priority)
            self.worker_rt = (
                f"SCHED_FIFO {self.rt_priority}"
                if why is None
                else f"normal scheduling (no real-time priority: {why})"
            )
        b = self.block
        buf = self._work_in
        while self._running:
            ready, _, _ = select.select([self._wake_r], [], [], 0.1)
            if ready:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 4096)
            while self._running and self._in_ring.available() >= b:
                self._in_ring.read(buf)
                t0 = time.perf_counter()
                try:
                    y = self.processor.process(buf)
                except Exception as exc:  # never reached for plugin faults (the chain bypasses)
                    self.worker_error = f"{type(exc).__name__}: {exc}"
                    y = np.zeros_like(buf)
                self.timer.add(time.perf_counter() - t0)
                self._out_ring.write(y)
                if self.on_block is not None:
                    self.on_block(buf, y)

    # ---- reporting ---------------------------------------------------------------------------

    def latency(self, input_latency_s: float = 0.0, output_latency_s: float = 0.0) -> LatencyReport:
        """The full latency report, with the device latencies the stream reports."""
        p = self.processor.latency
        return LatencyReport(
            rate=self.rate,
            block=self.block,
            device_in=input_latency_s * self.rate,
            device_out=output_latency_s * self.rate,
            reblock=p.reblock,
            resample=p.resample,
            threaded_block=self.block if self.mode == "threaded" else 0,
            margin=self.margin_blocks * self.block + self.grown,
            plugin=p.plugin,
        )

    def margin_changes(self) -> list[tuple[float, int]]:
        """(stream time s, new margin in frames) of each adaptive margin change (first 32)."""
        rows = self._margin_log[: self._margin_changes]
        return [(float(i) * self.block / self.rate, int(m)) for i, m in rows]

    def miss_times(self) -> list[float]:
        """Stream time (s) of the first 64 deadline misses (threaded mode)."""
        n = min(self.counters.misses, self._miss_log.shape[0])
        return [float(i) * self.block / self.rate for i in self._miss_log[:n]]

    def status_line(self) -> str:
        """One line: block time p50/p99, misses, bad input, plugin faults."""
        p50, p99 = self.timer.percentiles_ms(50, 99)
        c = self.counters
        line = (
            f"blocks {self.timer.count}  p50 {p50:.3f} ms  p99 {p99:.3f} ms  "
            f"(budget {1e3 * self.timer.budget_s:.2f} ms)  misses {c.misses}"
        )
        if c.nonfinite_input:
            line += f"  non-finite input {c.nonfinite_input}"
        if c.dropped_input:
            line += f"  dropped input {c.dropped_input}"
        for h in self.processor.chain.health:
            if h.bypassed:
                line += f"  [{h.name} bypassed]"
            elif h.nonfinite_blocks:
                line += f"  [{h.name} NaN blocks {h.nonfinite_blocks}]"
        return line
