"""Shipped plugin weights: small TorchScript files (with a ``.json`` sidecar) in this folder,
each next to the weights-only checkpoint it was exported from (``NAME.pt``, read by
``wavehost export --checkpoint``; not installed with the package).

The host resolves plugin names through the ``wavehost.plugins`` entry points, e.g.
``bwe-8k-16k = "model.weights:bwe_8k_16k"``.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent


def _shipped(filename: str) -> Path:
    path = WEIGHTS_DIR / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"shipped weights {filename} not found in {WEIGHTS_DIR}; "
            f"train and export them first (wavehost train, then wavehost export --out {path})"
        )
    return path


def bwe_8k_16k() -> Path:
    """The 8 kHz -> 16 kHz speech bandwidth-extension plugin (``bwe-8k-16k.ts``)."""
    return _shipped("bwe-8k-16k.ts")


def bwe_16k_48k() -> Path:
    """The 16 kHz -> 48 kHz stereo bandwidth-extension plugin (``bwe-16k-48k.ts``)."""
    return _shipped("bwe-16k-48k.ts")


def mp3_restore_48k() -> Path:
    """The 48 kHz stereo MP3 (low-bitrate) restoration plugin (``mp3-restore-48k.ts``)."""
    return _shipped("mp3-restore-48k.ts")
