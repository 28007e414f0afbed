"""An exponential moving average of a network's weights, kept beside it while it trains."""

from __future__ import annotations

import copy

import torch


class WeightEMA:
    """A copy of ``net`` whose parameters follow the trained ones as an exponential moving
    average: after step ``s`` (counted from 0), ``shadow ← d·shadow + (1 − d)·param`` with
    ``d = min(decay, (1 + s) / (10 + s))`` (the short warm-up keeps the random start from
    lingering). Buffers (the fixed filter banks) are copied, not averaged.

    Args:
        net: the network being trained; the shadow starts as a copy of it.
        decay: the average's decay per step, in ``(0, 1)``; ``1 / (1 - decay)`` steps is its
            time constant (0.999: about 1000 steps).
    """

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay} is not in (0, 1)")
        self.decay = decay
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: torch.nn.Module, step: int) -> None:
        """Fold in ``net``'s weights after training step ``step`` (0 for the first)."""
        d = min(self.decay, (1 + step) / (10 + step))
        for mine, theirs in zip(self.shadow.parameters(), net.parameters(), strict=True):
            mine.lerp_(theirs, 1.0 - d)
        for mine, theirs in zip(self.shadow.buffers(), net.buffers(), strict=True):
            mine.copy_(theirs)
