"""Audio I/O for wavehost: PortAudio duplex streams (sounddevice, pyaudio), a real-time file
"device", device listing, and system-audio monitoring of a PulseAudio/PipeWire sink.

Import cost is small: sounddevice/pyaudio are imported only when a stream is opened or devices
are listed (see :func:`realtime.io.devices.portaudio_sync` for the environment they need).
"""

from realtime.io.backend import (
    BACKENDS,
    XRUN_INPUT_OVERFLOW,
    XRUN_INPUT_UNDERFLOW,
    XRUN_MASK,
    XRUN_NAMES,
    XRUN_OUTPUT_OVERFLOW,
    XRUN_OUTPUT_UNDERFLOW,
    Callback,
    DeviceError,
    DuplexStream,
    StreamInfo,
    open_duplex,
)
from realtime.io.devices import COMMON_RATES, DeviceEntry, format_devices, list_devices

__all__ = [
    "BACKENDS",
    "COMMON_RATES",
    "XRUN_INPUT_OVERFLOW",
    "XRUN_INPUT_UNDERFLOW",
    "XRUN_MASK",
    "XRUN_NAMES",
    "XRUN_OUTPUT_OVERFLOW",
    "XRUN_OUTPUT_UNDERFLOW",
    "Callback",
    "DeviceEntry",
    "DeviceError",
    "DuplexStream",
    "StreamInfo",
    "format_devices",
    "list_devices",
    "open_duplex",
]
