"""On-the-fly degradations: band limitation (wideband → narrowband) and real MP3 coding.

Band limitation (:func:`degrade_band`, e.g. 16 → 8 kHz with :data:`BAND_8K`, 48 → 16 kHz with
:data:`BAND_16K`): for each example, one anti-aliasing low-pass drawn at random from several
designs (windowed-sinc FIR with Hann / Hamming / Blackman / Kaiser windows and 32–256 taps;
Butterworth order 4–12; Chebyshev type I order 4–10 with 0.05–1 dB ripple), a cut-off uniform in
the config's range (3.4–4 kHz for 8 kHz outputs), decimation by the config's factor, then
optionally a telephone band-pass (300–3400 Hz) and optionally G.711-style μ-law companding
(μ = 255, 8 bits). Every filter is applied with zero phase (its magnitude response, in the DFT
domain over a zero-padded signal) so the narrowband input stays sample-aligned with the target:
output sample ``k`` is input sample ``factor * k``. All the random choices come from a seeded
:class:`numpy.random.Generator`, so a seed fixes the batch.

MP3 (:func:`mp3_roundtrip`, :func:`degrade_mp3`): LAME (lameenc) CBR encoding at a given (or
random) bitrate, joint stereo for two channels (LAME's default mode), decoding with soundfile,
and removal of the encoder + decoder delay (:data:`MP3_DELAY` samples) so the decoded signal
lines up with the input sample for sample.

Dull references (:func:`dull`, training only, ``wavehost train --dull P``): real recordings differ
in spectral tilt (microphone, room, an earlier low-pass), and a network trained only on bright
ones fills a dull recording's missing band at the level a bright one would have. With
probability ``P`` a training reference passes, before its degradation, through the magnitude of
a first-order low-pass (−6 dB per octave) with a cut-off drawn log-uniformly in
:data:`DULL_CUTOFF_HZ`; input and target both come from the dulled reference.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

RATE_WIDE = 16000
FILTER_KINDS = ("fir_hann", "fir_hamming", "fir_blackman", "fir_kaiser", "butter", "cheby1")
MU = 255.0
_PAD_S = 0.064  # zero padding on each side before the DFT-domain filter, seconds
DULL_CUTOFF_HZ = (1000.0, 8000.0)
MP3_KBPS = (64, 80, 96, 112, 128, 160, 192)  # LAME's CBR bitrates in the range of issue 6
LAME_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)  # MPEG-1 layer III


@dataclass(frozen=True)
class DegradeConfig:
    """Ranges of a random band-limiting degradation (frequencies in Hz, probabilities in 0–1).

    ``rate``: the wideband rate (Hz); ``factor``: the decimation (narrowband rate = rate / factor).
    The defaults are the 16 → 8 kHz telephone case (:data:`BAND_8K`).
    """

    cutoff_hz: tuple[float, float] = (3400.0, 4000.0)
    kinds: tuple[str, ...] = FILTER_KINDS
    telephone_p: float = 0.25
    mulaw_p: float = 0.25
    rate: int = RATE_WIDE
    factor: int = 2


BAND_8K = DegradeConfig()
# 48 -> 16 kHz: a wideband call or a 16 kHz stream, no telephone band, no companding
BAND_16K = DegradeConfig(
    cutoff_hz=(7000.0, 8000.0), telephone_p=0.0, mulaw_p=0.0, rate=48000, factor=3
)


@dataclass(frozen=True)
class DegradeParams:
    """One example's degradation. ``order``: FIR taps − 1, or IIR order; ``ripple_db`` and
    ``kaiser_beta`` only for ``cheby1`` / ``fir_kaiser``."""

    kind: str
    cutoff_hz: float
    order: int
    ripple_db: float = 0.0
    kaiser_beta: float = 0.0
    telephone: bool = False
    mulaw: bool = False


def sample_params(rng: np.random.Generator, config: DegradeConfig = BAND_8K) -> DegradeParams:
    """Draw one example's degradation from ``config``."""
    kind = str(rng.choice(config.kinds))
    cutoff = float(rng.uniform(*config.cutoff_hz))
    ripple = beta = 0.0
    if kind.startswith("fir"):
        order = 2 * int(rng.integers(16, 129))  # 33..257 taps, odd length (type I, zero phase)
        if kind == "fir_kaiser":
            beta = float(rng.uniform(4.0, 10.0))
    elif kind == "butter":
        order = int(rng.integers(4, 13))
    elif kind == "cheby1":
        order = int(rng.integers(4, 11))
        ripple = float(rng.uniform(0.05, 1.0))
    else:
        raise ValueError(f"unknown filter kind {kind!r}; choose from {FILTER_KINDS}")
    return DegradeParams(
        kind=kind,
        cutoff_hz=cutoff,
        order=order,
        ripple_db=ripple,
        kaiser_beta=beta,
        telephone=bool(rng.random() < config.telephone_p),
        mulaw=bool(rng.random() < config.mulaw_p),
    )


def _fir_window(kind: str, length: int, beta: float) -> np.ndarray:
    if kind == "fir_hann":
        return np.hanning(length)
    if kind == "fir_hamming":
        return np.hamming(length)
    if kind == "fir_blackman":
        return np.blackman(length)
    return np.kaiser(length, beta)


def _butter_mag(
    freq: np.ndarray, cutoff: float, order: int, rate: int, high: bool = False
) -> np.ndarray:
    """Magnitude of a bilinear-transformed Butterworth filter (−3 dB at ``cutoff`` Hz)."""
    warp = np.tan(np.pi * np.minimum(freq, rate / 2 * (1 - 1e-9)) / rate) / np.tan(
        np.pi * cutoff / rate
    )
    ratio = 1.0 / np.maximum(warp, 1e-12) if high else warp
    return 1.0 / np.sqrt(1.0 + ratio ** (2 * order))


def response(params: DegradeParams, n_fft: int, rate: int = RATE_WIDE) -> np.ndarray:
    """Zero-phase magnitude response of one example's filters on the ``rfft`` grid of ``n_fft``."""
    freq = np.fft.rfftfreq(n_fft, 1.0 / rate)
    fc = params.cutoff_hz
    if params.kind.startswith("fir"):
        m = params.order
        n = np.arange(m + 1) - m / 2
        h = (
            2
            * fc
            / rate
            * np.sinc(2 * fc / rate * n)
            * _fir_window(params.kind, m + 1, params.kaiser_beta)
        )
        h /= h.sum()
        centred = np.zeros(n_fft)
        centred[: m // 2 + 1] = h[m // 2 :]
        centred[n_fft - m // 2 :] = h[: m // 2]
        mag = np.fft.rfft(centred).real
    elif params.kind == "butter":
        mag = _butter_mag(freq, fc, params.order, rate)
    else:  # cheby1: equiripple passband up to fc, monotone stopband
        eps = math.sqrt(10 ** (params.ripple_db / 10) - 1)
        w = np.tan(np.pi * np.minimum(freq, rate / 2 * (1 - 1e-9)) / rate) / np.tan(
            np.pi * fc / rate
        )
        cheb = np.where(
            w <= 1,
            np.cos(params.order * np.arccos(np.minimum(w, 1.0))),
            np.cosh(params.order * np.arccosh(np.maximum(w, 1.0))),
        )
        mag = 1.0 / np.sqrt(1.0 + (eps * cheb) ** 2)
    if params.telephone:
        mag = (
            mag * _butter_mag(freq, 300.0, 4, rate, high=True) * _butter_mag(freq, 3400.0, 8, rate)
        )
    return mag


def mulaw_encode(x: torch.Tensor) -> torch.Tensor:
    """μ-law (μ = 255) companding and 8-bit quantisation: floats in [−1, 1] → codes 0..255."""
    y = torch.sign(x) * torch.log1p(MU * x.clamp(-1, 1).abs()) / math.log1p(MU)
    return torch.round((y + 1) / 2 * 255).to(torch.uint8)


def mulaw_decode(code: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`mulaw_encode`: codes 0..255 → floats in [−1, 1] (float32)."""
    y = code.to(torch.float32) / 255 * 2 - 1
    return torch.sign(y) * torch.expm1(y.abs() * math.log1p(MU)) / MU


def apply_params(
    x: torch.Tensor, params: list[DegradeParams], rate: int = RATE_WIDE, factor: int = 2
) -> torch.Tensor:
    """Degrade ``x`` (batch, channels, time) at ``rate`` Hz with one :class:`DegradeParams` per
    example (the same on all its channels).

    Returns (batch, channels, time // factor) float32 at ``rate / factor`` Hz; sample ``k`` lines
    up with input sample ``factor * k``.
    """
    if x.ndim != 3:
        raise ValueError(f"expected (batch, channels, time), got {tuple(x.shape)}")
    if len(params) != x.shape[0]:
        raise ValueError(f"{len(params)} parameter sets for a batch of {x.shape[0]}")
    t = x.shape[-1]
    y = _zero_phase(x, lambda n_fft: np.stack([response(p, n_fft, rate) for p in params]), rate)
    y = y[..., 0 : factor * (t // factor) : factor].contiguous()
    use_mulaw = torch.tensor([p.mulaw for p in params])
    if use_mulaw.any():
        y[use_mulaw] = mulaw_decode(mulaw_encode(y[use_mulaw]))
    return y.to(x.device)


def _zero_phase(x: torch.Tensor, mags: Callable[[int], np.ndarray], rate: int) -> torch.Tensor:
    """``x`` (batch, channels, time) at ``rate`` Hz through zero-phase filters: ``mags(n_fft)``
    gives one magnitude response per example, ``(batch or 1, n_fft // 2 + 1)``, applied in the
    DFT domain over the signal zero-padded by ``_PAD_S`` on each side. Float32 on the CPU."""
    t = x.shape[-1]
    pad = round(_PAD_S * rate)
    n_fft = t + 2 * pad
    gains = torch.from_numpy(mags(n_fft)).float()
    spec = torch.fft.rfft(torch.nn.functional.pad(x.detach().float().cpu(), (pad, pad)), n=n_fft)
    return torch.fft.irfft(spec * gains[:, None, :], n=n_fft)[..., pad : pad + t]


def dull(x: torch.Tensor, cutoff_hz: float, rate: int) -> torch.Tensor:
    """``x`` (batch, channels, time) at ``rate`` Hz through the magnitude of a first-order
    low-pass at ``cutoff_hz`` (−3 dB there, −6 dB per octave above), zero-phase, so it stays
    sample-aligned; float32 on ``x``'s device."""

    def gain(n_fft: int) -> np.ndarray:
        return _butter_mag(np.fft.rfftfreq(n_fft, 1.0 / rate), cutoff_hz, 1, rate)[None]

    return _zero_phase(x, gain, rate).to(x.device)


def draw_dull(rng: np.random.Generator) -> float:
    """A cut-off for :func:`dull`, Hz, log-uniform in :data:`DULL_CUTOFF_HZ`."""
    lo, hi = DULL_CUTOFF_HZ
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def degrade_band(
    x: torch.Tensor,
    rng: np.random.Generator | int | None = None,
    config: DegradeConfig = BAND_8K,
) -> torch.Tensor:
    """Random narrowband version of a batch at ``config.rate``: (batch, channels, time) →
    (batch, channels, time // config.factor).

    ``rng``: a generator (advanced in place) or a seed; the same seed gives the same output.
    """
    gen = _generator(rng)
    params = [sample_params(gen, config) for _ in range(x.shape[0])]
    return apply_params(x, params, config.rate, config.factor)


# LAME's encoder delay (576 + 529 samples) as soundfile's mpg123 decoder leaves it, at any rate
# LAME does not resample (we force the output rate to the input rate).
MP3_DELAY = 1105


def mp3_roundtrip(x: np.ndarray, rate: int, kbps: int, quality: int = 2) -> np.ndarray:
    """Encode ``x`` (time,) or (time, channels) in [−1, 1] to CBR MP3 and decode it back.

    The result has the shape of ``x`` (float32) and is delay-aligned with it sample for sample.
    Stereo uses LAME's default (joint stereo). ``kbps``: e.g. 64–320; ``rate``: an MPEG rate in Hz.
    """
    import lameenc  # the "train" extra: only MP3 degradation needs it

    x = np.asarray(x, dtype=np.float32)
    channels = 1 if x.ndim == 1 else x.shape[1]
    enc = lameenc.Encoder()
    enc.set_bit_rate(kbps)
    enc.set_in_sample_rate(rate)
    enc.set_out_sample_rate(rate)
    enc.set_channels(channels)
    enc.set_quality(quality)
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype("<i2")
    data = bytes(enc.encode(pcm.tobytes()) + enc.flush())
    y, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    y = y[MP3_DELAY : MP3_DELAY + len(x)]
    y = np.pad(y, ((0, len(x) - len(y)), (0, 0)))
    return y[:, 0] if x.ndim == 1 else y


def mp3_channels(x: np.ndarray, rate: int, kbps: int) -> np.ndarray:
    """:func:`mp3_roundtrip` of a channel-first ``x`` (channels, time): the same shape back,
    C-contiguous."""
    return np.ascontiguousarray(mp3_roundtrip(x.T, rate, kbps).T)


def degrade_mp3(
    x: torch.Tensor,
    rng: np.random.Generator | int | None = None,
    rate: int = 48000,
    kbps: tuple[int, ...] = MP3_KBPS,
) -> torch.Tensor:
    """MP3-coded version of a batch (batch, channels, time) at ``rate`` Hz, same shape and
    sample-aligned: each example coded at a bitrate drawn from ``kbps`` (joint stereo for two
    channels)."""
    gen = _generator(rng)
    out = [mp3_channels(ex.numpy(), rate, int(gen.choice(kbps))) for ex in x.detach().cpu()]
    return torch.from_numpy(np.stack(out)).to(x.device)
