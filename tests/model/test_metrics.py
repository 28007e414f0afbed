"""Metrics on signals with known answers, and the two baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.baselines import cubic_spline, sinc
from model.metrics import all_metrics, lsd, mean_over_files, si_sdr, snr

RATE = 16000


def noise(n: int = RATE, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal(n)


def test_identical() -> None:
    x = noise()
    m = all_metrics(x, x.copy(), RATE, 8000)
    assert m["lsd"] == 0.0 and m["lsd_hf"] == 0.0
    assert m["snr"] == math.inf and m["si_sdr"] == math.inf


def test_gain_of_ten_is_lsd_two() -> None:
    """×10 in amplitude is +2 in log10 power in every bin: LSD = LSD-HF = 2."""
    x = noise()
    assert lsd(x, 10 * x, RATE) == pytest.approx(2.0, abs=1e-6)
    assert lsd(x, 10 * x, RATE, hf_from_hz=4000) == pytest.approx(2.0, abs=1e-6)
    assert snr(x, 10 * x) == pytest.approx(10 * math.log10(1 / 81))


def test_lsd_hf_counts_only_the_high_band() -> None:
    """High band ×10, low band untouched: LSD-HF ≈ 2, LSD ≈ 2·sqrt(512/1025) (bins 513–1024)."""
    x = noise(4 * RATE)
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / RATE) > 4000] *= 10
    y = np.fft.irfft(spec, len(x))
    assert lsd(x, y, RATE, hf_from_hz=4000) == pytest.approx(2.0, abs=0.05)
    assert lsd(x, y, RATE) == pytest.approx(2 * math.sqrt(512 / 1025), abs=0.05)


def test_lsd_matches_torch_stft_convention() -> None:
    """Same numbers as torch.stft (periodic Hann 2048, hop 512, centred, reflect padding)."""
    x, y = noise(seed=1), noise(seed=2)

    def power(s: np.ndarray) -> torch.Tensor:
        spec = torch.stft(
            torch.from_numpy(s),
            2048,
            512,
            window=torch.hann_window(2048, dtype=torch.float64),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        return spec.abs() ** 2 + 1e-10  # (freq, frames)

    diff = torch.log10(power(x)) - torch.log10(power(y))
    expected = diff.pow(2).mean(0).sqrt().mean().item()
    assert lsd(x, y, RATE) == pytest.approx(expected, rel=1e-9)


def test_snr_known_noise_level() -> None:
    t = np.arange(4 * RATE) / RATE
    x = np.sin(2 * np.pi * 440 * t)  # power 0.5
    y = x + noise(len(t), seed=3, scale=0.05)  # noise power 0.0025: 23.01 dB
    assert snr(x, y) == pytest.approx(10 * math.log10(0.5 / 0.0025), abs=0.1)
    assert si_sdr(x, y) == pytest.approx(10 * math.log10(0.5 / 0.0025), abs=0.1)


def test_si_sdr_scale_invariant() -> None:
    x = noise(seed=4)
    y = x + noise(seed=5, scale=0.01)
    assert si_sdr(x, 0.3 * y) == pytest.approx(si_sdr(x, y), abs=1e-9)
    assert si_sdr(x, 0.3 * x) > 200.0  # exact up to rounding
    assert snr(x, 0.5 * x) == pytest.approx(10 * math.log10(1 / 0.25))


def test_bad_shapes_and_silence() -> None:
    with pytest.raises(ValueError, match="equal length"):
        snr(np.zeros(10), np.zeros(11))
    with pytest.raises(ValueError, match="silent"):
        si_sdr(np.zeros(100), noise(100))


def test_mean_over_files() -> None:
    m = mean_over_files([{"lsd": 1.0, "snr": 10.0}, {"lsd": 3.0, "snr": 20.0}])
    assert m == {"lsd": 2.0, "snr": 15.0}


def test_sinc_baseline_band_limited_and_aligned() -> None:
    x = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    y = sinc(x, 8000, 16000)
    assert y.shape == (16000,)
    ref = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(y - ref)[400:-400].max() < 1e-4
    assert sinc(x[:1600], 16000, 48000).shape == (4800,)


def test_cubic_spline_interpolates_and_reproduces_cubics() -> None:
    x = noise(1000)
    y = cubic_spline(x, 8000, 16000)
    assert y.shape == (2000,)
    np.testing.assert_allclose(y[::2], x, atol=1e-6)
    t = np.arange(300) / 300.0
    poly = 1 + t - 2 * t**2 + 0.5 * t**3
    y = cubic_spline(poly, 16000, 48000)
    expected = np.polyval([0.5, -2, 1, 1], np.arange(900) / 900.0)
    np.testing.assert_allclose(y[150:-150], expected[150:-150], atol=1e-6)
