"""Shared fixtures. ``audio_server``: the project's private PipeWire server for live tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.e2e import parse_exports

REPO = Path(__file__).resolve().parents[1]
AUDIO_SERVER_SCRIPT = REPO / "scripts" / "audio-server.sh"


@dataclass
class AudioServer:
    """A running private audio server (scripts/audio-server.sh) whose env is in os.environ.

    ``rate``: the graph rate it was started at, Hz; ``sinks``: its mono null sinks (the first is
    the default sink, its monitor the default source); ``env``: the exported variables.
    """

    dir: Path
    rate: int
    sinks: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    base_rate: int = 48000
    """The rate the server started at; restored after each test that forced another."""

    @property
    def call(self) -> str:
        """The sink a "VoIP application" plays into (its monitor is captured)."""
        return self.sinks[0]

    @property
    def listener(self) -> str:
        """The sink the host plays its output to."""
        return self.sinks[1]

    def force_rate(self, hz: int) -> None:
        """Force the graph to ``hz`` (0: unforce): streams at that rate pass unresampled."""
        res = subprocess.run(
            ["bash", str(AUDIO_SERVER_SCRIPT), "rate", str(hz)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if res.returncode != 0:
            pytest.fail(f"could not force the audio server to {hz} Hz: {res.stderr.strip()}")
        self.rate = hz or self.rate
        # A forced rate applies to new streams; give the graph a moment to switch.
        time.sleep(0.05)


@pytest.fixture(scope="session")
def audio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AudioServer]:
    """Start scripts/audio-server.sh (sinks ``call`` and ``listener``, 48 kHz) in a private
    folder, export its environment into ``os.environ`` (so PortAudio, paplay, parecord find it),
    and stop it at the end of the session. Fails, not skips, when the server cannot start."""
    folder = tmp_path_factory.mktemp("audio-server")
    outer = os.environ.get("WAVEHOST_AUDIO_DIR")
    os.environ["WAVEHOST_AUDIO_DIR"] = str(folder)
    try:
        res = subprocess.run(
            ["bash", str(AUDIO_SERVER_SCRIPT), "start", "--rate", "48000"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        res = subprocess.CompletedProcess([], 1, "", str(exc))
    if res.returncode != 0:
        if outer is None:
            os.environ.pop("WAVEHOST_AUDIO_DIR", None)
        else:
            os.environ["WAVEHOST_AUDIO_DIR"] = outer
        pytest.fail(f"the audio server did not start: {res.stderr.strip() or res.stdout.strip()}")
    env = parse_exports(res.stdout)
    saved = {k: os.environ.get(k) for k in env}
    saved["WAVEHOST_AUDIO_DIR"] = outer
    os.environ.update(env)
    rate = int(env.get("WAVEHOST_AUDIO_RATE", "48000"))
    server = AudioServer(
        dir=folder,
        rate=rate,
        sinks=tuple(env.get("WAVEHOST_AUDIO_SINKS", "call listener").split()),
        env=env,
        base_rate=rate,
    )
    try:
        yield server
    finally:
        subprocess.run(
            ["bash", str(AUDIO_SERVER_SCRIPT), "stop"], capture_output=True, text=True, timeout=30
        )
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(autouse=True)
def _restore_audio_rate(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that forced the graph to another rate, force it back to the base rate, so
    no test depends on the order of the others."""
    yield
    if "audio_server" in request.fixturenames:
        server: AudioServer = request.getfixturevalue("audio_server")
        if server.rate != server.base_rate:
            server.force_rate(server.base_rate)
