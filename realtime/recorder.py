"""Recording a live run's engine input and output to files (from the worker thread)."""

from __future__ import annotations

import numpy as np
import soundfile as sf


class Recorder:
    """Writes each block's input and/or output to a float32 WAV file.

    Called from the engine's worker (never the audio callback). Files are finalized by
    :meth:`close`, which the CLI calls on every exit path.

    Args:
        rate: sample rate, Hz.
        channels: channels per frame.
        input_path: where to write the engine input, or None.
        output_path: where to write the engine output, or None.
    """

    def __init__(
        self, rate: int, channels: int, input_path: str | None, output_path: str | None
    ) -> None:
        self._in = sf.SoundFile(input_path, "w", rate, channels, "FLOAT") if input_path else None
        self._out = sf.SoundFile(output_path, "w", rate, channels, "FLOAT") if output_path else None

    @property
    def active(self) -> bool:
        """Whether anything is being recorded."""
        return self._in is not None or self._out is not None

    def write(self, x: np.ndarray, y: np.ndarray) -> None:
        """Append one block: ``x`` input and ``y`` output, ``(frames, channels)``."""
        if self._in is not None:
            self._in.write(x)
        if self._out is not None:
            self._out.write(y)

    def close(self) -> None:
        """Finalize the files."""
        for f in (self._in, self._out):
            if f is not None:
                f.close()
