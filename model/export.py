"""TorchScript export of the wavelet U-Net as a wavehost plugin, and ``wavehost export``.

Checkpoint format (written by ``wavehost train``): a dict with ``"config"``
(``UNetConfig.to_dict()``) and ``"model"`` (the ``WaveletUNet`` state dict), read with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import pickle
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from model.bandlimit import lowpass_taps
from model.streaming import Analysis
from model.unet import UNetConfig, WaveletUNet

_CONTRACT_ATTRS = [
    "sample_rate_in",
    "sample_rate_out",
    "channels",
    "block_multiple",
    "latency",
    "streaming",
    "parameter_names",
    "parameter_min",
    "parameter_max",
    "parameter_default",
]


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """TorchScript is deprecated upstream but is the plugin format here: silence its warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


STEREO_MODES = ("lr", "ms")


class UNetPlugin(nn.Module):
    """The streaming U-Net behind the plugin contract (see ``realtime/contract.py``).

    ``forward``: ``(batch, channels, T_in)`` at ``sample_rate_in`` -> ``(batch, channels,
    T_in * R)`` at ``sample_rate_out``, ``T_in`` a multiple of ``block_multiple``; stateful.
    Parameter ``mix`` in [0, 1]: ``dry + mix * residual`` (0 = the latency-aligned interpolated
    input). The (mono) network restores each channel as its own batch row: with ``stereo="lr"``
    left and right, with ``"ms"`` mid ``(L + R) / 2`` and side ``(L - R) / 2``, turned back
    into left and right after. ``band_top`` (Hz, 0 = off): the residual is low-passed from there
    to the output Nyquist frequency (:mod:`model.bandlimit`; no latency added).
    """

    def __init__(
        self,
        net: WaveletUNet,
        channels: int = 1,
        stereo: str = "lr",
        mix: float = 1.0,
        band_top: float = 0.0,
    ) -> None:
        super().__init__()
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"mix must lie in [0, 1], not {mix}")
        if stereo not in STEREO_MODES:
            raise ValueError(f"stereo mode must be one of {STEREO_MODES}, not {stereo!r}")
        cfg = net.config
        self.net = net.streaming()
        self.sample_rate_in = cfg.rate_in
        self.sample_rate_out = cfg.rate_out
        self.channels = channels
        self.mid_side = channels == 2 and stereo == "ms"
        self.block_multiple = cfg.block_multiple
        self.latency = net.latency_samples()
        self.streaming = True
        self.parameter_names = ["mix"]
        self.parameter_min = [0.0]
        self.parameter_max = [1.0]
        self.parameter_default = [mix]
        self.register_buffer("mix", torch.full((1,), mix))
        self.band_limited = band_top > 0
        taps = torch.tensor(lowpass_taps(cfg.rate_out, band_top) if self.band_limited else [1.0])
        self.band_limit = Analysis(taps.flip(0)[None], channels=1, stride=1).streaming()

    def forward(self, x: Tensor) -> Tensor:
        batch, time = x.size(0), x.size(2)
        if self.mid_side:
            x = torch.stack([x[:, 0] + x[:, 1], x[:, 0] - x[:, 1]], 1) * 0.5
        # one channel per row, time-major: (batch * channels, time, 1), the same memory
        dry, residual = self.net.step_time_major(x.reshape(batch * self.channels, time, 1))
        if self.band_limited:
            if self.band_limit.cache.size(0) != residual.size(0):  # the net restarted too
                self.band_limit.clear(residual.size(0))
            residual = self.band_limit(residual)
        y = torch.addcmul(dry, self.mix, residual).view(batch, self.channels, -1)
        if self.mid_side:
            y = torch.stack([y[:, 0] + y[:, 1], y[:, 0] - y[:, 1]], 1)
        return y

    @torch.jit.export
    def reset(self) -> None:
        """Clear the streaming state."""
        self.net.reset()
        self.band_limit.clear(self.net.batch)

    @torch.jit.export
    def reset_rows(self, rows: Tensor) -> None:
        """Clear the state of batch rows ``rows`` (int64 indices) only (the contract's optional
        per-stream reset, for batching many streams in one instance)."""
        offsets = torch.arange(self.channels, dtype=rows.dtype, device=rows.device)
        rows = (rows[:, None] * self.channels + offsets).flatten()
        self.net.reset_rows(rows)
        self.band_limit.reset_rows(rows)

    @torch.jit.export
    def set_parameter(self, name: str, value: float) -> None:
        """Set parameter ``name`` (only ``"mix"``), clamped to its range."""
        if name != "mix":
            raise ValueError("unknown parameter: " + name)
        self.mix.fill_(min(max(value, 0.0), 1.0))


def script_plugin(
    net: WaveletUNet,
    channels: int = 1,
    stereo: str = "lr",
    mix: float = 1.0,
    band_top: float = 0.0,
) -> torch.jit.ScriptModule:
    """The scripted, frozen CPU plugin module for (a copy of) ``net`` (weights folded, caches
    kept as mutable buffers); ``channels``, ``stereo``, the default ``mix`` and ``band_top`` as
    in :class:`UNetPlugin`."""
    with _quiet_torchscript():
        module = UNetPlugin(copy.deepcopy(net).cpu().eval(), channels, stereo, mix, band_top)
        plugin = torch.jit.script(module.eval())
        keep = [*_CONTRACT_ATTRS, "reset", "reset_rows", "set_parameter"]
        return torch.jit.freeze(plugin, preserved_attrs=keep)


def export_plugin(
    net: WaveletUNet,
    path: str | Path,
    *,
    name: str,
    channels: int = 1,
    stereo: str = "lr",
    mix: float = 1.0,
    band_top: float = 0.0,
) -> Path:
    """Write ``net`` as a TorchScript plugin to ``path`` plus a JSON sidecar (``.json``);
    ``channels``, ``stereo``, the default ``mix`` and ``band_top`` as in :class:`UNetPlugin`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plugin = script_plugin(net, channels, stereo, mix, band_top)
    with _quiet_torchscript():
        torch.jit.save(plugin, str(path))
    meta = {
        "name": name,
        "kind": "wavelet-unet",
        "config": net.config.to_dict(),
        "stereo": stereo if channels == 2 else None,
        "band_top_hz": band_top or None,
        "parameters": sum(p.numel() for p in net.parameters()),
        "torch": torch.__version__,
        **{key: getattr(plugin, key) for key in _CONTRACT_ATTRS},
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_checkpoint(path: str | Path) -> WaveletUNet:
    """The ``WaveletUNet`` saved in a checkpoint; ``ValueError`` with a one-line reason if bad."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint is empty (0 bytes): {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"cannot read checkpoint {path}: not a weights-only torch.save file"
        ) from None
    except Exception as err:  # corrupt or truncated archive
        reason = str(err).split(". ")[0].strip() or type(err).__name__
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(
            f"checkpoint {path} is not a wavehost checkpoint (needs 'config', 'model')"
        )
    try:
        net = WaveletUNet(UNetConfig.from_dict(dict(ckpt["config"])))
        net.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0]
        raise ValueError(f"checkpoint {path} does not match its config: {reason}") from None
    return net.eval()


def save_weights(net: WaveletUNet, path: str | Path) -> Path:
    """Write the weights-only checkpoint of ``net`` (``"config"``, ``"model"``: no optimizer or
    training state) that :func:`load_checkpoint` reads; shipped next to each plugin, so that a
    later version of the streaming code can export the same network again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": net.config.to_dict(), "model": net.state_dict()}, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``wavehost export --checkpoint CKPT --out PATH.ts [--name NAME] [--save-weights PT]``."""
    parser = argparse.ArgumentParser(
        prog="wavehost export", description="Export a trained wavelet U-Net as a plugin."
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by wavehost train")
    parser.add_argument("--out", required=True, help="output TorchScript file (.ts)")
    parser.add_argument("--name", help="plugin name for the metadata (default: the file stem)")
    parser.add_argument("--channels", type=int, choices=(1, 2), default=1, help="1 mono, 2 stereo")
    parser.add_argument(
        "--stereo",
        choices=STEREO_MODES,
        default="lr",
        help="stereo as left/right or mid/side batch rows (default lr)",
    )
    parser.add_argument(
        "--mix",
        type=float,
        default=1.0,
        help="default of the plugin's mix parameter, dry + mix * residual (default 1; "
        "wavehost eval --mix-sweep chooses one)",
    )
    parser.add_argument(
        "--band-top",
        type=float,
        default=0.0,
        help="low-pass the residual from this frequency (Hz) to the output Nyquist frequency, "
        "where a resampled wideband reference is empty (default 0: off)",
    )
    parser.add_argument(
        "--save-weights",
        metavar="PATH",
        help="also write the network's weights-only checkpoint (config and weights) to PATH",
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.mix <= 1.0:
        parser.error(f"--mix must lie in [0, 1], got {args.mix}")
    try:
        net = load_checkpoint(args.checkpoint)
        name = args.name or Path(args.out).stem
        out = export_plugin(
            net, args.out, name=name, channels=args.channels, stereo=args.stereo, mix=args.mix,
            band_top=args.band_top,
        )  # fmt: skip
        if args.save_weights:
            save_weights(net, args.save_weights)
    except (ValueError, OSError) as err:
        print(f"wavehost export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} (latency {net.latency_samples()} samples at {net.config.rate_out} Hz)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
