"""Where one graphed block's time goes on the GPU, for the shipped plugins (realtime/GPU.md).

Usage: ``python scripts/gpu_profile.py OUT.json`` (``scripts/gpu-bench.sh run`` calls it). Per
plugin, batch 1: the kernels one step launches and their summed GPU time (``torch.profiler`` over
plain launches), the graph replay alone on the GPU (CUDA events), the whole staged call (copies and
event wait included) and the copy floor (the same copies and wait with no step). Without CUDA it
still writes the aten op counts per step (the CPU's per-op overhead), so it can be tried anywhere.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from realtime.accel import DevicePlugin
from realtime.loader import load_plugin

CASES = (("mp3-restore-48k", 128), ("bwe-8k-16k", 80))  # plugin, input samples per block
STEPS, REPEATS, WARMUP = 10, 500, 100


def percentiles_ms(seconds: list[float]) -> list[float]:
    """p50 and p99 of ``seconds``, in ms."""
    return [1e3 * float(np.percentile(seconds, q)) for q in (50, 99)]


def kernels(plugin: Any, block: int, device: str) -> dict[str, Any]:
    """Kernels and aten ops per step of ``plugin`` under plain launches on ``device``."""
    plain = DevicePlugin(plugin, device, block=block, graphs=False)
    x = 0.1 * torch.randn(1, plugin.info.channels, block)
    for _ in range(20):
        plain(x)
    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(STEPS):
            plain(x)
    events = prof.key_averages()
    gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    aten = [e for e in events if e.key.startswith("aten::")]
    return {
        "kernels_per_step": sum(e.count for e in gpu) / STEPS,
        "kernel_us_per_step": sum(e.device_time_total for e in gpu) / STEPS,
        "top_kernels": sorted(
            ((e.key[:60], e.count // STEPS, round(e.device_time_total / STEPS, 1)) for e in gpu),
            key=lambda k: -k[2],
        )[:12],
        "aten_ops_per_step": sum(e.count for e in aten) / STEPS,
        "aten_ops": sorted(((e.key, e.count // STEPS) for e in aten), key=lambda k: -k[1]),
    }


def graph_timings(plugin: Any, block: int) -> dict[str, list[float]]:
    """The graph replay alone (CUDA events), the whole staged call, and the copy floor, ms."""
    g = DevicePlugin(plugin, "cuda", block=block, graphs=True)
    if not g.graphed:
        return {"graph_status": g.graph_status}
    stream, done = g._stream, g._done
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    replay, call, floor = [], [], []
    x = 0.1 * torch.randn(1, plugin.info.channels, block)
    zeros = torch.zeros_like(g.host_output, device="cuda")
    for i in range(WARMUP + REPEATS):
        with torch.cuda.stream(stream):
            start.record()
            g._graph.replay()
            end.record()
        end.synchronize()
        t0 = time.perf_counter()
        g(x)
        t1 = time.perf_counter()
        with torch.cuda.stream(stream):
            g._dev_in.copy_(g.host_input, non_blocking=True)
            g.host_output.copy_(zeros, non_blocking=True)
            done.record()
        done.synchronize()
        t2 = time.perf_counter()
        if i >= WARMUP:
            replay.append(1e-3 * start.elapsed_time(end))
            call.append(t1 - t0)
            floor.append(t2 - t1)
    return {
        "replay_gpu_ms_p50_p99": percentiles_ms(replay),
        "call_ms_p50_p99": percentiles_ms(call),
        "copy_floor_ms_p50_p99": percentiles_ms(floor),
    }


def main(path: Path) -> int:
    """Profile every case; write the report to ``path``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    for name, block in CASES:
        plugin = load_plugin(name)
        row = {"block": block, **kernels(plugin, block, device)}
        if device == "cuda":
            row.update(graph_timings(plugin, block))
        report[name] = row
        brief = {k: v for k, v in row.items() if k not in ("top_kernels", "aten_ops")}
        print(name, json.dumps(brief))
    path.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
