"""Spectral measurements shared by the tests of the shipped plugins and the live monitor test."""

from __future__ import annotations

import numpy as np


def band_db(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    """Mean power (dB) of ``x`` (time, channels), channels mixed, in ``lo``–``hi`` Hz (a Hann
    window over the whole of ``x``)."""
    mono = x.mean(axis=1)
    spec = np.abs(np.fft.rfft(mono * np.hanning(len(mono)))) ** 2
    freqs = np.fft.rfftfreq(len(mono), 1 / rate)
    return float(10 * np.log10(spec[(freqs >= lo) & (freqs < hi)].mean() + 1e-30))
