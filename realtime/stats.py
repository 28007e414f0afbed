"""Block-time statistics kept without allocating on the hot path."""

from __future__ import annotations

import numpy as np


class BlockTimer:
    """Remembers the last ``capacity`` block compute times (seconds) and all-time counts.

    Args:
        budget_s: the block duration, s; a block slower than this counts as over budget.
        capacity: how many recent timings to keep for percentiles.
    """

    def __init__(self, budget_s: float, capacity: int = 1 << 14) -> None:
        self.budget_s = budget_s
        self._times = np.zeros(capacity, np.float64)
        self.count = 0
        self.over_budget = 0
        self.worst_s = 0.0

    def add(self, seconds: float) -> None:
        """Record one block's compute time."""
        self._times[self.count % self._times.shape[0]] = seconds
        self.count += 1
        self.over_budget += seconds > self.budget_s
        self.worst_s = max(self.worst_s, seconds)

    def recent(self) -> np.ndarray:
        """The kept timings, seconds (a copy)."""
        return self._times[: min(self.count, self._times.shape[0])].copy()

    def percentiles_ms(self, *qs: float) -> list[float]:
        """Percentiles of the kept timings, ms (NaN before the first block)."""
        t = self.recent()
        if t.size == 0:
            return [float("nan")] * len(qs)
        return [float(v) * 1e3 for v in np.percentile(t, qs)]
