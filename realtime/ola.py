"""Windowed overlap-add: runs a window-based plugin as a stream."""

from __future__ import annotations

import numpy as np
import torch

from realtime.contract import PluginError, PluginInfo


def window(shape: str, length: int) -> np.ndarray:
    """The periodic window ``shape`` (``"hann"`` or ``"sqrt_hann"``) of ``length`` samples."""
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)
    return np.sqrt(hann) if shape == "sqrt_hann" else hann


def cola_gain(effective: np.ndarray, hop: int) -> float:
    """The constant that shifted copies of ``effective`` (every ``hop`` samples) sum to.

    Raises:
        ValueError: if the sum is not constant (the window/hop pair is not COLA).
    """
    length = effective.shape[0]
    total = np.zeros(hop)
    for start in range(0, length, hop):
        seg = effective[start : start + hop]
        total[: seg.shape[0]] += seg
    lo, hi = float(total.min()), float(total.max())
    if hi <= 0 or (hi - lo) > 1e-6 * hi:
        raise ValueError(f"not COLA: overlapped windows sum to between {lo:.4g} and {hi:.4g}")
    return hi


class OverlapAdd:
    """Streams a windowed plugin: every ``hop`` input samples it calls the plugin on the last
    ``window`` input samples (times the analysis window for ``sqrt_hann``), multiplies the output
    by the synthesis window and overlap-adds it.

    It takes any multiple of ``hop`` input samples per call and returns ``ratio`` × as many.
    Latency: ``window − hop`` input samples (the newest frame must be complete) on top of the
    plugin's own, i.e. :attr:`latency` output samples in all.

    Args:
        plugin: a loaded plugin whose info has ``streaming == False``.
    """

    def __init__(self, plugin: object, info: PluginInfo) -> None:
        self.plugin = plugin
        self.info = info
        ratio = info.ratio
        self.out_window = int(info.window * ratio)
        self.out_hop = int(info.hop * ratio)
        if (info.window * ratio).denominator != 1 or (info.hop * ratio).denominator != 1:
            raise PluginError(
                f"plugin {info.name}: window and hop must map to whole output samples"
            )
        synth = window(info.window_shape, self.out_window)
        effective = synth * synth if info.window_shape == "sqrt_hann" else synth
        try:
            gain = cola_gain(effective, self.out_hop)
        except ValueError as exc:
            raise PluginError(
                f"plugin {info.name}: window {info.window_shape} {info.window} with hop "
                f"{info.hop} is {exc}"
            ) from None
        self._synth = torch.from_numpy((synth / gain).astype(np.float32))
        analysis = window("sqrt_hann", info.window) if info.window_shape == "sqrt_hann" else None
        self._analysis = None if analysis is None else torch.from_numpy(analysis.astype(np.float32))
        self.latency = (
            info.window - info.hop
        ) * ratio.numerator // ratio.denominator + info.latency
        self.reset()

    def reset(self) -> None:
        """Clear the input history and the overlap accumulator."""
        self._hist = torch.zeros(1, self.info.channels, self.info.window)
        self._acc = torch.zeros(1, self.info.channels, self.out_window)
        self.plugin.reset()

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(1, channels, k·hop)`` → ``(1, channels, k·hop·ratio)``."""
        hop, out_hop = self.info.hop, self.out_hop
        outs = []
        for start in range(0, x.shape[-1], hop):
            self._hist = torch.cat([self._hist[..., hop:], x[..., start : start + hop]], dim=-1)
            frame = self._hist if self._analysis is None else self._hist * self._analysis
            y = self.plugin.process(frame)
            if y.shape[-1] != self.out_window:
                raise PluginError(
                    f"plugin {self.info.name}: window of {self.info.window} samples gave "
                    f"{y.shape[-1]} samples, expected {self.out_window}"
                )
            self._acc = self._acc + y * self._synth
            outs.append(self._acc[..., :out_hop])
            self._acc = torch.cat(
                [self._acc[..., out_hop:], torch.zeros_like(self._acc[..., :out_hop])], dim=-1
            )
        return torch.cat(outs, dim=-1)
