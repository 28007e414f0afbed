#!/usr/bin/env bash
# Installs everything wavehost needs on a fresh Debian machine: the Debian packages (PortAudio,
# PipeWire for the private audio server, libsndfile), torch 2.13.0 first (the local CPU wheel; an
# unpinned torch would pull gigabytes of CUDA packages), then wavehost with its dev extras.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(libportaudio2 portaudio19-dev pipewire-alsa libasound2-plugins pulseaudio-utils pipewire
      pipewire-pulse wireplumber pipewire-bin dbus libsndfile1 gcc libtcmalloc-minimal4)
PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

missing=()
for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null
then
    echo "setup: installing torch 2.13.0 (CPU)" >&2
    "$PY" -m pip install -q "torch==2.13.0"
fi
echo "setup: installing wavehost[dev]" >&2
"$PY" -m pip install -q -e ".[dev]" 2>&1 | grep -v -e "^WARNING: Running pip as" -e "Location 'file" >&2 || true
"$PY" -c "import realtime, sounddevice, pyaudio, soxr, pywt, soundfile, numba, torch" \
    || { echo "setup: the Python packages did not install; see the pip output above" >&2; exit 1; }
echo "setup: done" >&2
