"""Find, load and validate plugins (always off the audio thread)."""

from __future__ import annotations

import importlib
import math
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from realtime.contract import PluginError, PluginInfo
from realtime.errors import one_line

PLUGIN_GROUP = "wavehost.plugins"
TORCHSCRIPT_SUFFIXES = (".ts", ".pt", ".pth", ".jit", ".zip")


class LoadedPlugin:
    """A validated plugin: its declared :class:`PluginInfo` and a safe way to call it.

    ``module`` is a ``torch.jit.ScriptModule`` or a Python object with the contract's surface.
    """

    def __init__(self, module: Any, info: PluginInfo) -> None:
        self.module = module
        self.info = info

    def process(self, x: torch.Tensor) -> torch.Tensor:
        """Run one step: ``x`` ``(batch, channels, time)`` at the input rate."""
        with torch.inference_mode():
            return self.module(x)

    def reset(self) -> None:
        """Clear the plugin's streaming state."""
        with torch.inference_mode():
            self.module.reset()

    def set_parameter(self, name: str, value: float) -> None:
        """Set a declared parameter; refuse unknown names and values out of range."""
        if name not in self.info.parameters:
            known = ", ".join(self.info.parameters) or "none"
            raise PluginError(f"plugin {self.info.name} has no parameter {name!r} (has: {known})")
        lo, hi, _ = self.info.parameters[name]
        if not lo <= value <= hi:
            raise PluginError(
                f"plugin {self.info.name}: parameter {name}={value} outside [{lo}, {hi}]"
            )
        with torch.inference_mode():
            self.module.set_parameter(name, float(value))


def available_plugins() -> list[str]:
    """Names of the plugins registered in the ``wavehost.plugins`` entry-point group."""
    return sorted(ep.name for ep in entry_points(group=PLUGIN_GROUP))


def load_plugin(
    spec: str | Path | Any, *, probe: bool = True, name: str | None = None
) -> LoadedPlugin:
    """Load a plugin and check it against the contract.

    Args:
        spec: a TorchScript file path; a registered plugin name (``wavehost.plugins`` entry
            points, e.g. ``resample-8k-16k``); ``module:attribute`` naming a Python plugin object
            or a factory returning one; or a plugin object itself.
        probe: run one probe block through it (output length, finite values), then reset it.
        name: what messages and reports call it (default: the file name, registered name or
            spec; a plugin object's type name).

    Raises:
        PluginError: with a one-line message saying what is wrong.
    """
    module, found = _resolve(spec)
    name = name or found
    info = PluginInfo.read(module, name)
    for method in ("forward", "reset", "set_parameter"):
        if not callable(getattr(module, method, None)):
            raise PluginError(f"plugin {name}: missing method {method}()")
    plugin = LoadedPlugin(module, info)
    if probe:
        _probe(plugin)
    return plugin


def _resolve(spec: str | Path | Any) -> tuple[Any, str]:
    if not isinstance(spec, str | Path):
        return spec, type(spec).__name__
    text = str(spec)
    path = Path(text).expanduser()
    if path.suffix in TORCHSCRIPT_SUFFIXES or path.exists() or "/" in text:
        return load_torchscript(path), path.name
    registered = {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}
    if text in registered:
        try:
            target = registered[text].load()
            obj = target() if callable(target) and not hasattr(target, "forward") else target
        except (FileNotFoundError, ImportError, AttributeError) as exc:
            raise PluginError(f"plugin {text} is registered but not available: {exc}") from None
        return (load_torchscript(Path(obj)), text) if isinstance(obj, str | Path) else (obj, text)
    if ":" in text:
        modname, _, attr = text.partition(":")
        try:
            target = getattr(importlib.import_module(modname), attr)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"cannot import plugin {text}: {exc}") from None
        return (
            target() if isinstance(target, type) or not hasattr(target, "forward") else target,
            text,
        )
    names = ", ".join(available_plugins()) or "none installed"
    raise PluginError(f"unknown plugin {text!r}: not a file and not a registered name ({names})")


def load_torchscript(path: Path) -> Any:
    """``torch.jit.load`` a file onto the CPU in eval mode; :class:`PluginError` (one line) if
    it is absent, empty, a folder or not TorchScript. No contract check (:func:`load_plugin`)."""
    if not path.exists():
        raise PluginError(f"plugin file not found: {path}")
    if path.is_dir():
        raise PluginError(f"plugin path is a directory, expected a TorchScript file: {path}")
    if path.stat().st_size == 0:
        raise PluginError(f"plugin file is empty (0 bytes): {path}")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError, ValueError, zipfile errors...
        reason = one_line(exc, 160)
        raise PluginError(
            f"plugin file {path} is not a loadable TorchScript file: {reason}"
        ) from None
    module.eval()
    return module


def _probe(plugin: LoadedPlugin) -> None:
    info = plugin.info
    n = (
        info.window
        if not info.streaming
        else info.block_multiple * max(1, 256 // info.block_multiple)
    )
    expected = n * info.sample_rate_out // info.sample_rate_in
    gen = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(1, info.channels, n, generator=gen)
    try:
        y = plugin.process(x)
    except Exception as exc:
        first = one_line(exc, 160)
        raise PluginError(
            f"plugin {info.name} failed on a probe block of {n} samples: {first}"
        ) from None
    if not isinstance(y, torch.Tensor):
        raise PluginError(f"plugin {info.name}: forward returned {type(y).__name__}, not a tensor")
    if tuple(y.shape) != (1, info.channels, expected):
        raise PluginError(
            f"plugin {info.name}: probe block (1, {info.channels}, {n}) gave output shape "
            f"{tuple(y.shape)}, expected (1, {info.channels}, {expected}) from its declared rates"
        )
    if not bool(torch.isfinite(y).all()):
        raise PluginError(f"plugin {info.name}: probe output has NaN or Inf values")
    if not math.isfinite(float(y.abs().max())):
        raise PluginError(f"plugin {info.name}: probe output is not finite")
    plugin.reset()
