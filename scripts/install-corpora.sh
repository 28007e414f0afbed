#!/usr/bin/env bash
# Install the training corpora of notes/corpora.md WITHOUT touching the system:
# `apt-get download` each Debian package into a cache and unpack it there with `dpkg-deb -x`.
#
#   scripts/install-corpora.sh [--speech] [--music] [--all] [--unseen]   (default: --speech)
#
# --all is --speech --music (the training corpora); --unseen adds real speech no shipped network
# was trained on, the held-out test set of the 8 -> 16 kHz plugin (python -m model.corpora
# --unseen-speech).
# Cache: ${WAVEHOST_CACHE:-~/.cache/wavehost}/debs/{pkgs,root}; the audio lands under
# .../debs/root/usr/share/... . Idempotent: a package already unpacked (stamp file) is skipped.
# Prints one line per package and the unpacked root at the end.
set -euo pipefail

SPEECH=(klettres-data fillets-ng-data-cs)
MUSIC=(wesnoth-1.16-music warzone2100-music singularity-music drascula-music sonic-pi-samples)
UNSEEN=(ktuberling-data fillets-ng-data-nl)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

want=()
for arg in "$@"; do
    case "$arg" in
        --speech) want+=("${SPEECH[@]}") ;;
        --music) want+=("${MUSIC[@]}") ;;
        --all) want+=("${SPEECH[@]}" "${MUSIC[@]}") ;;
        --unseen) want+=("${UNSEEN[@]}") ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-corpora: unknown option $arg (use --speech, --music, --all or --unseen)" >&2; exit 2 ;;
    esac
done
[ ${#want[@]} -eq 0 ] && want=("${SPEECH[@]}")

cache="${WAVEHOST_CACHE:-$HOME/.cache/wavehost}/debs"
pkgs="$cache/pkgs"
root="$cache/root"
stamps="$cache/stamps"
mkdir -p "$pkgs" "$root" "$stamps"

for cmd in apt-get dpkg-deb; do
    command -v "$cmd" >/dev/null || { echo "install-corpora: $cmd not found (Debian/Ubuntu only)" >&2; exit 2; }
done

updated=0
for pkg in "${want[@]}"; do
    if [ -e "$stamps/$pkg" ]; then
        echo "cached     $pkg ($(cat "$stamps/$pkg"))"
        continue
    fi
    if ! ls "$pkgs/${pkg}"_*.deb >/dev/null 2>&1; then
        if ! (cd "$pkgs" && apt-get download -q "$pkg" >/dev/null 2>&1); then
            if [ "$updated" -eq 0 ] && [ "$(id -u)" -eq 0 ]; then
                apt-get update -q >/dev/null && updated=1
            fi
            (cd "$pkgs" && apt-get download -q "$pkg" >/dev/null) || {
                echo "install-corpora: apt-get download $pkg failed (run apt-get update?)" >&2
                exit 1
            }
        fi
    fi
    deb=$(ls "$pkgs/${pkg}"_*.deb | head -n 1)
    dpkg-deb -x "$deb" "$root"
    size=$(du -sh "$deb" | cut -f1)
    basename "$deb" > "$stamps/$pkg"
    echo "installed  $pkg ($(basename "$deb"), $size)"
done
echo "corpora root: $root"
