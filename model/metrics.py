"""Quality metrics of notes/metrics.md: LSD, LSD-HF, SNR, SI-SDR.

Conventions (state them with every number):

- **LSD** (log10, frequency first): STFT at the output rate with a periodic Hann window,
  ``n_fft`` 2048, hop 512, centred frames (reflect padding of ``n_fft // 2`` on both sides);
  ``P = |X|² + 1e-10``; per frame ``sqrt(mean_f (log10 P_ref − log10 P_est)²)``, then the mean
  over frames. The mean over files is taken by the caller (see :func:`mean_over_files`).
- **LSD-HF**: the same over the bins strictly above ``hf_from_hz`` (the input's Nyquist frequency).
- **SNR**: ``10·log10(Σ y² / Σ (y − ŷ)²)`` in dB; ``inf`` for an exact match.
- **SI-SDR**: scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean first.

All functions take 1-D float arrays (one channel, time) of equal length, reference first.
"""

from __future__ import annotations

import math

import numpy as np

N_FFT = 2048
HOP = 512
EPS_POWER = 1e-10


def _check(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64)
    est = np.asarray(est, dtype=np.float64)
    if ref.ndim != 1 or ref.shape != est.shape:
        raise ValueError(f"need two 1-D signals of equal length, got {ref.shape} and {est.shape}")
    return ref, est


def power_spectrogram(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """``|STFT|² + 1e-10`` of a 1-D signal, shape ``(frames, n_fft // 2 + 1)``."""
    x = np.asarray(x, dtype=np.float64)
    pad = n_fft // 2
    if x.size <= pad:  # reflect padding needs more samples than the pad: zero-pad first
        x = np.pad(x, (0, pad + 1 - x.size))
    x = np.pad(x, pad, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.fft.rfft(frames * window, axis=-1)
    return spec.real**2 + spec.imag**2 + EPS_POWER


def lsd(
    ref: np.ndarray,
    est: np.ndarray,
    rate: int,
    *,
    hf_from_hz: float = 0.0,
    n_fft: int = N_FFT,
    hop: int = HOP,
) -> float:
    """Log-spectral distance (log10, frequency first) over bins above ``hf_from_hz`` Hz.

    ``hf_from_hz`` 0 gives the full-band LSD; the input's Nyquist frequency gives LSD-HF.
    """
    ref, est = _check(ref, est)
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    bins = freqs > hf_from_hz if hf_from_hz > 0 else np.ones_like(freqs, dtype=bool)
    if not bins.any():
        raise ValueError(f"no STFT bin above {hf_from_hz} Hz at {rate} Hz")
    diff = np.log10(power_spectrogram(ref, n_fft, hop)) - np.log10(
        power_spectrogram(est, n_fft, hop)
    )
    per_frame = np.sqrt(np.mean(diff[:, bins] ** 2, axis=1))
    return float(per_frame.mean())


def snr(ref: np.ndarray, est: np.ndarray) -> float:
    """Signal-to-noise ratio in dB, ``inf`` when ``est`` equals ``ref``."""
    ref, est = _check(ref, est)
    noise = float(np.sum((ref - est) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (zero-mean signals)."""
    ref, est = _check(ref, est)
    ref = ref - ref.mean()
    est = est - est.mean()
    energy = float(np.dot(ref, ref))
    if energy == 0.0:
        raise ValueError("SI-SDR of a silent (or constant) reference is undefined")
    target = (float(np.dot(est, ref)) / energy) * ref
    noise = float(np.sum((est - target) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(float(np.sum(target**2)) / noise)


def all_metrics(ref: np.ndarray, est: np.ndarray, rate: int, input_rate: int) -> dict[str, float]:
    """``{"lsd", "lsd_hf", "snr", "si_sdr"}`` of one file; LSD-HF above ``input_rate / 2`` Hz.

    When ``input_rate`` equals ``rate`` (no band to invent, e.g. MP3 repair) LSD-HF is ``nan``.
    """
    nyq_in = input_rate / 2
    return {
        "lsd": lsd(ref, est, rate),
        "lsd_hf": lsd(ref, est, rate, hf_from_hz=nyq_in) if nyq_in < rate / 2 else math.nan,
        "snr": snr(ref, est),
        "si_sdr": si_sdr(ref, est),
    }


def mean_over_files(per_file: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over files (the project's final averaging step)."""
    if not per_file:
        raise ValueError("no files to average")
    return {k: float(np.mean([m[k] for m in per_file])) for k in per_file[0]}
