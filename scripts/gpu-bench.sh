#!/usr/bin/env bash
# The GPU figures of issue 5 (realtime/GPU.md): CUDA tests, then one JSON of figures.
#
#   bash scripts/gpu-bench.sh wheels         where pip reaches PyPI: download the wheels the GPU
#                                            image lacks (PyWavelets) into .whl (git-ignored)
#
#   bash scripts/gpu-bench.sh run [OUTDIR]   on the GPU machine: install the wheels in .whl (if
#                                            any), run the CUDA tests, write the figures to OUTDIR
#                                            (default bench/results/gpu-<card>) and, where $OUT is
#                                            set (the device tool), copy them there too
#
# `run` needs only python3 with torch (CUDA) + numpy + hypothesis + pytest, the repo, and the
# PyWavelets wheel (the tiny test models and the benchmark's random U-Nets are built with it). It
# installs nothing from the network and does not install the project (PYTHONPATH=repo).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

wheels() {
    local version
    version=$("$PY" -c "import pywt; print(pywt.__version__)" 2>/dev/null || echo 1.8.0)
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "PyWavelets==$version"
    echo "gpu-bench: wheels in .whl; carry it to the GPU machine (device tool: carry [\".whl\"])"
}

run() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gpu-bench-site .whl/*.whl
        export PYTHONPATH=/tmp/gpu-bench-site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu-bench: torch sees no CUDA device here; run this on the GPU machine" >&2
        exit 2
    }
    "$PY" -c "import pywt" 2>/dev/null || {
        echo "gpu-bench: PyWavelets is missing: run 'scripts/gpu-bench.sh wheels' where pip" \
            "works and carry .whl along" >&2
        exit 2
    }
    local card out
    card=$("$PY" -c "import re, torch
print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
    out=${1:-bench/results/gpu-$card}
    mkdir -p "$out"
    local status=0
    "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_accel.py tests/test_multistream.py \
        2>&1 | tee "$out/tests.log" || status=1
    "$PY" - "$out" <<'EOF' || status=1
"""Figures of issue 5 on this GPU, into OUT/gpu-bench.json (see realtime/GPU.md)."""
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from model.export import export_plugin
from model.unet import UNetConfig, WaveletUNet
from realtime.accel import DevicePlugin
from realtime.loader import load_plugin
from realtime.multistream import bench_multistream, sweep_streams

out = Path(sys.argv[1])
tmp = Path(tempfile.mkdtemp(prefix="gpu-bench-"))


def random_unet(cfg: UNetConfig, name: str):
    """The shipped architecture with random weights (the cost does not depend on them)."""
    torch.manual_seed(0)
    net = WaveletUNet(cfg).eval()
    torch.nn.init.normal_(net.body.out.conv.weight, std=0.01)
    return load_plugin(export_plugin(net, tmp / f"{name}.ts", name=name))


shipped = Path("model/weights/bwe-8k-16k.ts")
bwe = load_plugin(str(shipped)) if shipped.exists() else random_unet(UNetConfig(), "random-unet")
full = random_unet(UNetConfig(rate_in=48000, rate_out=48000), "random-unet-48k")


def max_diff(plugin, block: int, batch: int, graphs: bool, blocks: int = 50) -> float:
    """Largest |CUDA - CPU| over `blocks` blocks of noise, streamed through both."""
    gen = torch.Generator().manual_seed(1)
    cuda = DevicePlugin(plugin, "cuda", block=block, batch=batch, graphs=graphs)
    cpu = DevicePlugin(plugin, "cpu", block=block, batch=batch)
    worst = 0.0
    for _ in range(blocks):
        x = 0.3 * torch.randn(batch, plugin.info.channels, block, generator=gen)
        worst = max(worst, float((cuda(x) - cpu(x)).abs().max()))
    return worst


props = torch.cuda.get_device_properties(0)
report = {
    "card": torch.cuda.get_device_name(0),
    "memory_gib": round(props.total_memory / 2**30, 1),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "python": platform.python_version(),
    "bwe_plugin": bwe.info.name,
    "timing": "one tick: input write, H2D copy, step, D2H copy, event wait (time.perf_counter)",
}
single = {}
for graphs in (True, False):
    r = bench_multistream(full, 1, 128, "cuda", graphs=graphs, ticks=5000, warmup=200)
    single["graphs" if graphs else "plain"] = r
    print(f"1 stream 48 kHz 128: graphs={graphs} p50 {r['p50_ms']:.4f} ms "
          f"p99 {r['p99_ms']:.4f} ms ({r['graph_status']})")
report["single_stream_48k_block128"] = single
streams = {}
for graphs in (True, False):
    s = sweep_streams(bwe, 80, "cuda", graphs=graphs, ticks=300, limit=65536)
    streams["graphs" if graphs else "plain"] = s
    print(f"8->16 kHz 10 ms blocks, graphs={graphs}: max {s['max_streams']} streams "
          f"(stopped: {s['stopped']})")
report["max_streams_8k_16k_block80"] = streams
checks = []
for plugin, block, batch in ((full, 128, 1), (bwe, 80, 8), (bwe, 64, 1)):
    for graphs in (True, False):
        d = max_diff(plugin, block, batch, graphs)
        checks.append({"plugin": plugin.info.name, "block": block, "batch": batch,
                       "graphs": graphs, "max_abs_diff": d})
        print(f"CUDA vs CPU {plugin.info.name} block {block} batch {batch} graphs={graphs}: {d:.2e}")
report["cuda_equals_cpu"] = checks
report["targets"] = {
    "single_stream_p99_ms_le_0.2_with_graphs": single["graphs"]["p99_ms"] <= 0.2,
    "max_streams_ge_1000_with_graphs": streams["graphs"]["max_streams"] >= 1000,
    "cuda_equals_cpu_le_1e-4": all(c["max_abs_diff"] <= 1e-4 for c in checks),
}
(out / "gpu-bench.json").write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps(report["targets"]))
EOF
    if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
        cp "$out"/* "$OUT"/
    fi
    echo "gpu-bench: results in $out (status $status)"
    return "$status"
}

case ${1:-} in
    wheels) wheels ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 wheels | run [OUTDIR]" >&2; exit 2 ;;
esac
