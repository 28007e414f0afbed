"""Duplex streams through libpulse's simple API (``libpulse-simple.so.0``, Debian ``libpulse0``).

The native path to a PulseAudio or PipeWire (pipewire-pulse) server, with no PortAudio and no
ALSA ``pulse`` plugin in between: one record and one playback stream, driven by one thread
(``wavehost-pulse``) that reads a block (blocking; ctypes releases the GIL while it waits), runs
the callback and writes the block. The playback stream is primed with silence (two blocks by
default) at start, so the lag through the stream is set once and then stays: the capture clock
paces the loop and both streams run on the server's clock. It asks for no prebuffering
(``prebuf`` 0): a loop later than its headroom then costs the late audio as a gap, and the lag
stays put. With the server's default prebuffering the stream would stop at the under-run and
restart only once refilled, a lag that grows for good at each one: a 40 ms stall of the loop at
48 kHz, block 256, added 1024 samples each time (1280 → 2304 → 3328 → 4352 over three stalls;
with ``prebuf`` 0 the lag stayed at 1024 samples, PipeWire 0.3.65).

Latency: after every fourth read the thread asks the server for both streams' latency
(``pa_simple_get_latency``: what is queued in the stream plus the device's own latency,
interpolated from the server's timing information) and keeps the last ``READINGS`` (minutes of
stream: one reading wanders by up to two blocks); ``info`` reports their medians. On the
project's private server (PipeWire 0.3.65, block 256) the reported sum lies within one block of
the lag measured from sink to sink (README, "Latency accounting").

libpulse's simple API has no xrun notification, so ``xruns`` stays zero with this backend and
``info.xruns_visible`` is False (the run report says so): audio the server played as silence
because the loop was late is a gap in the output, unreported (the live tests look for gaps in
what the sink carried). The latency readings cannot stand in for it: interpolated between the
server's timing updates, they drift by up to two blocks over a few seconds while the real lag
stays put (measured here at 48 kHz), which is also why ``info`` reports medians over many
blocks.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time

import numpy as np

from realtime.io import devices
from realtime.io.backend import (
    READ_EVERY,
    CallbackGuard,
    DeviceError,
    LatencyReadings,
    StreamInfo,
    _GuardedStream,
)

_PLAYBACK, _RECORD = 1, 2  # pa_stream_direction_t
_FLOAT32LE = 5  # pa_sample_format_t
_DEFAULT = 0xFFFFFFFF  # (uint32_t) -1: let the server choose
_ERR_CONNECTIONREFUSED = 6  # pa_error_code_t
MAX_RATE = 384000
"""The highest rate a PulseAudio stream takes (Hz)."""
READINGS = 4096
"""Latency readings the stream keeps for its medians (see ``LatencyReadings``)."""


class _SampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32), ("channels", ctypes.c_uint8)]


class _BufferAttr(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint32) for name in ("maxlength", "tlength", "prebuf", "minreq", "fragsize")
    ]


_libs: tuple[ctypes.CDLL, ctypes.CDLL] | None = None


def _load() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """``(libpulse-simple, libpulse)`` with their prototypes set; DeviceError when missing."""
    global _libs
    if _libs is None:
        try:
            simple = ctypes.CDLL("libpulse-simple.so.0")
            pulse = ctypes.CDLL("libpulse.so.0")
        except OSError:
            raise DeviceError(
                "the pulse backend needs libpulse-simple.so.0: install it with "
                "'apt-get install -y libpulse0'"
            ) from None
        err = ctypes.POINTER(ctypes.c_int)
        simple.pa_simple_new.restype = ctypes.c_void_p
        simple.pa_simple_new.argtypes = [
            ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
            ctypes.POINTER(_SampleSpec), ctypes.c_void_p, ctypes.POINTER(_BufferAttr), err,
        ]  # fmt: skip
        for name in ("pa_simple_read", "pa_simple_write"):
            fn = getattr(simple, name)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, err]
        simple.pa_simple_get_latency.restype = ctypes.c_uint64
        simple.pa_simple_get_latency.argtypes = [ctypes.c_void_p, err]
        simple.pa_simple_flush.restype = ctypes.c_int
        simple.pa_simple_flush.argtypes = [ctypes.c_void_p, err]
        simple.pa_simple_free.restype = None
        simple.pa_simple_free.argtypes = [ctypes.c_void_p]
        pulse.pa_strerror.restype = ctypes.c_char_p
        pulse.pa_strerror.argtypes = [ctypes.c_int]
        _libs = simple, pulse
    return _libs


def _strerror(code: int) -> str:
    return (_load()[1].pa_strerror(code) or b"unknown error").decode(errors="replace")


class PulseStream(_GuardedStream):
    """A record + playback pair of libpulse simple streams, run block by block by one thread.

    ``frames`` samples per channel per block, ``channels`` in and out; ``rec`` and ``play`` are
    open ``pa_simple`` handles (owned: :meth:`close` frees them). Playback starts with
    ``prime_blocks`` blocks of silence: the headroom the loop has against a late wake-up, and
    that many blocks of the lag.
    """

    def __init__(
        self,
        rec: int,
        play: int,
        guard: CallbackGuard,
        info: StreamInfo,
        frames: int,
        channels: int,
        prime_blocks: int,
    ) -> None:
        self._simple = _load()[0]
        self._prime_blocks = prime_blocks
        self._rec, self._play = rec, play
        self._guard = guard
        self._info = info
        self._in = np.zeros((frames, channels), np.float32)
        self._out = np.zeros((frames, channels), np.float32)
        self._bytes = self._in.nbytes
        self._latency = LatencyReadings(READINGS)
        self._run = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self._closed = False

    def _start(self) -> None:
        if self._closed:
            raise DeviceError("the stream is closed; open a new one")
        if self._thread is not None and self._thread.is_alive():
            return
        self._error = None
        self._run.set()
        self._thread = threading.Thread(target=self._loop, name="wavehost-pulse", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """The audio thread: drop the capture backlog, prime playback with silence, then read,
        call, write."""
        simple, rec, play, nbytes = self._simple, self._rec, self._play, self._bytes
        read, write = simple.pa_simple_read, simple.pa_simple_write
        latency = simple.pa_simple_get_latency
        code = ctypes.c_int(0)
        perr = ctypes.byref(code)
        pin, pout = self._in.ctypes.data, self._out.ctypes.data
        guard, lat, run, perf = self._guard, self._latency, self._run, time.perf_counter
        self._out.fill(0.0)
        # capture runs from the moment the stream was opened: drop that backlog, or the loop
        # would start with a burst of blocks faster than real time
        if simple.pa_simple_flush(rec, perr) < 0:
            self._fail("flush", code.value)
            return
        for _ in range(self._prime_blocks):
            if write(play, pout, nbytes, perr) < 0:
                self._fail("write", code.value)
                return
        while run.is_set():
            if read(rec, pin, nbytes, perr) < 0:
                self._fail("read", code.value)
                return
            if guard.blocks % READ_EVERY == 0:  # fewer GIL hand-offs on the audio thread
                lat.add(latency(rec, perr) * 1e-6, latency(play, perr) * 1e-6)
            guard(self._in, self._out, 0, perf())
            if write(play, pout, nbytes, perr) < 0:
                self._fail("write", code.value)
                return

    def _fail(self, what: str, code: int) -> None:
        self._error = f"pulse {what} failed: {_strerror(code)}"
        self._run.clear()

    def _stop(self) -> None:
        self._run.clear()
        thread = self._thread
        if thread is not None:
            # the thread notices within one block; a server that stopped answering leaves it
            # blocked in libpulse, and close() then keeps the streams rather than free them
            # under it
            thread.join(timeout=2.0)
            if not thread.is_alive():
                self._thread = None
                code = ctypes.c_int(0)
                self._simple.pa_simple_flush(self._play, ctypes.byref(code))

    @property
    def failed(self) -> bool:
        """The server ended a stream (it stopped, or the sink or source vanished): ``first_error``
        says which call failed and why. Reopen the stream to go on."""
        return self._error is not None

    @property
    def first_error(self) -> str | None:
        """The stream's own failure, else the first callback exception (``"Type: message"``)."""
        return self._error or self._guard.first_error

    def _close(self) -> None:
        if self._closed:
            return
        self.stop()
        self._closed = True
        if self._thread is None:  # never free a handle a blocked thread still uses
            self._simple.pa_simple_free(self._rec)
            self._simple.pa_simple_free(self._play)

    @property
    def active(self) -> bool:
        return self._run.is_set() and self._thread is not None and self._thread.is_alive()


def _open_one(
    direction: int,
    device: str | None,
    spec: _SampleSpec,
    attr: _BufferAttr,
    kind: str,
    name: str,
) -> int:
    simple = _load()[0]
    code = ctypes.c_int(0)
    handle = simple.pa_simple_new(
        None,
        b"wavehost",
        direction,
        device.encode() if device else None,
        f"wavehost {kind}".encode(),
        ctypes.byref(spec),
        None,
        ctypes.byref(attr),
        ctypes.byref(code),
    )
    if handle:
        return int(handle)
    reason = _strerror(code.value)
    if code.value == _ERR_CONNECTIONREFUSED:
        raise DeviceError(
            f"no PulseAudio/PipeWire server answers ({reason}): start one "
            f"(scripts/audio-server.sh start) or set PULSE_SERVER"
        )
    raise DeviceError(f"cannot open the pulse {kind} stream on '{name}': {reason}")


def _named(
    value: str | int | None, kind: str, names: tuple[list[str], list[str]] | None
) -> str | None:
    """A source/sink name given as ``input_device``/``output_device``, checked against the
    server's ``names`` (:func:`~realtime.io.devices.pulse_names`; None: unchecked)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise DeviceError(
            f"the pulse backend names {kind}s (e.g. 'call.monitor'), not PortAudio index {value}"
        )
    devices.check_pulse_name(value, kind, names)
    return value


def open_pulse(
    guard: CallbackGuard,
    *,
    samplerate: int,
    blocksize: int,
    channels: int,
    input_device: str | int | None,
    output_device: str | int | None,
    monitor: str | None,
    sink: str | None,
    latency: str | float,
) -> PulseStream:
    """Open a float32 duplex stream on the PulseAudio/PipeWire server (see open_duplex).

    ``input_device`` / ``output_device`` are server source / sink names (None: the defaults).
    ``latency``: the playback buffering, primed with silence at start: ``"low"`` two blocks,
    ``"high"`` four, seconds that much rounded up to whole blocks (one block is the least lag,
    but at 48 kHz stereo on 2 loaded cores the playback under-ran in 2 of 2 monitoring test runs
    with it, in 0 of 2 with two).
    """
    devices.check_exclusive(input_device, output_device, monitor, sink)
    named = (monitor, sink, input_device, output_device)
    names = devices.pulse_names() if any(v is not None for v in named) else None
    source, sink_name = devices.pulse_targets(monitor, sink, names)
    source = source or _named(input_device, "source", names)
    sink_name = sink_name or _named(output_device, "sink", names)
    in_name = f"monitor of {monitor} (pulse)" if monitor else source or "default source (pulse)"
    out_name = f"sink {sink_name} (pulse)" if sink_name else "default sink (pulse)"
    if not 1 <= samplerate <= MAX_RATE:
        ok = tuple(r for r in devices.COMMON_RATES if r <= MAX_RATE)
        raise devices.rate_error(samplerate, "input", in_name, ok)
    if channels > 32:  # PA_CHANNELS_MAX
        raise DeviceError(f"input device '{in_name}' cannot do {channels} channel(s) (max 32)")
    frame_bytes = 4 * channels
    if latency == "low":
        target = 2 * blocksize
    elif latency == "high":
        target = 4 * blocksize
    else:
        try:
            seconds = float(latency)
        except ValueError:
            raise DeviceError(f"latency must be low, high or seconds, got {latency!r}") from None
        target = max(1, math.ceil(seconds * samplerate / blocksize - 1e-9)) * blocksize
    spec = _SampleSpec(_FLOAT32LE, samplerate, channels)
    rec_attr = _BufferAttr(_DEFAULT, _DEFAULT, _DEFAULT, _DEFAULT, blocksize * frame_bytes)
    play_attr = _BufferAttr(_DEFAULT, target * frame_bytes, 0, blocksize * frame_bytes, _DEFAULT)
    rec = _open_one(_RECORD, source, spec, rec_attr, "capture", in_name)
    try:
        play = _open_one(_PLAYBACK, sink_name, spec, play_attr, "playback", out_name)
    except DeviceError:
        _load()[0].pa_simple_free(rec)
        raise
    info = StreamInfo(
        samplerate=samplerate,
        blocksize=blocksize,
        channels_in=channels,
        channels_out=channels,
        input_latency_s=blocksize / samplerate,
        output_latency_s=target / samplerate,
        backend="pulse",
        input_name=in_name,
        output_name=out_name,
        xruns_visible=False,
    )
    return PulseStream(rec, play, guard, info, blocksize, channels, target // blocksize)
