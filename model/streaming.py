"""Streaming building blocks (in the spirit of RAVE's ``cached_conv``).

Every block comes in two forms that compute the same causal function:

- an *offline* form for training, channel-major ``(batch, channels, time)``, built on stock
  ``torch.nn.functional`` convolutions with left (causal) padding only;
- a *streaming* form for the audio path, time-major ``(batch, time, channels)``, that keeps its
  left context in a cache buffer (updated in place) and computes each block as one matrix multiply
  (``unfold`` of cache + block, then ``x @ W``). Feeding a signal block by block through the
  streaming form gives the offline output of the whole signal, for any block sizes that are
  multiples of the block's stride.

Convention for the time axis: output sample ``n`` of a stride-``s`` block depends on input samples
``<= s * n + s - 1`` (the last sample of its stride group); an upsampling block by ``r`` places
input sample ``m`` at output time ``r * m + offset``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Cached(nn.Module):
    """Base of the streaming forms: ``context`` samples of left context, time-major, in a cache
    buffer ``(batch, context, channels)`` updated in place (a fixed-address state). Made for
    batch 1; :meth:`clear` sizes it for another batch, :meth:`reset_rows` clears single streams."""

    def __init__(self, context: int, channels: int) -> None:
        super().__init__()
        self.context, self.width = context, channels
        self.register_buffer("cache", torch.zeros(1, context, channels))

    def push(self, x: Tensor) -> Tensor:
        """``cat(cache, x)`` along time for ``x`` ``(batch, time, channels)``; keeps its tail."""
        if self.context == 0:
            return x
        xp = torch.cat([self.cache, x], 1)
        self.cache.copy_(xp.narrow(1, -self.context, self.context))
        return xp

    def clear(self, batch: int) -> None:
        """Zero the cache in place; a new one if ``batch`` (streams) differs from its size."""
        if self.cache.size(0) == batch:
            self.cache.zero_()
        else:
            self.cache = self.cache.new_zeros(batch, self.context, self.width)

    def reset_rows(self, rows: Tensor) -> None:
        """Zero the cache of batch rows ``rows`` (int64 indices, the cache's device) in place;
        the other rows (streams) and the buffer's address are untouched."""
        self.cache.index_fill_(0, rows, 0.0)


def causal_delay(x: Tensor, delay: int) -> Tensor:
    """Offline delay of ``x`` ``(batch, channels, time)`` by ``delay`` samples (zeros enter)."""
    if delay == 0:
        return x
    return F.pad(x, (delay, 0))[..., : x.size(-1)]


def tap_span(kernel: int, dilation: int) -> int:
    """Samples from a conv's oldest tap to its newest: ``dilation * (kernel - 1) + 1``."""
    return dilation * (kernel - 1) + 1


class CausalConv(nn.Module):
    """Trainable causal convolution ``(batch, c_in, time) -> (batch, c_out, time // stride)``.

    Left padding of ``dilation * (kernel_size - 1) + 1 - stride`` samples: output ``n`` sees
    inputs ``stride * n + stride - 1 - dilation * j`` for ``j`` in ``0 .. kernel_size - 1``.
    ``dilation > 1`` needs ``stride == 1``.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"kernel_size {kernel_size} < stride {stride}")
        if dilation < 1 or (dilation > 1 and stride > 1):
            raise ValueError(f"dilation {dilation} must be >= 1, and 1 when stride {stride} > 1")
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, stride, dilation=dilation)
        self.pad = tap_span(kernel_size, dilation) - stride

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))

    def streaming(self) -> CachedConv:
        """The streaming form with a copy of the current weights."""
        return CachedConv(
            self.conv.weight, self.conv.bias, self.conv.stride[0], self.conv.dilation[0]
        )


class CachedConv(Cached):
    """Streaming :class:`CausalConv`: ``(batch, time, c_in) -> (batch, time // stride, c_out)``.

    ``weight``: ``(c_out, c_in, kernel)`` as in ``nn.Conv1d``; the cache holds the last
    ``dilation * (kernel - 1) + 1 - stride`` input samples.
    """

    def __init__(
        self, weight: Tensor, bias: Tensor | None, stride: int = 1, dilation: int = 1
    ) -> None:
        c_out, c_in, kernel = weight.shape
        span = tap_span(kernel, dilation)
        super().__init__(span - stride, c_in)
        self.kernel, self.span, self.stride, self.dilation = kernel, span, stride, dilation
        # (kernel * c_in, c_out), tap-major to match the windows' contiguous layout
        w = weight.detach().permute(2, 1, 0).reshape(kernel * c_in, c_out).clone()
        self.register_buffer("weight", w)
        b = torch.zeros(c_out) if bias is None else bias.detach().clone()
        self.register_buffer("bias", b)

    def forward(self, x: Tensor) -> Tensor:
        win = x
        if self.kernel > 1:
            win = self.push(x).unfold(1, self.span, self.stride)
            if self.dilation > 1:
                win = win[..., :: self.dilation]
            win = win.transpose(2, 3)
        # one (batch * time, kernel * c_in) @ (kernel * c_in, c_out) product, bias fused
        y = torch.addmm(self.bias, win.reshape(-1, self.weight.size(0)), self.weight)
        return y.view(x.size(0), -1, y.size(1))


class Analysis(nn.Module):
    """Fixed filter bank with decimation (e.g. a DWT), the same filters on every channel.

    ``(batch, channels, time) -> (batch, channels * bands, time // stride)``, channel-major
    (output channel ``c * bands + b`` is band ``b`` of channel ``c``). ``filters``:
    ``(bands, taps)`` correlation weights: output ``n`` of band ``b`` is
    ``sum_j filters[b, j] * x[stride * n + stride - taps + j]``.
    """

    def __init__(self, filters: Tensor, channels: int, stride: int) -> None:
        super().__init__()
        bands, taps = filters.shape
        if taps < stride:
            raise ValueError(f"{taps} taps < stride {stride}")
        self.channels, self.bands, self.taps, self.stride = channels, bands, taps, stride
        self.register_buffer("filters", filters.detach().float().clone())
        self.register_buffer("weight", self.filters.repeat(channels, 1).unsqueeze(1))

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (self.taps - self.stride, 0))
        return F.conv1d(x, self.weight, stride=self.stride, groups=self.channels)

    def streaming(self) -> CachedAnalysis:
        """The streaming form."""
        return CachedAnalysis(self.filters, self.channels, self.stride)


class CachedAnalysis(Cached):
    """Streaming :class:`Analysis`: ``(batch, time, channels) -> (batch, time // stride,
    channels * bands)``; caches ``taps - stride`` input samples. With one band and stride 1 it is
    a plain FIR filter (``filters[0]`` the impulse response reversed)."""

    def __init__(self, filters: Tensor, channels: int, stride: int) -> None:
        bands, taps = filters.shape
        super().__init__(taps - stride, channels)
        self.taps, self.stride, self.bands = taps, stride, bands
        self.register_buffer("matrix", filters.detach().float().t().contiguous())  # (taps, bands)

    def forward(self, x: Tensor) -> Tensor:
        win = self.push(x).unfold(1, self.taps, self.stride)  # (batch, time // stride, ch, taps)
        # one (batch * time * channels, taps) @ (taps, bands) product; rows (t, c), columns b
        y = torch.mm(win.reshape(-1, self.taps), self.matrix)
        return y.view(x.size(0), -1, self.width * self.bands)


class AnalysisConv(nn.Module):
    """A fixed :class:`Analysis` filter bank followed by a trainable :class:`CausalConv` at the
    decimated rate: ``(batch, channels, time) -> (batch, c_out, time // stride)``."""

    def __init__(self, analysis: Analysis, c_out: int, kernel_size: int) -> None:
        super().__init__()
        self.analysis = analysis
        self.conv = CausalConv(analysis.channels * analysis.bands, c_out, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.analysis(x))

    def streaming(self) -> CachedConv:
        """The streaming form (the analysis conv with cache): one strided :class:`CachedConv` of
        ``taps + stride * (kernel - 1)`` taps equal to the composition. It reads more weights
        than the conv alone (1.6x for db4, kernel 5) but saves the filter bank's ops, and per-op
        overhead dominates a batch-1 step on the CPU (measured)."""
        a, w = self.analysis, self.conv.conv.weight.detach()
        c_out, _, kernel = w.shape
        w = w.reshape(c_out, a.channels, a.bands, kernel)
        merged = w.new_zeros(c_out, a.channels, a.taps + a.stride * (kernel - 1))
        for t in range(kernel):
            start = a.stride * t
            merged[..., start : start + a.taps] += torch.einsum("ocb,bj->ocj", w[..., t], a.filters)
        return CachedConv(merged, self.conv.conv.bias, a.stride)


class Synthesis(nn.Module):
    """Fixed filter bank with upsampling (e.g. an IDWT or an interpolator), the same on every
    channel: ``(batch, channels * bands, time) -> (batch, channels, time * factor)``.

    Input sample ``m`` of band ``b`` is placed at output time ``factor * m + offset`` and convolved
    with ``filters[b]`` (``(bands, taps)`` convolution kernels; the bands are summed). The offline
    form is a transposed convolution; its overlapping tails are what the streaming form's cache
    carries into the next block.
    """

    def __init__(self, filters: Tensor, channels: int, factor: int, offset: int = 0) -> None:
        super().__init__()
        bands, taps = filters.shape
        if not 0 <= offset < factor:
            raise ValueError(f"offset {offset} outside [0, {factor})")
        self.channels, self.bands, self.taps = channels, bands, taps
        self.factor, self.offset = factor, offset
        self.register_buffer("filters", filters.detach().float().clone())
        self.register_buffer("weight", self.filters.repeat(channels, 1).unsqueeze(1))

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv_transpose1d(x, self.weight, stride=self.factor, groups=self.channels)
        n = x.size(-1) * self.factor
        if y.size(-1) + self.offset < n:
            y = F.pad(y, (0, n - y.size(-1) - self.offset))
        return F.pad(y, (self.offset, 0))[..., :n]

    def streaming(self) -> CachedSynthesis:
        """The streaming form."""
        return CachedSynthesis(self.filters, self.channels, self.factor, self.offset)


class CachedSynthesis(Cached):
    """Streaming :class:`Synthesis`, polyphase: ``(batch, time, channels * bands) ->
    (batch, time * factor, channels)``.

    Output ``factor * j + r`` is ``sum_b sum_i x_b[j - i] * filters[b, factor * i + r - offset]``:
    one matrix multiply of the last ``ceil((taps + offset) / factor)`` input samples per band
    (the cache holds the inputs whose overlap tails reach the new block).
    """

    def __init__(self, filters: Tensor, channels: int, factor: int, offset: int = 0) -> None:
        bands, taps = filters.shape
        k = -(-(taps + offset) // factor)
        super().__init__(k - 1, channels * bands)
        # matrix[(b, t), r] = filters[b, factor * (k - 1 - t) + r - offset] (window tap t <-> i)
        matrix = torch.zeros(bands, k, factor)
        for t in range(k):
            for r in range(factor):
                j = factor * (k - 1 - t) + r - offset
                if 0 <= j < taps:
                    matrix[:, t, r] = filters[:, j].float()
        self.k, self.channels, self.bands, self.factor = k, channels, bands, factor
        # (factor, bands * k): the product runs with the window columns as its long side (a
        # (factor, bands * k) @ (bands * k, time * channels) product was 3x faster on the CPU
        # than its transpose, whose result is only ``factor`` wide)
        self.register_buffer("matrix", matrix.reshape(bands * k, factor).t().contiguous())

    def forward(self, x: Tensor) -> Tensor:
        batch = x.size(0)
        win = self.push(x).unfold(1, self.k, 1)  # (batch, time, channels * bands, k)
        win = win.unflatten(2, (self.channels, self.bands)).permute(3, 4, 0, 1, 2)
        y = torch.mm(self.matrix, win.reshape(self.bands * self.k, -1))  # (factor, b * t * c)
        y = y.view(self.factor, batch, -1, self.channels).permute(1, 2, 0, 3)
        return y.reshape(batch, -1, self.channels)  # (batch, time * factor, channels)


class DelayLine(Cached):
    """Streaming delay ``(batch, time, channels) -> (batch, time, channels)`` by ``delay`` samples
    (offline form: :func:`causal_delay`); used to align skips with the deep path."""

    def __init__(self, delay: int, channels: int) -> None:
        super().__init__(delay, channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.context == 0:
            return x
        return self.push(x).narrow(1, 0, x.size(1))


class Delay(nn.Module):
    """Offline delay module ``(batch, channels, time)`` by ``delay`` samples; its streaming form
    is a :class:`DelayLine`."""

    def __init__(self, delay: int, channels: int) -> None:
        super().__init__()
        self.delay, self.channels = delay, channels

    def forward(self, x: Tensor) -> Tensor:
        return causal_delay(x, self.delay)

    def streaming(self) -> DelayLine:
        """The streaming form."""
        return DelayLine(self.delay, self.channels)
