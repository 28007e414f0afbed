"""The pulse backend without a server: the errors. (With the real server: tests/live/test_io.py,
test_run.py and test_monitor.py.)"""

from __future__ import annotations

import pytest

from realtime.io import DeviceError, open_duplex


def test_no_server_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-server")
    with pytest.raises(DeviceError, match=r"^no PulseAudio/PipeWire server answers .*start one"):
        open_duplex(lambda i, o, s: None, backend="pulse", samplerate=16000, blocksize=256)
    with pytest.raises(DeviceError, match=r"names sinks .*not PortAudio index 3"):
        open_duplex(
            lambda i, o, s: None, backend="pulse", samplerate=16000, blocksize=256, output_device=3
        )


def test_bad_latency_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-server")
    with pytest.raises(DeviceError, match=r"^latency must be low, high or seconds, got 'soon'"):
        open_duplex(
            lambda i, o, s: None, backend="pulse", samplerate=16000, blocksize=256, latency="soon"
        )
