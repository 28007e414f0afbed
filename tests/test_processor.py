"""Re-blocking, overlap-add and edge resampling: output equals the offline computation and the
declared latency equals the measured delay, for random device blocks and plugin multiples."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from plugins import Fir, Gain

from realtime.chain import Chain
from realtime.contract import PluginError
from realtime.loader import load_plugin
from realtime.ola import OverlapAdd, window
from realtime.processor import Processor


def stream(proc: Processor, x: np.ndarray) -> np.ndarray:
    b = proc.block
    pad = (-len(x)) % b
    x = np.concatenate([x, np.zeros((pad, x.shape[1]), np.float32)])
    return np.concatenate([proc.process(x[i : i + b]).copy() for i in range(0, len(x), b)])


def delayed(x: np.ndarray, d: int, n: int) -> np.ndarray:
    """``x`` delayed by ``d`` frames, zero-padded or cut to ``n`` frames."""
    y = np.concatenate([np.zeros((d, x.shape[1]), x.dtype), x, np.zeros((n, x.shape[1]), x.dtype)])
    return y[:n]


@settings(max_examples=40, deadline=None)
@given(
    block=st.integers(1, 512),
    multiple=st.integers(1, 160),
    delay=st.integers(0, 40),
    channels=st.integers(1, 2),
)
def test_identity_through_reblocking_is_an_exact_delay(block, multiple, delay, channels):
    plugin = Fir([1.0], block_multiple=multiple) if channels == 1 else None
    if plugin is None:
        plugin = Gain(16000, 1.0, delay, channels)
        plugin.block_multiple = multiple
        delay_declared = delay
    else:
        delay_declared = 0
    chain = Chain([load_plugin(plugin)])
    proc = Processor(chain, rate_in=16000, rate_out=16000, block=block)
    x = np.random.default_rng(block).standard_normal((3 * (block + multiple) + 50, channels))
    x = x.astype(np.float32)
    y = stream(proc, x)[: len(x)]
    lat = proc.latency
    assert lat.resample == 0 and lat.plugin == delay_declared
    assert lat.reblock <= multiple - 1  # never more than the physics of re-blocking needs
    np.testing.assert_array_equal(y, delayed(x, int(lat.total), len(y)))


@settings(max_examples=30, deadline=None)
@given(
    block=st.integers(1, 400),
    multiple=st.sampled_from([1, 2, 8, 32, 64]),
    taps=st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=24),
)
def test_fir_equals_offline_convolution(block, multiple, taps):
    chain = Chain([load_plugin(Fir(taps, block_multiple=multiple))])
    proc = Processor(chain, rate_in=16000, rate_out=16000, block=block)
    x = np.random.default_rng(7).standard_normal((2000, 1)).astype(np.float32)
    y = stream(proc, x)[: len(x)]
    ref = np.convolve(x[:, 0], np.asarray(taps, np.float32))[: len(x)][:, None]
    np.testing.assert_allclose(y, delayed(ref, int(proc.latency.total), len(y)), atol=2e-5)


def test_reblocking_latency_is_the_minimum():
    # device block 256 against a plugin needing 96: priming = 96 - gcd(256, 96) = 64
    chain = Chain([load_plugin(Fir([1.0], block_multiple=96))])
    assert Processor(chain, rate_in=16000, rate_out=16000, block=256).latency.reblock == 64
    assert Processor(chain, rate_in=16000, rate_out=16000, block=192).latency.reblock == 0


def measure_lag(x: np.ndarray, y: np.ndarray) -> float:
    """Delay of ``y`` against ``x``, samples, by cross-correlation with parabolic refinement."""
    n = len(x) + len(y)
    c = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)[: len(y)]
    k = int(np.argmax(c))
    a, b, d = c[k - 1], c[k], c[k + 1]
    return k + 0.5 * (a - d) / (a - 2 * b + d)


def bandlimited_noise(n: int, rate: int, top_hz: float, seed: int = 0) -> np.ndarray:
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spec[np.fft.rfftfreq(n, 1 / rate) > top_hz] = 0
    x = np.fft.irfft(spec, n)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize(
    ("device", "block"), [(16000, 256), (48000, 256), (44100, 441), (8000, 80), (16000, 100)]
)
def test_declared_latency_matches_measured_across_edge_resampling(device, block):
    chain = Chain([load_plugin("resample-8k-16k")])
    proc = Processor(chain, rate_in=device, rate_out=device, block=block)
    x = bandlimited_noise(device, device, 3000.0)
    y = stream(proc, x[:, None])[:, 0]
    assert len(y) >= len(x)
    measured = measure_lag(x, y)
    assert abs(measured - proc.latency.total) <= 0.3, (measured, proc.latency)


class Windowed:
    """A window-based plugin: ``x·|x|`` on each frame (nonlinear, so only an exact OLA matches
    the offline one), or the identity."""

    streaming = False
    channels = 1
    latency = 0
    block_multiple = 1
    parameter_names, parameter_min, parameter_max, parameter_default = [], [], [], []

    def __init__(self, window: int, hop: int, shape: str, identity: bool = False) -> None:
        self.window, self.hop, self.window_shape = window, hop, shape
        self.identity = identity
        rate = 16000
        self.sample_rate_in = self.sample_rate_out = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone() if self.identity else x * x.abs()

    __call__ = forward

    def reset(self) -> None:
        pass

    def set_parameter(self, name: str, value: float) -> None:
        pass


def offline_ola(x: np.ndarray, w: int, h: int, shape: str) -> np.ndarray:
    """Reference: frames ending at every hop boundary, first one primed with w - h zeros."""
    xp = np.concatenate([np.zeros(w - h), x])
    syn = window(shape, w)
    ana = window("sqrt_hann", w) if shape == "sqrt_hann" else np.ones(w)
    eff = syn * syn if shape == "sqrt_hann" else syn
    gain = np.sum(eff) / h  # the COLA constant
    out = np.zeros(len(xp) + w)
    for start in range(0, len(xp) - w + 1, h):
        f = xp[start : start + w] * ana
        out[start : start + w] += f * np.abs(f) * syn / gain
    return out[: len(x)]


@settings(max_examples=15, deadline=None)
@given(
    w_exp=st.integers(3, 8),
    overlap=st.sampled_from([2, 4]),
    shape=st.sampled_from(["hann", "sqrt_hann"]),
    block=st.integers(1, 600),
)
def test_overlap_add_equals_offline_ola(w_exp, overlap, shape, block):
    w = 2**w_exp
    h = w // overlap
    chain = Chain([load_plugin(Windowed(w, h, shape))])
    proc = Processor(chain, rate_in=16000, rate_out=16000, block=block)
    x = np.random.default_rng(w + block).standard_normal(3 * w + 2 * block).astype(np.float32)
    y = stream(proc, x[:, None])[:, 0]
    assert chain.latency == w - h
    ref = offline_ola(x, w, h, shape)
    d = int(proc.latency.total) - (w - h)  # re-blocking part; OLA's own w - h is in ref
    n = len(x) - w  # the reference has no frames past the end of x
    np.testing.assert_allclose(y[d : d + n], ref[:n], atol=1e-4)


def test_identity_ola_reconstructs_input():
    w, h = 256, 64
    chain = Chain([load_plugin(Windowed(w, h, "hann", identity=True))])
    proc = Processor(chain, rate_in=16000, rate_out=16000, block=h)
    x = np.random.default_rng(0).standard_normal((4000, 1)).astype(np.float32)
    y = stream(proc, x)
    lat = int(proc.latency.total)
    assert lat == w - h
    np.testing.assert_allclose(y[lat + w :], x[w : len(y) - lat], atol=1e-5)


def test_non_cola_window_is_refused():
    bad = Windowed(256, 192, "hann")
    with pytest.raises(PluginError, match="not COLA"):
        OverlapAdd(bad, load_plugin(bad, probe=False).info)


def test_torchscript_fir_streams_through_the_processor():
    fir = torch.jit.script(Fir([0.5, -0.25, 0.125], block_multiple=4))
    proc = Processor(Chain([load_plugin(fir)]), rate_in=16000, rate_out=16000, block=6)
    x = np.random.default_rng(3).standard_normal((600, 1)).astype(np.float32)
    y = stream(proc, x)[: len(x)]
    ref = np.convolve(x[:, 0], [0.5, -0.25, 0.125])[: len(x)][:, None].astype(np.float32)
    np.testing.assert_allclose(y, delayed(ref, int(proc.latency.total), len(y)), atol=1e-6)


def test_warm_up_leaves_the_path_as_reset():
    """Blocks of silence run through every stage (re-blocker, both edge resamplers, the shipped
    wavelet U-Net, whose caches silence does not clear: its biases), then the state is back at
    the start: the stream is the same as without a warm-up."""
    x = np.random.default_rng(4).standard_normal((4800, 1)).astype(np.float32) * 0.1

    def run(warm: bool) -> np.ndarray:
        proc = Processor(
            Chain([load_plugin("bwe-8k-16k")]), rate_in=44100, rate_out=48000, block=441
        )
        stream(proc, x[:882])  # leave state behind, as a previous run would
        if warm:
            proc.warm_up()
        else:
            proc.reset()
        return stream(proc, x)

    np.testing.assert_array_equal(run(True), run(False))
