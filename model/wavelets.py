"""Causal DWT / IDWT as fixed filter banks taken from PyWavelets.

Alignment with ``pywt`` (``mode="zero"``), for a wavelet with filters of length ``L``:

- ``DWT``: coefficient ``n`` uses inputs up to ``2n + 1``; it equals ``pywt.dwt(x)[n]`` for the
  first ``len(x) // 2`` coefficients (the rest of pywt's output is the zero-padded right edge);
- ``IDWT``: coefficient ``n`` is placed at time ``2n + 1``; ``IDWT(DWT(x))[m] == x[m - (L - 1)]``
  (perfect reconstruction with a delay of :func:`wavelet_delay` ``= L - 1`` samples), and
  ``IDWT(a, d)[m] == pywt.idwt(a, d)[m - (L - 1)]``.
"""

from __future__ import annotations

import pywt
import torch
from torch import Tensor

from model.streaming import Analysis, Synthesis


def _wavelet(name: str) -> pywt.Wavelet:
    try:
        return pywt.Wavelet(name)
    except ValueError as err:
        raise ValueError(f"unknown discrete wavelet {name!r}: {err}") from None


def analysis_filters(name: str) -> Tensor:
    """``(2, L)`` correlation weights (low, high) of the causal DWT: the reversed decomposition
    filters of ``pywt.Wavelet(name)``."""
    w = _wavelet(name)
    return torch.tensor([w.dec_lo[::-1], w.dec_hi[::-1]], dtype=torch.float64)


def synthesis_filters(name: str) -> Tensor:
    """``(2, L)`` convolution kernels (low, high) of the IDWT: pywt's reconstruction filters."""
    w = _wavelet(name)
    return torch.tensor([w.rec_lo, w.rec_hi], dtype=torch.float64)


def wavelet_delay(name: str) -> int:
    """Delay of ``IDWT(DWT(x))`` in samples (at the finer rate): filter length - 1."""
    return _wavelet(name).dec_len - 1


class DWT(Analysis):
    """Causal one-level DWT per channel: ``(batch, channels, time) -> (batch, 2 * channels,
    time // 2)``; channel ``2c`` is the approximation, ``2c + 1`` the detail of channel ``c``."""

    def __init__(self, channels: int, wavelet: str = "db4") -> None:
        super().__init__(analysis_filters(wavelet), channels, stride=2)


class IDWT(Synthesis):
    """Causal one-level IDWT per channel: ``(batch, 2 * channels, time) -> (batch, channels,
    2 * time)``, the inverse of :class:`DWT` delayed by :func:`wavelet_delay` samples."""

    def __init__(self, channels: int, wavelet: str = "db4") -> None:
        super().__init__(synthesis_filters(wavelet), channels, factor=2, offset=1)
