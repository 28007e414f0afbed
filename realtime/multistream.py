"""Many concurrent streams (calls) through ONE streaming plugin instance, one batched step a tick.

A :class:`StreamBatcher` owns a :class:`~realtime.accel.DevicePlugin` of fixed batch
``capacity``: batch row ``r`` is one logical stream with its own state. Each tick every stream's
block sits in its row of :attr:`StreamBatcher.input`, one step runs (a CUDA graph replay on a
GPU), and each stream reads its row of the output. Free rows are computed on zeros: the step's
shape never changes, so neither does its graph, and slicing them away would restart the state of
every row. A stream joins by taking a free row whose state is cleared in place (the plugin's
optional ``reset_rows``), and leaves by giving it back; the other rows never notice.

Per-stream latency is the plugin's declared ``latency`` (output samples): a stream's output sample
``n`` answers its own input time ``n - latency``, counted from its join. A server that gathers one
block per stream before the tick adds one block of buffering on top (:attr:`block_out` samples).

:func:`bench_multistream` and :func:`sweep_streams` are the benchmark's hooks.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from realtime.accel import DevicePlugin
from realtime.contract import PluginError
from realtime.loader import LoadedPlugin


class StreamBatcher:
    """Serve up to ``capacity`` streams of ``block`` input samples a tick with one plugin.

    Args:
        plugin: a loaded streaming plugin with ``reset_rows`` (it is copied, not modified).
        capacity: batch rows, the most concurrent streams.
        block: input samples per stream per tick.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        graphs: capture the step as a CUDA graph (CUDA only; see :class:`DevicePlugin`).

    Attributes:
        input: ``(capacity, channels, block)`` float32; a stream's block goes in its row
            (:meth:`process` does it, or a caller writes rows directly before :meth:`tick`).
        output: ``(capacity, channels, block_out)`` float32, the last tick's result.
        latency: per-stream algorithmic latency, output samples (the plugin's declared one).
        block_out: output samples per stream per tick.
    """

    def __init__(
        self,
        plugin: LoadedPlugin,
        capacity: int,
        block: int,
        device: str = "cpu",
        *,
        graphs: bool = True,
    ) -> None:
        info = plugin.info
        if not info.batch_reset:
            raise PluginError(
                f"plugin {info.name} has no reset_rows(): streams cannot join one at a time, "
                "so it cannot be batched"
            )
        self.info, self.capacity, self.block = info, capacity, block
        self.runner = DevicePlugin(plugin, device, block=block, batch=capacity, graphs=graphs)
        self.input = self.runner.host_input.numpy()
        self.output = self.runner.host_output.numpy()
        self.block_out = self.output.shape[-1]
        self.latency = info.latency
        self._free = list(range(capacity))  # a heap: the lowest free row goes first
        self._active: set[int] = set()

    @property
    def active(self) -> frozenset[int]:
        """Rows of the streams now joined."""
        return frozenset(self._active)

    def join(self) -> int:
        """Admit a stream; returns its row. Its state starts from silence, like a fresh plugin;
        the other streams are untouched."""
        if not self._free:
            raise RuntimeError(f"all {self.capacity} stream rows are in use")
        row = heapq.heappop(self._free)
        self.runner.reset_rows(torch.tensor([row]))
        self.input[row] = 0.0
        self._active.add(row)
        return row

    def leave(self, row: int) -> None:
        """Release ``row``; from now on it is fed zeros until a new stream joins there."""
        if row not in self._active:
            raise ValueError(f"row {row} has no stream")
        self._active.remove(row)
        self.input[row] = 0.0
        heapq.heappush(self._free, row)

    def tick(self) -> np.ndarray:
        """One batched step on :attr:`input`; returns :attr:`output` (rows of free slots are
        meaningless), valid until the next tick."""
        self.runner(self.runner.host_input)
        return self.output

    def process(self, blocks: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
        """One tick from ``{row: (block, channels) array}``; an active stream missing from
        ``blocks`` is fed silence. Returns ``{row: (block_out, channels) view}`` for every active
        stream, valid until the next tick."""
        unknown = blocks.keys() - self._active
        if unknown:
            raise ValueError(f"rows {sorted(unknown)} have no stream")
        for row in self._active:
            x = blocks.get(row)
            self.input[row] = 0.0 if x is None else x.T
        out = self.tick()
        return {row: out[row].T for row in self._active}


def bench_multistream(
    plugin: LoadedPlugin,
    n_streams: int,
    block: int,
    device: str = "cpu",
    *,
    graphs: bool = True,
    ticks: int = 200,
    warmup: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Time ticks of ``n_streams`` streams (all rows active) of ``block`` input samples.

    A tick is timed from the streams' blocks landing in the input (one bulk copy, as a server's
    receive path would write them) to every stream's output being on the host: host→device copy,
    the step (graph or plain launches), device→host copy and the event wait.

    Returns a JSON-friendly dict: the setting, ``graph_status``, ``budget_ms`` (one block at the
    input rate), ``tick_ms`` (every timed tick), ``p50_ms``, ``p99_ms``, ``max_ms``,
    ``mean_ms``, ``per_stream_us`` (p50 / streams) and ``within_budget`` (p99 ≤ budget).
    """
    info = plugin.info
    batcher = StreamBatcher(plugin, n_streams, block, device, graphs=graphs)
    for _ in range(n_streams):
        batcher.join()
    gen = np.random.default_rng(seed)
    source = (0.1 * gen.standard_normal((4, *batcher.input.shape))).astype(np.float32)
    times = np.empty(ticks, np.float64)
    for i in range(warmup + ticks):
        t0 = time.perf_counter()
        batcher.input[...] = source[i % len(source)]
        batcher.tick()
        if i >= warmup:
            times[i - warmup] = time.perf_counter() - t0
    ms = times * 1e3
    budget = 1e3 * block / info.sample_rate_in
    dev = batcher.runner.device
    p50, p99 = (float(v) for v in np.percentile(ms, [50, 99]))
    return {
        "plugin": info.name,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "n_streams": n_streams,
        "block": block,
        "rate_in": info.sample_rate_in,
        "rate_out": info.sample_rate_out,
        "latency_samples": batcher.latency,
        "graphs": batcher.runner.graphed,
        "graph_status": batcher.runner.graph_status,
        "budget_ms": budget,
        "ticks": ticks,
        "tick_ms": ms.tolist(),
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "per_stream_us": 1e3 * p50 / n_streams,
        "within_budget": p99 <= budget,
    }


def sweep_streams(
    plugin: LoadedPlugin,
    block: int,
    device: str = "cpu",
    *,
    graphs: bool = True,
    ticks: int = 200,
    start: int = 1,
    limit: int = 16384,
) -> dict[str, Any]:
    """The largest stream count whose p99 tick fits the block budget: doubling from ``start``
    until a count misses (or runs out of memory, or passes ``limit``), then bisecting.

    Returns ``{"max_streams": N (0 if even ``start`` misses), "runs": [bench_multistream
    results without their tick lists, in the order run], "stopped": why the doubling ended}``.
    """
    runs: list[dict[str, Any]] = []

    def miss(n: int) -> str:
        """Why ``n`` streams do not fit ('' if they do)."""
        try:
            result = bench_multistream(plugin, n, block, device, graphs=graphs, ticks=ticks)
        except torch.cuda.OutOfMemoryError:
            return f"out of device memory at {n} streams"
        result.pop("tick_ms")
        runs.append(result)
        if result["within_budget"]:
            return ""
        return f"{n} streams: p99 {result['p99_ms']:.3g} ms > budget {result['budget_ms']:.3g} ms"

    good, bad, n, stopped = 0, 0, start, f"reached the limit of {limit} streams"
    while n <= limit:
        why = miss(n)
        if why:
            bad, stopped = n, why
            break
        good, n = n, 2 * n
    while bad and bad - good > max(1, good // 16):  # bisect to within about 6 %
        mid = (good + bad) // 2
        good, bad = (good, mid) if miss(mid) else (mid, bad)
    return {"max_streams": good, "runs": runs, "stopped": stopped}
