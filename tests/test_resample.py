"""Streaming polyphase resampler: exact counts, exact declared delay, band-limiting."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.resample import Resampler

RATES = [
    (8000, 16000),
    (16000, 8000),
    (16000, 48000),
    (48000, 16000),
    (44100, 48000),
    (48000, 44100),
    (16000, 16000),
]


def _run(res: Resampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    outs, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        outs.append(res.process(x[i : i + n]).copy())
        i, k = i + n, k + 1
    return np.concatenate(outs)


@settings(max_examples=25, deadline=None)
@given(pair=st.sampled_from(RATES), sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8))
def test_chunking_does_not_change_the_output(pair, sizes):
    a, b = pair
    x = np.random.default_rng(1).standard_normal((a // 4, 1)).astype(np.float32)
    whole = _run(Resampler(a, b), x, [len(x)])
    chunked = _run(Resampler(a, b), x, sizes)
    assert len(whole) == len(chunked) == -(-len(x) * b // a)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


@pytest.mark.parametrize(("a", "b"), RATES)
def test_declared_delay_is_the_measured_delay(a, b):
    res = Resampler(a, b)
    f = 500.0
    x = np.sin(2 * np.pi * f * np.arange(a) / a).astype(np.float32)[:, None]
    y = _run(res, x, [256])[:, 0]
    t = (np.arange(len(y)) - res.delay) / b
    ref = np.sin(2 * np.pi * f * t)
    steady = slice(b // 10, len(y) - b // 10)
    assert np.max(np.abs(y[steady] - ref[steady])) < 1e-4


def test_images_are_rejected_when_upsampling():
    # a 3 kHz tone at 8 kHz upsampled to 16 kHz must not leave its 5 kHz image
    a, b = 8000, 16000
    x = np.sin(2 * np.pi * 3000 * np.arange(a) / a).astype(np.float32)[:, None]
    y = _run(Resampler(a, b), x, [160])[2000:, 0]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / b)
    tone = spec[np.argmin(np.abs(freqs - 3000))]
    image = spec[np.argmin(np.abs(freqs - 5000))]
    assert 20 * np.log10(image / tone) < -60


@settings(max_examples=25, deadline=None)
@given(
    pair=st.sampled_from(RATES),
    sizes=st.lists(st.integers(1, 300), min_size=2, max_size=12),
    pushes=st.lists(st.booleans(), min_size=2, max_size=12),
)
def test_push_keeps_the_resampler_ready_to_take_over(pair, sizes, pushes):
    a, b = pair
    x = np.random.default_rng(2).standard_normal((3000, 1)).astype(np.float32)
    full, lazy = Resampler(a, b), Resampler(a, b)
    i = k = 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        want = full.process(x[i : i + n]).copy()
        if pushes[k % len(pushes)]:
            lazy.push(x[i : i + n])
        else:
            np.testing.assert_allclose(lazy.process(x[i : i + n]), want, atol=1e-6)
        i, k = i + n, k + 1
