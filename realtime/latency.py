"""The latency report: every contribution, in samples and milliseconds at the output rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LatencyReport:
    """Latency contributions in samples at ``rate`` Hz (fractional where rates do not divide).

    ``device_in``/``device_out`` are what PortAudio reports for the stream; the rest is the
    host's: re-blocking priming, edge resampler group delay, the threaded mode's extra block and
    safety margin, and the plugins' declared algorithmic latency.
    """

    rate: int
    block: int
    device_in: float = 0.0
    device_out: float = 0.0
    reblock: float = 0.0
    resample: float = 0.0
    threaded_block: float = 0.0
    margin: float = 0.0
    plugin: float = 0.0

    @property
    def host(self) -> float:
        """Host buffering and processing latency, samples (no device, no plugin)."""
        return self.reblock + self.resample + self.threaded_block + self.margin

    @property
    def engine(self) -> float:
        """Input sample to output sample inside the engine, samples: host + plugin."""
        return self.host + self.plugin

    @property
    def total(self) -> float:
        """Device in + engine + device out, samples."""
        return self.device_in + self.engine + self.device_out

    def ms(self, samples: float) -> float:
        """Convert samples at :attr:`rate` to milliseconds."""
        return 1e3 * samples / self.rate

    def to_dict(self) -> dict[str, float]:
        """Plain dict with every part plus ``host``, ``engine`` and ``total``, in samples."""
        d = asdict(self)
        d.update(host=self.host, engine=self.engine, total=self.total)
        return d

    def format(self) -> str:
        """A small aligned table."""
        rows = [
            ("device input", self.device_in),
            ("device output", self.device_out),
            ("re-blocking", self.reblock),
            ("edge resampling", self.resample),
            ("threaded hand-off block", self.threaded_block),
            ("safety margin", self.margin),
            ("plugin (declared)", self.plugin),
            ("engine (host + plugin)", self.engine),
            ("total", self.total),
        ]
        lines = [f"latency at {self.rate} Hz, block {self.block}:"]
        for name, value in rows:
            lines.append(f"  {name:<27}{value:>9.1f} samples {self.ms(value):>8.2f} ms")
        return "\n".join(lines)
