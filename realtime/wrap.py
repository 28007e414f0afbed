"""Declare a bare TorchScript audio model as a plugin (``wavehost wrap``).

A model saved with ``torch.jit.save`` by anyone (``forward(x) -> y`` and nothing else) cannot
tell the host its rates, channels, block size, latency or whether it keeps state between calls.
:func:`wrap_file` puts it inside a scripted module that declares them (:mod:`realtime.contract`),
checks the result as the host would (the loader's probe, the latency of a noise probe, seams
between blocks) and writes it as a plugin file that ``run``, ``render`` and ``bench`` take.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from realtime.contract import WINDOW_SHAPES, PluginError, PluginInfo
from realtime.errors import one_line
from realtime.loader import LoadedPlugin, load_plugin, load_torchscript
from realtime.probe import LagEstimate, measure_latency, split_difference

LAYOUTS = ("bct", "bt")
"""What the model's ``forward`` takes: ``(batch, channels, time)``, or ``(batch, time)`` (each
channel of each stream is then its own batch row)."""

SEAM_TOLERANCE = 1e-4  # relative difference between one call and two that counts as a seam


class Declared(nn.Module):
    """``model`` behind the plugin contract, with the metadata given here (units as in
    :class:`realtime.contract.PluginInfo`). No parameters; ``reset()`` calls the model's own
    ``reset()`` where it has one. ``forward``: ``(batch, channels, time)`` in and out; with
    ``exact``, the model sees ``block_multiple`` samples per call, one call per piece."""

    def __init__(
        self,
        model: nn.Module,
        *,
        rate: int,
        rate_out: int,
        channels: int,
        block_multiple: int,
        latency: int,
        window: int,
        hop: int,
        window_shape: str,
        layout: str,
        exact: bool,
    ) -> None:
        super().__init__()
        self.model = model
        self.sample_rate_in = rate
        self.sample_rate_out = rate_out
        self.channels = channels
        self.block_multiple = block_multiple
        self.latency = latency
        self.streaming = window == 0
        self.window = window
        self.hop = hop
        self.window_shape = window_shape
        self.fold_channels = layout == "bt"
        self.exact = exact
        self.parameter_names = torch.jit.Attribute([], list[str])
        self.parameter_min = torch.jit.Attribute([], list[float])
        self.parameter_max = torch.jit.Attribute([], list[float])
        self.parameter_default = torch.jit.Attribute([], list[float])

    def forward(self, x: Tensor) -> Tensor:
        if self.exact and x.size(2) > self.block_multiple:
            return torch.cat([self._call(piece) for piece in x.split(self.block_multiple, 2)], 2)
        return self._call(x)

    def _call(self, x: Tensor) -> Tensor:
        if self.fold_channels:
            y = self.model(x.reshape(x.size(0) * x.size(1), x.size(2)))
            return y.reshape(x.size(0), x.size(1), -1)
        return self.model(x)

    @torch.jit.export
    def reset(self) -> None:
        """Clear the model's state (nothing to do for a model without ``reset()``)."""
        if hasattr(self.model, "reset"):
            self.model.reset()

    @torch.jit.export
    def set_parameter(self, name: str, value: float) -> None:
        """A wrapped model declares no parameters."""
        raise ValueError("a wrapped model has no parameter " + name)


@dataclass
class WrapReport:
    """What :func:`wrap_file` wrote and measured: the declaration the host will read, the
    latency of a noise probe, the seam check (streaming only) and warnings for the user."""

    info: PluginInfo
    lag: LagEstimate
    seam: float | None
    has_reset: bool
    exact: bool
    warnings: list[str] = field(default_factory=list)


def wrap_file(
    source: str | Path,
    target: str | Path,
    *,
    rate: int,
    rate_out: int | None = None,
    channels: int = 1,
    layout: str = "bct",
    block_multiple: int = 1,
    latency: int | None = None,
    window: int = 0,
    hop: int = 0,
    window_shape: str = "hann",
    exact: bool = False,
) -> WrapReport:
    """Wrap the TorchScript model in ``source`` as a plugin and save it to ``target``.

    Args:
        source: a ``torch.jit.save`` file whose ``forward`` maps audio to audio.
        target: the plugin file to write (replaced only once everything passed).
        rate: input sample rate, Hz.
        rate_out: output sample rate, Hz (default ``rate``).
        channels: channels per stream, in and out.
        layout: ``"bct"`` or ``"bt"`` (see :data:`LAYOUTS`).
        block_multiple: every call's length is a multiple of this, input samples.
        latency: the model's own delay, output samples; ``None``: measured from a noise probe
            (refused where the output does not carry its input).
        window: ``0`` for a streaming model (state kept between calls, or none needed); else the
            host calls it on windows of this many input samples and overlap-adds them.
        hop: input samples between windows (windowed models only).
        window_shape: ``"hann"`` (synthesis only) or ``"sqrt_hann"`` (analysis and synthesis).
        exact: the model takes exactly ``block_multiple`` samples per call (e.g. traced with
            that shape): longer blocks are fed to it in pieces (streaming models only).

    Raises:
        PluginError: one line saying what is wrong; ``target`` is then left as it was.
    """
    source, target = Path(source).expanduser(), Path(target).expanduser()
    if layout not in LAYOUTS:
        raise PluginError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if window_shape not in WINDOW_SHAPES:
        raise PluginError(f"window shape must be one of {WINDOW_SHAPES}, not {window_shape!r}")
    if (window > 0) != (hop > 0):
        raise PluginError("a windowed model needs both --window and --hop (samples)")
    if exact and window:
        raise PluginError("--exact is for streaming models: a windowed one sees --window samples")
    model = load_torchscript(source)
    if hasattr(model, "sample_rate_in"):
        raise PluginError(f"{source} already declares the plugin contract: load it as it is")
    declared = dict(
        rate=rate,
        rate_out=rate_out or rate,
        channels=channels,
        block_multiple=block_multiple,
        latency=0 if latency is None else latency,
        window=window,
        hop=hop,
        window_shape=window_shape,
        layout=layout,
        exact=exact,
    )
    plugin = _check(model, source, target.name, declared)
    lag = measure_latency(plugin)
    measured = max(lag.lag, 0)  # a windowed model may lead within its window: the host waits
    warnings = []
    if latency is None:
        if not lag.measurable:
            raise PluginError(
                f"{source}: no latency to read from a noise probe (correlation "
                f"{lag.correlation:.2f}): declare it with --latency SAMPLES"
            )
        plugin.module.latency = measured  # the module stays; its declaration is read again
        plugin = load_plugin(plugin.module, probe=False, name=target.name)
    elif lag.measurable and measured != latency:
        warnings.append(
            f"declared latency {latency} samples, but the output lines up with the input "
            f"{measured} samples late (correlation {lag.correlation:.2f}): check --latency"
        )
    seam = None  # not checkable for a windowed model, nor for one that takes one length only
    if plugin.info.streaming and not exact:
        seam = split_difference(plugin)
        if seam > SEAM_TOLERANCE:
            warnings.append(
                f"one call and two half calls differ by {seam:.1e} of the output's peak: the "
                f"model keeps no state across blocks, so streaming will leave seams; declare "
                f"--window and --hop to have the host overlap-add it"
            )
    _save(plugin.module, target)
    info = load_plugin(target).info
    return WrapReport(info, lag, seam, hasattr(model, "reset"), exact, warnings)


def _check(model: nn.Module, source: Path, name: str, declared: dict) -> LoadedPlugin:
    """Script ``model`` with ``declared`` and load it through the host's loader (probe run)."""
    try:
        module = torch.jit.script(Declared(model, **declared))
    except Exception as exc:  # TorchScript compiler errors span many lines
        raise PluginError(
            f"{source}: its forward must take one tensor of layout {declared['layout']} and "
            f"return one tensor: {one_line(exc, 160)}"
        ) from None
    try:
        return load_plugin(module, name=name)
    except PluginError as exc:
        if "failed on a probe block" not in str(exc) or declared["exact"] or declared["window"]:
            raise
        raise PluginError(
            f"{exc}; if it takes exactly --block-multiple samples a call, add --exact"
        ) from None


def _save(module: torch.jit.ScriptModule, target: Path) -> None:
    """Write through a temporary file in ``target``'s folder, then rename: never half a file."""
    folder = target.parent
    if not folder.is_dir():
        raise PluginError(f"cannot write {target}: folder {folder} does not exist")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
        os.close(fd)
        module.save(tmp)
        os.replace(tmp, target)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
        raise PluginError(f"cannot write {target}: {one_line(exc)}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def format_report(source: str, target: str, r: WrapReport) -> str:
    """The lines ``wavehost wrap`` prints."""
    info = r.info
    kind = (
        "streaming"
        if info.streaming
        else f"windowed ({info.window_shape} {info.window}, hop {info.hop}; the host's "
        f"overlap-add adds {(info.window - info.hop) * info.ratio} samples)"
    )
    ms = 1e3 * info.latency / info.sample_rate_out
    lines = [
        f"wrapped {source} -> {target}",
        f"  {info.sample_rate_in} -> {info.sample_rate_out} Hz, {info.channels} channel(s), "
        f"blocks of {info.block_multiple}, {kind}",
        f"  latency {info.latency} samples ({ms:.2f} ms); noise probe: output "
        f"{r.lag.lag} samples behind the input, correlation {r.lag.correlation:.2f}",
        "  reset(): the model's own" if r.has_reset else "  reset(): none (the model has none)",
    ]
    if r.exact:
        lines.append(
            f"  the model is called on exactly {info.block_multiple} samples at a time (seams "
            f"between calls cannot be checked: it takes no longer input to compare with)"
        )
    if r.seam is not None:
        lines.append(f"  one call vs two half calls: {r.seam:.1e} of the peak")
    lines += [f"warning: {w}" for w in r.warnings]
    return "\n".join(lines)
