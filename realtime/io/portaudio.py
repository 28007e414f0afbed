"""The life cycle of a PortAudio stream, whichever Python binding (sounddevice or pyaudio) holds it:
started, stopped, closed, or aborted by PortAudio under it. Each binding names the five calls the
life cycle is made of (:class:`PortAudioStream`)."""

from __future__ import annotations

from typing import Any

from realtime.io import devices
from realtime.io.backend import (
    CallbackGuard,
    DeviceError,
    LatencyReadings,
    StreamInfo,
    _GuardedStream,
)


class PortAudioStream(_GuardedStream):
    """A PortAudio callback stream with the guard's counters and the latency readings its
    callback takes (see backend).

    A binding implements ``_start_stream``, ``_stop_stream``, ``_is_stopped``, ``_is_active`` and
    ``_free`` (close the binding's stream and whatever it owns) on ``self._stream``.
    """

    def __init__(
        self, stream: Any, guard: CallbackGuard, info: StreamInfo, latency: LatencyReadings
    ) -> None:
        self._stream = stream
        self._guard = guard
        self._info = info
        self._latency = latency
        self._closed = False
        self._started = False

    def _start(self) -> None:
        if self._closed:
            raise DeviceError("the stream is closed; open a new one")
        self._start_stream()
        self._started = True

    def _stop(self) -> None:
        self._started = False
        if not self._closed and not self._is_stopped():
            self._stop_stream()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._free()
        finally:
            devices.stream_closed()

    @property
    def failed(self) -> bool:
        """Started and not stopped, yet no longer running: PortAudio aborted it (e.g. the ALSA
        poll timed out on an overloaded machine). Reopen the stream to go on."""
        return self._started and not self._closed and not self._is_active()

    @property
    def active(self) -> bool:
        """The stream is open and PortAudio is calling back."""
        return not self._closed and self._is_active()

    def _start_stream(self) -> None:
        raise NotImplementedError

    def _stop_stream(self) -> None:
        raise NotImplementedError

    def _is_stopped(self) -> bool:
        raise NotImplementedError

    def _is_active(self) -> bool:
        raise NotImplementedError

    def _free(self) -> None:
        raise NotImplementedError
