"""Device listing and device/sink resolution for the PortAudio backends.

PortAudio enumerates devices once, at initialisation (``import sounddevice`` or
``pyaudio.PyAudio()``), under the environment of that moment (``XDG_RUNTIME_DIR``,
``ALSA_CONFIG_PATH``, ``PULSE_SERVER`` ...). Both Python bindings load the same
``libportaudio.so.2``, whose initialisation is reference-counted. :func:`portaudio_sync`
re-initialises PortAudio (``sounddevice._terminate(); sounddevice._initialize()``) when that
environment changed since, so a server started (and its env exported) after the import is seen.

System-audio monitoring and sinks (``monitor=`` / ``sink=`` of ``open_duplex``): where PortAudio
lists ALSA pcms named ``<sink>_monitor`` / ``<sink>`` (the project's private server writes them,
with PipeWire's own ALSA plugin: ``PIPEWIRE_PROPS`` asks it to capture the sink's monitor),
those are opened. Elsewhere the capture side opens the ALSA pcm ``pulse`` (libasound2-plugins)
with ``PULSE_SOURCE=<sink>.monitor`` set in the process environment while the stream is
opened, the playback side with
``PULSE_SINK=<sink>``; libpulse reads these when the ALSA plugin creates its connection, at
stream open, and the previous values are restored right after. This works on any PulseAudio or
pipewire-pulse server (verified on PipeWire 0.3.65: bit-exact at 16 and 48 kHz with both
sounddevice and pyaudio when the graph runs at the stream's rate). Because such a server
silently falls back to the default source/sink for an unknown name (seen here), the name is
checked first with ``pactl`` when it is installed. ``monitor`` may also name a source (e.g. a
microphone), which is then captured directly. The hinted pcms are also selectable by name as
ordinary devices. The difference matters at 48 kHz: the ``pulse`` plugin's playback stream asks
the server for prebuffering, so an under-run stops it until refilled and its lag grows for good,
unseen by ALSA; PipeWire's plugin keeps the lag.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from realtime.io.backend import DeviceError

COMMON_RATES = (8000, 16000, 22050, 44100, 48000)
"""Sample rates (Hz) probed by :func:`list_devices`."""

_ENV_KEYS = (
    "XDG_RUNTIME_DIR",
    "ALSA_CONFIG_PATH",
    "PULSE_SERVER",
    "PULSE_RUNTIME_PATH",
    "PIPEWIRE_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
    "JACK_DEFAULT_SERVER",
)
_seen_env: tuple[str | None, ...] | None = None
_stderr_lock = threading.RLock()
_open_streams = 0  # PortAudio streams opened by realtime.io and not yet closed


@dataclass(frozen=True)
class DeviceEntry:
    """One PortAudio device. Rates in Hz; ``*_rates`` are those of ``COMMON_RATES`` accepted
    (float32, one channel) for input / output; empty when not probed or not a capable device."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    input_rates: tuple[int, ...] = ()
    output_rates: tuple[int, ...] = ()
    is_default_input: bool = False
    is_default_output: bool = False


def _env_snapshot() -> tuple[str | None, ...]:
    return tuple(os.environ.get(k) for k in _ENV_KEYS)


def stream_opened() -> None:
    """Bookkeeping for :func:`portaudio_sync`: never re-initialise under an open stream."""
    global _open_streams
    _open_streams += 1


def stream_closed() -> None:
    global _open_streams
    _open_streams = max(0, _open_streams - 1)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for the block: PortAudio's enumeration and probing make ALSA,
    JACK and PortAudio print dozens of harmless lines on a machine without a sound card. Set
    ``WAVEHOST_AUDIO_DEBUG=1`` to see them. (Other threads' stderr is lost meanwhile: keep the
    block short; failures are reported through DeviceError instead.)"""
    if os.environ.get("WAVEHOST_AUDIO_DEBUG"):
        yield
        return
    with _stderr_lock:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def portaudio_sync(force: bool = False) -> Any:
    """Import sounddevice, re-initialising PortAudio if the audio environment changed since
    it was last initialised (or ``force``), unless a stream of ours is open. Returns the module.

    Raises DeviceError when sounddevice or the PortAudio library is missing.
    """
    global _seen_env
    fresh = "sounddevice" not in sys.modules
    try:
        with quiet_stderr():
            import sounddevice as sd
    except (ImportError, OSError) as exc:
        raise DeviceError(
            f"sounddevice/PortAudio unavailable ({exc}): 'apt-get install -y libportaudio2' "
            "and 'pip install sounddevice'"
        ) from None
    snap = _env_snapshot()
    if fresh and not force:
        _seen_env = snap
    elif (force or snap != _seen_env) and _open_streams == 0:
        with quiet_stderr():
            sd._terminate()
            sd._initialize()
        _seen_env = snap
    return sd


def _pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError as exc:
        raise DeviceError(
            f"pyaudio unavailable ({exc}): 'apt-get install -y portaudio19-dev' and "
            "'pip install pyaudio' (or the extra wavehost[pyaudio])"
        ) from None
    if "sounddevice" in sys.modules:
        portaudio_sync()  # shared libportaudio: refresh its device list first
    return pyaudio


def _raw_sounddevice() -> tuple[list[DeviceEntry], int, int]:
    sd = portaudio_sync()
    hostapis = sd.query_hostapis()
    din, dout = sd.default.device
    try:
        din = int(din) if din is not None and int(din) >= 0 else -1
        dout = int(dout) if dout is not None and int(dout) >= 0 else -1
    except (TypeError, ValueError):
        din, dout = -1, -1
    entries = []
    for d in sd.query_devices():
        entries.append(
            DeviceEntry(
                index=int(d["index"]),
                name=str(d["name"]),
                hostapi=str(hostapis[d["hostapi"]]["name"]),
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_samplerate=float(d["default_samplerate"]),
                is_default_input=int(d["index"]) == din,
                is_default_output=int(d["index"]) == dout,
            )
        )
    return entries, din, dout


def _raw_pyaudio(pa: Any) -> tuple[list[DeviceEntry], int, int]:
    def default(getter: Any) -> int:
        try:
            return int(getter()["index"])
        except OSError:
            return -1

    din = default(pa.get_default_input_device_info)
    dout = default(pa.get_default_output_device_info)
    entries = []
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        entries.append(
            DeviceEntry(
                index=i,
                name=str(d["name"]),
                hostapi=str(pa.get_host_api_info_by_index(d["hostApi"])["name"]),
                max_input_channels=int(d["maxInputChannels"]),
                max_output_channels=int(d["maxOutputChannels"]),
                default_samplerate=float(d["defaultSampleRate"]),
                is_default_input=i == din,
                is_default_output=i == dout,
            )
        )
    return entries, din, dout


def list_devices(backend: str = "sounddevice", check_rates: bool = True) -> list[DeviceEntry]:
    """All PortAudio devices seen by ``backend`` ("sounddevice" or "pyaudio"; "file" has none),
    with the ``COMMON_RATES`` each accepts for input and output when ``check_rates``."""
    if backend == "file":
        return []
    if backend == "sounddevice":
        entries, _, _ = _raw_sounddevice()
        if not check_rates:
            return entries
        sd = portaudio_sync()

        def ok_sd(check: Any, idx: int, rate: int) -> bool:
            try:
                check(device=idx, samplerate=rate, channels=1, dtype="float32")
                return True
            except Exception:
                return False

        with quiet_stderr():
            return [
                _with_rates(
                    e,
                    lambda r, e=e: ok_sd(sd.check_input_settings, e.index, r),
                    lambda r, e=e: ok_sd(sd.check_output_settings, e.index, r),
                )
                for e in entries
            ]
    if backend == "pyaudio":
        pyaudio = _pyaudio()
        with quiet_stderr():
            pa = pyaudio.PyAudio()
        try:
            entries, _, _ = _raw_pyaudio(pa)
            if not check_rates:
                return entries

            def ok_pa(rate: int, **kw: Any) -> bool:
                try:
                    return bool(pa.is_format_supported(rate, **kw))
                except ValueError:
                    return False

            with quiet_stderr():
                return [
                    _with_rates(
                        e,
                        lambda r, e=e: ok_pa(
                            r,
                            input_device=e.index,
                            input_channels=1,
                            input_format=pyaudio.paFloat32,
                        ),
                        lambda r, e=e: ok_pa(
                            r,
                            output_device=e.index,
                            output_channels=1,
                            output_format=pyaudio.paFloat32,
                        ),
                    )
                    for e in entries
                ]
        finally:
            pa.terminate()
    raise DeviceError(f"unknown audio backend '{backend}' (choose from sounddevice, pyaudio, file)")


def _with_rates(e: DeviceEntry, ok_in: Any, ok_out: Any) -> DeviceEntry:
    ins = tuple(r for r in COMMON_RATES if e.max_input_channels > 0 and ok_in(r))
    outs = tuple(r for r in COMMON_RATES if e.max_output_channels > 0 and ok_out(r))
    return DeviceEntry(**{**e.__dict__, "input_rates": ins, "output_rates": outs})


def format_devices(entries: list[DeviceEntry] | None = None, backend: str = "sounddevice") -> str:
    """A text table of devices (for ``wavehost devices``); ``>``/``<`` mark default in/out."""
    if entries is None:
        entries = list_devices(backend)
    if not entries:
        return "no audio devices found (no server running? try scripts/audio-server.sh start)"

    def rates(rs: tuple[int, ...]) -> str:
        return ",".join(f"{r / 1000:g}k" for r in rs) or "-"

    rows = [
        ("", "idx", "name", "host API", "in", "out", "default Hz", "input rates", "output rates")
    ]
    for e in entries:
        mark = (">" if e.is_default_input else " ") + ("<" if e.is_default_output else " ")
        rows.append(
            (
                mark,
                str(e.index),
                e.name,
                e.hostapi,
                str(e.max_input_channels),
                str(e.max_output_channels),
                f"{e.default_samplerate:g}",
                rates(e.input_rates),
                rates(e.output_rates),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("> default input, < default output; rates probed for float32 mono")
    return "\n".join(lines)


def _short_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return (shown + more) or "none"


def find_device(
    entries: list[DeviceEntry], spec: str | int | None, kind: str, default: int
) -> DeviceEntry:
    """Resolve ``spec`` (index, case-insensitive name substring with an exact name winning, or
    None for the default) to a device able to do ``kind`` ("input" or "output")."""
    chan = "max_input_channels" if kind == "input" else "max_output_channels"
    capable = [e for e in entries if getattr(e, chan) > 0]
    if not capable:
        raise DeviceError(
            f"no {kind} devices found (no sound card or audio server? "
            "start one with scripts/audio-server.sh start)"
        )
    names = [e.name for e in capable]
    if spec is None:
        for e in capable:
            if e.index == default:
                return e
        raise DeviceError(f"no default {kind} device; choose one of {_short_list(names)}")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        idx = int(spec)
        for e in entries:
            if e.index == idx:
                if getattr(e, chan) <= 0:
                    raise DeviceError(
                        f"device {idx} '{e.name}' has no {kind} channels; "
                        f"{kind} devices: {_short_list(names)}"
                    )
                return e
        raise DeviceError(
            f"no {kind} device with index {idx}; {kind} devices: {_short_list(names)}"
        )
    want = str(spec).strip().lower()
    exact = [e for e in capable if e.name.lower() == want]
    if exact:
        return exact[0]
    partial = [e for e in capable if want in e.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        raise DeviceError(
            f"{kind} device name '{spec}' is ambiguous: {_short_list([e.name for e in partial])}"
        )
    raise DeviceError(f"no {kind} device matches '{spec}'; {kind} devices: {_short_list(names)}")


def pulse_names() -> tuple[list[str], list[str]] | None:
    """(sink names, source names) on the PulseAudio/pipewire-pulse server, via ``pactl``;
    None when pactl is missing or the server does not answer."""
    pactl = shutil.which("pactl")
    if pactl is None:
        return None
    out = []
    for what in ("sinks", "sources"):
        try:
            res = subprocess.run(
                [pactl, "list", "short", what], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if res.returncode != 0:
            return None
        out.append([ln.split("\t")[1] for ln in res.stdout.splitlines() if "\t" in ln])
    return out[0], out[1]


def pipewire_period_s() -> float | None:
    """The PipeWire graph's period (s) where the server pins it: ``clock.force-quantum`` frames
    at ``clock.force-rate`` (else ``clock.rate``) Hz, read from its ``settings`` metadata with
    ``pw-metadata``. None where pw-metadata is missing, the server does not answer or the quantum
    floats (PipeWire then picks it from the streams' requests as they come and go)."""
    tool = shutil.which("pw-metadata")
    if tool is None:
        return None
    try:
        res = subprocess.run(
            [tool, "-n", "settings", "0"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = dict(re.findall(r"key:'(clock\.[a-z-]+)' value:'(\d+)'", res.stdout))
    quantum = int(found.get("clock.force-quantum", 0))
    rate = int(found.get("clock.force-rate", 0)) or int(found.get("clock.rate", 0))
    if res.returncode != 0 or quantum == 0 or rate == 0:
        return None
    return quantum / rate


def check_exclusive(
    input_device: str | int | None,
    output_device: str | int | None,
    monitor: str | None,
    sink: str | None,
) -> None:
    """Raise :class:`DeviceError` when a side is given both as a device and as a sink."""
    if monitor and input_device is not None:
        raise DeviceError("give either monitor= (a sink to capture) or input_device=, not both")
    if sink and output_device is not None:
        raise DeviceError("give either sink= (a sink to play to) or output_device=, not both")


def check_pulse_name(value: str, kind: str, names: tuple[list[str], list[str]] | None) -> None:
    """Raise :class:`DeviceError` unless ``value`` is a ``kind`` (``"sink"`` or ``"source"``) of
    the server's ``names`` (:func:`pulse_names`; None: unchecked)."""
    known = None if names is None else names[0 if kind == "sink" else 1]
    if known is not None and value not in known:
        raise DeviceError(f"no {kind} '{value}' on the audio server; {kind}s: {_short_list(known)}")


def pulse_targets(
    monitor: str | None, sink: str | None, names: tuple[list[str], list[str]] | None
) -> tuple[str | None, str | None]:
    """``(source, sink)`` names on the PulseAudio/PipeWire server for ``monitor=`` (a sink whose
    monitor is captured, or a source captured directly) and ``sink=``; each checked against
    ``names``, the server's :func:`pulse_names` (None: unchecked). Raises :class:`DeviceError`
    naming the known sinks."""
    source = None
    if monitor:
        source = monitor if monitor.endswith(".monitor") else f"{monitor}.monitor"
        if names is not None and source not in names[1] and monitor in names[1]:
            source = monitor  # a source name (e.g. a microphone) captured directly
        if names is not None and source not in names[1]:
            raise DeviceError(
                f"no sink '{monitor}' to monitor on the audio server; sinks: "
                f"{_short_list(names[0])}"
            )
    if sink:
        check_pulse_name(sink, "sink", names)
    return source, sink


@dataclass
class Endpoints:
    """Resolved devices of a duplex stream plus the environment to hold while opening it."""

    input: DeviceEntry
    output: DeviceEntry
    input_name: str
    output_name: str
    env: dict[str, str]
    monitor_period_s: float = 0.0
    """What PortAudio's capture latency counts but a monitor does not add (s): one graph period.
    PipeWire's ALSA plugin dates a captured period as recorded over the period before its
    delivery, which holds for a microphone; a sink's monitor delivers each period in the cycle
    the sink plays it. Measured sink to sink on the project's server (quantum 256, 48 kHz,
    blocks 256 and 512): the lag one period under PortAudio's in + out, whatever the block.
    0 where the period is unknown (:func:`pipewire_period_s`) or the input is no such monitor."""


def resolve_endpoints(
    entries: list[DeviceEntry],
    default_in: int,
    default_out: int,
    *,
    input_device: str | int | None,
    output_device: str | int | None,
    monitor: str | None,
    sink: str | None,
) -> Endpoints:
    """Pick the input and output devices. ``monitor``/``sink`` map to the ALSA pcms
    ``<sink>_monitor`` / ``<sink>`` where PortAudio lists them (the project's audio server writes
    them: PipeWire's own ALSA plugin, whose streams keep their lag through an under-run), else
    to the ``pulse`` pcm plus ``PULSE_SOURCE``/``PULSE_SINK`` (see the module docstring)."""
    check_exclusive(input_device, output_device, monitor, sink)
    env: dict[str, str] = {}
    inp = out = None
    period = 0.0
    if monitor or sink:
        source, sink_name = pulse_targets(monitor, sink, pulse_names())
        if source and source.endswith(".monitor"):
            inp = _named_pcm(entries, source.removesuffix(".monitor") + "_monitor", "input")
            if inp is not None:  # PipeWire's plugin captures a sink's monitor only when asked
                env["PIPEWIRE_PROPS"] = "{ stream.capture.sink = true }"
                period = pipewire_period_s() or 0.0
        if sink_name:
            out = _named_pcm(entries, sink_name, "output")
        if source and inp is None:
            env["PULSE_SOURCE"] = source
        if sink_name and out is None:
            env["PULSE_SINK"] = sink_name
        if "PULSE_SOURCE" in env or "PULSE_SINK" in env:
            pulse = next((e for e in entries if e.name == "pulse"), None)
            if pulse is None:
                raise DeviceError(
                    "monitor=/sink= need the ALSA 'pulse' device (apt-get install -y "
                    "libasound2-plugins) and a running PulseAudio/PipeWire server"
                )
            inp = inp or (pulse if monitor else None)
            out = out or (pulse if sink else None)
    inp = inp or find_device(entries, input_device, "input", default_in)
    out = out or find_device(entries, output_device, "output", default_out)
    return Endpoints(
        input=inp,
        output=out,
        input_name=f"monitor of {monitor} ({inp.name})" if monitor else inp.name,
        output_name=f"sink {sink} ({out.name})" if sink else out.name,
        env=env,
        monitor_period_s=period,
    )


def _named_pcm(entries: list[DeviceEntry], name: str, kind: str) -> DeviceEntry | None:
    """The device called exactly ``name`` with ``kind`` (``"input"``/``"output"``) channels."""
    for e in entries:
        channels = e.max_input_channels if kind == "input" else e.max_output_channels
        if e.name == name and channels > 0:
            return e
    return None


@contextlib.contextmanager
def held_env(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in the process environment for the block, then restore what was there."""
    old = {k: os.environ.get(k) for k in env}
    try:
        os.environ.update(env)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rate_error(rate: int, kind: str, name: str, supported: tuple[int, ...]) -> DeviceError:
    """The DeviceError for a rate a device refuses."""
    hint = f" (it accepts {', '.join(map(str, supported))} Hz)" if supported else ""
    return DeviceError(f"{rate} Hz is not supported by {kind} device '{name}'{hint}")
