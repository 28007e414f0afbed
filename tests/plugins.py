"""Plugins made for the tests: Python objects and TorchScript modules following the contract."""

from __future__ import annotations

import time

import torch
from torch import nn


class Gain(nn.Module):
    """Streaming gain with an optional pure delay; any rate, any block."""

    def __init__(
        self, rate: int = 16000, gain: float = 1.0, delay: int = 0, channels: int = 1
    ) -> None:
        super().__init__()
        self.sample_rate_in = rate
        self.sample_rate_out = rate
        self.channels = channels
        self.block_multiple = 1
        self.latency = delay
        self.streaming = True
        self.parameter_names = ["gain"]
        self.parameter_min = [0.0]
        self.parameter_max = [4.0]
        self.parameter_default = [1.0]
        self.gain = gain
        self.register_buffer("tail", torch.zeros(1, channels, delay))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = torch.cat([self.tail, x], dim=-1)
        n = x.shape[-1]
        self.tail = full[..., n:]
        return full[..., :n] * self.gain

    @torch.jit.export
    def reset(self) -> None:
        self.tail.zero_()

    @torch.jit.export
    def set_parameter(self, name: str, value: float) -> None:
        if name == "gain":
            self.gain = value


class Fir(nn.Module):
    """Streaming causal FIR (cached left context); ``latency`` declared as given."""

    def __init__(
        self, taps: list[float], rate: int = 16000, block_multiple: int = 1, latency: int = 0
    ) -> None:
        super().__init__()
        self.sample_rate_in = rate
        self.sample_rate_out = rate
        self.channels = 1
        self.block_multiple = block_multiple
        self.latency = latency
        self.streaming = True
        self.parameter_names = ["unused"]
        self.parameter_min = [0.0]
        self.parameter_max = [1.0]
        self.parameter_default = [0.0]
        self.register_buffer("taps", torch.tensor(taps, dtype=torch.float32).flip(0)[None, None])
        self.register_buffer("cache", torch.zeros(1, 1, len(taps) - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = torch.cat([self.cache, x], dim=-1)
        self.cache = full[..., x.shape[-1] :]
        return torch.nn.functional.conv1d(full, self.taps)

    @torch.jit.export
    def reset(self) -> None:
        self.cache.zero_()

    @torch.jit.export
    def set_parameter(self, name: str, value: float) -> None:
        pass


class Slow:
    """A gain that sleeps ``factor`` × the block duration every ``every``-th call (counted
    from the last reset)."""

    streaming = True
    latency = 0
    block_multiple = 1
    parameter_names: list[str] = []
    parameter_min: list[float] = []
    parameter_max: list[float] = []
    parameter_default: list[float] = []

    def __init__(
        self,
        rate: int,
        factor: float = 3.0,
        every: int = 10,
        block: int = 256,
        gain: float = 1.0,
        channels: int = 1,
    ) -> None:
        self.sample_rate_in = self.sample_rate_out = rate
        self.factor, self.every, self.block, self.gain = factor, every, block, gain
        self.channels = channels
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls % self.every == 0:
            time.sleep(self.factor * self.block / self.sample_rate_in)
        return x * self.gain

    __call__ = forward

    def reset(self) -> None:
        self.calls = 0

    def set_parameter(self, name: str, value: float) -> None:
        pass
