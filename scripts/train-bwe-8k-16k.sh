#!/usr/bin/env bash
# Reproduce the shipped 8 -> 16 kHz speech plugin model/weights/bwe-8k-16k.ts from scratch, on the
# CPU of a 2-core machine, in under 60 minutes (see model/weights/TRAINING.md):
#
#   scripts/train-bwe-8k-16k.sh [RUN_DIR]      (default: $WAVEHOST_CACHE/runs/bwe-8k-16k)
#
# 1. install the speech corpora (scripts/install-corpora.sh: Debian packages into the cache),
# 2. build the cached 16 kHz segment set (wavehost_cmd model.corpora --speech, idempotent),
# 3. train (wavehost train = model.train) for a fixed 45-minute budget, resuming RUN_DIR/last.pt if
#    there is one (use a new RUN_DIR to start from scratch),
# 4. export RUN_DIR/best.pt to model/weights/bwe-8k-16k.ts (+ .json),
# 5. evaluate the plugin and the sinc / cubic baselines on the validation split (RUN_DIR/eval).
#
# Environment: WAVEHOST_CACHE (cache root, default ~/.cache/wavehost), TRAIN_MINUTES (default 45),
# TRAIN_THREADS (torch threads, default 1: on a 2-core machine shared with other work one thread
# trains faster than two), TRAIN_DEVICE (cpu or cuda, default cpu), EVAL_LIMIT (evaluate only the
# first N validation segments; default all).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cache=${WAVEHOST_CACHE:-$HOME/.cache/wavehost}
data=$cache/datasets/speech16k
run=${1:-$cache/runs/bwe-8k-16k}
weights=model/weights/bwe-8k-16k.ts
start=$(date +%s)
stamp() { echo "== $(( ($(date +%s) - start) / 60 )) min: $*"; }
# `wavehost CMD` without needing the package installed: call the command's module main(argv)
wavehost_cmd() {
    python -c 'import importlib, sys; sys.exit(importlib.import_module(sys.argv[1]).main(sys.argv[2:]))' "$@"
}

stamp "install corpora"
scripts/install-corpora.sh --speech

stamp "build dataset $data"
wavehost_cmd model.corpora --speech --out "$data"

stamp "train into $run"
wavehost_cmd model.train --data "$data" --out "$run" --resume \
    --minutes "${TRAIN_MINUTES:-45}" --epochs 40 --device "${TRAIN_DEVICE:-cpu}" \
    --threads "${TRAIN_THREADS:-1}" --seed 0 --config bwe-8k-16k \
    --batch-size 16 --segment 4096 --lr 3e-3 --warmup 100 \
    --w-stft 1 --w-l1 30 --w-lsd 0 --w-snr 0 \
    --val-every 200 --val-items 96 --select val_loss

stamp "export $weights"
wavehost_cmd model.export --checkpoint "$run/best.pt" --out "$weights" --name bwe-8k-16k

stamp "evaluate on the validation split"
wavehost_cmd model.evaluate --plugin "$weights" --data "$data" --out "$run/eval" --no-progress \
    ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"}

stamp "done: $weights, report in $run/eval/metrics.md"
