"""CUDA = CPU on the shipped plugins (issue 5's ≤ 1e-4), graphs on and off.

Usage: ``python scripts/gpu_equal.py OUT.json`` on a machine with CUDA (``scripts/gpu-bench.sh
run`` calls it). Each case streams 50 blocks of noise through a CUDA and a CPU
:class:`~realtime.accel.DevicePlugin` of the same plugin and records the largest difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from realtime.accel import DevicePlugin
from realtime.loader import load_plugin

CASES = (  # plugin, block (input samples), batch (streams)
    ("mp3-restore-48k", 128, 1),
    ("bwe-8k-16k", 80, 8),
    ("bwe-8k-16k", 64, 1),
    ("bwe-16k-48k", 64, 4),
)
TOLERANCE = 1e-4


def max_diff(name: str, block: int, batch: int, graphs: bool, blocks: int = 50) -> float:
    """Largest |CUDA − CPU| over ``blocks`` blocks of noise streamed through both."""
    plugin = load_plugin(name)
    gen = torch.Generator().manual_seed(1)
    cuda = DevicePlugin(plugin, "cuda", block=block, batch=batch, graphs=graphs)
    cpu = DevicePlugin(plugin, "cpu", block=block, batch=batch)
    worst = 0.0
    for _ in range(blocks):
        x = 0.3 * torch.randn(batch, plugin.info.channels, block, generator=gen)
        worst = max(worst, float((cuda(x) - cpu(x)).abs().max()))
    return worst


def main(path: Path) -> int:
    """Run every case, write the report to ``path``; 0 if all are within tolerance."""
    checks = []
    for name, block, batch in CASES:
        for graphs in (True, False):
            d = max_diff(name, block, batch, graphs)
            checks.append(
                {"plugin": name, "block": block, "batch": batch, "graphs": graphs, "max_abs": d}
            )
            print(f"CUDA vs CPU {name} block {block} batch {batch} graphs={graphs}: {d:.2e}")
    ok = all(c["max_abs"] <= TOLERANCE for c in checks)
    report = {
        "card": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tf32": {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        },
        "tolerance": TOLERANCE,
        "all_within": ok,
        "checks": checks,
    }
    path.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
