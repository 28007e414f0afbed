"""A sound file as a duplex "device", paced by a real-time clock thread.

The clock thread delivers block ``n`` (``blocksize`` samples) at ``t0 + (n + 1) * blocksize /
samplerate`` seconds on ``time.perf_counter`` (absolute deadlines: no drift), as a capture
device would, once the block has "arrived". ``input_file`` (anything soundfile reads) must be at
the stream's ``samplerate``; a mono file feeds every channel. Without ``input_file`` the input is
silence until ``stop()``. The output goes to ``output_file`` (WAV as 32-bit float, so a copy
callback round-trips sample-exactly; FLAC/OGG at soundfile's default subtype), written under a
temporary name and renamed when the stream ends, so a half-written file never looks complete;
``output_file=None`` discards it. At the end of the input the last block is zero-padded, exactly
the input's length is written, the file is finalised and ``finished`` is set. A file has no
buffer to under- or overrun, so ``status`` is always 0 and ``xruns`` stays 0; a block delivered
more than one block period after its deadline (the clock thread or the previous callback was
late) is counted in ``late_blocks`` instead. The clock keeps its absolute deadlines, so it
catches up after a late block. A read or write error mid-way ends the stream: ``error`` says
why, ``failed`` is True, ``finished`` is set and the partial output is deleted. Reported
latency is 0.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.io.backend import CallbackGuard, DeviceError, StreamInfo
from realtime.io.backend import _GuardedStream as _Base


class FileStream(_Base):
    """File-backed duplex stream (see the module docstring). ``finished``: set at end of input."""

    def __init__(
        self,
        guard: CallbackGuard,
        *,
        samplerate: int,
        blocksize: int,
        channels: int,
        input_file: str | Path | None,
        output_file: str | Path | None,
    ) -> None:
        self._guard = guard
        self.samplerate = samplerate
        self.blocksize = blocksize
        self.channels = channels
        self.finished = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._in: sf.SoundFile | None = None
        self._out: sf.SoundFile | None = None
        self._out_tmp: Path | None = None
        self._out_path: Path | None = None
        self._file_channels = channels
        self.frames_read = 0
        """Input samples (per channel) consumed so far."""
        self.late_blocks = 0
        """Blocks delivered more than one block period after their deadline."""
        self.error: str | None = None
        """Why the stream ended early (file error), or None; ``finished`` is set then too."""

        if input_file is not None:
            try:
                self._in = sf.SoundFile(str(input_file))
            except Exception as exc:
                raise DeviceError(f"cannot read input file '{input_file}': {exc}") from None
            if self._in.samplerate != samplerate:
                rate = self._in.samplerate
                self._in.close()
                raise DeviceError(
                    f"input file '{input_file}' is at {rate} Hz, the stream at {samplerate} Hz"
                )
            self._file_channels = self._in.channels
            if self._file_channels not in (1, channels):
                self._in.close()
                raise DeviceError(
                    f"input file '{input_file}' has {self._file_channels} channels, "
                    f"the stream {channels}"
                )
        if output_file is not None:
            path = Path(output_file)
            fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".aiff": "AIFF", ".aif": "AIFF"}
            ext = path.suffix.lower()
            if ext not in fmt:
                self._close_input()
                raise DeviceError(f"output file '{path}': use .wav, .flac, .ogg or .aiff")
            tmp = path.with_name(f".{path.name}.partial")
            subtype = "FLOAT" if fmt[ext] in ("WAV", "AIFF") else None
            try:
                self._out = sf.SoundFile(
                    str(tmp),
                    "w",
                    samplerate=samplerate,
                    channels=channels,
                    format=fmt[ext],
                    subtype=subtype,
                )
            except Exception as exc:
                self._close_input()
                raise DeviceError(f"cannot write output file '{path}': {exc}") from None
            self._out_tmp, self._out_path = tmp, path

        self._inbuf = np.zeros((blocksize, self._file_channels), dtype=np.float32)
        self._inview = (
            np.broadcast_to(self._inbuf, (blocksize, channels))
            if self._file_channels != channels
            else self._inbuf
        )
        self._outbuf = np.zeros((blocksize, channels), dtype=np.float32)
        self._info = StreamInfo(
            samplerate=samplerate,
            blocksize=blocksize,
            channels_in=channels,
            channels_out=channels,
            input_latency_s=0.0,
            output_latency_s=0.0,
            backend="file",
            input_name=str(input_file) if input_file is not None else "(silence)",
            output_name=str(output_file) if output_file is not None else "(discard)",
        )

    # -- control -----------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise DeviceError("the stream is closed; open a new one")
            if self.finished.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._halt.clear()
            self._thread = threading.Thread(
                target=self._run, name="wavehost-file-clock", daemon=True
            )
            self._thread.start()

    def _stop(self) -> None:
        self._halt.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()

    def _close(self) -> None:
        self.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalize()

    @property
    def active(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive() and not self._halt.is_set()

    @property
    def failed(self) -> bool:
        """Reading or writing a file failed mid-way (``error`` says what)."""
        return self.error is not None

    # -- clock thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._clock()
        except Exception as exc:  # a truncated/unreadable input or a full disk
            self.error = f"{type(exc).__name__}: {exc}"
            self._close_input()
            out, self._out = self._out, None
            if out is not None:  # no half-written file that looks complete
                with contextlib.suppress(Exception):
                    out.close()
                with contextlib.suppress(OSError):
                    os.unlink(self._out_tmp)  # type: ignore[arg-type]
            self.finished.set()

    def _clock(self) -> None:
        period = self.blocksize / self.samplerate
        perf = time.perf_counter
        t0 = perf()
        n = 0
        inbuf, inview, outbuf = self._inbuf, self._inview, self._outbuf
        guard = self._guard
        while not self._halt.is_set():
            deadline = t0 + (n + 1) * period
            wait = deadline - perf()
            if wait > 0 and self._halt.wait(wait):
                break
            valid = self.blocksize
            if self._in is not None:
                got = self._in.read(self.blocksize, dtype="float32", always_2d=True, out=inbuf)
                valid = got.shape[0]
                if valid < self.blocksize:
                    inbuf[valid:] = 0.0
                if valid == 0:
                    self._end()
                    return
            now = perf()
            if now - deadline > period:
                self.late_blocks += 1
            outbuf.fill(0.0)
            guard(inview, outbuf, 0, now)
            self.frames_read += valid
            if self._out is not None:
                self._out.write(outbuf[:valid] if valid < self.blocksize else outbuf)
            n += 1
            if valid < self.blocksize:
                self._end()
                return

    def _end(self) -> None:
        self._finalize()
        self.finished.set()

    def _close_input(self) -> None:
        if self._in is not None:
            self._in.close()
            self._in = None

    def _finalize(self) -> None:
        """Close the files; the output gets its final name."""
        self._close_input()
        out, self._out = self._out, None
        if out is not None:
            out.close()
            assert self._out_tmp is not None and self._out_path is not None
            os.replace(self._out_tmp, self._out_path)
