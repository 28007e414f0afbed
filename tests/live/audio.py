"""Signals and measurements shared by the live tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from bench.e2e import DualRecorder


def known_signal(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Mono float32: a log chirp 100 Hz .. 0.45·rate plus white noise, faded in/out, peak ~0.5."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0, f1 = 100.0, 0.45 * rate
    k = np.log(f1 / f0) / seconds
    chirp = np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    noise = np.random.default_rng(seed).standard_normal(n)
    x = 0.3 * chirp + 0.1 * noise
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.01 * rate))
    return (x * fade).astype(np.float32)


def find_lag(y: np.ndarray, x: np.ndarray) -> int:
    """Lag (samples) at which ``x`` best matches inside ``y`` (FFT cross-correlation)."""
    n = len(y) + len(x)
    size = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
    return int(np.argmax(c[: len(y) - len(x) + 1]))


def aligned_correlation(y: np.ndarray, x: np.ndarray) -> tuple[int, float, float, bool]:
    """(lag, overall correlation, worst 50 ms window correlation, bit-exact) of x inside y."""
    assert len(y) >= len(x), f"recording too short: {len(y)} < {len(x)} samples"
    lag = find_lag(y, x)
    seg = y[lag : lag + len(x)].astype(np.float64)
    ref = x.astype(np.float64)
    overall = float(np.corrcoef(seg, ref)[0, 1])
    win = max(64, len(x) // 40)
    worst = 1.0
    for i in range(0, len(x) - win + 1, win):
        a, b = seg[i : i + win], ref[i : i + win]
        if np.std(b) > 1e-3:
            worst = min(worst, float(np.corrcoef(a, b)[0, 1]))
    return lag, overall, worst, bool(np.array_equal(seg, ref))


def window_lags(
    y: np.ndarray, x: np.ndarray, start: int, span: int, win: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where each ``win``-sample window of ``x`` lies in ``y``: its lag (searched in ``start ..
    start + span`` samples) and its correlation there, one pair per window that ``y`` covers.
    A near-silent window of ``x`` (std ≤ 1e-3) has no lag to find: its correlation is NaN."""
    lags, corrs = [], []
    for i in range(0, len(x) - win + 1, win):
        ref = x[i : i + win]
        seg = y[start + i : start + i + span + win]
        if len(seg) < span + win:
            break
        lag = find_lag(seg, ref)
        lags.append(start + lag)
        corrs.append(np.corrcoef(seg[lag : lag + win], ref)[0, 1] if np.std(ref) > 1e-3 else np.nan)
    return np.array(lags), np.array(corrs)


def moves_as_reported(lags: np.ndarray, steps: int, grown: float, block: int) -> bool:
    """Whether ``lags`` (samples, in order) only move the way a reported margin growth moves a
    timeline: later, by whole ``block``s, at most ``steps`` times and ``grown`` samples in all."""
    moves = np.diff(lags)
    moves = moves[moves != 0]
    return bool(
        len(moves) <= steps
        and np.all(moves > 0)
        and np.all(moves % block == 0)
        and moves.sum() <= grown
    )


def wait_for_start(host: subprocess.Popen) -> None:
    """Return once ``wavehost run`` has said its stream is up (its first stderr line), plus
    0.3 s for the server to link its streams."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = host.stderr.readline()
        if "Ctrl-C stops" in line:
            time.sleep(0.3)
            return
        if host.poll() is not None:
            pytest.fail(f"wavehost run exited early: {line}{host.stderr.read()}")
    pytest.fail("wavehost run did not start within 30 s")


def sink_probe(server, path: Path, rate: int) -> DualRecorder:
    """One pw-record stream of the monitors of ``server``'s ``call`` and ``listener`` sinks, on
    two channels of the same graph cycle: the lag between them is the lag from sink to sink."""
    return DualRecorder(
        path, rate, f"{server.call}:monitor_MONO", f"{server.listener}:monitor_MONO"
    )


def sink_window(rate: int) -> int:
    """The length (samples) of :func:`sink_to_sink`'s windows: 0.25 s."""
    return rate // 4


def sink_to_sink(
    rec: np.ndarray, x: np.ndarray, rate: int, taps: tuple[float, ...] = (1.0,)
) -> tuple[np.ndarray, np.ndarray]:
    """Window by window (0.25 s), where what the first sink carried (``rec[:, 0]``, filtered by
    ``taps``) lies in what the second carried (``rec[:, 1]``): the lag from sink to sink
    (samples) and the correlation there. ``x``, the known signal played into the first sink,
    places the windows."""
    lag_in = aligned_correlation(rec[:, 0], x)[0]
    half = sink_window(rate)
    heard = np.convolve(rec[:, 0], taps)[lag_in : lag_in + len(x)].astype(np.float32)
    lags, corr = window_lags(rec[:, 1], heard, lag_in, 4 * half, half)
    return lags - lag_in, corr


def pw_play(sink: str, wav: Path) -> None:
    """Play ``wav`` into ``sink`` from a separate process (pw-play), as an application would;
    returns when it has been played."""
    res = subprocess.run(
        ["pw-play", "--target", sink, str(wav)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
