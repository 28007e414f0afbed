#!/usr/bin/env bash
# Reproduce one shipped plugin of model/weights/ from scratch, on the CPU of a 2-core machine
# (see model/weights/TRAINING.md):
#
#   scripts/train-plugin.sh NAME [RUN_DIR]     (default RUN_DIR: $WAVEHOST_CACHE/runs/NAME)
#
# NAME: bwe-8k-16k (speech, 8 -> 16 kHz), bwe-16k-48k (music and speech, 16 -> 48 kHz, stereo)
# or mp3-restore-48k (decoded MP3 -> original, 48 kHz, stereo).
#
# 1. install the corpora (scripts/install-corpora.sh: Debian packages into the cache),
# 2. build the cached segment set (wavehost_cmd model.corpora, idempotent),
# 3. train (wavehost train = model.train) for a fixed budget, resuming RUN_DIR/last.pt if there
#    is one (use a new RUN_DIR to start from scratch); mp3-restore-48k then gets two fine-tuning
#    stages, each from the stage before's best.pt: RUN_DIR/ft (lower learning rate, a heavier
#    waveform loss, so that near-transparent high-bitrate input is left alone) and RUN_DIR/ft/keep
#    (plus the SI-SDR lost against the dry MP3 in the loss, --w-keep, with LAME's 256 and 320 kb/s
#    among the training bitrates),
# 4. export the last stage's best.pt to model/weights/NAME.ts (+ .json, and NAME.pt: its
#    weights-only checkpoint, kept so later code can export the same network) with the default
#    of the plugin's mix parameter chosen on the training split (wavehost eval --mix-sweep on a
#    first export in RUN_DIR/mix-sweep): for the two bandwidth extenders the lowest LSD whose SNR
#    is within 0.4 dB of sinc's; for mp3-restore-48k the largest mix whose SI-SDR stays above the
#    MP3's (by two standard errors) at each of 64, 96, 128 and 192 kb/s,
# 5. evaluate the plugin against its baselines on the validation split (RUN_DIR/eval*); for
#    bwe-8k-16k also on real speech no network was trained on (RUN_DIR/eval-unseen: the
#    unseen-speech16k test set of model/data/DATA.md).
#
# Environment: WAVEHOST_CACHE (cache root, default ~/.cache/wavehost), TRAIN_MINUTES (default 45;
# bwe-16k-48k 60), FT_MINUTES and KEEP_MINUTES (mp3-restore-48k's two fine-tuning stages, default
# 25 and 42; 0 skips one),
# TRAIN_THREADS (torch threads, default 1: on a 2-core machine shared with other work one thread
# trains faster than two; alone on it, 2 made 1.7 times the steps of bwe-8k-16k, TRAINING.md;
# bwe-16k-48k defaults to 2, as its shipped weights were trained alone on the machine),
# TRAIN_DEVICE (cpu or cuda, default cpu), EVAL_LIMIT (evaluate N validation segments spread evenly
# over the split; default all).
set -euo pipefail

name=${1:?usage: scripts/train-plugin.sh bwe-8k-16k|bwe-16k-48k|mp3-restore-48k [RUN_DIR]}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cache=${WAVEHOST_CACHE:-$HOME/.cache/wavehost}
run=${2:-$cache/runs/$name}
weights=model/weights/$name.ts
start=$(date +%s)
stamp() { echo "== $(( ($(date +%s) - start) / 60 )) min: $*"; }
# `wavehost CMD` without needing the package installed: call the command's module main(argv)
wavehost_cmd() {
    python -c 'import importlib, sys; sys.exit(importlib.import_module(sys.argv[1]).main(sys.argv[2:]))' "$@"
}

grid=0.3,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.9,1  # the mix sweep's values
unseen=""  # the test set of recordings no network saw (python -m model.corpora --unseen-speech)
l1=30  # weight of the time-domain L1 term in the first stage's loss
train_minutes=45 threads=1  # the first stage's budget (minutes) and torch threads
case "$name" in
    bwe-8k-16k)
        corpora=(--speech)
        data=$cache/datasets/speech16k
        dataset=(--speech --out "$data")
        train=(--task bwe-8k-16k --batch-size 16 --segment 4096 --val-items 96)
        export=(--channels 1 --band-top 7850)
        evals=(soxr) l1=100 unseen=$cache/datasets/unseen-speech16k ;;
    bwe-16k-48k|mp3-restore-48k)
        corpora=(--speech --music)
        if [ "$name" = bwe-16k-48k ]; then
            # references whose band reaches 19.5 kHz: an earlier coder's cut at 16-19 kHz is
            # nothing a 16 kHz input can tell the network (model/data/DATA.md)
            data=$cache/datasets/music-speech48k-fullband band=19500 task=bwe-16k-48k
            evals=(soxr) train_minutes=60 threads=2
        else  # one mix choice per bitrate: the smallest is shipped
            data=$cache/datasets/music-speech48k-stereo band=17000 task=mp3-48k
            evals=(mp3:64 mp3:96 mp3:128 mp3:192) grid=0.5,0.6,0.7,0.8,0.9,1
        fi
        dataset=(--music --speech --rate 48000 --channels 2 --min-rate 44100 --min-band "$band"
                 --max-file 60 --out "$data")
        train=(--task "$task" --batch-size 8 --segment 8160 --val-items 64)
        export=(--channels 2 --stereo lr) ;;
    *) echo "train-plugin: unknown plugin $name (bwe-8k-16k, bwe-16k-48k or mp3-restore-48k)" >&2
       exit 2 ;;
esac

stamp "install corpora"
scripts/install-corpora.sh "${corpora[@]}"

stamp "build dataset $data"
wavehost_cmd model.corpora "${dataset[@]}"

stamp "train into $run"
wavehost_cmd model.train --data "$data" --out "$run" --resume "${train[@]}" \
    --minutes "${TRAIN_MINUTES:-$train_minutes}" --epochs 40 --device "${TRAIN_DEVICE:-cpu}" \
    --threads "${TRAIN_THREADS:-$threads}" --seed 0 --lr 3e-3 --warmup 100 \
    --w-stft 1 --w-l1 "$l1" --w-lsd 0 --w-snr 0 --val-every 200 --select val_loss

best=$run/best.pt
# finetune SUBDIR MINUTES ARGS...: train on from $best into $run/SUBDIR (resuming its last.pt if
# there is one) with ARGS over the task's settings; its best.pt becomes $best. MINUTES 0 skips it.
finetune() {
    local dir=$run/$1 minutes=$2 from
    shift 2
    [ "$minutes" = 0 ] && return
    stamp "fine-tune into $dir"
    if [ -e "$dir/last.pt" ]; then from=(--resume); else from=(--init "$best"); fi
    wavehost_cmd model.train --data "$data" --out "$dir" "${from[@]}" "${train[@]}" "$@" \
        --minutes "$minutes" --epochs 40 --device "${TRAIN_DEVICE:-cpu}" \
        --threads "${TRAIN_THREADS:-$threads}" --seed 1 --warmup 50 --w-stft 1 --w-lsd 0 \
        --w-l1 100 --w-snr 0.05 --val-every 200 --select val_loss
    best=$dir/best.pt
}
if [ "$name" = mp3-restore-48k ]; then
    finetune ft "${FT_MINUTES:-25}" --lr 1e-3
    finetune ft/keep "${KEEP_MINUTES:-42}" --lr 5e-4 --w-keep 1 \
        --kbps 64,80,96,112,128,160,192,256,320
fi

stamp "choose the mix on the training split"
sweep=$run/mix-sweep
wavehost_cmd model.export --checkpoint "$best" --out "$sweep/$name.ts" --name "$name" "${export[@]}"
reports=()
for how in "${evals[@]}"; do
    wavehost_cmd model.evaluate --plugin "$sweep/$name.ts" --data "$data" --out "$sweep/${how/:/}" \
        --degrade "$how" --split train --limit 96 --mix-sweep "$grid" --no-progress
    reports+=("$sweep/${how/:/}/metrics.json")
done
mix=$(python -c 'import json, sys; print(min(json.load(open(p))["chosen_mix"] for p in sys.argv[1:]))' \
    "${reports[@]}")

stamp "export $weights (mix $mix)"
wavehost_cmd model.export --checkpoint "$best" --out "$weights" --name "$name" "${export[@]}" \
    --mix "$mix" --save-weights "${weights%.ts}.pt"

for how in "${evals[@]}"; do
    stamp "evaluate on the validation split ($how)"
    wavehost_cmd model.evaluate --plugin "$weights" --data "$data" --out "$run/eval-${how/:/}" \
        --degrade "$how" --no-progress ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"}
done

if [ -n "$unseen" ]; then
    stamp "evaluate on real speech no network was trained on"
    scripts/install-corpora.sh --unseen
    wavehost_cmd model.corpora --unseen-speech --out "$unseen"
    wavehost_cmd model.evaluate --plugin "$weights" --data "$unseen" --out "$run/eval-unseen" \
        --degrade soxr --no-progress
fi

stamp "done: $weights, reports in $run/eval-*/metrics.md"
