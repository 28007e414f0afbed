"""Offline render: the live signal path driven by a file clock, with no threads.

Deterministic and latency-compensated: the input is padded at the end and the output cropped
at the start by the path's latency, so the output lines up with the input sample for sample
and has exactly ``input length × rate_out / rate_in`` frames. Audio streams from disk in
blocks (bounded memory for any length); the output is written to a hidden temporary file in
the destination folder and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from realtime import kernels
from realtime.chain import Chain, StageHealth
from realtime.errors import one_line
from realtime.processor import Processor

OUTPUT_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24")}


class RenderError(Exception):
    """A render that cannot go on; the message is one line for the user."""


@dataclass
class RenderResult:
    """What a render did."""

    frames_in: int
    frames_out: int
    rate_in: int
    rate_out: int
    latency: int  # output samples removed from the start
    nonfinite_input: int
    health: list[StageHealth]


def render(
    src: str | Path,
    dst: str | Path,
    chain: Chain,
    *,
    block: int = 1024,
    rate_out: int | None = None,
    progress: bool = True,
) -> RenderResult:
    """Render ``src`` through ``chain`` into ``dst`` (``.wav`` float32 or ``.flac`` 24-bit).

    Args:
        src: any file soundfile reads (WAV, FLAC, OGG, MP3, ...).
        dst: output path; its suffix picks the format.
        chain: the plugins.
        block: input frames per step, as a live device block (rounded up so it maps to whole
            output frames). A render with the live run's block reproduces it sample for sample.
        rate_out: output rate, Hz; default the chain's output rate.
        progress: show a progress bar on stderr.

    Raises:
        RenderError: unreadable or truncated input, unsupported format or channel count,
            unwritable destination.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() not in OUTPUT_FORMATS:
        raise RenderError(f"cannot write {dst.name}: output must be .wav or .flac")
    fmt, subtype = OUTPUT_FORMATS[dst.suffix.lower()]
    reader = _open_input(src)
    with reader:
        rate_in = reader.samplerate
        rate_out = rate_out or chain.rate_out
        if reader.channels not in (1, chain.channels):
            raise RenderError(
                f"{src.name} has {reader.channels} channels; the chain takes {chain.channels} "
                f"(or mono, which is copied to every channel)"
            )
        den = Fraction(rate_out, rate_in).denominator
        block = -(-block // den) * den
        proc = Processor(chain, rate_in=rate_in, rate_out=rate_out, block=block)
        latency = round(proc.latency.total)
        total_in = reader.frames
        total_out = int(total_in * Fraction(rate_out, rate_in))
        tmp = _temp_beside(dst)
        try:
            with sf.SoundFile(tmp, "w", rate_out, chain.channels, subtype, format=fmt) as writer:
                nonfinite = _stream(reader, writer, proc, src, latency, total_out, progress)
            os.replace(tmp, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return RenderResult(total_in, total_out, rate_in, rate_out, latency, nonfinite, chain.health)


def _open_input(src: Path) -> sf.SoundFile:
    if not src.exists():
        raise RenderError(f"input file not found: {src}")
    if src.stat().st_size == 0:
        raise RenderError(f"input file is empty (0 bytes): {src}")
    try:
        reader = sf.SoundFile(src)
    except Exception as exc:
        raise RenderError(f"cannot read {src.name} as audio: {one_line(exc)}") from None
    declared = _wav_declared_frames(src, reader)
    if reader.frames == 0 or (declared is not None and declared > reader.frames):
        reader.close()
        have = f"holds {reader.frames} frames" if reader.frames else "holds no audio frames"
        want = f"header declares {declared}, " if declared else ""
        raise RenderError(f"{src.name} is truncated or empty: {want}file {have}")
    return reader


def _wav_declared_frames(src: Path, reader: sf.SoundFile) -> int | None:
    """Frames a RIFF/WAVE header promises (libsndfile silently shortens truncated files)."""
    if reader.format != "WAV":
        return None
    with open(src, "rb") as f:
        head = f.read(4096)
    pos = 12
    while pos + 8 <= len(head):
        tag, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if tag == b"data":
            frame_bytes = _bytes_per_sample(reader)
            return size // frame_bytes if frame_bytes and size != 0xFFFFFFFF else None
        pos += 8 + size + (size & 1)
    return None


def _bytes_per_sample(reader: sf.SoundFile) -> int:
    """Bytes per frame of a WAV file's sample format (0 when not a plain PCM/float format)."""
    sizes = {"PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
    return sizes.get(reader.subtype, 0) * reader.channels


def _temp_beside(dst: Path) -> str:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    except OSError as exc:
        raise RenderError(f"cannot write output {dst}: {exc.strerror}") from None
    os.close(fd)
    return tmp


def _stream(
    reader: sf.SoundFile,
    writer: sf.SoundFile,
    proc: Processor,
    src: Path,
    latency: int,
    total_out: int,
    progress: bool,
) -> int:
    """Feed ``reader`` through ``proc`` block by block; write the aligned output."""
    block, ch = proc.block, proc.chain.channels
    buf = np.zeros((block, ch), np.float32)
    skip, written, nonfinite, done_in = latency, 0, 0, 0
    bar = tqdm(
        total=reader.frames,
        unit="frame",
        unit_scale=True,
        disable=not progress,
        desc=f"render {src.name}",
        leave=False,
    )
    with bar:
        while written < total_out:
            got = 0
            if done_in < reader.frames:
                try:
                    data = reader.read(block, dtype="float32", always_2d=True)
                except Exception as exc:
                    raise RenderError(
                        f"{src.name} is truncated or corrupt near frame {done_in}: {one_line(exc)}"
                    ) from None
                got = data.shape[0]
                if got == 0:
                    raise RenderError(
                        f"{src.name} is truncated: header says {reader.frames} frames, "
                        f"data ends at {done_in}"
                    )
                buf[:got] = data if data.shape[1] == ch else data[:, :1]
                done_in += got
                bar.update(got)
            buf[got:] = 0.0
            nonfinite += kernels.sanitize(buf)
            y = proc.process(buf)
            start = min(skip, y.shape[0])
            skip -= start
            take = min(y.shape[0] - start, total_out - written)
            if take > 0:
                writer.write(y[start : start + take])
                written += take
    return nonfinite
