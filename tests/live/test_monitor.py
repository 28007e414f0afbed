"""The monitoring path end to end: a player plays an MP3 into a stereo sink, ``wavehost run
--monitor`` restores it live with the shipped ``mp3-restore-48k`` plugin and plays it to the
listener's sink.

The sinks are made the way the README tells a user to (``pactl load-module module-null-sink``,
48 kHz stereo) on the private audio server; the player is ``paplay`` decoding the bundled 64 kb/s
MP3 clip. Checked: wavehost captured the decoded MP3 (correlation ≥ 0.99 with soundfile's decode
of the same file, both channels), the live output equals an offline render of the live input
sample for sample, the restored output puts energy back above the MP3's low-pass (16–20 kHz)
that the input lacks, and what the listener sink received is the engine's output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio import aligned_correlation

from realtime.chain import Chain
from realtime.loader import load_plugin
from realtime.render import render

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "realtime" / "data" / "music-64k.mp3"
RATE = 48000
BLOCK = 256


def band_db(x: np.ndarray, lo: float, hi: float) -> float:
    """Mean power (dB) of the mono mix of ``x`` (time, channels) in ``lo``–``hi`` Hz."""
    mono = x.mean(axis=1)
    spec = np.abs(np.fft.rfft(mono * np.hanning(len(mono)))) ** 2
    freqs = np.fft.rfftfreq(len(mono), 1 / RATE)
    return float(10 * np.log10(spec[(freqs >= lo) & (freqs < hi)].mean() + 1e-30))


@pytest.fixture
def stereo_sinks(audio_server) -> Iterator[tuple[str, str]]:
    """Two 48 kHz stereo null sinks, ``music`` and ``speakers``, unloaded afterwards."""
    modules = []
    for name in ("music", "speakers"):
        res = subprocess.run(
            ["pactl", "load-module", "module-null-sink", f"sink_name={name}", f"rate={RATE}",
             "channels=2", "channel_map=front-left,front-right"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        modules.append(res.stdout.strip())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sinks = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True)
        if "music" in sinks.stdout and "speakers" in sinks.stdout:
            break
        time.sleep(0.1)
    try:
        yield "music", "speakers"
    finally:
        for m in modules:
            subprocess.run(["pactl", "unload-module", m], capture_output=True, timeout=20)


@pytest.mark.live
def test_mp3_played_into_a_sink_is_restored_live(audio_server, stereo_sinks, tmp_path):
    music, speakers = stereo_sinks
    audio_server.force_rate(RATE)
    decoded, sr = sf.read(CLIP, dtype="float32", always_2d=True)
    assert sr == RATE and decoded.shape[1] == 2
    seconds = len(decoded) / RATE
    out, inp, report = tmp_path / "out.wav", tmp_path / "in.wav", tmp_path / "report.json"
    listener = tmp_path / "listener.wav"
    cmd = [
        sys.executable, "-m", "realtime.cli", "run", "--plugin", "mp3-restore-48k",
        "--monitor", music, "--sink", speakers, "--rate", str(RATE), "--block", str(BLOCK),
        "--duration", f"{seconds + 2.5:.2f}", "--record", str(out), "--record-input", str(inp),
        "--report", str(report), "--quiet",
    ]  # fmt: skip
    host = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rec = subprocess.Popen(
        ["parecord", f"--device={speakers}.monitor", f"--rate={RATE}", "--channels=2",
         "--format=float32le", "--file-format=wav", str(listener)],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Ctrl-C stops" not in (line := host.stderr.readline()):
            if host.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"wavehost run did not start: {line}{host.stderr.read()}")
        player = subprocess.run(
            ["paplay", f"--device={music}", str(CLIP)], capture_output=True, text=True, timeout=60
        )
        assert player.returncode == 0, player.stderr
        _, err = host.communicate(timeout=60)
    finally:
        host.kill()
        time.sleep(0.2)
        rec.terminate()
        rec.wait(timeout=10)
    assert host.returncode == 0, err
    r = json.loads(report.read_text())
    assert r["callback_errors"] == 0 and [p["name"] for p in r["plugins"]] == ["mp3-restore-48k"]

    # wavehost captured what the player played: the decoded MP3, both channels
    live_in, _ = sf.read(inp, dtype="float32", always_2d=True)
    for ch in range(2):
        _, corr, _, _ = aligned_correlation(live_in[:, ch], decoded[RATE : 6 * RATE, ch])
        assert corr >= 0.99, (ch, corr)

    # live = render: the recorded engine input rendered offline gives the recorded output
    live_out, _ = sf.read(out, dtype="float32", always_2d=True)
    render(inp, tmp_path / "render.wav", Chain([load_plugin("mp3-restore-48k")]), block=BLOCK,
           rate_out=RATE, progress=False)  # fmt: skip
    offline, _ = sf.read(tmp_path / "render.wav", dtype="float32", always_2d=True)
    lat = r["latency"]
    engine_lag = round(lat["reblock"] + lat["resample"] + lat["plugin"])
    n = len(live_out) - engine_lag
    np.testing.assert_array_equal(offline[:n], live_out[engine_lag:])

    # restored: energy back above the MP3's low-pass, where the input is near silent
    lag = aligned_correlation(live_in[:, 0], decoded[RATE : 6 * RATE, 0])[0] - RATE
    start = max(lag, 0) + RATE // 2
    span = slice(start, start + 8 * RATE)
    gain_hf = band_db(live_out[span], 16000, 20000) - band_db(live_in[span], 16000, 20000)
    gain_lf = band_db(live_out[span], 200, 4000) - band_db(live_in[span], 200, 4000)
    assert gain_hf > 10.0 and abs(gain_lf) < 1.0, (gain_hf, gain_lf)

    # the listener's sink received the engine output
    heard, _ = sf.read(listener, dtype="float32", always_2d=True)
    _, corr, _, _ = aligned_correlation(heard[:, 0], live_out[start : start + 4 * RATE, 0])
    assert corr >= 0.99, corr
