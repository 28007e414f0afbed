"""The causal wavelet U-Net for bandwidth extension (and its streaming form).

Data flow, at the output rate ``rate_out`` (``R = rate_out / rate_in``, an integer):

    x (batch, 1, T_in) --interpolator (xR, linear or windowed sinc)--> u (batch, 1, T_in * R)
    encoder level l:  e_l = act(conv_l(h)),  h = DWT(e_l)            (rate halves each level)
    bottleneck:       h = act(conv(h))           (streaming: each DWT + conv is one strided conv)
    context:          h = h + act(conv_d(h))     (dilated causal convs, d in config.context)
    decoder level l:  h = act(conv_l(cat[IDWT(h), g_l])),
                      g_l = s * sigmoid(conv1x1(s)),  s = e_l delayed to line up with IDWT(h)
                      (gate "deep": g_l = s * sigmoid(conv1x1(cat[s, IDWT(h)])))
    y = u delayed by (filter-bank alignment + lookahead) + tanh(conv1x1(h))

so with the output conv at zero (its initial state) the network is exactly the delayed
interpolator (the identity when ``R = 1``, e.g. MP3 restoration). ``y[..., n]`` estimates
``target[..., n - net.latency_samples()]`` where ``target`` is the wideband (or original) signal
at ``rate_out`` sample-aligned with the input (input sample ``m`` at output time ``R * m``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.streaming import AnalysisConv, CausalConv, Delay, Synthesis
from model.wavelets import DWT, IDWT, wavelet_delay


def act(x: Tensor) -> Tensor:
    """The activation of every hidden conv: leaky ReLU, slope 0.1."""
    return F.leaky_relu(x, 0.1)


@dataclass
class UNetConfig:
    """Hyper-parameters of :class:`WaveletUNet` (saved in checkpoints via :meth:`to_dict`).

    ``channels``: explicit widths per level (``levels`` entries); if ``None`` level ``l`` has
    ``round(base_channels * growth**l)``. ``lookahead``: D, output samples. Rates in Hz.
    ``interp_zeros``: the interpolator under the residual: 0 linear (delay ``R - 1``), ``Z > 0``
    a Kaiser-windowed sinc with ``Z`` zero crossings per side (delay ``Z * R - 1``), which keeps
    the input band flat instead of leaving the network to undo the linear droop.
    ``context``: dilations of residual causal convs (kernel ``context_kernel``, 0 for
    ``kernel_size``) after the bottleneck, at ``rate_out / 2**levels``: they widen the receptive
    field into the past by ``(kernel - 1) * sum(context) * 2**levels`` output samples at no cost
    in latency; with ``context_kernel=1`` they are pointwise (capacity without a cache).
    ``gate``: what opens a decoder level's skip: ``"skip"`` the skip itself (``s * sigmoid(
    conv1x1(s))``), ``"deep"`` the skip and the up-sampled deep path together (``s * sigmoid(
    conv1x1(cat[s, IDWT(h)]))``), so the coarse, long-context levels can scale the fine ones.

    The defaults are the 8 -> 16 kHz speech model: widths [32, 48], kernel 5, 106 k parameters;
    latency 42 (lookahead) + 1 (interpolator) + 21 (db4 alignment, 2 levels) = 64 samples (4 ms);
    block multiple 2 input samples. Its exported step on 64-sample output blocks measured 0.30 ms
    median on this project's 2-core CPU (one thread, under load); 3 levels of db4 would spend
    49 of the 64 samples on filter-bank alignment and cost more per step.
    """

    levels: int = 2
    base_channels: int = 32
    growth: float = 1.5
    channels: list[int] | None = None
    kernel_size: int = 5
    lookahead: int = 42
    wavelet: str = "db4"
    rate_in: int = 8000
    rate_out: int = 16000
    interp_zeros: int = 0
    context: list[int] = field(default_factory=list)
    context_kernel: int = 0
    gate: str = "skip"

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")
        if self.channels is not None and len(self.channels) != self.levels:
            raise ValueError(f"channels needs {self.levels} entries, got {self.channels}")
        if self.rate_in <= 0 or self.rate_out % self.rate_in:
            raise ValueError(
                f"rate_out {self.rate_out} must be a whole multiple of rate_in {self.rate_in}"
            )
        if self.lookahead < 0 or self.kernel_size < 1 or self.interp_zeros < 0:
            raise ValueError("lookahead and interp_zeros must be >= 0 and kernel_size >= 1")
        if self.context_kernel < 0:
            raise ValueError(f"context_kernel must be >= 0, got {self.context_kernel}")
        if any(d < 1 for d in self.context):
            raise ValueError(f"context dilations must be >= 1, got {self.context}")
        if self.gate not in ("skip", "deep"):
            raise ValueError(f"gate must be 'skip' or 'deep', got {self.gate!r}")
        wavelet_delay(self.wavelet)  # raises ValueError for an unknown wavelet

    @property
    def ratio(self) -> int:
        """Output samples per input sample."""
        return self.rate_out // self.rate_in

    @property
    def widths(self) -> list[int]:
        """Channels of each level, finest first."""
        if self.channels is not None:
            return list(self.channels)
        return [max(1, round(self.base_channels * self.growth**lv)) for lv in range(self.levels)]

    @property
    def interp_delay(self) -> int:
        """Delay of the interpolator, output samples (0 when ``R = 1``)."""
        if self.ratio == 1:
            return 0
        return self.interp_zeros * self.ratio - 1 if self.interp_zeros else self.ratio - 1

    @property
    def block_multiple(self) -> int:
        """Input lengths must be multiples of this, input samples (``T_in * R`` divisible by
        ``2**levels``)."""
        return 2**self.levels // math.gcd(2**self.levels, self.ratio)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``from_dict`` inverts it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        """Config from :meth:`to_dict`'s output; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown UNetConfig keys: {sorted(unknown)}")
        return cls(**d)


def linear_interpolator(ratio: int) -> Synthesis:
    """Causal linear interpolation by ``ratio``: ``(batch, 1, T) -> (batch, 1, T * ratio)``,
    delay ``ratio - 1`` output samples (a triangle kernel of ``2 * ratio - 1`` taps)."""
    k = torch.arange(2 * ratio - 1, dtype=torch.float64)
    kernel = 1 - (k - (ratio - 1)).abs() / ratio
    return Synthesis(kernel[None], channels=1, factor=ratio)


def sinc_interpolator(ratio: int, zeros: int) -> Synthesis:
    """Causal windowed-sinc interpolation by ``ratio`` (cut-off at the input's Nyquist frequency,
    Kaiser window with beta 6, ``zeros`` zero crossings per side): ``(batch, 1, T) -> (batch, 1,
    T * ratio)``, delay ``zeros * ratio - 1`` output samples. Input samples pass unchanged."""
    centre = zeros * ratio - 1
    k = torch.arange(2 * centre + 1, dtype=torch.float64)
    window = torch.kaiser_window(2 * centre + 1, periodic=False, beta=6.0, dtype=torch.float64)
    kernel = torch.special.sinc((k - centre) / ratio) * window
    return Synthesis(kernel[None], channels=1, factor=ratio)


class Decoder(nn.Module):
    """One decoder level: ``act(conv(cat[up(h), gate(delay(skip))]))`` with the gated skip
    ``s * sigmoid(conv1x1(s))``, or with ``deep_gate`` ``s * sigmoid(conv1x1(cat[s, up(h)]))``.
    ``channel_dim``: 1 offline, 2 in the time-major streaming form."""

    def __init__(
        self,
        up: nn.Module,
        delay: nn.Module,
        gate: nn.Module,
        conv: nn.Module,
        channel_dim: int,
        deep_gate: bool = False,
    ) -> None:
        super().__init__()
        self.up, self.delay, self.gate, self.conv = up, delay, gate, conv
        self.channel_dim, self.deep_gate = channel_dim, deep_gate

    def forward(self, h: Tensor, skip: Tensor) -> Tensor:
        s = self.delay(skip)
        u = self.up(h)
        g = torch.cat([s, u], self.channel_dim) if self.deep_gate else s
        s = s * torch.sigmoid(self.gate(g))
        return act(self.conv(torch.cat([u, s], self.channel_dim)))

    def clear(self, batch: int) -> None:
        """Zero the caches for ``batch`` streams (streaming form only)."""
        self.up.clear(batch)
        self.delay.clear(batch)
        self.gate.clear(batch)
        self.conv.clear(batch)

    def reset_rows(self, rows: Tensor) -> None:
        """Zero the caches of batch rows ``rows`` in place (streaming form only)."""
        self.up.reset_rows(rows)
        self.delay.reset_rows(rows)
        self.gate.reset_rows(rows)
        self.conv.reset_rows(rows)

    def streaming(self) -> Decoder:
        """The same level with streaming submodules."""
        parts = (self.up, self.delay, self.gate, self.conv)
        return Decoder(*(p.streaming() for p in parts), channel_dim=2, deep_gate=self.deep_gate)


class Body(nn.Module):
    """The network between input and output: ``x -> (dry, residual)``, both at the output rate,
    ``dry`` = the delayed interpolated input. Offline: ``(batch, 1, time)``; streaming form
    (:meth:`streaming`): time-major ``(batch, time, 1)``."""

    def __init__(
        self,
        interp: nn.Module,
        dry_delay: nn.Module,
        encoders: nn.ModuleList,  # level 0: conv; deeper: DWT + conv
        mid: nn.Module,
        context: nn.ModuleList,  # residual dilated convs at the bottleneck's rate
        decoders: nn.ModuleList,
        out: nn.Module,
    ) -> None:
        super().__init__()
        self.interp, self.dry_delay, self.mid, self.out = interp, dry_delay, mid, out
        self.encoders, self.context, self.decoders = encoders, context, decoders

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = self.interp(x)
        h = u
        skips: list[Tensor] = []
        for enc in self.encoders:
            h = act(enc(h))
            skips.append(h)
        h = act(self.mid(h))
        for conv in self.context:
            h = h + act(conv(h))
        for i, dec in enumerate(self.decoders):  # deepest first
            h = dec(h, skips[len(skips) - 1 - i])
        return self.dry_delay(u), torch.tanh(self.out(h))

    def clear(self, batch: int) -> None:
        """Zero the caches for ``batch`` streams (streaming form only)."""
        self.interp.clear(batch)
        self.dry_delay.clear(batch)
        for enc in self.encoders:
            enc.clear(batch)
        self.mid.clear(batch)
        for conv in self.context:
            conv.clear(batch)
        for dec in self.decoders:
            dec.clear(batch)
        self.out.clear(batch)

    def reset_rows(self, rows: Tensor) -> None:
        """Zero the caches of batch rows ``rows`` in place (streaming form only)."""
        self.interp.reset_rows(rows)
        self.dry_delay.reset_rows(rows)
        for enc in self.encoders:
            enc.reset_rows(rows)
        self.mid.reset_rows(rows)
        for conv in self.context:
            conv.reset_rows(rows)
        for dec in self.decoders:
            dec.reset_rows(rows)
        self.out.reset_rows(rows)

    def streaming(self) -> Body:
        """The same network with streaming (cached, time-major) submodules."""
        return Body(
            self.interp.streaming(),
            self.dry_delay.streaming(),
            nn.ModuleList([m.streaming() for m in self.encoders]),
            self.mid.streaming(),
            nn.ModuleList([m.streaming() for m in self.context]),
            nn.ModuleList([m.streaming() for m in self.decoders]),
            self.out.streaming(),
        )


class WaveletUNet(nn.Module):
    """Causal wavelet U-Net: ``(batch, 1, T_in) -> (batch, 1, T_in * R)``, ``R = rate_out/rate_in``.

    ``y[..., n]`` estimates ``target[..., n - latency_samples()]`` (output samples), ``target`` the
    reference at ``rate_out``. ``T_in`` must be a multiple of ``config.block_multiple``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c, k, wav, n = config.widths, config.kernel_size, config.wavelet, config.levels
        step = wavelet_delay(wav)
        encoders = [CausalConv(1, c[0], k)]
        encoders += [AnalysisConv(DWT(c[lv - 1], wav), c[lv], k) for lv in range(1, n)]
        decoders = []
        deep = config.gate == "deep"  # the gate sees the skip (and the deep path)
        for lv in reversed(range(n)):
            out_ch = 2 * c[lv - 1] if lv else c[0]
            align = step * (2 ** (n - lv) - 1)  # deep-path delay at this level's rate
            decoders.append(
                Decoder(
                    IDWT(c[lv], wav),
                    Delay(align, c[lv]),
                    CausalConv((2 if deep else 1) * c[lv], c[lv], 1),
                    CausalConv(2 * c[lv], out_ch, k),
                    channel_dim=1,
                    deep_gate=deep,
                )
            )
        ck = config.context_kernel or k
        context = [CausalConv(2 * c[-1], 2 * c[-1], ck, dilation=d) for d in config.context]
        out = CausalConv(c[0], 1, 1)
        nn.init.zeros_(out.conv.weight)
        nn.init.zeros_(out.conv.bias)
        interp = (
            sinc_interpolator(config.ratio, config.interp_zeros)
            if config.interp_zeros and config.ratio > 1
            else linear_interpolator(config.ratio)
        )
        self.body = Body(
            interp,
            Delay(self.latency_samples() - config.interp_delay, 1),
            nn.ModuleList(encoders),
            AnalysisConv(DWT(c[-1], wav), 2 * c[-1], k),
            nn.ModuleList(context),
            nn.ModuleList(decoders),
            out,
        )

    def latency_samples(self) -> int:
        """Algorithmic latency, output samples: lookahead D + interpolator delay (``R - 1``
        linear, ``Z * R - 1`` sinc) + filter-bank alignment ``(L - 1) * (2**levels - 1)``."""
        cfg = self.config
        align = wavelet_delay(cfg.wavelet) * (2**cfg.levels - 1)
        return cfg.lookahead + cfg.interp_delay + align

    def forward(self, x: Tensor) -> Tensor:
        dry, residual = self.parts(x)
        return dry + residual

    def parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(dry, residual)``, the two terms of :meth:`forward`'s output, each
        `(batch, 1, T_in * R)`: the delayed interpolated input and the network's residual."""
        if x.dim() != 3 or x.size(1) != 1:
            raise ValueError(f"expected (batch, 1, time), got {tuple(x.shape)}")
        if x.size(-1) % self.config.block_multiple:
            raise ValueError(
                f"input length {x.size(-1)} is not a multiple of {self.config.block_multiple}"
            )
        return self.body(x)

    def streaming(self) -> StreamingWaveletUNet:
        """A stateful streaming copy of the current weights, on their device (see
        :class:`StreamingWaveletUNet`)."""
        return StreamingWaveletUNet(self).to(self.body.out.conv.weight.device)


class StreamingWaveletUNet(nn.Module):
    """Streaming form of :class:`WaveletUNet`; caches are buffers updated in place.

    :meth:`step` takes ``(batch, 1, T_in)`` blocks (``T_in`` a multiple of ``block_multiple``)
    and returns ``(dry, residual)``, each ``(batch, 1, T_in * R)``; consecutive blocks give the
    offline output of the concatenated signal. :meth:`forward` returns ``dry + residual``.
    Each batch row is an independent stream: :meth:`reset_rows` restarts some of them.
    """

    def __init__(self, net: WaveletUNet) -> None:
        super().__init__()
        self.body = net.body.streaming()
        self.batch = 1

    def step(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One block: ``(batch, 1, T_in) -> (dry, residual)`` at the output rate. A change of
        batch size restarts the state."""
        dry, residual = self.step_time_major(x.transpose(1, 2))
        return dry.transpose(1, 2), residual.transpose(1, 2)

    def step_time_major(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`step` on time-major blocks: ``(batch, T_in, 1) -> (dry, residual)``, each
        ``(batch, T_in * R, 1)`` (for one channel the same memory as ``(batch, 1, time)``)."""
        if x.size(0) != self.batch:
            self.batch = x.size(0)
            self.body.clear(self.batch)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        dry, residual = self.step(x)
        return dry + residual

    @torch.jit.export
    def reset(self) -> None:
        """Clear the streaming state (all caches to zero)."""
        self.body.clear(self.batch)

    @torch.jit.export
    def reset_rows(self, rows: Tensor) -> None:
        """Clear the state of the streams in batch rows ``rows`` (int64 indices on the model's
        device) in place; the other rows keep streaming undisturbed."""
        self.body.reset_rows(rows)
