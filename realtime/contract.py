"""The plugin contract: what a plugin declares and what the host checks.

A plugin is a TorchScript module (``torch.jit.save`` file) or a Python object with the same
surface. It declares, as plain attributes:

==================  =========  ====================================================================
attribute           type       meaning
==================  =========  ====================================================================
sample_rate_in      int        input sample rate, Hz
sample_rate_out     int        output sample rate, Hz
channels            int        channel count (same in and out)
block_multiple      int        every call's input length is a multiple of this, samples
latency             int        algorithmic latency (lookahead + filter alignment), samples at
                               ``sample_rate_out``: output sample ``n`` answers input time
                               ``n - latency``
streaming           bool       True: ``forward`` keeps state between calls and accepts any multiple
                               of ``block_multiple``. False: the host calls ``forward`` on windows
                               of ``window`` input samples every ``hop`` samples and overlap-adds
window              int        window length, input samples (only when not streaming)
hop                 int        hop, input samples (only when not streaming)
window_shape        str        ``"hann"`` (synthesis window only) or ``"sqrt_hann"`` (analysis and
                               synthesis); only when not streaming
parameter_names     list[str]  names of the settable parameters (may be empty)
parameter_min       list[float]
parameter_max       list[float]
parameter_default   list[float]
==================  =========  ====================================================================

and the methods ``forward(x) -> y`` with ``x`` of shape ``(batch, channels, time)`` float32 at
``sample_rate_in`` and ``y`` of shape ``(batch, channels, time * sample_rate_out //
sample_rate_in)``, ``reset()`` (clear the streaming state) and ``set_parameter(name, value)``.
The host calls all three in ``torch.inference_mode`` (cheaper per call than ``no_grad``), so a
tensor a plugin creates there is an inference tensor: keep state in buffers updated in place, or
create it in one of these calls, never from outside the host.

Optional, for serving many streams with one instance (:mod:`realtime.multistream`) and for CUDA
graphs (:mod:`realtime.accel`); a plugin without them loads and runs as before:

- ``reset_rows(rows)``: ``rows`` an int64 tensor of batch-row indices on the plugin's device;
  clear the streaming state of those rows only, in place, leaving every other row (stream)
  untouched. Each batch row of a streaming plugin is then an independent stream, and the batch
  size stays fixed between calls (a change of batch size may restart all state).
  :attr:`PluginInfo.batch_reset` says whether a plugin has it.
- ``max_batch`` (int attribute): the largest batch the plugin accepts; absent or 0: no limit
  (:attr:`PluginInfo.max_batch`).
- To be replayed from a CUDA graph, a streaming plugin keeps its state and parameters in
  tensors updated in place (fixed addresses) and does no host synchronisation in ``forward``;
  the host checks replay against plain launches and falls back to them (reported) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

WINDOW_SHAPES = ("hann", "sqrt_hann")

_REQUIRED = {
    "sample_rate_in": int,
    "sample_rate_out": int,
    "channels": int,
    "block_multiple": int,
    "latency": int,
    "streaming": bool,
}
_WINDOWED = {"window": int, "hop": int, "window_shape": str}


class PluginError(Exception):
    """A plugin that breaks the contract. The message is one line meant for the user."""


@dataclass(frozen=True)
class PluginInfo:
    """The metadata a plugin declares (see the module docstring for units)."""

    name: str
    sample_rate_in: int
    sample_rate_out: int
    channels: int
    block_multiple: int
    latency: int
    streaming: bool
    window: int = 0
    hop: int = 0
    window_shape: str = ""
    parameters: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """name -> (min, max, default)"""
    batch_reset: bool = False
    """the plugin has the optional ``reset_rows(rows)`` (per-stream reset in a batch)"""
    max_batch: int = 0
    """largest batch the plugin accepts (0: no declared limit)"""

    @property
    def ratio(self) -> Fraction:
        """Output samples per input sample."""
        return Fraction(self.sample_rate_out, self.sample_rate_in)

    @classmethod
    def read(cls, plugin: Any, name: str) -> PluginInfo:
        """Read and check the declared metadata of ``plugin``; raise :class:`PluginError`."""
        values: dict[str, Any] = {}
        for key, kind in _REQUIRED.items():
            values[key] = _attr(plugin, name, key, kind)
        if not values["streaming"]:
            for key, kind in _WINDOWED.items():
                values[key] = _attr(plugin, name, key, kind)
        params = _parameters(plugin, name)
        if hasattr(plugin, "max_batch"):
            values["max_batch"] = _attr(plugin, name, "max_batch", int)
        values["batch_reset"] = callable(getattr(plugin, "reset_rows", None))
        info = cls(name=name, parameters=params, **values)
        info._check()
        return info

    def _check(self) -> None:
        def bad(what: str) -> PluginError:
            return PluginError(f"plugin {self.name}: {what}")

        for key in ("sample_rate_in", "sample_rate_out", "channels", "block_multiple"):
            if getattr(self, key) <= 0:
                raise bad(f"{key} must be positive, got {getattr(self, key)}")
        if self.max_batch < 0:
            raise bad(f"max_batch must be >= 0 (0: no limit), got {self.max_batch}")
        if self.latency < 0:
            raise bad(f"latency must be >= 0 samples, got {self.latency}")
        if (self.block_multiple * self.ratio).denominator != 1:
            raise bad(
                f"block_multiple {self.block_multiple} at {self.sample_rate_in} Hz does not map to "
                f"a whole number of samples at {self.sample_rate_out} Hz"
            )
        if self.streaming:
            return
        if self.window_shape not in WINDOW_SHAPES:
            raise bad(f"window_shape must be one of {WINDOW_SHAPES}, got {self.window_shape!r}")
        if not 0 < self.hop <= self.window:
            raise bad(f"need 0 < hop <= window, got hop {self.hop}, window {self.window}")
        if self.hop % self.block_multiple or self.window % self.block_multiple:
            raise bad(
                f"window {self.window} and hop {self.hop} must be multiples of "
                f"block_multiple {self.block_multiple}"
            )


def _attr(plugin: Any, name: str, key: str, kind: type) -> Any:
    if not hasattr(plugin, key):
        raise PluginError(
            f"plugin {name}: missing metadata attribute {key!r} (realtime/contract.py); for a "
            f"bare TorchScript model, declare it: wavehost wrap MODEL OUT.ts --rate HZ"
        )
    value = getattr(plugin, key)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise PluginError(
            f"plugin {name}: attribute {key!r} must be {kind.__name__}, "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def _parameters(plugin: Any, name: str) -> dict[str, tuple[float, float, float]]:
    names = list(getattr(plugin, "parameter_names", []))
    lists = [list(getattr(plugin, f"parameter_{k}", [])) for k in ("min", "max", "default")]
    if any(len(v) != len(names) for v in lists):
        raise PluginError(
            f"plugin {name}: parameter_names, parameter_min, parameter_max and "
            f"parameter_default must have the same length"
        )
    params = {}
    for pname, lo, hi, default in zip(names, *lists, strict=True):
        if not lo <= default <= hi:
            raise PluginError(
                f"plugin {name}: parameter {pname!r} default {default} outside [{lo}, {hi}]"
            )
        params[str(pname)] = (float(lo), float(hi), float(default))
    return params
