"""Duplex streams through pyaudio (the same PortAudio library as sounddevice, used in bytes).

pyaudio hands the callback ``bytes`` and wants ``bytes``-like data back: the input is viewed as a
``(frames, channels)`` float32 array without copying, and the output is a float32 array
preallocated at open (returned as the buffer; pyaudio copies it into PortAudio's buffer before
the next callback), so no data buffer is allocated per block. pyaudio exposes no suggested
latency: PortAudio's default low latency of each device is used whatever ``latency`` says.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from realtime.io import devices
from realtime.io.backend import (
    READ_EVERY,
    XRUN_MASK,
    CallbackGuard,
    DeviceError,
    LatencyReadings,
    StreamInfo,
)
from realtime.io.portaudio import PortAudioStream


class PyAudioStream(PortAudioStream):
    """A pyaudio stream, owning its ``PyAudio`` instance ``pa``, with the life cycle of
    :class:`PortAudioStream`."""

    def __init__(
        self,
        pa: Any,
        stream: Any,
        guard: CallbackGuard,
        info: StreamInfo,
        latency: LatencyReadings,
    ) -> None:
        super().__init__(stream, guard, info, latency)
        self._pa = pa

    def _start_stream(self) -> None:
        if self._stream.is_stopped():
            self._stream.start_stream()

    def _stop_stream(self) -> None:
        self._stream.stop_stream()

    def _is_stopped(self) -> bool:
        return bool(self._stream.is_stopped())

    def _is_active(self) -> bool:
        return bool(self._stream.is_active())

    def _free(self) -> None:
        try:
            self._stream.close()
        finally:
            self._pa.terminate()


def open_pyaudio(
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
) -> PyAudioStream:
    """Open a paFloat32 duplex pyaudio stream of fixed ``blocksize`` (see open_duplex)."""
    del latency  # not settable through pyaudio (see the module docstring)
    pyaudio = devices._pyaudio()
    with devices.quiet_stderr():
        pa = pyaudio.PyAudio()
    try:
        entries, din, dout = devices._raw_pyaudio(pa)
        ep = devices.resolve_endpoints(
            entries,
            din,
            dout,
            input_device=input_device,
            output_device=output_device,
            monitor=monitor,
            sink=sink,
        )
        fmt = pyaudio.paFloat32
        for kind, dev, name in (
            ("input", ep.input, ep.input_name),
            ("output", ep.output, ep.output_name),
        ):
            maxch = dev.max_input_channels if kind == "input" else dev.max_output_channels
            if channels > maxch:
                raise DeviceError(
                    f"{kind} device '{name}' cannot do {channels} channel(s) (max {maxch})"
                )

            def ok(rate: int, kind: str = kind, dev: Any = dev) -> bool:
                kw = {
                    f"{kind}_device": dev.index,
                    f"{kind}_channels": channels,
                    f"{kind}_format": fmt,
                }
                try:
                    with devices.quiet_stderr():
                        return bool(pa.is_format_supported(rate, **kw))
                except ValueError:
                    return False

            if not ok(samplerate):
                supported = tuple(r for r in devices.COMMON_RATES if ok(r))
                raise devices.rate_error(samplerate, kind, name, supported)

        out = np.zeros((blocksize, channels), dtype=np.float32)
        perf = time.perf_counter
        cont = pyaudio.paContinue
        f32 = np.float32

        readings = LatencyReadings(input_offset_s=ep.monitor_period_s)

        def _callback(in_data: bytes, frame_count: int, time_info: Any, status: int) -> tuple:
            inp = np.frombuffer(in_data, dtype=f32).reshape(frame_count, channels)
            o = out if frame_count == blocksize else np.zeros((frame_count, channels), f32)
            guard(inp, o, status & XRUN_MASK, perf())
            if guard.blocks % READ_EVERY == 0:  # PortAudio's own per-block latency estimate
                readings.add_stamps(
                    time_info["input_buffer_adc_time"],
                    time_info["current_time"],
                    time_info["output_buffer_dac_time"],
                )
            return (o, cont)

        with devices.held_env(ep.env), devices.quiet_stderr():
            try:
                stream = pa.open(
                    rate=samplerate,
                    channels=channels,
                    format=fmt,
                    input=True,
                    output=True,
                    input_device_index=ep.input.index,
                    output_device_index=ep.output.index,
                    frames_per_buffer=blocksize,
                    start=False,
                    stream_callback=_callback,
                )
            except (OSError, ValueError) as exc:
                raise DeviceError(
                    f"cannot open duplex stream '{ep.input_name}' -> '{ep.output_name}' at "
                    f"{samplerate} Hz, block {blocksize}: {exc}"
                ) from None
    except BaseException:
        pa.terminate()
        raise
    devices.stream_opened()
    info = StreamInfo(
        samplerate=samplerate,
        blocksize=blocksize,
        channels_in=channels,
        channels_out=channels,
        input_latency_s=max(0.0, stream.get_input_latency() - ep.monitor_period_s),
        output_latency_s=float(stream.get_output_latency()),
        backend="pyaudio",
        input_name=ep.input_name,
        output_name=ep.output_name,
    )
    result = PyAudioStream(pa, stream, guard, info, readings)
    result._callback = _callback  # for tests of the per-block path
    return result
