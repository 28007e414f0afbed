"""Training corpora: a cached, resampled, bandwidth-filtered, segmented copy, built once.

Sources are folders of audio files (the Debian packages of notes/corpora.md, unpacked by
``scripts/install-corpora.sh`` under ``$WAVEHOST_CACHE/debs/root``, or any folder). For each
file, in order:

1. decode with soundfile (a file that fails is counted ``unreadable`` and skipped);
2. ``rate``: drop files whose sample rate is below ``min_rate`` (default: the target rate; 44.1 kHz
   files may be accepted for 48 kHz targets, their top 2 kHz then stays empty);
3. ``band``: mix to mono and measure the bandwidth — the highest frequency whose long-term level
   (Welch mean of Hann-windowed power spectra, smoothed over ~200 Hz) is within 60 dB of the peak
   level in 0.2–4 kHz — and drop files below ``min_band_hz`` (e.g. 7.5 kHz for 16 kHz targets);
   ``holes`` (only with ``max_holes`` below 1): drop files whose octave below ``min_band_hz`` is
   empty (its mean level more than 50 dB under the frame's from 0.2 kHz to ``min_band_hz / 2``)
   in more than ``max_holes`` of their loud frames — a long-term band can hide a coder that
   emptied it frame by frame (low-bitrate Vorbis does), and such a file is no wideband reference;
4. ``silent``: trim leading and trailing silence (20 ms frames 40 dB below the loudest) and drop
   files with less than 0.25 s left;
5. keep at most ``max_file_s`` seconds from the middle of the file (long music tracks would
   otherwise fill the set with a few pieces), resample to ``rate`` with soxr (VHQ), fade the ends
   (5 ms), concatenate the files of one group (a speaker / language / level folder) and cut them
   into segments of ``segment_s`` seconds (a tail of at least half a segment is zero-padded, a
   shorter one dropped).

``channels``: 1 mixes every file to mono; 2 keeps stereo (a mono file on both channels, files
with more channels keep their first two).

The train/validation split is by group (the first folder below the source root: a klettres
language folder, a fillets-ng level folder), never by segment; a source with a single group is
split by file. Groups are shuffled with ``seed`` and taken into validation until ``val_fraction``
of the source's files are there; ``val_fraction`` 1 holds every group out (a test set).

On-disk format (``out_dir``):

- ``manifest.json``::

    {"format": "wavehost-segments/1", "rate": 16000, "segment_samples": 32000,
     "segment_s": 2.0, "min_band_hz": 7500.0, "val_fraction": 0.1, "seed": 0,
     "channels": 1, "min_rate": 16000, "max_file_s": null, "max_holes": 1.0,
     "sources": [{"name", "root", "pattern", "licence"}],
     "splits": {"train": {"shards": [{"file": "train-000.npy", "segments": 1024}],
                          "segments": N, "seconds": S, "groups": ["source/group", ...]},
                "val": {...}},
     "filters": {source: {"found" | "unreadable" | "rate" | "band" | "holes" | "silent" |
                          "kept": {"files": n, "seconds": s}}},
     "files": [{"path", "source", "group", "split", "rate", "seconds", "band_hz", "holes",
                "status"}]}

  ``seconds`` in ``filters`` are the files' durations before trimming; ``status`` is ``kept`` or
  the name of the filter that dropped the file.
  (``channels``, ``min_rate``, ``max_file_s`` and ``max_holes`` are absent from sets built before
  they existed: 1, ``rate``, no cap and 1; so is the ``holes`` filter. A file's ``holes`` is its
  share of emptied loud frames, present where it was measured.)
- ``{split}-{k:03d}.npy``: float32 arrays of shape ``(segments, segment_samples)`` (mono) or
  ``(segments, channels, segment_samples)`` at ``rate`` Hz; read them with
  :class:`SegmentDataset` (memory-mapped), which gives ``(channels, segment_samples)`` either way.

Command line: ``python -m model.corpora --speech`` builds the 8 → 16 kHz speech set into
``$WAVEHOST_CACHE/datasets/speech16k`` (default cache ``~/.cache/wavehost``);
``python -m model.corpora --music --speech --rate 48000 --channels 2 --min-rate 44100 ...``
the 48 kHz stereo set of issue 6 (see ``scripts/train-plugin.sh``);
``python -m model.corpora --out SET --val-pieces DIR`` writes a built set's validation pieces
(:func:`export_pieces`) for evaluation on whole excerpts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
from tqdm import tqdm

FORMAT = "wavehost-segments/1"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
BAND_FLOOR_DB = 60.0
BAND_REF_HZ = (200.0, 4000.0)
HOLE_LOUD_DB = 20.0  # measure_holes: the frames that count, dB under the loudest
HOLE_DB = 50.0  # measure_holes: an octave this far under the band below it is empty
MIN_VOICED_S = 0.25
SHARD_SEGMENTS = 1024
UNSEEN_MAX_HOLES = 0.2  # --unseen-speech: a test set's references must be wideband
FILTERS = ("found", "unreadable", "rate", "band", "holes", "silent", "kept")
READ_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError)  # soundfile on a file it can't decode


class CorpusError(Exception):
    """Bad corpus input (no audio, nothing decodable, wrong rates). The message is one line."""


def cache_root() -> Path:
    """``$WAVEHOST_CACHE`` or ``~/.cache/wavehost``."""
    return Path(os.environ.get("WAVEHOST_CACHE", Path.home() / ".cache" / "wavehost"))


def corpora_root() -> Path:
    """Where ``scripts/install-corpora.sh`` unpacks the Debian packages."""
    return cache_root() / "debs" / "root"


@dataclass(frozen=True)
class Source:
    """A folder of audio files. ``pattern``: glob below ``root``; ``exclude``: file names to skip;
    ``group_depth``: how many folders below ``root`` name a group (speaker/language/level);
    0 puts every file in one group, i.e. a split by file."""

    name: str
    root: Path
    pattern: str = "**/*"
    licence: str = ""
    exclude: tuple[str, ...] = ()
    group_depth: int = 1

    def files(self) -> list[Path]:
        """The audio files of this source, sorted."""
        if not self.root.is_dir():
            raise CorpusError(
                f"corpus folder {self.root} does not exist (install the corpora: "
                f"scripts/install-corpora.sh with --speech, --music or --unseen)"
            )
        found = sorted(
            p
            for p in self.root.glob(self.pattern)
            if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and p.name not in self.exclude
        )
        if not found:
            raise CorpusError(
                f"no audio files under {self.root} matching {self.pattern} "
                f"(looked for {' '.join(AUDIO_SUFFIXES)})"
            )
        return found

    def group(self, path: Path) -> str:
        """The split unit of ``path``: its first ``group_depth`` folders below the root."""
        parts = path.relative_to(self.root).parts
        return (
            "/".join(parts[: self.group_depth])
            if len(parts) > self.group_depth
            else str(Path(*parts))
        )


def speech_sources(root: Path | None = None) -> list[Source]:
    """The speech corpora of notes/corpora.md (klettres-data, fillets-ng-data-cs)."""
    root = corpora_root() if root is None else root
    return [
        Source("klettres", root / "usr/share/klettres", "*/*/*.ogg", "GPL-2+"),
        Source("fillets-cs", root / "usr/share/games/fillets-ng/sound", "**/cs/*.ogg", "GPL-2+"),
    ]


def unseen_speech_sources(root: Path | None = None) -> list[Source]:
    """Real speech no shipped network was trained on, for a held-out test of the 8 -> 16 kHz
    plugin (``scripts/install-corpora.sh --unseen``): ktuberling-data (words read in 17 languages
    by KDE volunteers; the ``sr@*`` folders repeat ``sr`` and are skipped) and
    fillets-ng-data-nl (the Dutch dub of the game whose Czech dialogue is in training)."""
    root = corpora_root() if root is None else root
    return [
        Source("ktuberling", root / "usr/share/ktuberling/sounds", "[a-z][a-z]/*", "GPL-2+"),
        Source("fillets-nl", root / "usr/share/games/fillets-ng/sound", "**/nl/*.ogg", "GPL-2"),
    ]


def music_sources(root: Path | None = None) -> list[Source]:
    """The music corpora of notes/corpora.md, split by file (``group_depth`` 0)."""
    root = corpora_root() if root is None else root
    games = root / "usr/share/games"
    return [
        Source(
            "wesnoth",
            games / "wesnoth/1.16/data/core/music",
            "*.ogg",
            "GPL-2",
            exclude=("silence.ogg",),
            group_depth=0,
        ),
        Source("warzone2100", games / "warzone2100/music", "**/*.opus", "GPL-2+", group_depth=0),
        Source(
            "singularity", games / "singularity/music", "**/*.ogg", "CC-BY-SA-3.0", group_depth=0
        ),
        Source(
            "drascula",
            root / "usr/share/scummvm/drascula/audio",
            "*.ogg",
            "BSD-like",
            group_depth=0,
        ),
        Source(
            "sonic-pi",
            root / "usr/share/sonic-pi/samples",
            "*.flac",
            "CC0 (a few CC-BY-SA-4.0)",
            group_depth=0,
        ),
    ]


def _frame_spectra(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(freqs, power)`` of a mono signal: Hann-windowed power spectra of ~20 Hz bins, half
    overlapping; ``power`` is (frames, bins)."""
    n_fft = 1 << int(np.ceil(np.log2(rate / 20)))  # ~20 Hz bins
    x = np.asarray(x, dtype=np.float64)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[:: n_fft // 2]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2
    return np.fft.rfftfreq(n_fft, 1.0 / rate), power


def _bandwidth(freqs: np.ndarray, power: np.ndarray, floor_db: float = BAND_FLOOR_DB) -> float:
    """:func:`measure_bandwidth` of the :func:`_frame_spectra` ``freqs, power``."""
    width = max(1, round(200.0 / freqs[1]))
    power = np.convolve(power.mean(axis=0), np.ones(width) / width, mode="same")
    ref = power[(freqs >= BAND_REF_HZ[0]) & (freqs <= BAND_REF_HZ[1])].max()
    if ref <= 0:
        return 0.0
    above = np.nonzero(power >= ref * 10 ** (-floor_db / 10))[0]
    return float(freqs[above[-1]])


def measure_bandwidth(x: np.ndarray, rate: int, floor_db: float = BAND_FLOOR_DB) -> float:
    """Bandwidth of a mono signal in Hz: the highest frequency whose long-term level (the mean
    of :func:`_frame_spectra`, smoothed over ~200 Hz) is within ``floor_db`` dB of the peak
    level in 0.2–4 kHz (0 for silence)."""
    return _bandwidth(*_frame_spectra(x, rate), floor_db)


def _holes(freqs: np.ndarray, power: np.ndarray, from_hz: float) -> float:
    """:func:`measure_holes` of the :func:`_frame_spectra` ``freqs, power``."""
    low = power[:, (freqs >= BAND_REF_HZ[0]) & (freqs < from_hz)].mean(axis=1)
    high = power[:, (freqs >= from_hz) & (freqs < 2 * from_hz)].mean(axis=1)
    if low.max() <= 0:
        return 0.0
    loud = low >= low.max() * 10 ** (-HOLE_LOUD_DB / 10)
    return float((high < low * 10 ** (-HOLE_DB / 10))[loud].mean())


def measure_holes(x: np.ndarray, rate: int, from_hz: float) -> float:
    """The share of a mono signal's loud frames (:func:`_frame_spectra`; within
    :data:`HOLE_LOUD_DB` dB of the loudest by their mean level in 0.2 kHz–``from_hz``) whose
    octave above ``from_hz`` Hz is more than :data:`HOLE_DB` dB under that level: frames whose
    high band a coder emptied (low-bitrate Vorbis zeroes bands frame by frame). 0 for silence."""
    return _holes(*_frame_spectra(x, rate), from_hz)


def _trim(x: np.ndarray, rate: int) -> np.ndarray:
    """``x`` (time, channels) without its silent head and tail (20 ms frames, −40 dB)."""
    hop = max(1, rate // 50)
    n = len(x) // hop
    if n == 0:
        return x[:0]
    power = np.mean(x[: n * hop] ** 2, axis=1)
    level = 10 * np.log10(np.mean(power.reshape(n, hop), axis=1) + 1e-12)
    loud = np.nonzero(level > level.max() - 40.0)[0]
    return x[loud[0] * hop : (loud[-1] + 1) * hop]


def _middle(x: np.ndarray, rate: int, max_s: float | None) -> np.ndarray:
    """At most ``max_s`` seconds from the middle of ``x`` (time, channels)."""
    if max_s is None or len(x) <= max_s * rate:
        return x
    n = int(max_s * rate)
    start = (len(x) - n) // 2
    return x[start : start + n]


def _fade(x: np.ndarray, rate: int) -> np.ndarray:
    """``x`` (time, channels) with 5 ms linear fades at both ends."""
    n = min(len(x) // 2, int(0.005 * rate))
    ramp = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
    x = x.copy()
    x[:n] *= ramp
    x[len(x) - n :] *= ramp[::-1]
    return x


@dataclass
class Manifest:
    """A built dataset: its folder and the parsed ``manifest.json`` (format in the module doc)."""

    dir: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, out_dir: str | Path) -> Manifest:
        """Read ``out_dir/manifest.json``; raise :class:`CorpusError` if there is none."""
        path = Path(out_dir) / "manifest.json"
        if not path.is_file():
            raise CorpusError(f"no dataset manifest at {path} (build it: python -m model.corpora)")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise CorpusError(f"{path} is not a {FORMAT} manifest")
        return cls(Path(out_dir), data)

    @property
    def rate(self) -> int:
        """Sample rate of every segment, Hz."""
        return int(self.data["rate"])

    @property
    def segment_samples(self) -> int:
        """Samples per segment."""
        return int(self.data["segment_samples"])

    @property
    def channels(self) -> int:
        """Channels per segment (1 for sets built before stereo existed)."""
        return int(self.data.get("channels", 1))

    def shard_shape(self, count: int) -> tuple[int, ...]:
        """The array shape of a shard holding ``count`` segments."""
        seg = self.segment_samples
        return (count, seg) if self.channels == 1 else (count, self.channels, seg)

    def shards(self, split: str) -> list[tuple[Path, int]]:
        """``(npy path, segment count)`` of each shard of ``split`` ("train" or "val")."""
        if split not in self.data["splits"]:
            raise CorpusError(
                f"no split {split!r} in {self.dir} (have {list(self.data['splits'])})"
            )
        return [
            (self.dir / s["file"], int(s["segments"])) for s in self.data["splits"][split]["shards"]
        ]

    def summary(self) -> str:
        """A markdown table of how much audio each filter kept, per source, and the split."""
        lines = [
            f"dataset {self.dir}: {self.rate} Hz, {self.channels} channel(s), "
            f"{self.data['segment_s']} s segments, "
            f"band >= {self.data['min_band_hz']:.0f} Hz (within {BAND_FLOOR_DB:.0f} dB of the "
            f"0.2-4 kHz peak)"
            + (
                f", high band empty in at most {holes:.0%} of loud frames"
                if (holes := self.data.get("max_holes", 1.0)) < 1.0
                else ""
            ),
            "",
            "| source | " + " | ".join(FILTERS) + " |",
            "|---|" + "---|" * len(FILTERS),
        ]
        none = {"files": 0, "seconds": 0.0}  # a filter newer than the set
        for name, stats in self.data["filters"].items():
            counts = [stats.get(k, none) for k in FILTERS]
            cells = [f"{c['files']} / {c['seconds'] / 60:.1f} min" for c in counts]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        for split, info in self.data["splits"].items():
            lines.append(
                f"{split}: {info['segments']} segments, {info['seconds'] / 3600:.2f} h, "
                f"{len(info['groups'])} groups"
            )
        return "\n".join(lines)


class _ShardWriter:
    def __init__(self, out_dir: Path, split: str) -> None:
        self.out_dir, self.split = out_dir, split
        self.pending: list[np.ndarray] = []
        self.shards: list[dict[str, Any]] = []
        self.count = 0

    def add(self, segments: np.ndarray) -> None:
        self.pending.extend(segments)
        while len(self.pending) >= SHARD_SEGMENTS:
            self._flush(SHARD_SEGMENTS)

    def _flush(self, n: int) -> None:
        name = f"{self.split}-{len(self.shards):03d}.npy"
        np.save(self.out_dir / name, np.stack(self.pending[:n]).astype(np.float32))
        self.pending = self.pending[n:]
        self.shards.append({"file": name, "segments": n})
        self.count += n

    def close(self) -> None:
        if self.pending:
            self._flush(len(self.pending))


def _split_groups(
    groups: dict[str, int], val_fraction: float, rng: np.random.Generator
) -> set[str]:
    """Validation groups (name → file count): shuffled, until ``val_fraction`` of the files;
    at least one group stays in training, unless ``val_fraction`` is 1 (a held-out test set)."""
    names = sorted(groups)
    if val_fraction >= 1:
        return set(names)
    if len(names) < 2 or val_fraction <= 0:
        return set()
    order = rng.permutation(len(names))
    total, val, chosen = sum(groups.values()), 0, set()
    for i in order:
        if val >= val_fraction * total or len(chosen) == len(names) - 1:
            break
        chosen.add(names[i])
        val += groups[names[i]]
    return chosen


def _plan(source: Source, val_fraction: float, seed: int) -> list[tuple[Path, str, str]]:
    """``(file, group, split)`` for every file of ``source``, grouped."""
    files = source.files()
    groups = [source.group(f) for f in files]
    counts: dict[str, int] = {}
    for g in groups:
        counts[g] = counts.get(g, 0) + 1
    if len(counts) < 2:  # one folder: split by file
        groups = [str(f.relative_to(source.root)) for f in files]
        counts = dict.fromkeys(groups, 1)
    val = _split_groups(counts, val_fraction, np.random.default_rng([seed, len(files)]))
    plan = [(f, g, "val" if g in val else "train") for f, g in zip(files, groups, strict=True)]
    return sorted(plan, key=lambda p: (p[1], str(p[0])))


def _read(path: Path, channels: int) -> tuple[np.ndarray, int]:
    """``(audio (time, channels), rate)``: mono mix for 1 channel, else the first two channels
    (a mono file duplicated)."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if channels == 1:
        return x.mean(axis=1, keepdims=True), int(sr)
    return x[:, [0, min(1, x.shape[1] - 1)]], int(sr)


def read_reason(exc: Exception) -> str:
    """One line saying why a read raised ``exc`` (one of :data:`READ_ERRORS`)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resample_to(x: np.ndarray, sr: int, rate: int) -> np.ndarray:
    """``x`` (time, channels) at ``sr`` Hz brought to ``rate`` Hz with soxr VHQ (as is if equal)."""
    return soxr.resample(x, sr, rate, quality="VHQ") if sr != rate else x


def _group_runs(plan: list[tuple[Path, str, str]]) -> Iterator[list[tuple[Path, str, str]]]:
    run: list[tuple[Path, str, str]] = []
    for item in plan:
        if run and item[1] != run[0][1]:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def build_dataset(
    sources: Sequence[Source | str | Path],
    out_dir: str | Path,
    *,
    rate: int = 16000,
    segment_s: float = 2.0,
    min_band_hz: float = 7500.0,
    val_fraction: float = 0.1,
    seed: int = 0,
    channels: int = 1,
    min_rate: int | None = None,
    max_file_s: float | None = None,
    max_holes: float = 1.0,
    overwrite: bool = False,
    progress: bool = True,
) -> Manifest:
    """Build (once) the segmented dataset of ``sources`` in ``out_dir`` and return its manifest.

    ``rate``: target rate, Hz; ``segment_s``: segment length, s; ``min_band_hz``: the measured
    bandwidth a file needs to be a target, Hz; ``channels``: 1 (mono mix) or 2 (stereo);
    ``min_rate``: the lowest file rate accepted, Hz (default ``rate``); ``max_file_s``: seconds
    kept per file (from its middle; ``None``: all); ``max_holes``: the largest share of a file's
    loud frames whose octave below ``min_band_hz`` may be empty (:func:`measure_holes`; 1:
    no check). An existing dataset with the same settings is returned as is; one with other
    settings needs ``overwrite``. Raises :class:`CorpusError`.
    """
    if channels not in (1, 2):
        raise CorpusError(f"channels must be 1 or 2, not {channels}")
    if not 0.0 <= max_holes <= 1.0:
        raise CorpusError(f"max_holes is a share of frames in [0, 1], not {max_holes}")
    min_rate = rate if min_rate is None else min_rate
    out = Path(out_dir)
    srcs = [s if isinstance(s, Source) else Source(Path(s).name, Path(s)) for s in sources]
    if not srcs:
        raise CorpusError("no corpus sources given")
    settings = {
        "rate": rate,
        "segment_samples": round(segment_s * rate),
        "segment_s": segment_s,
        "min_band_hz": float(min_band_hz),
        "val_fraction": val_fraction,
        "seed": seed,
        "channels": channels,
        "min_rate": min_rate,
        "max_file_s": max_file_s,
        "max_holes": max_holes,
        "sources": [
            {"name": s.name, "root": str(s.root), "pattern": s.pattern, "licence": s.licence}
            for s in srcs
        ],
    }
    if (out / "manifest.json").is_file() and not overwrite:
        manifest = Manifest.load(out)
        old = {
            "channels": 1,
            "min_rate": manifest.rate,
            "max_file_s": None,
            "max_holes": 1.0,
            **manifest.data,
        }
        if all(old.get(k) == v for k, v in settings.items()):
            return manifest
        raise CorpusError(
            f"{out} holds a dataset built with other settings (rebuild with overwrite)"
        )
    if min_band_hz > rate / 2:
        raise CorpusError(
            f"min_band_hz {min_band_hz} Hz is above the Nyquist frequency of {rate} Hz"
        )
    plans = [(s, _plan(s, val_fraction, seed)) for s in srcs]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*-[0-9][0-9][0-9].npy"):
        old.unlink()
    seg = settings["segment_samples"]
    writers = {split: _ShardWriter(out, split) for split in ("train", "val")}
    filters: dict[str, dict[str, dict[str, float]]] = {}
    files: list[dict[str, Any]] = []
    groups: dict[str, set[str]] = {"train": set(), "val": set()}
    rates: set[int] = set()
    bar = tqdm(
        total=sum(len(p) for _, p in plans),
        unit="file",
        disable=not progress,
        desc=f"building {out.name}",
    )
    for source, plan in plans:
        stats = {k: {"files": 0, "seconds": 0.0} for k in FILTERS}
        filters[source.name] = stats

        def count(key: str, seconds: float, stats: dict[str, dict[str, float]] = stats) -> None:
            stats[key]["files"] += 1
            stats[key]["seconds"] += seconds

        for run in _group_runs(plan):
            pieces: list[np.ndarray] = []
            for path, group, split in run:
                bar.update(1)
                entry: dict[str, Any] = {
                    "path": str(path.relative_to(source.root)),
                    "source": source.name,
                    "group": group,
                    "split": split,
                }
                files.append(entry)
                try:
                    x, sr = _read(path, channels)
                except READ_ERRORS:
                    count("found", 0.0)
                    count("unreadable", 0.0)
                    entry["status"] = "unreadable"
                    continue
                seconds = len(x) / sr
                entry.update(rate=sr, seconds=round(seconds, 3))
                count("found", seconds)
                rates.add(sr)
                if sr < min_rate:
                    count("rate", seconds)
                    entry["status"] = "rate"
                    continue
                spectra = _frame_spectra(x.mean(axis=1), sr)  # for the band and holes filters
                band = _bandwidth(*spectra)
                entry["band_hz"] = round(band, 1)
                if band < min_band_hz:
                    count("band", seconds)
                    entry["status"] = "band"
                    continue
                if max_holes < 1.0:
                    holes = _holes(*spectra, min_band_hz / 2)
                    entry["holes"] = round(holes, 3)
                    if holes > max_holes:
                        count("holes", seconds)
                        entry["status"] = "holes"
                        continue
                voiced = _trim(x, sr)
                if len(voiced) < MIN_VOICED_S * sr:
                    count("silent", seconds)
                    entry["status"] = "silent"
                    continue
                voiced = _middle(voiced, sr, max_file_s)
                y = resample_to(voiced, sr, rate)
                pieces.append(_fade(y.astype(np.float32), rate))
                count("kept", seconds)
                entry["status"] = "kept"
            if not pieces:
                continue
            stream = np.concatenate(pieces)
            n = len(stream) // seg
            if len(stream) - n * seg >= seg // 2:
                stream = np.pad(stream, ((0, (n + 1) * seg - len(stream)), (0, 0)))
                n += 1
            if n:
                split = run[0][2]
                segments = stream[: n * seg].reshape(n, seg, channels).transpose(0, 2, 1)
                writers[split].add(segments[:, 0] if channels == 1 else segments)
                groups[split].add(f"{source.name}/{run[0][1]}")
    bar.close()
    for w in writers.values():
        w.close()
    found = sum(s["found"]["files"] for s in filters.values())
    unreadable = sum(s["unreadable"]["files"] for s in filters.values())
    if unreadable == found:
        raise CorpusError(f"none of the {found} audio files could be decoded")
    if not any(
        s["rate"]["files"] < s["found"]["files"] - s["unreadable"]["files"]
        for s in filters.values()
    ):
        raise CorpusError(
            f"no file at {min_rate} Hz or more (found {', '.join(map(str, sorted(rates)))} Hz): "
            f"cannot make {rate} Hz targets"
        )
    if writers["train"].count + writers["val"].count == 0:
        widest = max((f.get("band_hz", 0.0) for f in files), default=0.0)
        raise CorpusError(
            f"no usable audio: no file covers {min_band_hz:.0f} Hz (widest {widest:.0f} Hz) "
            f"with at least {MIN_VOICED_S} s of sound"
        )
    data = {
        "format": FORMAT,
        **settings,
        "splits": {
            split: {
                "shards": w.shards,
                "segments": w.count,
                "seconds": w.count * seg / rate,
                "groups": sorted(groups[split]),
            }
            for split, w in writers.items()
        },
        "filters": filters,
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(data, indent=1))
    return Manifest(out, data)


def export_pieces(
    data: str | Path,
    out: str | Path,
    *,
    split: str = "val",
    seconds: float = 12.0,
    min_seconds: float = 4.0,
    progress: bool = True,
) -> list[Path]:
    """Write whole-piece references of a built dataset's ``split``: the middle ``seconds`` of
    every kept file of at least ``min_seconds`` (before trimming), decoded from its source,
    resampled to the set's rate (soxr VHQ), the set's channels, as FLAC named
    ``SOURCE-STEM.flac`` in ``out``: 24 bit, since 16-bit quantisation noise would fill the
    empty top band that log-spectral metrics weigh like any other. For the 48 kHz set these are
    its validation music pieces (no speech file lasts 4 s): longer excerpts than the 2 s
    segments, never in training, for ``wavehost eval --data OUT``. Returns the paths written."""
    manifest = Manifest.load(data)
    if split not in manifest.data["splits"]:
        raise CorpusError(f"dataset {manifest.dir} has no split {split!r}")
    roots = {s["name"]: Path(s["root"]) for s in manifest.data["sources"]}
    picks = [
        f
        for f in manifest.data["files"]
        if f["split"] == split and f["status"] == "kept" and f["seconds"] >= min_seconds
    ]
    if not picks:
        raise CorpusError(
            f"dataset {manifest.dir} has no kept {split} file of {min_seconds:g} s or more"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in tqdm(picks, desc=f"{split} pieces", unit="file", disable=not progress):
        path = roots[f["source"]] / f["path"]
        try:
            x, sr = _read(path, manifest.channels)
        except READ_ERRORS as exc:
            reason = read_reason(exc)
            raise CorpusError(f"cannot read {path} (reinstall the corpora?): {reason}") from None
        x = resample_to(x, sr, manifest.rate)
        target = out / f"{f['source']}-{Path(f['path']).stem}.flac"
        sf.write(target, _middle(x, manifest.rate, seconds), manifest.rate, subtype="PCM_24")
        written.append(target)
    return written


def spread_indices(n: int, k: int) -> list[int]:
    """At most ``k`` indices of ``range(n)`` spread evenly from the first to the last (a split is
    ordered by source, so a spread subset samples every source)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int)).tolist()


class SegmentDataset(torch.utils.data.Dataset):
    """Segments of one split as float32 tensors ``(channels, segment_samples)`` at
    ``manifest.rate`` Hz.

    Shards are memory-mapped lazily (each DataLoader worker maps its own).
    """

    def __init__(self, manifest: Manifest | str | Path, split: str = "train") -> None:
        self.manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
        self.split = split
        self._shards = self.manifest.shards(split)
        self._ends = np.cumsum([n for _, n in self._shards])
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = int(np.searchsorted(self._ends, index, side="right"))
        if shard not in self._maps:
            self._maps[shard] = np.load(self._shards[shard][0], mmap_mode="r")
        start = int(self._ends[shard - 1]) if shard else 0
        seg = torch.from_numpy(np.array(self._maps[shard][index - start]))
        return seg[None] if seg.dim() == 1 else seg


def main(argv: list[str] | None = None) -> int:
    """``python -m model.corpora [--speech|--music|DIR ...] [--out DIR] [--rate HZ] ...``"""
    p = argparse.ArgumentParser(prog="python -m model.corpora", description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="*", type=Path, help="extra source folders")
    p.add_argument("--speech", action="store_true", help="klettres-data + fillets-ng-data-cs")
    p.add_argument("--music", action="store_true", help="the music packages")
    p.add_argument(
        "--unseen-speech",
        action="store_true",
        help="ktuberling-data + fillets-ng-data-nl, all held out (a test set: --val-fraction 1, "
        f"--max-holes {UNSEEN_MAX_HOLES})",
    )
    p.add_argument("--out", type=Path, help="dataset folder (default: cache/datasets/NAME)")
    p.add_argument("--rate", type=int, default=16000, help="target rate, Hz")
    p.add_argument("--segment", type=float, default=2.0, help="segment length, s")
    p.add_argument(
        "--min-band", type=float, help="bandwidth a target needs, Hz (default 0.47 * rate)"
    )
    p.add_argument("--channels", type=int, choices=(1, 2), default=1, help="1 mono, 2 stereo")
    p.add_argument("--min-rate", type=int, help="lowest file rate accepted, Hz (default --rate)")
    p.add_argument("--max-file", type=float, help="seconds kept per file, from its middle")
    p.add_argument(
        "--val-fraction", type=float, help="share of files held out (default 0.1, 1 for a test set)"
    )
    p.add_argument(
        "--max-holes",
        type=float,
        help="drop files whose octave below --min-band is empty in more than this share of "
        "their loud frames (default 1: no check)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--val-pieces",
        type=Path,
        metavar="DIR",
        help="write the validation files of >= 4 s of the dataset at --out (the middle 12 s "
        "of each, FLAC) to DIR, then exit",
    )
    args = p.parse_args(argv)
    if args.val_pieces is not None and args.out is None:
        p.error("--val-pieces needs --out DATASET")
    sources: list[Source | str | Path] = [*args.folders]
    if args.speech:
        sources += speech_sources()
    if args.music:
        sources += music_sources()
    if args.unseen_speech:
        if sources:
            p.error("--unseen-speech is a test set of its own: give it without other sources")
        sources += unseen_speech_sources()
    if not sources and args.val_pieces is None:
        p.error("give --speech, --music, --unseen-speech or source folders")
    try:
        if args.val_pieces is not None:
            written = export_pieces(args.out, args.val_pieces)
            print(f"wrote {len(written)} pieces to {args.val_pieces}")
            return 0
        kinds = ("music", "speech", "unseen_speech")
        kind = "-".join(k for k in kinds if getattr(args, k)).replace("_", "-") or "custom"
        stereo = "-stereo" if args.channels == 2 else ""
        out = args.out or cache_root() / "datasets" / f"{kind}{args.rate // 1000}k{stereo}"
        min_band = args.min_band if args.min_band is not None else round(0.46875 * args.rate)
        val_fraction = args.val_fraction
        if val_fraction is None:
            val_fraction = 1.0 if args.unseen_speech else 0.1
        max_holes = args.max_holes
        if max_holes is None:
            max_holes = UNSEEN_MAX_HOLES if args.unseen_speech else 1.0
        manifest = build_dataset(
            sources,
            out,
            rate=args.rate,
            segment_s=args.segment,
            min_band_hz=min_band,
            val_fraction=val_fraction,
            seed=args.seed,
            channels=args.channels,
            min_rate=args.min_rate,
            max_file_s=args.max_file,
            max_holes=max_holes,
            overwrite=args.overwrite,
        )
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(manifest.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
