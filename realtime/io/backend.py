"""The common interface of wavehost's audio I/O backends.

A backend runs a *duplex* stream: every block it calls ``callback(indata, outdata, status)``
with ``indata`` of shape ``(frames, channels_in)`` float32 (captured audio; may be a read-only
view), ``outdata`` of shape ``(frames, channels_out)`` float32 to be filled in place (what will
be played), and ``status`` an int bitmask of ``XRUN_*`` flags for this block. ``frames`` is the
stream's block size in samples (per channel).

Backends: ``"sounddevice"`` (PortAudio through sounddevice, the default), ``"pyaudio"`` (the same
PortAudio library through pyaudio), ``"pulse"`` (a PulseAudio or PipeWire server through
libpulse, no PortAudio: see :mod:`realtime.io.pulse`) and ``"file"`` (a sound file read block by
block, paced by a real-time clock thread; see :mod:`realtime.io.filestream`).

The callback runs on the audio thread: it must not block, allocate large objects or call torch.
The wrapper around it (:class:`CallbackGuard`) allocates nothing per block. With
``WAVEHOST_RT_PRIORITY=N`` set, the PortAudio audio thread asks for SCHED_FIFO priority N on its
first block (opt-in; see :func:`default_rt_priority`).
An exception raised by the callback does not stop the stream: the block is played as silence,
the error is counted (``stream.callback_errors``) and the first message kept
(``stream.first_error``).
From ``start()`` to ``stop()`` the objects alive at start are frozen out of Python's cyclic
garbage collector (:class:`realtime.rt.GcFreeze`): a full collection with torch loaded holds the
GIL for over 100 ms, which every callback here would wait out.

System-audio monitoring and sink selection (``monitor=`` / ``sink=``) go through the ALSA
``pulse`` plugin, so they work on any PulseAudio or PipeWire (pipewire-pulse) server, not only the
project's private one: see :func:`realtime.io.devices.resolve_endpoints`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from realtime.rt import gc_freeze, go_realtime

Callback = Callable[[np.ndarray, np.ndarray, int], None]
"""``callback(indata, outdata, status)``: see the module docstring."""

# The same values as PortAudio's paInputUnderflow ... paOutputOverflow, so a PortAudio status
# word can be passed through after masking with XRUN_MASK.
XRUN_INPUT_UNDERFLOW = 0x1
XRUN_INPUT_OVERFLOW = 0x2
XRUN_OUTPUT_UNDERFLOW = 0x4
XRUN_OUTPUT_OVERFLOW = 0x8
XRUN_MASK = 0xF

XRUN_NAMES: dict[int, str] = {
    XRUN_INPUT_UNDERFLOW: "input_underflow",
    XRUN_INPUT_OVERFLOW: "input_overflow",
    XRUN_OUTPUT_UNDERFLOW: "output_underflow",
    XRUN_OUTPUT_OVERFLOW: "output_overflow",
}

BACKENDS = ("sounddevice", "pyaudio", "pulse", "file")


class DeviceError(Exception):
    """A device or stream problem; the message is one line: what is wrong, what to do."""


@dataclass
class StreamInfo:
    """What a stream really runs at.

    ``samplerate`` in Hz, ``blocksize`` in samples per channel per callback, latencies in seconds
    as the backend reports them: at open, PortAudio's suggested-latency figures (the server's
    buffering targets for ``pulse``; 0 for files); once streaming, the medians of the backend's
    running readings (:class:`LatencyReadings`).
    """

    samplerate: int
    blocksize: int
    channels_in: int
    channels_out: int
    input_latency_s: float
    output_latency_s: float
    backend: str
    input_name: str
    output_name: str
    xruns_visible: bool = True
    """False where the backend cannot see xruns (``pulse``): its ``xruns`` stay zero."""


LATENCY_READINGS = 64
"""How many device latency readings a PortAudio stream keeps for ``info``: the most recent ones,
1–4 s of stream at blocks of 64–256 samples (its readings are exact, see
:class:`LatencyReadings`)."""
READ_EVERY = 4
"""A backend's audio thread reads the device latencies every this many blocks."""


class LatencyReadings:
    """Device latencies (s, capture and playback) that a backend's audio thread reads while the
    stream runs, every ``READ_EVERY``-th block, into a preallocated ring of the last ``keep``.
    A stream reports their medians.

    How many to keep depends on the readings. PortAudio's per-block time stamps are the ALSA
    buffers' exact fill (steady to a few samples), and that fill can step by a block
    mid-stream, for good: through PipeWire's ALSA plugin at 48 kHz, block 256, the capture
    delay went from 2 to 3 blocks in one run and the lag sink to sink with it, which a median
    over the whole run can miss (with such medians 2 of 33 runs were a block off the lag).
    Keep the recent ones (``LATENCY_READINGS``). The pulse server's
    readings are interpolated between its timing updates and wander by up to two blocks while
    the lag stays put: keep many (the pulse backend keeps 4096, minutes of stream)."""

    __slots__ = ("_v", "count", "input_offset_s")

    def __init__(self, keep: int = LATENCY_READINGS, input_offset_s: float = 0.0) -> None:
        self._v = np.zeros((keep, 2), np.float64)
        self.count = 0
        self.input_offset_s = input_offset_s
        """Taken off each capture reading of :meth:`add_stamps` (s): the graph period a
        monitor's capture delay counts but does not add (``Endpoints.monitor_period_s``)."""

    def add(self, input_s: float, output_s: float) -> None:
        """Keep one reading (audio thread: no allocation)."""
        i = self.count % self._v.shape[0]
        self._v[i, 0] = input_s
        self._v[i, 1] = output_s
        self.count += 1

    def add_stamps(self, adc: float, now: float, dac: float) -> None:
        """Keep PortAudio's time stamps of a block (s, the stream's clock): its input captured
        at ``adc``, the callback at ``now``, its output played at ``dac``."""
        self.add(max(0.0, now - adc - self.input_offset_s), dac - now)

    def apply(self, info: StreamInfo) -> StreamInfo:
        """``info`` with the medians of the readings so far (unchanged before the first)."""
        n = min(self.count, self._v.shape[0])
        if n == 0:
            return info
        med = np.median(self._v[:n], axis=0)
        return dataclasses.replace(
            info, input_latency_s=float(med[0]), output_latency_s=float(med[1])
        )


@runtime_checkable
class DuplexStream(Protocol):
    """A running (or runnable) duplex stream returned by :func:`open_duplex`."""

    info: StreamInfo
    xruns: dict[str, int]
    """Blocks flagged with each XRUN kind, by name (see ``XRUN_NAMES``)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...

    @property
    def active(self) -> bool: ...

    # Also on every concrete stream (not part of the Protocol the engine relies on):
    # ``failed`` (bool: the backend ended the stream on its own), ``callback_errors``,
    # ``first_error``, ``blocks``, ``callback_rate`` (1/s), ``rt_priority``, ``rt_error``.


def default_rt_priority() -> int:
    """SCHED_FIFO priority asked for the audio callback thread: ``$WAVEHOST_RT_PRIORITY``
    (e.g. 20, below PipeWire's data threads at 88); default 0 = normal scheduling. Needs root,
    CAP_SYS_NICE or an ``rtprio`` limit; without them the thread keeps normal scheduling
    (``stream.rt_error`` says why). Threads created from the audio thread (e.g. a torch thread
    pool first used inside an inline callback) inherit the policy: that is why it is opt-in."""
    try:
        return max(0, min(99, int(os.environ.get("WAVEHOST_RT_PRIORITY", "0"))))
    except ValueError:
        return 0


class CallbackGuard:
    """Wraps the user callback: counts xrun flags, blocks and errors; never lets an error out.

    Per block it does only attribute updates and one call: no array is allocated.
    ``blocks`` counts callbacks, ``frames`` samples per channel delivered; ``first_block_time``
    and ``last_block_time`` are ``time.perf_counter()`` stamps, for measuring the callback rate.
    """

    __slots__ = (
        "blocks",
        "callback",
        "callback_errors",
        "first_block_time",
        "first_error",
        "first_xrun_block",
        "frames",
        "last_block_time",
        "longest_gap_s",
        "rt_error",
        "rt_priority",
        "rt_request",
        "xruns",
    )

    def __init__(self, callback: Callback, rt_priority: int | None = None) -> None:
        if not callable(callback):
            raise TypeError("callback must be callable(indata, outdata, status)")
        self.callback = callback
        self.rt_request = default_rt_priority() if rt_priority is None else int(rt_priority)
        self.rt_priority = 0
        """SCHED_FIFO priority the audio thread got on its first block (0: normal scheduling)."""
        self.rt_error: str | None = None
        self.xruns: dict[str, int] = {name: 0 for name in XRUN_NAMES.values()}
        self.first_xrun_block = -1
        """Index of the first callback that carried an xrun flag (-1: none yet): tells an xrun
        while the stream starts from a stall in steady state."""
        self.callback_errors = 0
        self.first_error: str | None = None
        self.blocks = 0
        self.frames = 0
        self.first_block_time = 0.0
        self.last_block_time = 0.0
        self.longest_gap_s = 0.0
        """Longest interval between two callbacks, s (a late or stalled audio thread shows here)."""

    def __call__(self, indata: np.ndarray, outdata: np.ndarray, status: int, now: float) -> None:
        """Run one block. ``status`` must already be masked with ``XRUN_MASK``."""
        if self.blocks == 0:
            self.first_block_time = now
            if self.rt_request > 0:
                self._go_realtime()
        elif now - self.last_block_time > self.longest_gap_s:
            self.longest_gap_s = now - self.last_block_time
        self.last_block_time = now
        self.blocks += 1
        self.frames += outdata.shape[0]
        if status:
            if self.first_xrun_block < 0:
                self.first_xrun_block = self.blocks - 1
            xr = self.xruns
            if status & XRUN_INPUT_UNDERFLOW:
                xr["input_underflow"] += 1
            if status & XRUN_INPUT_OVERFLOW:
                xr["input_overflow"] += 1
            if status & XRUN_OUTPUT_UNDERFLOW:
                xr["output_underflow"] += 1
            if status & XRUN_OUTPUT_OVERFLOW:
                xr["output_overflow"] += 1
        try:
            self.callback(indata, outdata, status)
        except Exception as exc:  # the stream must survive a failing callback
            outdata.fill(0.0)
            self.callback_errors += 1
            if self.first_error is None:
                self.first_error = f"{type(exc).__name__}: {exc}"

    def _go_realtime(self) -> None:
        """Put the calling (audio) thread under SCHED_FIFO; once, on the first block."""
        why = go_realtime(self.rt_request)
        if why is None:
            self.rt_priority = self.rt_request
        else:
            self.rt_error = f"no real-time priority for the audio thread: {why}"

    def callback_rate(self) -> float:
        """Mean callbacks per second between the first and the last callback (0 if < 2)."""
        span = self.last_block_time - self.first_block_time
        return (self.blocks - 1) / span if self.blocks > 1 and span > 0 else 0.0


class _GuardedStream:
    """Shared bookkeeping of the concrete streams (the counters live in the guard).

    A backend implements ``_start``, ``_stop`` and ``_close``; the public methods around them
    hold :data:`realtime.rt.gc_freeze` from ``start()`` to ``stop()`` or ``close()``, so the
    cyclic garbage collector cannot stall the audio thread while the stream runs.
    """

    _info: StreamInfo
    _guard: CallbackGuard
    _latency: LatencyReadings | None = None
    _gc_held = False

    @property
    def info(self) -> StreamInfo:
        """The stream's settings. Where the backend reads the device latencies while streaming
        (``LatencyReadings``), they are the medians so far; before the first reading, and
        elsewhere, what the backend reported at open."""
        return self._latency.apply(self._info) if self._latency is not None else self._info

    def start(self) -> None:
        """Start calling back (again, after ``stop()``). Raises DeviceError once closed."""
        if not self._gc_held:
            gc_freeze.hold()
            self._gc_held = True
        try:
            self._start()
        except BaseException:
            self._release_gc()
            raise

    def stop(self) -> None:
        """Stop calling back; the stream can be started again."""
        try:
            self._stop()
        finally:
            self._release_gc()

    def close(self) -> None:
        """Stop and free the stream for good (idempotent)."""
        try:
            self._close()
        finally:
            self._release_gc()

    def _release_gc(self) -> None:
        if self._gc_held:
            self._gc_held = False
            gc_freeze.release()

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    @property
    def xruns(self) -> dict[str, int]:
        return self._guard.xruns

    @property
    def first_xrun_block(self) -> int:
        """Index of the first callback that carried an xrun flag (-1: none)."""
        return self._guard.first_xrun_block

    @property
    def callback_errors(self) -> int:
        """Blocks whose callback raised (played as silence)."""
        return self._guard.callback_errors

    @property
    def first_error(self) -> str | None:
        """``"Type: message"`` of the first exception the callback raised, or None."""
        return self._guard.first_error

    @property
    def rt_priority(self) -> int:
        """SCHED_FIFO priority of the audio thread (0: normal scheduling; see ``rt_error``)."""
        return self._guard.rt_priority

    @property
    def rt_error(self) -> str | None:
        """Why the audio thread did not get real-time priority, or None."""
        return self._guard.rt_error

    @property
    def blocks(self) -> int:
        """Callbacks run so far."""
        return self._guard.blocks

    @property
    def longest_gap_s(self) -> float:
        """Longest interval between two callbacks so far, s (the period is blocksize / rate)."""
        return self._guard.longest_gap_s

    @property
    def callback_rate(self) -> float:
        """Mean callbacks per second so far (the nominal rate is samplerate / blocksize)."""
        return self._guard.callback_rate()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_open_lock = threading.Lock()


def open_duplex(
    callback: Callback,
    *,
    backend: str = "sounddevice",
    samplerate: int,
    blocksize: int,
    channels: int = 1,
    input_device: str | int | None = None,
    output_device: str | int | None = None,
    monitor: str | None = None,
    sink: str | None = None,
    latency: str | float = "low",
    input_file: str | Path | None = None,
    output_file: str | Path | None = None,
) -> DuplexStream:
    """Open (not start) a duplex stream that calls ``callback`` every ``blocksize`` samples.

    - ``samplerate`` in Hz, ``blocksize`` in samples per channel, ``channels`` in and out.
    - ``input_device`` / ``output_device``: PortAudio index, or a case-insensitive name
      substring (an exact name wins); None: the default device.
    - ``monitor="call"``: capture the monitor source of sink ``call`` (whatever is played into
      it: system-audio monitoring). ``sink="listener"``: play into sink ``listener``. Both work
      on any PulseAudio/PipeWire server through the ALSA ``pulse`` plugin (see
      :func:`realtime.io.devices.resolve_endpoints`); they exclude ``input_device`` /
      ``output_device`` respectively.
    - ``latency``: ``"low"``, ``"high"`` or seconds, PortAudio's suggested latency
      (sounddevice; pyaudio always uses the device's default low latency; pulse: the playback
      buffering asked of the server, see :func:`realtime.io.pulse.open_pulse`).
    - ``backend="pulse"``: ``input_device`` / ``output_device`` name the server's sources and
      sinks; ``monitor`` / ``sink`` work as above.
    - ``backend="file"``: ``input_file`` is read block by block at real-time pace and
      ``output_file`` (or nothing) receives the output; see :mod:`realtime.io.filestream`.

    Raises :class:`DeviceError` (one line) for an unknown device or sink, an unsupported rate or
    channel count, a missing backend or an unusable file.
    """
    if backend not in BACKENDS:
        raise DeviceError(f"unknown audio backend '{backend}' (choose from {', '.join(BACKENDS)})")
    samplerate = int(samplerate)
    blocksize = int(blocksize)
    if samplerate <= 0:
        raise DeviceError(f"sample rate must be a positive number of Hz, got {samplerate}")
    if blocksize <= 0:
        raise DeviceError(f"block size must be a positive number of samples, got {blocksize}")
    if channels <= 0:
        raise DeviceError(f"channel count must be positive, got {channels}")
    guard = CallbackGuard(callback, rt_priority=0 if backend == "file" else None)
    if backend == "file":
        from realtime.io.filestream import FileStream

        if input_device is not None or output_device is not None or monitor or sink:
            raise DeviceError("the file backend takes input_file/output_file, not devices or sinks")
        return FileStream(
            guard,
            samplerate=samplerate,
            blocksize=blocksize,
            channels=channels,
            input_file=input_file,
            output_file=output_file,
        )
    if input_file is not None or output_file is not None:
        raise DeviceError(f"input_file/output_file need backend='file', not '{backend}'")
    if backend == "sounddevice":
        from realtime.io.portaudio_sd import open_sounddevice as opener
    elif backend == "pulse":
        from realtime.io.pulse import open_pulse as opener
    else:
        from realtime.io.portaudio_pa import open_pyaudio as opener
    with _open_lock:
        return opener(
            guard,
            samplerate=samplerate,
            blocksize=blocksize,
            channels=channels,
            input_device=input_device,
            output_device=output_device,
            monitor=monitor,
            sink=sink,
            latency=latency,
        )
