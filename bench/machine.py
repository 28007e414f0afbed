"""Machine facts recorded with every figure, and the background load sampled during a run."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def allocator() -> str:
    """The C heap this process runs on: a known allocator library mapped into it (preloaded
    with ``LD_PRELOAD``, as ``scripts/demo.sh`` does with tcmalloc), else ``glibc``. Every
    tensor of a plugin step is allocated there, so it moves block times (bench/PROFILE.md)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return next((name for name in ALLOCATORS if f"lib{name}" in maps), "glibc")


def machine_kind(device: str = "cpu") -> str:
    """A short label for the machine kind, e.g. ``cpu-2core`` or ``cuda-h100``."""
    if device == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        short = next((k for k in ("h200", "h100", "a100", "l4", "t4") if k in name), "gpu")
        return f"cuda-{short}"
    return f"cpu-{os.cpu_count()}core"


def git_commit() -> dict[str, Any]:
    """HEAD commit of the repository and whether the work tree has changes (read-only git)."""

    def git(*args: str) -> str:
        try:
            res = subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return res.stdout.strip() if res.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def machine_facts(device: str = "cpu") -> dict[str, Any]:
    """CPU, cores, load, library versions and git commit: the header of every report."""
    facts: dict[str, Any] = {
        "kind": machine_kind(device),
        "hostname": platform.node(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "allocator": allocator(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    facts.update(git_commit())
    return facts


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _self_jiffies() -> int:
    """This process's user + system jiffies (all threads)."""
    parts = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])


class LoadSampler:
    """Samples the machine's load in a background thread while a measurement runs.

    Every ``period_s`` seconds: the 1-minute loadavg and, from /proc/stat, the share of all CPUs'
    time that was busy (``busy``), the share used by this process (``self``) and by everything
    else (``other = busy - self``: the background load). Use as a context manager;
    :meth:`summary` gives mean and max of each.
    """

    def __init__(self, period_s: float = 0.25) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float, float]] = []  # loadavg, busy, self
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LoadSampler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        busy0, total0 = _cpu_jiffies()
        self0 = _self_jiffies()
        while not self._stop.wait(self.period_s):
            busy1, total1 = _cpu_jiffies()
            self1 = _self_jiffies()
            span = max(total1 - total0, 1)
            self.samples.append(
                (os.getloadavg()[0], (busy1 - busy0) / span, min(1.0, (self1 - self0) / span))
            )
            busy0, total0, self0 = busy1, total1, self1

    def summary(self) -> dict[str, float]:
        """``loadavg``, ``busy``, ``self``, ``other`` (shares 0..1 of all CPUs): mean and max."""
        if not self.samples:
            load = os.getloadavg()[0]
            return {"loadavg_mean": load, "loadavg_max": load, "samples": 0}
        a = np.array(self.samples)
        other = np.clip(a[:, 1] - a[:, 2], 0.0, 1.0)
        return {
            "loadavg_mean": float(a[:, 0].mean()),
            "loadavg_max": float(a[:, 0].max()),
            "busy_mean": float(a[:, 1].mean()),
            "self_mean": float(a[:, 2].mean()),
            "other_mean": float(other.mean()),
            "other_max": float(other.max()),
            "samples": len(self.samples),
        }
