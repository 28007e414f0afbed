"""Duplex streams through sounddevice (PortAudio; Debian's ``libportaudio2``).

On Linux without a native PulseAudio host API (Debian's PortAudio 19.6) every server is reached
through ALSA: the hinted pcms of the project's server (PipeWire's own ALSA plugin,
pipewire-alsa), or the ``pulse`` pcm (libasound2-plugins). ``monitor=`` / ``sink=`` are
explained in :mod:`realtime.io.devices`.
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


class SoundDeviceStream(PortAudioStream):
    """A ``sounddevice.Stream`` with the life cycle of :class:`PortAudioStream`."""

    def _start_stream(self) -> None:
        self._stream.start()

    def _stop_stream(self) -> None:
        self._stream.stop()

    def _is_stopped(self) -> bool:
        return bool(self._stream.stopped)

    def _is_active(self) -> bool:
        return bool(self._stream.active)

    def _free(self) -> None:
        self._stream.close()


def open_sounddevice(
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
) -> SoundDeviceStream:
    """Open a float32 duplex ``sounddevice.Stream`` of fixed ``blocksize`` (see open_duplex)."""
    sd = devices.portaudio_sync()
    entries, din, dout = devices._raw_sounddevice()
    ep = devices.resolve_endpoints(
        entries,
        din,
        dout,
        input_device=input_device,
        output_device=output_device,
        monitor=monitor,
        sink=sink,
    )
    for kind, dev, name, check in (
        ("input", ep.input, ep.input_name, sd.check_input_settings),
        ("output", ep.output, ep.output_name, sd.check_output_settings),
    ):
        try:
            with devices.quiet_stderr():
                check(device=dev.index, samplerate=samplerate, channels=channels, dtype="float32")
        except Exception as exc:
            msg = str(exc)
            if "sample rate" in msg.lower():
                ok = tuple(
                    r for r in devices.COMMON_RATES if _accepts(check, dev.index, r, channels)
                )
                raise devices.rate_error(samplerate, kind, name, ok) from None
            if "channels" in msg.lower():
                maxch = dev.max_input_channels if kind == "input" else dev.max_output_channels
                raise DeviceError(
                    f"{kind} device '{name}' cannot do {channels} channel(s) (max {maxch})"
                ) from None
            raise DeviceError(f"{kind} device '{name}' refuses the settings: {msg}") from None

    perf = time.perf_counter
    readings = LatencyReadings(input_offset_s=ep.monitor_period_s)

    def _callback(
        indata: np.ndarray, outdata: np.ndarray, frames: int, t: Any, status: Any
    ) -> None:
        guard(indata, outdata, status._flags & XRUN_MASK, perf())
        if guard.blocks % READ_EVERY == 0:  # PortAudio's own per-block latency estimate
            readings.add_stamps(t.inputBufferAdcTime, t.currentTime, t.outputBufferDacTime)

    with devices.held_env(ep.env), devices.quiet_stderr():
        try:
            stream = sd.Stream(
                samplerate=samplerate,
                blocksize=blocksize,
                device=(ep.input.index, ep.output.index),
                channels=(channels, channels),
                dtype="float32",
                latency=latency,
                callback=_callback,
                prime_output_buffers_using_stream_callback=False,
            )
        except Exception as exc:
            raise DeviceError(
                f"cannot open duplex stream '{ep.input_name}' -> '{ep.output_name}' at "
                f"{samplerate} Hz, block {blocksize}: {exc}"
            ) from None
    devices.stream_opened()
    lat_in, lat_out = stream.latency
    info = StreamInfo(
        samplerate=int(stream.samplerate),
        blocksize=blocksize,
        channels_in=channels,
        channels_out=channels,
        input_latency_s=max(0.0, float(lat_in) - ep.monitor_period_s),
        output_latency_s=float(lat_out),
        backend="sounddevice",
        input_name=ep.input_name,
        output_name=ep.output_name,
    )
    result = SoundDeviceStream(stream, guard, info, readings)
    result._callback = _callback  # for tests of the per-block path
    return result


def _accepts(check: Any, index: int, rate: int, channels: int) -> bool:
    try:
        with devices.quiet_stderr():
            check(device=index, samplerate=rate, channels=channels, dtype="float32")
        return True
    except Exception:
        return False
