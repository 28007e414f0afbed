#!/usr/bin/env bash
# The main job on a machine with no sound card: set up, bring up the private audio server, play
# the bundled narrowband call clip into the virtual "call" sink (as a VoIP application would),
# capture it from that sink's monitor, stream it live through the default plugin, play the
# result into the "listener" sink, record both the engine output and what the listener hears,
# and print the latency report and the block-time distribution.
#
# With --music, the same for system audio: the bundled 64 kb/s MP3 music clip is played into a
# stereo 48 kHz "system" sink (as a media player would), restored live by mp3-restore-48k from
# that sink's monitor and played into "listener", on the native pulse backend by default (on the
# 2-core VM, PortAudio's 48 kHz stereo capture through the ALSA plugin slips now and then).
#
#   bash scripts/demo.sh [--music] [--plugin P] [--backend sounddevice|pyaudio|pulse] [--block N]
#                        [--out DIR]
#
# With a real sound card, `wavehost run` alone uses the default devices.
set -euo pipefail
cd "$(dirname "$0")/.."

PLUGIN_ARGS=()
MUSIC=0
BACKEND=
BLOCK=256
OUT=demo-out
while [ $# -gt 0 ]; do
    case "$1" in
        --music) MUSIC=1; shift ;;
        --plugin) PLUGIN_ARGS+=(--plugin "$2"); shift 2 ;;
        --backend) BACKEND="$2"; shift 2 ;;
        --block) BLOCK="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        *) echo "demo.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

bash scripts/setup.sh
PY=${PYTHON:-python3}
if ((MUSIC)); then
    CLIP=realtime/data/music-64k.mp3 RATE=48000 CHANNELS=2 SOURCE=system WHAT="system audio"
    BACKEND=${BACKEND:-pulse}
    [ ${#PLUGIN_ARGS[@]} -eq 0 ] && PLUGIN_ARGS=(--plugin mp3-restore-48k)
else
    CLIP=realtime/data/call-8k.flac RATE=16000 CHANNELS=1 SOURCE=call WHAT="a call"
fi
BACKEND=${BACKEND:-sounddevice}
mkdir -p "$OUT"

export WAVEHOST_AUDIO_DIR="${WAVEHOST_AUDIO_DIR:-/tmp/wavehost-demo-$(id -u)}"
bash scripts/audio-server.sh stop >/dev/null 2>&1 || true  # a fresh server with this demo's sinks
bash scripts/audio-server.sh start --rate "$RATE" --channels "$CHANNELS" \
    --sinks "$SOURCE listener" >/dev/null
eval "$(bash scripts/audio-server.sh env)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bash scripts/audio-server.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

SECONDS_CLIP=$("$PY" -c "import soundfile as sf; print(sf.info('$CLIP').duration)")
DURATION=$("$PY" -c "print(round($SECONDS_CLIP + 1.5, 2))")

# what the listener hears: the listener sink's monitor
parecord --device=listener.monitor --rate="$RATE" --channels="$CHANNELS" --format=float32le \
    --file-format=wav "$OUT/listener.wav" &
PIDS+=($!)
# the "application" (a VoIP client, a media player): plays the clip into its sink, a moment after
# the host is up
( sleep 0.7; paplay --device="$SOURCE" "$CLIP" ) &
PIDS+=($!)

echo "demo: streaming ${DURATION}s of $WHAT ('$CLIP', monitor of sink $SOURCE) through" \
     "${PLUGIN_ARGS[1]:-the default plugin}" >&2
# the plugin's tensors on tcmalloc's heap instead of glibc's: 8-14 % less time per block
# (bench/PROFILE.md); setup.sh installs it, and the run goes on without it where it is missing
HEAP=$("$PY" -c "import ctypes.util; print(ctypes.util.find_library('tcmalloc_minimal') or '')")
LD_PRELOAD="$HEAP${LD_PRELOAD:+:$LD_PRELOAD}" \
"$PY" -m realtime.cli run ${PLUGIN_ARGS[@]+"${PLUGIN_ARGS[@]}"} --backend "$BACKEND" \
    --monitor "$SOURCE" --sink listener \
    --rate "$RATE" --block "$BLOCK" --duration "$DURATION" \
    --record "$OUT/engine-out.wav" --record-input "$OUT/engine-in.wav" \
    --report "$OUT/report.json"
sleep 0.3
echo "demo: wrote $OUT/engine-in.wav (captured $WHAT), $OUT/engine-out.wav (engine output)," \
     "$OUT/listener.wav (what the listener sink played), $OUT/report.json" >&2
