"""End-to-end latency through the project's private audio server (PipeWire, null sinks).

A click train (single-sample impulses at irregular times, so a lag is never ambiguous) is
played into sink ``call`` by a separate process (``pw-play``). A duplex stream captures
``call``'s monitor and plays into sink ``listener``. One ``pw-record`` stream with two input
ports records ``call``'s monitor (the reference, left) and ``listener``'s monitor (right): both
ports are filled in the same graph cycle, so the lag between the channels is the loopback's,
with no start-up offset between two recorders to guess. The lag is the peak of their
cross-correlation.

One stream per backend runs the wavehost :class:`Engine`; the train is played twice: first
while the callback copies its input to its output (``copy``: what the server, ALSA and PortAudio
add on their own), then while the engine's output goes out (``engine``). Same stream, same
callback phase against the graph cycle, so the engine's measured latency is ``engine lag − copy
lag``; it is compared with what the engine declares
(:meth:`Engine.latency`: host buffering + plugin), and the raw engine lag with the declared total
(plus PortAudio's reported device input and output latency).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.latency import BenchError, delay_plugin, path_fault
from bench.machine import REPO, LoadSampler, machine_facts
from realtime.probe import correlate

SERVER_SCRIPT = REPO / "scripts" / "audio-server.sh"
CLICK_TIMES_S = (0.15, 0.46, 0.79, 1.11)  # further apart than MAX_LAG_S: one click per window
MAX_LAG_S = 0.25  # longest loopback lag searched for
PHASE_GAP_S = 0.5  # silence between two played trains is longer, gaps inside a train shorter
PHASES = ("copy", "engine", "copy")  # the loopback measured before and after the engine
ATTEMPTS = 3  # streams opened at most, until one keeps a constant loopback lag


@dataclass
class E2ESettings:
    """``wavehost bench e2e`` settings: rate (Hz), device block (samples), backends, plugin."""

    backends: list[str]
    rate: int = 16000
    block: int = 256
    mode: str = "threaded"
    plugin: str = "delay-32"  # "delay-N": the identity with an N-sample pure delay; or a spec
    settle_s: float = 0.4  # stream running before the recording starts


def parse_exports(text: str) -> dict[str, str]:
    """The ``export NAME=VALUE`` lines of ``scripts/audio-server.sh env`` as a dict."""
    env = {}
    for line in text.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            key, value = parts[1].split("=", 1)
            env[key] = value
    return env


def _script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SERVER_SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def audio_server(rate: int) -> Iterator[dict[str, str]]:
    """Use the running private server (``audio-server.sh env`` answers) or start one (and stop it
    afterwards); export its environment; force the graph to ``rate`` Hz so streams at that rate
    pass unresampled, and put the previous rate back at the end."""
    res = _script("env")
    started = res.returncode != 0
    if started:
        res = _script("start")
        if res.returncode != 0:
            raise BenchError(f"the audio server did not start: {res.stderr.strip()}")
    env = parse_exports(res.stdout)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    base = env.get("WAVEHOST_AUDIO_RATE", "48000")
    try:
        if str(rate) != base:
            forced = _script("rate", str(rate))
            if forced.returncode != 0:
                raise BenchError(f"could not force the audio graph to {rate} Hz")
            time.sleep(0.05)
        yield env
    finally:
        if started:
            _script("stop")
        elif str(rate) != base:
            _script("rate", base)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def click_train(rate: int) -> np.ndarray:
    """Mono float32: impulses of 0.5 at :data:`CLICK_TIMES_S`, 0.3 s of silence after the last."""
    x = np.zeros(int((CLICK_TIMES_S[-1] + 0.3) * rate), np.float32)
    x[[round(t * rate) for t in CLICK_TIMES_S]] = 0.5
    return x


class DualRecorder:
    """One ``pw-record`` stream whose left port records ``left`` and right port ``right``
    (PipeWire output port names, e.g. ``call:monitor_MONO``), in the same graph cycle."""

    def __init__(self, path: Path, rate: int, left: str, right: str) -> None:
        self.path, self.rate, self.left, self.right = path, rate, left, right
        self.node = f"wavehost-bench-rec-{os.getpid()}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the recorder and link the two ports; raise :class:`BenchError` on failure."""
        props = f"{{ node.name={self.node} node.description={self.node} }}"
        cmd = [
            "pw-record",
            "--target",
            "0",
            "-P",
            props,
            "--rate",
            str(self.rate),
            "--channels",
            "2",
            "--channel-map",
            "FL,FR",
            "--format",
            "f32",
            str(self.path),
        ]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ports = (f"{self.node}:input_FL", f"{self.node}:input_FR")
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            listed = subprocess.run(["pw-link", "-i"], capture_output=True, text=True).stdout
            if all(p in listed.split() for p in ports):
                break
            time.sleep(0.02)
        else:
            self.stop()
            raise BenchError("pw-record's ports did not appear within 5 s")
        for src, dst in ((self.left, ports[0]), (self.right, ports[1])):
            res = subprocess.run(["pw-link", src, dst], capture_output=True, text=True)
            if res.returncode != 0:
                self.stop()
                raise BenchError(f"pw-link {src} {dst} failed: {res.stderr.strip()}")

    def stop(self) -> np.ndarray:
        """Stop recording; return the ``(frames, 2)`` recording (empty if none)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not self.path.exists() or self.path.stat().st_size == 0:
            return np.zeros((0, 2), np.float32)
        return sf.read(str(self.path), dtype="float32", always_2d=True)[0]


def click_lags(reference: np.ndarray, captured: np.ndarray, max_lag: int) -> list[int]:
    """The lag of each reference click in ``captured``: where ``|captured|`` peaks in the
    ``max_lag`` samples after it (clicks are further apart than ``max_lag``)."""
    clicks = np.flatnonzero(np.abs(reference) > 0.25)
    return [int(np.argmax(np.abs(captured[i : i + max_lag + 1]))) for i in clicks]


def _lag(reference: np.ndarray, captured: np.ndarray, max_lag: int) -> dict[str, Any]:
    corr = correlate(reference, captured, max_lag)
    lag = int(np.argmax(corr))
    return {"lag": lag, "gain": float(corr[lag]), "_corr": corr}


def _engine(s: E2ESettings) -> Any:
    from realtime.chain import Chain
    from realtime.engine import Engine
    from realtime.loader import load_plugin
    from realtime.processor import Processor

    if s.plugin.startswith("delay-") and s.plugin[6:].isdigit():
        plugin = delay_plugin(s.rate, int(s.plugin[6:]), name=s.plugin)
    else:
        plugin = load_plugin(s.plugin)
    proc = Processor(Chain([plugin]), rate_in=s.rate, rate_out=s.rate, block=s.block)
    return Engine(proc, mode=s.mode, adaptive=False)  # a fixed latency to measure


def _attempt(backend: str, s: E2ESettings, workdir: Path) -> dict[str, Any]:
    """One duplex stream running the engine while the click train is played once per phase of
    :data:`PHASES`: ``copy`` phases copy the callback's input to its output (the loopback
    alone), the ``engine`` phase lets the engine's output out. Same stream, same callback phase
    against the graph: the difference of the lags is the engine's latency."""
    from realtime.io.backend import open_duplex

    signal_path = workdir / "clicks.wav"
    sf.write(str(signal_path), click_train(s.rate), s.rate, subtype="FLOAT")
    engine = _engine(s)
    copying = [True]

    def callback(indata: np.ndarray, outdata: np.ndarray, status: int) -> None:
        engine.callback(indata, outdata, status)  # always: the engine's timeline runs on
        if copying[0]:
            outdata[:] = indata

    stream = open_duplex(
        callback,
        backend=backend,
        samplerate=s.rate,
        blocksize=s.block,
        channels=engine.channels,  # a stereo plugin's stream: the mono sinks mix it down
        monitor="call",
        sink="listener",
        latency="low",
    )
    rec = DualRecorder(
        workdir / f"{backend}.wav", s.rate, "call:monitor_MONO", "listener:monitor_MONO"
    )
    engine.start()
    try:
        stream.start()
        time.sleep(s.settle_s)
        rec.start()
        time.sleep(0.1)
        for phase in PHASES:
            copying[0] = phase == "copy"
            time.sleep(0.05)
            res = subprocess.run(
                ["pw-play", "--target", "call", str(signal_path)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if res.returncode != 0:
                raise BenchError(f"pw-play failed: {res.stderr.strip()}")
            time.sleep(MAX_LAG_S + 0.05)  # the last click is out before the next phase
        time.sleep(0.2)  # pw-play returns with its last buffer still queued
        audio = rec.stop()
    finally:
        rec.stop()
        stream.stop()
        stream.close()
        engine.stop()
    ref, got = audio[:, 0].astype(np.float64), audio[:, 1].astype(np.float64)
    clicks = np.flatnonzero(np.abs(ref) > 0.25)
    # the trains are > PHASE_GAP_S apart, their clicks closer: split the clicks at the big gaps
    cuts = np.flatnonzero(np.diff(clicks) > PHASE_GAP_S * s.rate)
    groups = np.split(clicks, cuts + 1) if clicks.size else []
    if len(groups) != len(PHASES) or min(g.size for g in groups) < 2:
        sizes = [int(g.size) for g in groups]
        return {"why": f"reference clicks per phase {sizes}, expected {len(PHASES)} trains"}
    mids = [(a[-1] + b[0]) // 2 for a, b in itertools.pairwise(groups)]
    bounds = [0, *mids, ref.size]
    max_lag = int(MAX_LAG_S * s.rate)
    idx = np.arange(ref.size)
    phases = []
    for k, phase in enumerate(PHASES):
        part = np.where((idx >= bounds[k]) & (idx < bounds[k + 1]), ref, 0.0)
        phases.append(
            {
                "phase": phase,
                **_lag(part, got, max_lag),
                "click_lags": click_lags(part, got, max_lag),
            }
        )
    info = stream.info
    c = engine.counters
    return {
        "why": _steady(phases),
        "phases": phases,
        "declared": engine.latency(info.input_latency_s, info.output_latency_s),
        "misses": c.misses,
        "callbacks": c.callbacks,
        "fault": path_fault(engine.processor),
        "xruns": dict(stream.xruns) if info.xruns_visible else None,
    }


def _steady(phases: list[dict[str, Any]]) -> str:
    """Why this attempt's loopback was not steady ("" if it was): every click of a phase at the
    same lag, and both copy phases at the same lag."""
    for p in phases:
        if max(p["click_lags"]) - min(p["click_lags"]) > 1:
            return f"{p['phase']} clicks at lags {p['click_lags']}"
    copies = {p["lag"] for p in phases if p["phase"] == "copy"}
    if len(copies) > 1:
        return f"the loopback lag moved from {min(copies)} to {max(copies)} samples"
    return ""


def measure_backend(backend: str, s: E2ESettings, workdir: Path) -> dict[str, Any]:
    """Measured against declared engine latency on ``backend``. An attempt whose loopback lag
    moved (the ALSA ``pulse`` plugin recovers an underrun silently: PortAudio reports no xrun,
    the lag shifts) is reported and repeated, up to :data:`ATTEMPTS` streams."""
    discarded = []
    for _ in range(ATTEMPTS):
        att = _attempt(backend, s, workdir)
        why = att["why"]
        if not why:
            break
        discarded.append(why)
    if "phases" not in att:
        raise BenchError(f"{backend}: no usable recording in {ATTEMPTS} attempts: {why}")
    copy = next(p for p in att["phases"] if p["phase"] == "copy")
    wet = next(p for p in att["phases"] if p["phase"] == "engine")
    declared = att["declared"]
    measured = wet["lag"] - copy["lag"]
    error = measured - declared.engine

    def public(p: dict[str, Any]) -> dict[str, Any]:
        return {
            "lag": p["lag"],
            "lag_ms": 1e3 * p["lag"] / s.rate,
            "gain": p["gain"],
            "click_lags": p["click_lags"],
        }

    return {
        "backend": backend,
        "copy": public(copy),
        "engine": {
            **public(wet),
            "misses": att["misses"],
            "callbacks": att["callbacks"],
            "xruns": att["xruns"],
        },
        "phases": [public(p) | {"phase": p["phase"]} for p in att["phases"]],
        "steady": not why,
        "unsteady_attempts": discarded,
        "declared": declared.to_dict(),
        "declared_ms": {
            k: declared.ms(v) for k, v in declared.to_dict().items() if k not in ("rate", "block")
        },
        "measured_engine": measured,
        "measured_engine_ms": 1e3 * measured / s.rate,
        "error": error,
        "fault": att["fault"],  # the plugin was bypassed: the lag measured is the bypass's
        "ok": not why and abs(error) <= s.block and not att["fault"],
        "_copy_corr": copy["_corr"],
        "_engine_corr": wet["_corr"],
    }


EXPLANATION = (
    "What the loopback adds: inside PipeWire a null sink's monitor carries what was played "
    "into the sink in the same graph cycle, so the `copy` lag is the server's, the ALSA plugin's "
    "(PipeWire's own, pipewire-alsa) and PortAudio's alone: the captured period waiting, the "
    "playback buffer draining, and the phase of the stream's callbacks against the graph cycle "
    "(it changes from one stream opening to the next by whole blocks, which is why copy and "
    "engine are measured in the same stream). The engine is judged by `engine lag − copy lag`, "
    "where the server and device part cancel and what is left is the engine's re-blocking, "
    "hand-off block, margin and plugin latency. The declared device figures are each backend's "
    "running estimate of the device part, the medians of its recent readings: PortAudio's "
    "per-block time stamps, less the graph period that a monitor's capture delay counts but "
    "does not add (`realtime.io.devices.Endpoints`), and the server's own latency readings for "
    "`pulse` (no PortAudio, no ALSA plugin: its `copy` lag is the server's loopback through "
    "libpulse); the declared total is judged against the engine lag."
)


def run_e2e(s: E2ESettings) -> dict[str, Any]:
    """Measure every backend of ``s``; returns the report dict (rows per backend)."""
    for tool in ("pw-record", "pw-play", "pw-link"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            raise BenchError(f"'{tool}' not found: apt-get install -y pipewire-bin")
    rows = []
    with (
        audio_server(s.rate),
        tempfile.TemporaryDirectory(prefix="wavehost-e2e-") as tmp,
        LoadSampler() as load,
    ):
        for backend in s.backends:
            rows.append(measure_backend(backend, s, Path(tmp)))
    return {
        "kind": "e2e",
        "machine": machine_facts(),
        "settings": asdict(s),
        "load": load.summary(),
        "rows": rows,
        "explanation": EXPLANATION,
    }
