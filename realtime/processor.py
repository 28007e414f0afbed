"""The deterministic signal path shared by live runs and offline renders.

``device in → [resampler] → re-blocker → chain → [resampler] → output FIFO → device out``

The output FIFO starts with exactly the number of zeros that the re-blocking and the edge
resamplers' output granularity need, found by simulating the frame counts, so every call of
:meth:`Processor.process` with ``n`` input frames returns ``n·rate_out/rate_in`` frames and
never runs dry. The latency is therefore fixed and known to the sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from realtime.chain import Chain
from realtime.resample import Resampler
from realtime.ring import Ring

SIMULATED_CALLS = 4096
WARMUP_CALLS = 8  # blocks run through the path before a live stream (see Processor.warm_up)


@dataclass(frozen=True)
class PathLatency:
    """The processor's latency, in samples at its output rate (may be fractional when the
    chain's rates do not divide the device rate)."""

    reblock: int  # zeros primed for re-blocking and resampler granularity
    resample: float  # group delay of the edge resamplers
    plugin: float  # the chain's declared algorithmic latency

    @property
    def total(self) -> float:
        return self.reblock + self.resample + self.plugin


class Processor:
    """Turns ``rate_in`` audio into ``rate_out`` audio through ``chain``, ``block`` frames a call.

    Args:
        chain: the plugins.
        rate_in: rate of the incoming audio, Hz (the device's, or the file's).
        rate_out: rate of the outgoing audio, Hz.
        block: input frames per :meth:`process` call (a device block); other sizes work but the
            priming was computed for this one.
    """

    def __init__(self, chain: Chain, *, rate_in: int, rate_out: int, block: int) -> None:
        ratio = Fraction(rate_out, rate_in)
        if (block * ratio).denominator != 1:
            raise ValueError(
                f"block {block} at {rate_in} Hz is not a whole number of samples at {rate_out} Hz"
            )
        self.chain, self.rate_in, self.rate_out, self.block = chain, rate_in, rate_out, block
        self.ratio = ratio
        ch = chain.channels
        big = 4 * (block + chain.block) * max(1, int(np.ceil(chain.rate_in / rate_in)))
        self._res_in = (
            Resampler(rate_in, chain.rate_in, ch, max_block=4 * block + 64)
            if rate_in != chain.rate_in
            else None
        )
        self._res_out = (
            Resampler(
                chain.rate_out,
                rate_out,
                ch,
                max_block=4 * (big * chain.rate_out // chain.rate_in + 64),
            )
            if rate_out != chain.rate_out
            else None
        )
        self._pending = Ring(big, ch)  # chain-rate input waiting for a whole chain block
        self._chunk = np.zeros((big, ch), np.float32)
        out_cap = 8 * (big * rate_out // max(1, chain.rate_in) + block * ratio.numerator + 1024)
        self._fifo = Ring(int(out_cap), ch)
        self._out = np.zeros((int(block * ratio) * 4 + 16, ch), np.float32)
        prime = self._priming()
        resample = 0.0
        if self._res_in:
            resample += self._res_in.delay * rate_out / chain.rate_in
        if self._res_out:
            resample += self._res_out.delay
        self.latency = PathLatency(prime, resample, chain.latency * rate_out / chain.rate_out)
        # no resampling and no re-blocking: blocks go straight through the chain
        self._direct = not (self._res_in or self._res_out) and block % chain.block == 0
        self.reset()

    def reset(self) -> None:
        """Return to the initial state: silence history, primed FIFO, reset plugins."""
        self.chain.reset()
        for res in (self._res_in, self._res_out):
            if res:
                res.reset()
        self._pending.skip(self._pending.available())
        self._fifo.skip(self._fifo.available())
        self._fifo.write(np.zeros((self.latency.reblock, self.chain.channels), np.float32))

    def warm_up(self, calls: int = WARMUP_CALLS) -> None:
        """Run ``calls`` blocks of silence through the path, then :meth:`reset`. A TorchScript
        plugin compiles its optimised graph on its first calls at a new input shape (462 ms for
        ``mp3-restore-48k`` on the 2-core VM, against 2 ms a block after): paid here, before a
        live stream, not by its first blocks."""
        x = np.zeros((self.block, self.chain.channels), np.float32)
        for _ in range(calls):
            self.process(x)
        self.reset()

    def _priming(self) -> int:
        """Largest shortfall of produced against demanded output frames over a long run of
        ``block``-frame calls (pure frame-count arithmetic, the same the resamplers do)."""
        chain = self.chain
        cb = chain.block
        # integers only. After k calls: chain input ceil(k·block·cin/rin); chain output whole
        # chain blocks × cout/cin; device output ceil(that × rout/cout) = ceil(blocks·cb·rout/cin)
        rin, rout, cin = self.rate_in, self.rate_out, chain.rate_in
        worst = 0
        for k in range(1, SIMULATED_CALLS + 1):
            got_in = -(-(k * self.block * cin) // rin)
            chain_blocks = got_in // cb
            got_out = -(-(chain_blocks * cb * rout) // cin)
            worst = max(worst, k * self.block * rout // rin - got_out)
        return worst

    def process(self, x: np.ndarray) -> np.ndarray:
        """``x`` ``(n, channels)`` float32 at ``rate_in`` → ``(n·rate_out/rate_in, channels)``;
        the result is a view valid until the next call."""
        if self._direct and x.shape[0] == self.block:
            return self.chain.step(x)
        y = self._res_in.process(x) if self._res_in else x
        self._pending.write(y)
        cb = self.chain.block
        ready = (self._pending.available() // cb) * cb
        if ready:
            chunk = self._chunk[:ready]
            self._pending.read(chunk)
            z = self.chain.step(chunk)
            if self._res_out:
                z = self._res_out.process(np.ascontiguousarray(z))
            self._fifo.write(z)
        n_out = int(x.shape[0] * self.ratio)
        out = (
            self._out[:n_out]
            if n_out <= self._out.shape[0]
            else np.zeros((n_out, self.chain.channels), np.float32)
        )
        got = self._fifo.read(out)
        if got < n_out:  # only when called with blocks other than the primed size
            out[got:] = 0.0
        return out
