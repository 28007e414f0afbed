"""Training tasks: what a model restores, at which rates, from which degradation.

A task pairs a wideband reference ``(channels, time)`` at ``rate_out`` with the input the model
gets at ``rate_in``, sample-aligned (input sample ``k`` at reference time ``factor * k``):

- ``bwe-8k-16k``: narrowband speech (a phone call) to wideband; random anti-aliasing filters,
  telephone band and μ-law in training (:data:`model.degrade.BAND_8K`);
- ``bwe-16k-48k``: 16 kHz audio (a wideband call, a 16 kHz stream) to 48 kHz; random
  anti-aliasing filters with a 7–8 kHz cut-off (:data:`model.degrade.BAND_16K`);
- ``mp3-48k``: decoded low-bitrate MP3 to the original at 48 kHz; LAME CBR at a random bitrate
  of 64–192 kb/s (joint stereo) in training.

Validation inputs are fixed: soxr VHQ resampling for the bandwidth tasks (as the baselines of
notes/metrics.md), MP3 at 64 / 96 / 128 / 192 kb/s in turn (by segment index) for ``mp3-48k``.
Stereo references are restored channel by channel: the channels go on the batch axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from model import baselines
from model.degrade import BAND_8K, BAND_16K, LAME_KBPS, degrade_band, degrade_mp3, mp3_channels

VAL_KBPS = (64, 96, 128, 192)

Baseline = Callable[[np.ndarray, int, int], np.ndarray]


def _unprocessed(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """The input itself (the decoded MP3 is the baseline of MP3 restoration)."""
    return np.asarray(x, dtype=np.float32)


def _val_resample(y: np.ndarray, index: int, rate_in: int, rate_out: int) -> np.ndarray:
    return np.stack([baselines.sinc(c, rate_out, rate_in) for c in y])


def _val_mp3(y: np.ndarray, index: int, rate: int) -> np.ndarray:
    return mp3_channels(y, rate, VAL_KBPS[index % len(VAL_KBPS)])


@dataclass(frozen=True)
class Task:
    """One restoration task. ``train``: ``(batch, channels, T) tensor at rate_out, generator ->
    (batch, channels, T / factor)`` at ``rate_in`` (random); ``val``: ``(channels, T) array,
    index -> (channels, T / factor)`` (fixed); ``baselines``: name -> ``f(x, rate_in, rate_out)``
    on one channel."""

    name: str
    rate_in: int
    rate_out: int
    train: Callable[[torch.Tensor, np.random.Generator], torch.Tensor]
    val: Callable[[np.ndarray, int], np.ndarray]
    baselines: dict[str, Baseline]

    @property
    def factor(self) -> int:
        """Output samples per input sample."""
        return self.rate_out // self.rate_in


TASKS: dict[str, Task] = {
    "bwe-8k-16k": Task(
        "bwe-8k-16k", 8000, 16000,
        partial(degrade_band, config=BAND_8K),
        partial(_val_resample, rate_in=8000, rate_out=16000),
        dict(baselines.BASELINES),
    ),
    "bwe-16k-48k": Task(
        "bwe-16k-48k", 16000, 48000,
        partial(degrade_band, config=BAND_16K),
        partial(_val_resample, rate_in=16000, rate_out=48000),
        dict(baselines.BASELINES),
    ),
    "mp3-48k": Task(
        "mp3-48k", 48000, 48000,
        partial(degrade_mp3, rate=48000),
        partial(_val_mp3, rate=48000),
        {"mp3": _unprocessed},
    ),
}  # fmt: skip


def with_kbps(task: Task, kbps: tuple[int, ...]) -> Task:
    """``task`` (an MP3 task) drawing its training bitrates from ``kbps`` (LAME CBR kb/s) instead
    of the default 64–192; raises ``ValueError`` for another task or a bitrate LAME has not."""
    if task.name != "mp3-48k":
        raise ValueError(f"MP3 bitrates apply to the mp3-48k task, not {task.name}")
    bad = sorted(set(kbps) - set(LAME_KBPS))
    if not kbps or bad:
        choices = ", ".join(map(str, LAME_KBPS))
        raise ValueError(f"MP3 bitrates {bad or 'none'}: choose from {choices}")
    return replace(task, train=partial(degrade_mp3, rate=task.rate_out, kbps=tuple(kbps)))
