"""Degradations: shapes, rates, seeding, the band really removed, μ-law, MP3 alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.degrade import (
    BAND_16K,
    FILTER_KINDS,
    DegradeConfig,
    DegradeParams,
    apply_params,
    degrade_band,
    draw_dull,
    dull,
    mp3_roundtrip,
    mulaw_decode,
    mulaw_encode,
    sample_params,
)

CLEAN = DegradeConfig(telephone_p=0.0, mulaw_p=0.0)


def noise(batch: int = 2, n: int = 16000, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, 1, n, generator=gen)


def tone(freq: float, n: int = 16000, rate: int = 16000) -> torch.Tensor:
    return torch.sin(2 * np.pi * freq * torch.arange(n, dtype=torch.float64) / rate).float()[
        None, None
    ]


def level_db(y: torch.Tensor, freq: float, rate: int = 8000) -> float:
    """Level of a tone at ``freq`` Hz (Hann-windowed DFT peak near it), dB re a unit sine."""
    sig = y.flatten().double().numpy()[1000:-1000]
    win = np.hanning(len(sig))
    spec = np.abs(np.fft.rfft(sig * win)) / (win.sum() / 2)
    k = round(freq * len(sig) / rate)
    return 20 * np.log10(spec[k - 3 : k + 4].max() + 1e-12)


def test_shapes_rates_dtype() -> None:
    y = degrade_band(noise(3, 16001), 0)
    assert y.shape == (3, 1, 8000) and y.dtype == torch.float32
    stereo = degrade_band(noise(2, 4800).expand(2, 2, 4800), 0, BAND_16K)
    assert stereo.shape == (2, 2, 1600)
    with pytest.raises(ValueError, match="batch, channels, time"):
        degrade_band(torch.zeros(2, 16000), 0)


def test_dull_is_a_zero_phase_first_order_low_pass() -> None:
    """-3 dB at the cut-off, -6 dB per octave above it (bilinear: steeper towards Nyquist),
    nothing below, no delay; the cut-offs drawn cover 1-8 kHz."""
    rate, fc = 16000, 1000.0
    for freq, expect in ((200.0, -0.2), (1000.0, -3.0), (2000.0, -7.3), (4000.0, -14.2)):
        x = tone(freq)
        y = dull(x, fc, rate)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert level_db(y, freq, rate) == pytest.approx(expect, abs=0.3), freq
    low = tone(200.0)
    mid = slice(1000, -1000)
    gain = float((dull(low, fc, rate)[..., mid] * low[..., mid]).sum() / low[..., mid].pow(2).sum())
    assert gain == pytest.approx(0.98, abs=0.01)  # in phase: the projection keeps the level
    cuts = [draw_dull(np.random.default_rng(s)) for s in range(200)]
    assert 1000 <= min(cuts) < 1300 and 6000 < max(cuts) <= 8000


def test_seeded() -> None:
    x = noise(4)
    assert torch.equal(degrade_band(x, 7), degrade_band(x, 7))
    assert not torch.equal(degrade_band(x, 7), degrade_band(x, 8))
    kinds = {sample_params(np.random.default_rng(s)).kind for s in range(60)}
    assert kinds == set(FILTER_KINDS)


def test_aligned_with_input() -> None:
    """Sample k of the output is input sample 2k: a 500 Hz tone comes out in phase."""
    x = tone(500.0)
    y = degrade_band(x, 3, CLEAN)
    ref = x[..., ::2]
    err = (y - ref)[..., 500:-500].abs().max()
    assert err < 0.02


@pytest.mark.parametrize("seed", range(12))
def test_passband_kept_and_aliases_removed(seed: int) -> None:
    """Any drawn filter keeps 1 kHz (±1 dB) and removes a 6 kHz tone (its 2 kHz alias) ≥ 30 dB."""
    params = sample_params(np.random.default_rng(seed), CLEAN)
    y = apply_params(tone(1000.0) + tone(6000.0), [params])
    assert abs(level_db(y, 1000.0)) < 1.0, params
    assert level_db(y, 2000.0) < -30.0, params


@pytest.mark.parametrize(
    ("params", "max_db"),
    [
        (DegradeParams("fir_blackman", 3500.0, 256), -40.0),
        (DegradeParams("fir_kaiser", 3500.0, 256, kaiser_beta=8.0), -40.0),
        (DegradeParams("fir_hann", 3500.0, 256), -30.0),
        (DegradeParams("fir_hamming", 3500.0, 256), -30.0),
        (DegradeParams("butter", 3500.0, 12), -12.0),  # 12th order: −12.9 dB at 3.8 kHz
        (DegradeParams("cheby1", 3500.0, 10, ripple_db=0.5), -25.0),  # −29.7 dB at 3.8 kHz
    ],
    ids=["fir_blackman", "fir_kaiser", "fir_hann", "fir_hamming", "butter", "cheby1"],
)
def test_band_above_cutoff_removed(params: DegradeParams, max_db: float) -> None:
    """Measured spectrum of the 8 kHz output: 3.8–3.95 kHz at least ``-max_db`` dB below the
    0.3–3 kHz band (the design's attenuation there)."""
    y = apply_params(noise(1, 64000), [params])[0, 0].double().numpy()
    frames = np.lib.stride_tricks.sliding_window_view(y, 1024)[::512] * np.hanning(1024)
    psd = np.mean(np.abs(np.fft.rfft(frames, axis=-1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(1024, 1 / 8000)
    passband = psd[(freqs > 300) & (freqs < 3000)].mean()
    stop = psd[(freqs > 3800) & (freqs < 3950)].mean()
    assert 10 * np.log10(stop / passband) < max_db


def test_telephone_band() -> None:
    params = DegradeParams("butter", 3900.0, 8, telephone=True)
    y = apply_params(tone(100.0) + tone(1000.0) + tone(3700.0), [params])
    assert abs(level_db(y, 1000.0)) < 1.0
    assert level_db(y, 100.0) < -20.0
    assert level_db(y, 3700.0) < -10.0


def test_mulaw_round_trip_bound() -> None:
    x = torch.linspace(-1, 1, 20001)
    code = mulaw_encode(x)
    assert code.dtype == torch.uint8 and int(code.min()) == 0 and int(code.max()) == 255
    assert bool((code[1:] >= code[:-1]).all())
    err = (mulaw_decode(code) - x).abs()
    # half a quantisation step in the companded domain, mapped back: ln(256)/255·(|x| + 1/255)/2·2
    bound = np.log(256) / 255 * (x.abs() + 1 / 255) * 1.02
    assert bool((err <= bound).all())
    assert float(err[x.abs() < 0.01].max()) < 3e-4  # fine steps near zero


def test_mulaw_applied() -> None:
    y = degrade_band(noise(2), 0, DegradeConfig(mulaw_p=1.0, telephone_p=0.0))
    assert torch.equal(mulaw_decode(mulaw_encode(y)), y)


@pytest.mark.parametrize(
    ("rate", "kbps", "channels"), [(48000, 64, 2), (44100, 128, 1), (16000, 32, 1)]
)
def test_mp3_delay_removed(rate: int, kbps: int, channels: int) -> None:
    """Cross-correlation of decoded MP3 and input peaks at lag 0."""
    rng = np.random.default_rng(0)
    x = np.convolve(rng.standard_normal(rate), np.ones(6) / 6, mode="same") * 0.3
    x = np.stack([x, np.roll(x, 3)], axis=1) if channels == 2 else x
    y = mp3_roundtrip(x, rate, kbps)
    assert y.shape == x.shape and y.dtype == np.float32
    a, b = (x[:, 0], y[:, 0]) if channels == 2 else (x, y)
    n = 2 * len(a)
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    lags = np.r_[0:200, -200:0]
    assert lags[np.argmax(corr[lags])] == 0
    assert 10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2)) > 3.0  # coded, not noise
