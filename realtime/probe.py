"""Run a plugin on a noise probe and compare what it does with what it declares.

Two checks a host can make without knowing what the model is for: the lag of its output behind
its input (:func:`measure_latency`, against the declared latency) and whether streaming block by
block equals one call on the whole input (:func:`split_difference`: seams where it does not).
Off the audio thread only: both allocate freely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from realtime.chain import Chain
from realtime.contract import PluginError
from realtime.loader import LoadedPlugin
from realtime.resample import Resampler

MIN_CORRELATION = 0.3
"""Below this normalised correlation the output does not carry its input: no lag to read."""

PROBE_BLOCK = 256  # input samples per step, rounded up to the plugin's own block


def correlate(reference: np.ndarray, captured: np.ndarray, max_lag: int) -> np.ndarray:
    """Cross-correlation ``c[k]`` of ``captured`` against ``reference`` for lags ``k = 0 ..
    max_lag`` samples (``captured[n] ≈ g · reference[n − k]``), divided by the reference's
    energy: at the true lag it is the path's gain ``g`` (1 for a bit-exact loopback)."""
    n = reference.size + captured.size
    size = 1 << (n - 1).bit_length()
    spec = np.fft.rfft(captured, size) * np.conj(np.fft.rfft(reference, size))
    c = np.fft.irfft(spec, size)[: max_lag + 1]
    energy = float(np.sum(np.square(reference, dtype=np.float64)))
    return c / energy if energy > 0 else c


@dataclass(frozen=True)
class LagEstimate:
    """Where a plugin's output lines up with its input, in output samples.

    ``lag``: the plugin's own latency as measured (the host's overlap-add buffering taken out);
    ``correlation``: normalised correlation of output and input at that lag, in [0, 1] (1: the
    input passes through unchanged but for gain and delay); ``declared``: the plugin's
    declared latency.
    """

    lag: int
    correlation: float
    declared: int

    @property
    def measurable(self) -> bool:
        """Whether the output carries enough of the input for ``lag`` to mean anything."""
        return self.correlation >= MIN_CORRELATION


def _noise(frames: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((frames, channels))).astype(np.float32)


def measure_latency(plugin: LoadedPlugin, seconds: float = 1.0, seed: int = 0) -> LagEstimate:
    """Stream ``seconds`` of white noise through ``plugin`` (overlap-added where it is windowed,
    as the host runs it) and find the lag at which its output best matches the input brought to
    the output rate (band-limited, its resampler's delay taken out). Leaves the plugin reset.

    Raises:
        PluginError: the plugin failed or returned NaN while streaming the probe.
    """
    info = plugin.info
    chain = Chain([plugin])
    block = chain.block * -(-PROBE_BLOCK // chain.block)
    frames = block * -(-int(seconds * info.sample_rate_in) // block)
    x = _noise(frames, info.channels, seed)
    chain.reset()
    y = np.concatenate([chain.step(x[i : i + block]).copy() for i in range(0, frames, block)])
    chain.reset()
    fault = chain.health[0].fault
    if fault:
        raise PluginError(f"plugin {info.name} failed on the noise probe: {fault}")
    reference = x
    if info.sample_rate_in != info.sample_rate_out:
        resampler = Resampler(
            info.sample_rate_in, info.sample_rate_out, info.channels, max_block=frames
        )
        reference = resampler.process(x)[resampler.delay :]
    max_lag = y.shape[0] // 2
    raw = sum(
        correlate(reference[:, c], y[:, c], max_lag) * float(np.sum(np.square(reference[:, c])))
        for c in range(info.channels)
    )
    scale = float(np.sqrt(np.sum(np.square(reference)) * np.sum(np.square(y))))
    rho = np.abs(raw) / scale if scale > 0 else np.zeros_like(raw)
    lag = int(np.argmax(rho))
    host = chain.latency - info.latency  # the overlap-add's window - hop, 0 when streaming
    return LagEstimate(lag - host, float(rho[lag]), info.latency)


def split_difference(plugin: LoadedPlugin, seed: int = 0) -> float:
    """Largest difference between one call on two blocks of noise and two calls on one block
    each, relative to the output's peak: 0 (to rounding) for a plugin whose state carries the
    stream across calls, larger where a cut between blocks changes the output (seams).
    Streaming plugins only; leaves the plugin reset."""
    info = plugin.info
    if not info.streaming:
        raise ValueError(f"plugin {info.name} is windowed: the host overlap-adds it")
    block = info.block_multiple * max(1, PROBE_BLOCK // info.block_multiple)
    x = torch.from_numpy(_noise(2 * block, info.channels, seed).T.copy())[None]
    plugin.reset()
    whole = plugin.process(x)
    plugin.reset()
    parts = torch.cat([plugin.process(x[..., :block]), plugin.process(x[..., block:])], -1)
    plugin.reset()
    peak = float(whole.abs().max())
    return float((whole - parts).abs().max()) / peak if peak > 0 else 0.0
