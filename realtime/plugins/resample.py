"""A band-limited resampler packaged as a plugin: the classic-DSP baseline and default."""

from __future__ import annotations

import numpy as np
import torch

from realtime.resample import Resampler


class ResamplerPlugin:
    """Streaming polyphase Kaiser-sinc resampler from ``rate_in`` to ``rate_out`` Hz.

    Follows the plugin contract (:mod:`realtime.contract`); its latency is the filter's group
    delay, ``delay`` output samples. Parameter ``gain`` (linear, 0–2) scales the output.
    """

    streaming = True
    parameter_names = ["gain"]
    parameter_min = [0.0]
    parameter_max = [2.0]
    parameter_default = [1.0]

    def __init__(self, rate_in: int, rate_out: int, channels: int = 1, delay: int = 32) -> None:
        self._resampler = Resampler(rate_in, rate_out, channels, delay=delay)
        self.sample_rate_in = rate_in
        self.sample_rate_out = rate_out
        self.channels = channels
        self.block_multiple = self._resampler.down
        self.latency = self._resampler.delay
        self._gain = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(1, channels, time)`` → ``(1, channels, time·rate_out/rate_in)``."""
        frames = np.ascontiguousarray(x[0].T.numpy(), dtype=np.float32)
        y = self._resampler.process(frames)
        if self._gain != 1.0:
            y = y * self._gain
        return torch.from_numpy(y.T.copy())[None]  # y is the resampler's reused buffer

    __call__ = forward

    def reset(self) -> None:
        """Forget the filter history."""
        self._resampler.reset()

    def set_parameter(self, name: str, value: float) -> None:
        """Only ``gain`` exists."""
        if name != "gain":
            raise KeyError(name)
        self._gain = float(value)


def resample_8k_16k() -> ResamplerPlugin:
    """The default plugin until a neural one ships: 8 kHz → 16 kHz, 2 ms latency."""
    return ResamplerPlugin(8000, 16000, 1, delay=32)
