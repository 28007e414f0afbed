"""The live engine on a real-time clock (the file backend's clock thread): threaded and inline
output equal the offline computation, misses crossfade without clicks and recover, bad input
is counted, and the declared engine latency is the measured one."""

import itertools
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from plugins import Fir, Gain, Slow

from realtime.chain import Chain
from realtime.engine import Engine
from realtime.io.backend import open_duplex
from realtime.loader import load_plugin
from realtime.processor import Processor

RATE, BLOCK = 16000, 256


def sine(seconds: float, freq: float = 200.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def live(tmp_path, x, plugin, *, mode="threaded", margin=0, adaptive=True):
    """Stream ``x`` through ``plugin`` in real time; return (output, engine, stream)."""
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, RATE, subtype="FLOAT")
    proc = Processor(Chain([load_plugin(plugin)]), rate_in=RATE, rate_out=RATE, block=BLOCK)
    engine = Engine(proc, mode=mode, margin_blocks=margin, adaptive=adaptive)
    stream = open_duplex(
        engine.callback,
        backend="file",
        samplerate=RATE,
        blocksize=BLOCK,
        input_file=src,
        output_file=dst,
    )
    engine.start()
    stream.start()
    assert stream.finished.wait(len(x) / RATE + 10)
    stream.stop()
    stream.close()
    engine.stop()
    return sf.read(dst, dtype="float32")[0], engine, stream


@pytest.mark.parametrize(("mode", "margin"), [("threaded", 0), ("threaded", 2), ("inline", 0)])
def test_live_output_is_the_offline_fir_delayed_by_the_declared_latency(tmp_path, mode, margin):
    x = np.random.default_rng(0).standard_normal(RATE * 2).astype(np.float32) * 0.1
    taps = [0.5, 0.3, -0.2, 0.1]
    y, engine, stream = live(
        tmp_path, x, torch.jit.script(Fir(taps, latency=2)), mode=mode, margin=margin
    )
    assert engine.counters.misses == 0 and stream.xruns.get("output_underflow", 0) == 0
    lat = engine.latency()
    expected_delay = 2 + (BLOCK * (1 + margin) if mode == "threaded" else 0)
    assert lat.engine == expected_delay and engine.delay == expected_delay
    ref = np.convolve(x, taps)[: len(x)]
    shift = expected_delay - 2  # the FIR's own 2 samples are a declaration, not a real delay
    np.testing.assert_allclose(y[shift:], ref[: len(y) - shift], atol=1e-6)


def test_overload_misses_are_counted_crossfaded_and_recovered(tmp_path):
    x = sine(4.0)
    slow = Slow(RATE, factor=3.0, every=10, block=BLOCK, gain=0.5)  # wet ≠ dry: a switch clicks
    y, engine, _ = live(tmp_path, x, slow, adaptive=False)
    c = engine.counters
    stalls = slow.calls // 10
    assert stalls >= 20
    assert c.callbacks == -(-len(x) // BLOCK)  # the stream never stopped
    assert stalls <= c.misses <= 6 * stalls  # each stall costs a few blocks, all counted
    dry_slope = 0.5 * 2 * np.pi * 200 / RATE  # largest sample-to-sample step of the input
    assert np.max(np.abs(np.diff(y))) < 1.6 * dry_slope  # no click at any switch
    # recovery: after every stall the output returns to wet (half the delayed input)
    d = engine.delay
    wet = 0.5 * np.concatenate([np.zeros(d, np.float32), x])[: len(y)]
    is_wet = [
        np.max(np.abs(y[i : i + BLOCK] - wet[i : i + BLOCK])) < 1e-6
        for i in range(2 * BLOCK, len(y) - BLOCK, BLOCK)
    ]
    recoveries = sum(1 for a, b in itertools.pairwise(is_wet) if not a and b)
    assert recoveries >= stalls - 2
    assert np.mean(is_wet) > 0.5


def test_nan_input_is_sanitized_and_counted_live(tmp_path):
    x = sine(1.0)
    x[[100, 4000, 4001]] = [np.nan, np.inf, -np.inf]
    y, engine, _ = live(tmp_path, x, torch.jit.script(Fir([1.0])))
    assert engine.counters.nonfinite_input == 3
    assert np.isfinite(y).all()


def test_adaptive_margin_absorbs_repeated_stalls(tmp_path):
    x = sine(4.0)
    slow = Slow(RATE, factor=3.0, every=10, block=BLOCK, gain=0.5)
    y, engine, _ = live(tmp_path, x, slow)
    c = engine.counters
    stalls = slow.calls // 10
    changes = engine.margin_changes()
    assert changes and changes[-1][1] == engine.grown <= 8 * BLOCK
    assert engine.grown >= 2 * BLOCK  # a 3-block stall needs 2 more blocks of margin
    assert c.misses < stalls / 2  # once grown, the later stalls cost nothing
    assert engine.latency().margin == engine.grown
    dry_slope = 0.5 * 2 * np.pi * 200 / RATE
    assert np.max(np.abs(np.diff(y))) < 1.6 * dry_slope
    # after the last change: wet, delayed by the grown engine latency (declared = real)
    d = engine.delay
    assert d == engine.latency().engine
    start = int((changes[-1][0] + 0.5) * RATE)
    wet = 0.5 * np.concatenate([np.zeros(d, np.float32), x])[: len(y)]
    np.testing.assert_allclose(y[start:], wet[start:], atol=1e-6)


class Stall(Slow):
    """A gain that sleeps ``seconds`` once, on its ``at``-th call after a reset."""

    def __init__(self, rate: int, seconds: float, at: int, gain: float = 0.5) -> None:
        super().__init__(rate, gain=gain)
        self.seconds, self.at = seconds, at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            time.sleep(self.seconds)
        return x * self.gain

    __call__ = forward


def test_a_stall_longer_than_the_input_ring_keeps_the_timeline(tmp_path):
    """The worker stalls 1.5 s, longer than its 64-block input ring holds: input is dropped
    (counted), the blocks it would have made play dry, and the wet path comes back on the
    timeline the report declares, without a click and without stale wet audio."""
    x = sine(5.0)
    stall = Stall(RATE, seconds=1.5, at=40)
    y, engine, _ = live(tmp_path, x, stall)
    c = engine.counters
    assert c.dropped_input > 0 and c.callbacks == -(-len(x) // BLOCK)
    dry_slope = 0.5 * 2 * np.pi * 200 / RATE
    assert np.max(np.abs(np.diff(y))) < 1.6 * dry_slope  # no click at any switch
    d = engine.delay
    assert d == engine.latency().engine
    wet = 0.5 * np.concatenate([np.zeros(d, np.float32), x])[: len(y)]
    back = int(2.5 * RATE)  # well after the stall and the catch-up
    np.testing.assert_allclose(y[back:], wet[back:], atol=1e-6)


KERNELS = ("ring_write", "ring_read", "sanitize", "count_nonfinite", "polyphase", "delay_line",
           "crossfade", "declick")  # fmt: skip


@pytest.mark.parametrize(("channels", "device_rate"), [(1, RATE), (2, 48000)])
def test_no_kernel_compiles_on_the_audio_path(tmp_path, channels, device_rate):
    """After the engine is built, running it (misses, NaN input, edge resampling, recording, a
    stereo plugin whose output is Fortran-ordered) compiles no new numba signature: a compile
    holds the GIL for a second or more (in CI it stalled a stereo run's worker for 2.3 s)."""
    from realtime import kernels
    from realtime.recorder import Recorder

    gain = torch.jit.script(Gain(rate=RATE, gain=0.5, channels=channels))
    # the worker stalls every 10th block, so misses (crossfades, declicks) happen for sure: a
    # fast plugin alone kept up with the back-to-back callbacks in a CI run, and nothing missed
    slow = Slow(RATE, factor=3.0, every=10, block=BLOCK, channels=channels)
    proc = Processor(Chain([load_plugin(gain), load_plugin(slow)]), rate_in=device_rate,
                     rate_out=device_rate, block=BLOCK)  # fmt: skip
    rec = Recorder(device_rate, channels, str(tmp_path / "in.wav"), str(tmp_path / "out.wav"))
    engine = Engine(proc, on_block=rec.write)
    compiled = {k: len(getattr(kernels, k).signatures) for k in KERNELS}
    engine.start()
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (BLOCK, channels)).astype(np.float32)
    x[3, 0] = np.nan
    out = np.zeros((BLOCK, channels), np.float32)
    for i in range(40):
        engine.callback(x, out, 0)
        time.sleep(0 if i < 4 else 0.01)  # the first blocks back to back, as a device pre-fills
    engine.stop()
    rec.close()
    assert engine.counters.misses + engine.counters.startup_misses > 0
    assert engine.counters.nonfinite_input == 40
    assert {k: len(getattr(kernels, k).signatures) for k in KERNELS} == compiled
