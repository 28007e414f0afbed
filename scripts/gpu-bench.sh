#!/usr/bin/env bash
# The GPU figures of issue 5 (realtime/GPU.md): CUDA tests, the latency benchmark on the device,
# CUDA = CPU on the shipped plugins, and where one block's time goes (kernels per step).
#
#   bash scripts/gpu-bench.sh wheels         where pip reaches PyPI: download the wheels the GPU
#                                            image lacks (PyWavelets, soxr, soundfile and its
#                                            cffi) into .whl (git-ignored)
#
#   bash scripts/gpu-bench.sh run [OUTDIR]   on the GPU machine: install the wheels in .whl (if
#                                            any), run the CUDA tests and the benchmark, write the
#                                            figures to OUTDIR (default bench/results/gpu-<card>)
#                                            and, where $OUT is set (the device tool), a tarball
#                                            of them there after each step
#
# `run` needs only python3 with torch (CUDA), numpy, numba, hypothesis, pytest, tqdm, psutil and
# matplotlib, the repo and the wheels. It installs nothing from the network; the project goes to
# /tmp without dependencies, for its entry points (the code runs from the repo: PYTHONPATH).
# Each step has its own time limit, so a hang costs one step.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=("PyWavelets==1.9.0" "soxr==1.1.0" "soundfile==0.14.0" "cffi==2.0.0" "pycparser==3.0")

wheels() {
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    echo "gpu-bench: wheels in .whl; carry it to the GPU machine (device tool: carry [\".whl\"])"
}

run() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gpu-bench-site .whl/*.whl
    fi
    # the project's metadata only (entry points: commands, plugin names); the code runs from here
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
        --no-cache-dir --upgrade --target /tmp/gpu-bench-site .
    export PYTHONPATH=/tmp/gpu-bench-site${PYTHONPATH:+:$PYTHONPATH}
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu-bench: torch sees no CUDA device here; run this on the GPU machine" >&2
        exit 2
    }
    "$PY" -c "import pywt, soxr, soundfile" 2>/dev/null || {
        echo "gpu-bench: PyWavelets, soxr or soundfile is missing: run 'scripts/gpu-bench.sh" \
            "wheels' where pip works and carry .whl along" >&2
        exit 2
    }
    local card
    card=$("$PY" -c "import re, torch
print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
    OUTDIR=${1:-bench/results/gpu-$card}
    mkdir -p "$OUTDIR"
    STATUS=0
    step 240 tests "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_accel.py \
        tests/test_multistream.py \
        tests/test_render.py::test_render_on_cuda_reports_the_graph_and_equals_the_cpu \
        tests/test_wrap.py::test_wrapped_model_runs_staged_on_a_device_as_on_the_cpu \
        tests/bench/test_bench.py::test_latency_cli_on_cuda_times_graphed_and_plain_forms_and_streams
    local bench=("$PY" -m realtime.cli bench latency --device cuda --graphs on,off --threads 1
        --modes threaded --blocks-count 4000 --warmup 300 --live-seconds 2 --sweep --quiet)
    step 180 latency-48k "${bench[@]}" --plugin mp3-restore-48k --rates 48000 --blocks 128 \
        --streams 1,4,16,64,256 --out "$OUTDIR/latency-48k"
    step 240 latency-8k-16k "${bench[@]}" --plugin bwe-8k-16k --rates 16000 --blocks 160 \
        --streams 1,16,128,1024,4096 --out "$OUTDIR/latency-8k-16k"
    step 120 cuda-equals-cpu "$PY" scripts/gpu_equal.py "$OUTDIR/cuda-equals-cpu.json"
    step 90 kernels "$PY" scripts/gpu_profile.py "$OUTDIR/kernels.json"
    # the same with no cuBLAS / cuBLASLt workspace: no split-K with a separate reduction kernel
    # (13 of mp3-restore-48k's 107 kernels a block on the H200); set before CUDA starts
    step 90 kernels-no-workspace env CUBLAS_WORKSPACE_CONFIG=:0:0 CUBLASLT_WORKSPACE_SIZE=0 \
        "$PY" scripts/gpu_profile.py "$OUTDIR/kernels-no-workspace.json"
    echo "gpu-bench: results in $OUTDIR (status $STATUS)"
    return "$STATUS"
}

step() {  # step SECONDS NAME COMMAND...: run under a time limit, log, ship what exists so far
    local limit=$1 name=$2
    shift 2
    echo "gpu-bench: $name ($(date +%T))"
    timeout "$limit" "$@" 2>&1 | tee "$OUTDIR/$name.log" || {
        echo "gpu-bench: $name failed or ran past ${limit}s" | tee -a "$OUTDIR/$name.log"
        STATUS=1
    }
    if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
        tar -czf "$OUT/gpu-results.tgz" -C "$(dirname "$OUTDIR")" "$(basename "$OUTDIR")"
    fi
}

case ${1:-} in
    wheels) wheels ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 wheels | run [OUTDIR]" >&2; exit 2 ;;
esac
