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


class UNetPlugin(nn.Module):
    """The streaming U-Net behind the plugin contract (see ``realtime/contract.py``).

    ``forward``: ``(batch, 1, T_in)`` at ``sample_rate_in`` -> ``(batch, 1, T_in * R)`` at
    ``sample_rate_out``, ``T_in`` a multiple of ``block_multiple``; stateful. Parameter ``mix``
    in [0, 1]: ``dry + mix * residual`` (0 = the latency-aligned interpolated input).
    """

    def __init__(self, net: WaveletUNet) -> None:
        super().__init__()
        cfg = net.config
        self.net = net.streaming()
        self.sample_rate_in = cfg.rate_in
        self.sample_rate_out = cfg.rate_out
        self.channels = 1
        self.block_multiple = cfg.block_multiple
        self.latency = net.latency_samples()
        self.streaming = True
        self.parameter_names = ["mix"]
        self.parameter_min = [0.0]
        self.parameter_max = [1.0]
        self.parameter_default = [1.0]
        self.register_buffer("mix", torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        dry, residual = self.net.step(x)
        return dry + self.mix * residual

    @torch.jit.export
    def reset(self) -> None:
        """Clear the streaming state."""
        self.net.reset()

    @torch.jit.export
    def reset_rows(self, rows: Tensor) -> None:
        """Clear the state of batch rows ``rows`` (int64 indices) only (the contract's optional
        per-stream reset, for batching many streams in one instance)."""
        self.net.reset_rows(rows)

    @torch.jit.export
    def set_parameter(self, name: str, value: float) -> None:
        """Set parameter ``name`` (only ``"mix"``), clamped to its range."""
        if name != "mix":
            raise ValueError("unknown parameter: " + name)
        self.mix.fill_(min(max(value, 0.0), 1.0))


def script_plugin(net: WaveletUNet) -> torch.jit.ScriptModule:
    """The scripted, frozen CPU plugin module for (a copy of) ``net`` (weights folded, caches
    kept as mutable buffers)."""
    with _quiet_torchscript():
        plugin = torch.jit.script(UNetPlugin(copy.deepcopy(net).cpu().eval()).eval())
        keep = [*_CONTRACT_ATTRS, "reset", "reset_rows", "set_parameter"]
        return torch.jit.freeze(plugin, preserved_attrs=keep)


def export_plugin(net: WaveletUNet, path: str | Path, *, name: str) -> Path:
    """Write ``net`` as a TorchScript plugin to ``path`` plus a JSON sidecar (``.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plugin = script_plugin(net)
    with _quiet_torchscript():
        torch.jit.save(plugin, str(path))
    meta = {
        "name": name,
        "kind": "wavelet-unet",
        "config": net.config.to_dict(),
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


def main(argv: list[str] | None = None) -> int:
    """``wavehost export --checkpoint CKPT --out PATH.ts [--name NAME]``."""
    parser = argparse.ArgumentParser(
        prog="wavehost export", description="Export a trained wavelet U-Net as a plugin."
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by wavehost train")
    parser.add_argument("--out", required=True, help="output TorchScript file (.ts)")
    parser.add_argument("--name", help="plugin name for the metadata (default: the file stem)")
    args = parser.parse_args(argv)
    try:
        net = load_checkpoint(args.checkpoint)
    except ValueError as err:
        print(f"wavehost export: error: {err}", file=sys.stderr)
        return 2
    out = export_plugin(net, args.out, name=args.name or Path(args.out).stem)
    print(f"wrote {out} (latency {net.latency_samples()} samples at {net.config.rate_out} Hz)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
