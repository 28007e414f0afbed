#!/usr/bin/env bash
# wavehost's private audio server: PipeWire + WirePlumber + pipewire-pulse with null sinks
# (mono by default; --channels 2 for stereo ones, e.g. system audio at 48 kHz).
#
#   scripts/audio-server.sh start [--rate HZ] [--sinks "call listener"] [--channels 1|2]
#                                 [--no-force-rate] [--quantum FRAMES]
#   scripts/audio-server.sh stop
#   scripts/audio-server.sh env            # prints `export VAR=...` lines:  eval "$(... env)"
#   scripts/audio-server.sh status
#   scripts/audio-server.sh rate HZ        # force the graph rate (0: let PipeWire choose)
#
# Everything lives in $WAVEHOST_AUDIO_DIR (default /tmp/wavehost-audio-$UID, mode 0700):
#   run/          XDG_RUNTIME_DIR of the server (pipewire-0, pulse/native, the session bus)
#   asound.conf   private ALSA config, used through
#                 ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$DIR/asound.conf
#                 (pcm `default` = pulse; hinted pcms `<sink>` and `<sink>_monitor` per sink)
#   pids          "name pid" per daemon, for `stop`
#   env           the lines `env` prints
#   *.log         daemon logs
# No systemd is needed: works as root, in CI and in containers. The first sink is the default
# sink, its monitor the default source. With the rate forced (default), every stream at that rate
# passes through the graph bit-exactly (no resampling).
set -euo pipefail

PROG="audio-server.sh"
DIR="${WAVEHOST_AUDIO_DIR:-/tmp/wavehost-audio-${UID:-$(id -u)}}"
RUN="$DIR/run"
MARKER="$DIR/.wavehost-audio"
RATE=48000
SINKS="call listener"
CHANNELS=1
FORCE_RATE=1
QUANTUM=256  # graph period, frames; pinned so clients joining or leaving do not make PipeWire
             # renegotiate it (measured here: xruns and 450 ms stalls in the other streams)
EXPLICIT=0

die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }

need() { # need CMD DEBIAN_PACKAGE
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install it with 'apt-get install -y $2'"
}

server_env() { # the environment a client (and the daemons) needs
    export XDG_RUNTIME_DIR="$RUN"
    export PIPEWIRE_RUNTIME_DIR="$RUN"
    export DBUS_SESSION_BUS_ADDRESS="unix:path=$RUN/bus"
    export PULSE_SERVER="unix:$RUN/pulse/native"
    export ALSA_CONFIG_PATH="/usr/share/alsa/alsa.conf:$DIR/asound.conf"
    unset PIPEWIRE_REMOTE PULSE_SINK PULSE_SOURCE
}

print_env() {
    local sinks rate
    sinks="$(cat "$DIR/sinks" 2>/dev/null || echo "$SINKS")"
    rate="$(cat "$DIR/rate" 2>/dev/null || echo "$RATE")"
    cat <<EOF
export XDG_RUNTIME_DIR='$RUN'
export PIPEWIRE_RUNTIME_DIR='$RUN'
export DBUS_SESSION_BUS_ADDRESS='unix:path=$RUN/bus'
export PULSE_SERVER='unix:$RUN/pulse/native'
export ALSA_CONFIG_PATH='/usr/share/alsa/alsa.conf:$DIR/asound.conf'
export WAVEHOST_AUDIO_DIR='$DIR'
export WAVEHOST_AUDIO_RATE='$rate'
export WAVEHOST_AUDIO_SINKS='$sinks'
EOF
}

comm_of() { # the executable name we expect for a pids-file entry
    case "$1" in dbus) echo dbus-daemon ;; *) echo "$1" ;; esac
}

alive() { # alive NAME PID: running (not a zombie) and still the process we started
    local pid="$2" state comm
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/status" ]]; then
        state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
        [[ "$state" != Z ]] || return 1
        comm="$(cat "/proc/$pid/comm" 2>/dev/null)"
        [[ "$comm" == "$(comm_of "$1")" ]] || return 1
    fi
    return 0
}

pids_alive() { # true if a pids file exists and every daemon in it is alive
    [[ -f "$DIR/pids" ]] || return 1
    local name pid
    while read -r name pid; do
        alive "$name" "$pid" || return 1
    done <"$DIR/pids"
    return 0
}

is_running() {
    pids_alive || return 1
    (server_env; timeout 3 pactl info >/dev/null 2>&1)
}

wait_for() { # wait_for SECONDS CMD... : poll every 50 ms
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

alsa_plugin() { # alsa_plugin NAME: whether ALSA's pcm plugin NAME (pulse, pipewire) is installed
    compgen -G "/usr/lib/*/alsa-lib/libasound_module_pcm_$1.so" >/dev/null \
        || compgen -G "/usr/lib/alsa-lib/libasound_module_pcm_$1.so" >/dev/null \
        || compgen -G "/usr/lib64/alsa-lib/libasound_module_pcm_$1.so" >/dev/null
}

# PortAudio reaches the server through ALSA: PipeWire's own plugin (pipewire-alsa) where it is
# installed, else the pulse plugin (libasound2-plugins) through pipewire-pulse. The pulse plugin's
# playback stream asks the server for prebuffering: an under-run stops it until refilled, the lag
# grows for good and ALSA never hears of it (three 40 ms stalls of a 48 kHz, 256-frame stream
# took its lag from 768 to 5631 samples, in steps). Through PipeWire's plugin the lag stayed at
# 768 through the same stalls.
write_asound_conf() {
    local f="$DIR/asound.conf" server="unix:$RUN/pulse/native" s
    {
        echo "# wavehost private ALSA config (generated by $PROG); use it through"
        echo "# ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$f"
        if alsa_plugin pipewire; then
            echo "pcm.!default { type pipewire hint { show on description \"wavehost default (pipewire)\" } }"
            echo "ctl.!default { type pipewire }"
            for s in $SINKS; do
                echo "pcm.$s { type pipewire playback_node \"$s\" hint { show on description \"wavehost sink $s\" } }"
                echo "pcm.${s}_monitor { type asym capture.pcm { type pipewire capture_node \"$s\" } hint { show on description \"wavehost monitor of sink $s\" } }"
            done
        else
            echo "pcm.!default { type pulse server \"$server\" hint { show on description \"wavehost default (pulse)\" } }"
            echo "ctl.!default { type pulse server \"$server\" }"
            for s in $SINKS; do
                echo "pcm.$s { type pulse server \"$server\" device \"$s\" hint { show on description \"wavehost sink $s\" } }"
                echo "pcm.${s}_monitor { type pulse server \"$server\" device \"$s.monitor\" hint { show on description \"wavehost monitor of sink $s\" } }"
            done
        fi
    } >"$f.tmp"
    mv "$f.tmp" "$f"
}

start_daemon() { # start_daemon NAME CMD... : background, logs to $DIR/NAME.log, pid to pids file
    local name="$1"; shift
    "$@" </dev/null >>"$DIR/$name.log" 2>&1 &
    echo "$name $!" >>"$DIR/pids"
}

# pipewire-pulse moves the audio of every PulseAudio client (wavehost's pulse backend, paplay,
# PortAudio through ALSA's pulse plugin) in its main thread, which PipeWire leaves at normal priority while
# its own data threads run SCHED_FIFO 88. Measured on the 2-core VM with both cores busy: a
# 48 kHz, 256-frame `wavehost run` had 6 output underflows in 20 s; with this thread at
# SCHED_FIFO 20, 0 in each of 3 runs.
raise_pulse_priority() {
    local pid
    pid="$(awk '$1 == "pipewire-pulse" {print $2}' "$DIR/pids")"
    chrt -f -p 20 "$pid" >/dev/null 2>&1 && return
    renice -n -11 -p "$pid" >/dev/null 2>&1 && { log "pipewire-pulse at nice -11 (SCHED_FIFO not allowed)"; return; }
    log "note: pipewire-pulse keeps normal priority (raising it needs root or CAP_SYS_NICE): on a busy machine expect underflows at 48 kHz"
}

set_rate() { # set_rate HZ (0: unforce)
    (server_env; pw-metadata -n settings 0 clock.force-rate "$1" >/dev/null) \
        || die "pw-metadata could not set clock.force-rate $1"
    [[ "$1" != 0 ]] && echo "$1" >"$DIR/rate"
    return 0
}

cmd_start() {
    while (($#)); do
        case "$1" in
            --rate) RATE="${2:?--rate needs a value in Hz}"; EXPLICIT=1; shift 2 ;;
            --rate=*) RATE="${1#--rate=}"; EXPLICIT=1; shift ;;
            --sinks) SINKS="${2:?--sinks needs a list of names}"; EXPLICIT=1; shift 2 ;;
            --sinks=*) SINKS="${1#--sinks=}"; EXPLICIT=1; shift ;;
            --channels) CHANNELS="${2:?--channels needs 1 or 2}"; EXPLICIT=1; shift 2 ;;
            --no-force-rate) FORCE_RATE=0; shift ;;
            --quantum) QUANTUM="${2:?--quantum needs a value in frames (0: let PipeWire choose)}"; shift 2 ;;
            *) die "unknown option '$1' (start [--rate HZ] [--sinks \"call listener\"] [--channels 1|2] [--no-force-rate] [--quantum FRAMES])" ;;
        esac
    done
    [[ "$RATE" =~ ^[0-9]+$ ]] && ((RATE >= 8000 && RATE <= 384000)) \
        || die "--rate must be an integer in Hz between 8000 and 384000, got '$RATE'"
    [[ -n "${SINKS// /}" ]] || die "--sinks needs at least one name"
    [[ "$CHANNELS" == 1 || "$CHANNELS" == 2 ]] || die "--channels must be 1 or 2, got '$CHANNELS'"
    local s
    for s in $SINKS; do
        [[ "$s" =~ ^[A-Za-z][A-Za-z0-9_-]*$ ]] || die "bad sink name '$s' (letters, digits, _ and -)"
    done

    ((${#RUN} <= 90)) || die "WAVEHOST_AUDIO_DIR is too long for a unix socket path: '$DIR'"
    if is_running; then
        local have_sinks have_rate have_channels
        have_sinks="$(cat "$DIR/sinks")"
        have_rate="$(cat "$DIR/rate")"
        have_channels="$(cat "$DIR/channels" 2>/dev/null || echo 1)"
        if ((EXPLICIT)) && [[ "$(echo $SINKS)" != "$(echo $have_sinks)" || "$RATE" != "$have_rate" \
                               || "$CHANNELS" != "$have_channels" ]]; then
            log "already running in $DIR with sinks '$have_sinks' ($have_channels channel(s)) at $have_rate Hz; kept as is" \
                "(run '$0 stop' first to change them)"
        fi
        print_env
        return 0
    fi
    need pipewire pipewire
    need wireplumber wireplumber
    need pipewire-pulse pipewire-pulse
    need pactl pulseaudio-utils
    need pw-metadata pipewire-bin
    need dbus-daemon dbus
    alsa_plugin pipewire || alsa_plugin pulse \
        || die "no ALSA plugin reaches the server: install one with 'apt-get install -y pipewire-alsa'"

    if [[ -d "$DIR" && ! -f "$MARKER" ]] && [[ -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
        die "$DIR exists, is not empty and was not made by $PROG; set WAVEHOST_AUDIO_DIR to a new or empty folder"
    fi
    [[ -e "$DIR/pids" ]] && cmd_stop quiet # stale half-started server
    mkdir -p "$DIR"
    chmod 0700 "$DIR"
    [[ -O "$DIR" ]] || die "$DIR is not owned by $(id -un); set WAVEHOST_AUDIO_DIR to a private folder"
    touch "$MARKER"
    rm -rf "$RUN" "$DIR/state" "$DIR/config"
    mkdir -m 0700 -p "$RUN" "$DIR/state" "$DIR/config"
    : >"$DIR/pids"
    rm -f "$DIR"/*.log
    echo "$SINKS" >"$DIR/sinks"
    echo "$RATE" >"$DIR/rate"
    echo "$CHANNELS" >"$DIR/channels"

    server_env
    # Isolate from any user configuration and keep WirePlumber's restore state private.
    export XDG_STATE_HOME="$DIR/state" XDG_CONFIG_HOME="$DIR/config"
    unset DISPLAY WAYLAND_DISPLAY

    local dbus_pid
    dbus_pid="$(dbus-daemon --session --fork --address="unix:path=$RUN/bus" --print-pid \
        </dev/null 2>>"$DIR/dbus.log")" || die "dbus-daemon did not start (see $DIR/dbus.log)"
    echo "dbus $dbus_pid" >>"$DIR/pids"

    start_daemon pipewire pipewire
    if ! wait_for 10 test -S "$RUN/pipewire-0"; then
        cmd_stop quiet
        die "pipewire did not open its socket within 10 s (see $DIR/pipewire.log)"
    fi
    start_daemon wireplumber wireplumber
    start_daemon pipewire-pulse pipewire-pulse
    if ! wait_for 10 timeout 3 pactl info; then
        local why="see $DIR/*.log"
        pids_alive || why="a daemon exited; see $DIR/*.log"
        cmd_stop quiet
        die "the server did not answer 'pactl info' within 10 s ($why)"
    fi
    raise_pulse_priority

    local props
    for s in $SINKS; do
        props="device.description=$s"
        local map=mono
        ((CHANNELS == 2)) && map=front-left,front-right
        pactl load-module module-null-sink sink_name="$s" rate="$RATE" channels="$CHANNELS" \
            channel_map="$map" sink_properties="$props" >/dev/null \
            || { cmd_stop quiet; die "could not create null sink '$s'"; }
    done
    for s in $SINKS; do
        if ! wait_for 5 sh -c "pactl list short sinks | cut -f2 | grep -qx '$s'"; then
            cmd_stop quiet
            die "null sink '$s' did not appear"
        fi
    done
    local first="${SINKS%% *}"
    first="${first## }"
    pactl set-default-sink "$first"
    pactl set-default-source "$first.monitor"
    if ((FORCE_RATE)); then
        set_rate "$RATE"
    fi
    [[ "$QUANTUM" =~ ^[0-9]+$ ]] || die "--quantum must be a number of frames, got '$QUANTUM'"
    (server_env; pw-metadata -n settings 0 clock.force-quantum "$QUANTUM" >/dev/null) \
        || die "pw-metadata could not set clock.force-quantum $QUANTUM"
    write_asound_conf
    print_env >"$DIR/env"
    print_env
}

cmd_stop() {
    local quiet="${1:-}"
    if [[ ! -f "$DIR/pids" ]]; then
        [[ -n "$quiet" ]] || log "not running (no $DIR/pids)"
        return 0
    fi
    local order="wireplumber pipewire-pulse pipewire dbus" want name pid
    for want in $order; do
        while read -r name pid; do
            [[ "$name" == "$want" && -n "$pid" ]] || continue
            alive "$name" "$pid" || continue # gone, or the pid now belongs to someone else
            kill "$pid" 2>/dev/null || continue
            local i
            for i in $(seq 60); do
                alive "$name" "$pid" || break
                sleep 0.05
            done
            if alive "$name" "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
        done <"$DIR/pids"
    done
    # Only remove what this script created (the marker says it made this folder's contents).
    rm -f "$DIR/pids"
    if [[ -f "$MARKER" ]]; then
        rm -rf "$RUN" "$DIR/state" "$DIR/config"
        rm -f "$DIR/env" "$DIR/asound.conf" "$DIR/asound.conf.tmp" "$DIR/sinks" "$DIR/rate" "$DIR/channels" \
            "$DIR"/*.log "$MARKER"
        rmdir "$DIR" 2>/dev/null || true
    fi
    return 0
}

cmd_env() {
    is_running || die "the audio server is not running in $DIR (run '$0 start')"
    print_env
}

cmd_status() {
    if is_running; then
        echo "running in $DIR: sinks $(cat "$DIR/sinks"), rate $(cat "$DIR/rate") Hz"
        (server_env; pactl list short sinks)
    else
        echo "not running ($DIR)"
        return 1
    fi
}

cmd_rate() {
    local hz="${1:?rate needs a value in Hz (0: let PipeWire choose)}"
    [[ "$hz" =~ ^[0-9]+$ ]] || die "rate must be an integer in Hz, got '$hz'"
    is_running || die "the audio server is not running in $DIR (run '$0 start')"
    set_rate "$hz"
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop ;;
    env) cmd_env ;;
    status) cmd_status ;;
    rate) shift; cmd_rate "$@" ;;
    *) die "usage: $0 start [--rate HZ] [--sinks \"call listener\"] [--no-force-rate] | stop | env | status | rate HZ" ;;
esac
