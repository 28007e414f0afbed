"""Non-learned baselines for bandwidth extension, on the same inputs as the model.

- :func:`sinc`: band-limited sinc resampling (soxr, very high quality).
- :func:`cubic_spline`: cubic spline interpolation (cubic B-spline with exact interpolating
  prefilter, mirror boundaries), any ratio.

Both take a 1-D float array at ``rate_in`` Hz and return ``len(x) * rate_out // rate_in`` samples
at ``rate_out`` Hz, time-aligned with the input (no delay).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import soxr


def _out_len(n: int, rate_in: int, rate_out: int) -> int:
    return n * rate_out // rate_in


def sinc(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """soxr VHQ resampling of a 1-D signal; output length ``len(x) * rate_out // rate_in``."""
    y = soxr.resample(np.asarray(x, dtype=np.float64), rate_in, rate_out, quality="VHQ")
    n = _out_len(len(x), rate_in, rate_out)
    return np.pad(y, (0, max(0, n - len(y))))[:n].astype(np.float32)


def cubic_spline(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Cubic spline interpolation of a 1-D signal at ``rate_out / rate_in`` times the rate.

    The spline passes through every input sample; output sample ``n`` sits at input time
    ``n * rate_in / rate_out`` samples.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        raise ValueError("cubic spline needs at least 2 samples")
    # B-spline coefficients: invert the sampled kernel (1, 4, 1) / 6 in the DFT domain over a
    # mirror-extended signal (whole-sample symmetric, so the result has mirror boundaries).
    ext = np.concatenate([x, x[-2:0:-1]])
    k = np.arange(len(ext) // 2 + 1)
    kernel = (4.0 + 2.0 * np.cos(2 * np.pi * k / len(ext))) / 6.0
    coef = np.fft.irfft(np.fft.rfft(ext) / kernel, n=len(ext))[:n]
    t = np.arange(_out_len(n, rate_in, rate_out)) * (rate_in / rate_out)
    i = np.floor(t).astype(np.int64)
    u = t - i
    taps = (
        (1 - u) ** 3 / 6,
        (3 * u**3 - 6 * u**2 + 4) / 6,
        (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6,
        u**3 / 6,
    )
    y = np.zeros_like(t)
    for j, w in zip(range(-1, 3), taps, strict=True):
        idx = np.abs(i + j)  # mirror at the start
        idx = np.where(idx > n - 1, 2 * (n - 1) - idx, idx)  # and at the end
        y += w * coef[idx]
    return y.astype(np.float32)


BASELINES: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "sinc": sinc,
    "cubic": cubic_spline,
}
