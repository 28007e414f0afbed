"""`wavehost train`: train the causal wavelet U-Net for one task of :mod:`model.tasks`.

    wavehost train --data DIR --out RUN_DIR [--task bwe-8k-16k|bwe-16k-48k|mp3-48k]
                   [--epochs N] [--minutes M] [--max-steps K] [--device cpu|cuda] [--resume]
                   [--seed S] [--config JSON|FILE|PRESET] ...

Pairs come from the cached segment set in DIR (model.corpora) at the task's output rate,
degraded on the fly to the task's input (model.degrade: 8 kHz, 16 kHz or decoded MP3), each
example's crop and degradation drawn from ``(seed, epoch, index)``. Stereo segments are trained
channel by channel (the channels go on the batch axis).
The network's output ``y[..., n]`` estimates ``target[..., n - latency]``
(``latency = net.latency_samples()``), so the loss and the metrics compare ``y[..., latency:]``
with ``target[..., :-latency]``: the target is delayed, the model never sees the future.

RUN_DIR receives ``last.pt`` (at every validation: each epoch's end, every ``--val-every`` steps
and at a stop), ``best.pt`` (best validation score), ``log.csv`` (one row per validation),
``curves.png`` and ``baselines.json`` (the task's baselines on the same validation inputs: sinc
and cubic spline on the validation segments resampled with soxr, as ``wavehost eval`` does, or
the decoded MP3 itself; training inputs use the random degradations of model.degrade instead).
Checkpoints are dicts with ``config`` (``UNetConfig.to_dict()``), ``model`` (state_dict),
``optimizer``, ``train`` (this run's settings), ``epoch``, ``batch`` (batches done in
``epoch``), ``step``, ``elapsed_s``, ``best``, ``torch_rng`` and ``metrics`` (that
validation's); they load with ``torch.load(path, weights_only=True)``. With ``--ema D`` the
network validated, saved as ``model`` and exported is the moving average of the trained weights
(model.ema), and ``raw`` holds the trained weights themselves, from which ``--resume`` goes on.

Exit codes: 0 done, 1 stopped on a non-finite loss (last good checkpoint kept), 2 bad input.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from model import metrics
from model.corpora import Manifest, SegmentDataset, spread_indices
from model.degrade import draw_dull, dull
from model.ema import WeightEMA
from model.export import load_checkpoint
from model.losses import BWELoss, LossConfig
from model.tasks import TASKS, Task, with_kbps
from model.unet import UNetConfig, WaveletUNet

PROG = "wavehost train"
PRESETS: dict[str, dict[str, Any]] = {
    # the shipped 8 -> 16 kHz speech model: 3 levels (16, 32, 64 channels), kernel 3, windowed-sinc
    # base (6 zero crossings, delay 11), lookahead 4: latency 64 samples; as cheap per block as
    # model/unet.py's defaults but it learned much faster in the pilot runs (TRAINING.md)
    "bwe-8k-16k": UNetConfig(
        levels=3, base_channels=16, growth=2.0, kernel_size=3, lookahead=4, interp_zeros=6
    ).to_dict(),
    "unet-default": UNetConfig().to_dict(),  # model/unet.py's defaults
    # issue 6, 48 kHz (see model/weights/TRAINING.md): 4 levels of db4 (alignment 105 samples)
    "mp3-48k": UNetConfig(
        levels=4, base_channels=16, growth=2.0, kernel_size=3, lookahead=39,
        rate_in=48000, rate_out=48000,
    ).to_dict(),
    # windowed-sinc base (6 zero crossings, delay 17): the linear one's droop capped a pilot's SNR
    "bwe-16k-48k": UNetConfig(
        levels=4, base_channels=16, growth=2.0, kernel_size=3, lookahead=6,
        rate_in=16000, rate_out=48000, interp_zeros=6,
    ).to_dict(),
}  # fmt: skip
CSV_FIELDS = (
    "epoch", "step", "elapsed_s", "lr",
    "train_loss", "train_stft", "train_l1", "train_snr", "train_lsd", "train_keep",
    "val_loss", "val_lsd", "val_lsd_hf", "val_snr", "val_si_sdr",
)  # fmt: skip
SELECT = {"val_loss": 1.0, "val_lsd": 1.0, "val_lsd_hf": 1.0, "val_snr": -1.0}  # sign: lower=better


class DataError(Exception):
    """A data folder that cannot be trained on; the message is one line for the user."""


@dataclass
class TrainConfig:
    """Everything that defines a run besides the budget. Lengths in samples at the output rate."""

    task: str = "bwe-8k-16k"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 16
    segment: int = 4096
    lr: float = 3e-3
    lr_final: float = 0.05
    weight_decay: float = 1e-4
    warmup: int = 100
    grad_clip: float = 1.0
    val_items: int = 256
    select: str = "val_loss"
    kbps: list[int] = field(default_factory=list)  # mp3-48k's training bitrates; empty: 64-192
    ema: float = 0.0  # decay per step of the weights' moving average (model.ema); 0: none
    dull: float = 0.0  # probability of a dulled training reference (model.degrade.dull)
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON- and checkpoint-safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        return cls(loss=LossConfig.from_dict(d.pop("loss")), **d)


# ----------------------------------------------------------------------------------------- data


class TrainPairs(Dataset):
    """Training pairs ``(input (C, length / factor), target (C, length))`` from ``(C, T)`` items
    at the task's output rate.

    Example ``i`` in epoch ``e`` draws, from seed ``(seed, e, i)``, a crop starting at a multiple
    of the task's ``factor``, then degrades it with ``task.train`` over the crop plus ``margin``
    samples of context on each side (the zero-phase filters and the MP3 encoder see real signal,
    not padding) and keeps the crop: input sample ``k`` lines up with target sample
    ``factor * k``. The crop is ``length`` (``<= 0``: the whole item) rounded down to a multiple
    of ``multiple`` (itself a multiple of ``factor``). With probability ``dull`` the item is first
    dulled (:func:`model.degrade.dull`, a random cut-off), target and input alike.
    :meth:`set_epoch` selects the epoch.
    """

    def __init__(
        self,
        wide: Dataset,
        length: int,
        seed: int,
        task: Task,
        multiple: int = 2,
        margin: int = 1536,
        dull: float = 0.0,
    ) -> None:
        self.wide, self.length, self.seed, self.task = wide, length, seed, task
        self.multiple, self.epoch, self.dull = multiple, 0, dull
        self.margin = margin - margin % task.factor

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops and degradations :meth:`__getitem__` draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.wide)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.wide[index]
        n, f = y.shape[-1], self.task.factor
        rng = np.random.default_rng((self.seed, self.epoch, index))
        length = min(self.length, n) if self.length > 0 else n
        length -= length % self.multiple
        start = f * int(rng.integers(0, (n - length) // f + 1))
        lo, hi = max(0, start - self.margin), min(n, start + length + self.margin)
        y = y[None, :, lo:hi]
        if self.dull > 0 and rng.random() < self.dull:
            y = dull(y, draw_dull(rng), self.task.rate_out)
        x = self.task.train(y, rng)[0]
        off = (start - lo) // f
        return x[..., off : off + length // f].contiguous(), y[0, :, off * f : off * f + length]


class ValPairs(Dataset):
    """Fixed validation pairs ``(input (C, T / factor), target (C, T))``: each item (cut to a
    multiple of ``multiple``) degraded by ``task.val`` (soxr VHQ resampling, as ``wavehost
    eval`` and the baselines of notes/metrics.md make them, or MP3 at a fixed bitrate)."""

    def __init__(self, wide: Dataset, task: Task, multiple: int = 2) -> None:
        self.wide, self.task, self.multiple = wide, task, multiple

    def __len__(self) -> int:
        return len(self.wide)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.wide[index]
        y = y[..., : y.shape[-1] - y.shape[-1] % self.multiple]
        return torch.from_numpy(self.task.val(y.numpy(), index)), y


def fold_channels(x: torch.Tensor) -> torch.Tensor:
    """``(batch, channels, time) -> (batch * channels, 1, time)``: channels on the batch axis."""
    return x.reshape(-1, 1, x.size(-1))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled full batches of one epoch (the last partial batch is dropped)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def open_data(
    root: Path, cfg: TrainConfig, task: Task, multiple: int
) -> tuple[TrainPairs, Dataset]:
    """Training pairs (random crops) and a fixed validation subset; raises :class:`DataError`."""
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    try:
        manifest = Manifest.load(root)
        if manifest.rate != task.rate_out:
            raise DataError(
                f"segments at {manifest.rate} Hz, task {task.name} needs {task.rate_out} Hz"
            )
        for split in ("train", "val"):
            for path, count in manifest.shards(split):
                shape = np.load(path, mmap_mode="r").shape
                if shape != manifest.shard_shape(count):
                    raise DataError(
                        f"{path.name} holds {shape}, the manifest says {count} segments"
                    )
        train_wide = SegmentDataset(manifest, "train")
        val_wide = SegmentDataset(manifest, "val")
    except Exception as err:  # any failure to read the set is the user's data problem
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"cannot use the dataset in {root}: {msg}") from None
    n_train, n_val = len(train_wide), len(val_wide)
    if n_train < cfg.batch_size:
        raise DataError(
            f"{root}: {n_train} training segments, fewer than one batch of {cfg.batch_size}"
        )
    if n_val == 0:
        raise DataError(f"{root}: no validation segments")
    train = TrainPairs(train_wide, cfg.segment, cfg.seed, task, multiple, dull=cfg.dull)
    keep = spread_indices(n_val, cfg.val_items)
    return train, Subset(ValPairs(val_wide, task, multiple), keep)


# ------------------------------------------------------------------------------------ training


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def align(
    y_hat: torch.Tensor, target: torch.Tensor, latency: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair ``y_hat[..., n]`` with ``target[..., n - latency]`` (time is the last axis).

    Drops the first ``latency`` output samples and the last ``latency`` target samples: the
    target is delayed by the declared latency, never advanced.
    """
    if latency == 0:
        return y_hat, target
    return y_hat[..., latency:], target[..., : target.shape[-1] - latency]


def lr_at(step: int, cfg: TrainConfig, total: int, time_frac: float = 0.0) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then cosine decay to ``cfg.lr * cfg.lr_final``
    at step ``total`` or, when a time budget is set, when ``time_frac`` (share of it spent)
    reaches 1, whichever comes first."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, max((step - cfg.warmup) / max(1, total - cfg.warmup), time_frac))
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * frac)))


def estimate(
    net: WaveletUNet, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(estimate, target, dry)`` of a batch, aligned by the declared latency: the network's
    output, the reference and the output without the residual (:meth:`WaveletUNet.parts`)."""
    dry, residual = net.parts(x)
    latency = net.latency_samples()
    y_hat, target = align(dry + residual, y, latency)
    return y_hat, target, dry[..., latency:]


class NonFiniteLoss(Exception):
    """The loss or the gradient norm of a step is NaN or infinite."""


def train_step(
    net: WaveletUNet,
    loss_fn: BWELoss,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    grad_clip: float,
) -> dict[str, float]:
    """One AdamW step on a batch ``x (batch, 1, T)`` at the input rate, ``y (batch, 1, R·T)`` at
    the output rate (``R`` the model's ratio).

    Returns the loss and its parts; raises :class:`NonFiniteLoss` (before touching the weights)
    when the loss or the gradient is not finite.
    """
    net.train()
    y_hat, target, dry = estimate(net, x, y)
    loss, parts = loss_fn(y_hat, target, dry)
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"loss {loss.item()}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(
        net.parameters(), grad_clip if grad_clip > 0 else math.inf
    )
    if not torch.isfinite(norm):
        raise NonFiniteLoss(f"gradient norm {norm.item()}")
    opt.step()
    return {"loss": float(loss.detach()), **parts}


def _usable(ref: np.ndarray) -> bool:
    return float(np.sum(ref.astype(np.float64) ** 2)) > 1e-8


@torch.no_grad()
def validate(
    net: WaveletUNet, loss_fn: BWELoss, loader: DataLoader, device: torch.device
) -> dict[str, float]:
    """Mean validation loss and metrics (LSD, LSD-HF, SNR, SI-SDR) over non-silent segments
    (each channel one item), outputs aligned by the declared latency."""
    net.eval()
    rate_in, rate = net.config.rate_in, net.config.rate_out
    losses: list[float] = []
    per_item: list[dict[str, float]] = []
    for x, y in loader:
        x, y = fold_channels(x).to(device), fold_channels(y).to(device)
        y_hat, target, dry = estimate(net, x, y)
        losses.append(float(loss_fn(y_hat, target, dry)[0]))
        for est, ref in zip(y_hat[:, 0].cpu().numpy(), target[:, 0].cpu().numpy(), strict=True):
            if _usable(ref):
                per_item.append(metrics.all_metrics(ref, est, rate, rate_in))
    out = {"val_loss": float(np.mean(losses))}
    out.update({f"val_{k}": v for k, v in metrics.mean_over_files(per_item).items()})
    return out


def baseline_metrics(loader: DataLoader, task: Task) -> dict[str, dict[str, float]]:
    """The task's baselines on the validation inputs (no delay, full length)."""
    out: dict[str, dict[str, float]] = {}
    for name, fn in task.baselines.items():
        per_item = []
        for x, y in loader:
            for xi, yi in zip(fold_channels(x)[:, 0].numpy(), fold_channels(y)[:, 0].numpy(),
                              strict=True):  # fmt: skip
                if _usable(yi):
                    est = fn(xi, task.rate_in, task.rate_out)
                    per_item.append(metrics.all_metrics(yi, est, task.rate_out, task.rate_in))
        out[name] = metrics.mean_over_files(per_item)
    return out


# ------------------------------------------------------------------------------ run directory


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append one row to the CSV log (header written with the first row)."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in CSV_FIELDS})


def plot_curves(csv_path: Path, png_path: Path, base: dict[str, dict[str, float]]) -> None:
    """Loss, LSD / LSD-HF and SNR against the step, baselines as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    step = [int(r["step"]) for r in rows]

    def col(k: str) -> list[float]:
        return [float(r[k]) if r[k] else math.nan for r in rows]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(step, col("train_loss"), label="train")
    axes[0].plot(step, col("val_loss"), label="validation")
    axes[0].set_title("loss")
    for key, label in (("lsd", "LSD"), ("lsd_hf", "LSD-HF")):
        line = axes[1].plot(step, col(f"val_{key}"), marker="o", label=label)[0]
        for ls, (name, b) in zip(("--", ":"), base.items(), strict=False):
            axes[1].axhline(b[key], ls=ls, color=line.get_color(), lw=0.8, label=f"{label} {name}")
    axes[1].set_title("validation LSD (log10, frequency first)")
    axes[2].plot(step, col("val_snr"), marker="o", label="model")
    for ls, (name, b) in zip(("--", ":"), base.items(), strict=False):
        axes[2].axhline(b["snr"], ls=ls, color="gray", label=name)
    axes[2].set_title("validation SNR (dB)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)


# ------------------------------------------------------------------------------------------ CLI


def _net_config(spec: str, task: Task) -> UNetConfig:
    if spec in PRESETS:
        return UNetConfig.from_dict(PRESETS[spec])
    path = Path(spec)
    try:
        d = json.loads(path.read_text()) if path.is_file() else json.loads(spec)
        return UNetConfig.from_dict({**PRESETS[task.name], **d})
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise DataError(
            f"--config {spec!r}: not a preset ({', '.join(PRESETS)}), a JSON file or object: {err}"
        ) from None


def kbps_list(text: str) -> list[int]:
    """``--kbps``'s value: comma-separated whole kb/s."""
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        msg = f"{text!r} is not a comma-separated list of kb/s"
        raise argparse.ArgumentTypeError(msg) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``wavehost train``."""
    d = TrainConfig()
    lc = LossConfig()
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="dataset folder (model.corpora)")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log, plot)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs, sets the lr schedule (default {d.epochs}, or the resumed run's)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop after this wall time (the lr schedule then ends with it, or at the last epoch)",
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after this global step")
    p.add_argument("--task", choices=tuple(TASKS), default=d.task, help="what the model restores")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads on the CPU")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument(
        "--init",
        type=Path,
        help="start a new run from this checkpoint's network (fine-tuning: its config and "
        "weights; a fresh optimizer and schedule with this run's settings)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--config",
        help="network preset, JSON file or object (keys over the task's preset; default: the "
        "task's preset)",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--ema", type=float, default=d.ema,
        help="validate, save and export a moving average of the weights with this decay per "
        "step, e.g. 0.999 (0: the trained weights themselves)",
    )  # fmt: skip
    p.add_argument(
        "--segment", type=int, default=d.segment, help="training crop, output-rate samples"
    )
    p.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate")
    p.add_argument("--lr-final", type=float, default=d.lr_final, help="final lr / peak lr")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup, help="lr warm-up steps")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max grad norm (0: off)")
    p.add_argument(
        "--val-every",
        type=int,
        default=0,
        help="also validate and save every N steps (0: at epoch ends only)",
    )
    p.add_argument("--val-items", type=int, default=d.val_items, help="validation segments used")
    p.add_argument("--select", choices=tuple(SELECT), default=d.select, help="best.pt criterion")
    p.add_argument("--w-stft", type=float, default=lc.w_stft, help="MR-STFT loss weight")
    p.add_argument("--w-l1", type=float, default=lc.w_l1, help="time-domain L1 weight")
    p.add_argument("--w-snr", type=float, default=lc.w_snr, help="negative-SNR (dB) loss weight")
    p.add_argument("--w-lsd", type=float, default=lc.w_lsd, help="LSD (the metric) loss weight")
    p.add_argument("--w-keep", type=float, default=lc.w_keep,
                   help="weight of the SI-SDR (dB) lost against the dry path")  # fmt: skip
    p.add_argument(
        "--kbps",
        type=kbps_list,
        default=[],
        help="mp3-48k: LAME bitrates drawn in training, comma-separated (default 64-192)",
    )
    p.add_argument(
        "--dull", type=float, default=d.dull,
        help="probability that a training reference is dulled first (a first-order low-pass, "
        "cut-off 1-8 kHz), so the network follows the input's tilt (0: never)",
    )  # fmt: skip
    p.add_argument("--w-sc", type=float, default=lc.w_sc, help="spectral convergence weight")
    p.add_argument("--w-log-mag", type=float, default=lc.w_log_mag, help="log magnitude weight")
    return p


def _fail(msg: str) -> int:
    print(f"{PROG}: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``wavehost train``; returns the exit code."""
    args = build_parser().parse_args(argv)
    out: Path = args.out
    last_path, best_path = out / "last.pt", out / "best.pt"
    ckpt: dict[str, Any] | None = None
    if last_path.exists() and not args.resume:
        return _fail(
            f"{out} already holds a run; pass --resume to continue it or pick another --out"
        )
    if args.init is not None and (args.resume or args.config is not None):
        return _fail("--init takes the network from the checkpoint: no --resume or --config")
    init: WaveletUNet | None = None
    if args.init is not None:
        try:
            init = load_checkpoint(args.init)
        except ValueError as err:
            return _fail(f"--init: {err}")
    if args.resume and last_path.exists():
        try:
            ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        except Exception as err:
            return _fail(f"cannot load {last_path}: {str(err).splitlines()[0]}")
    if args.device == "cuda" and not torch.cuda.is_available():
        return _fail("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, args.threads))

    try:
        if ckpt is not None:
            cfg = TrainConfig.from_dict(ckpt["train"])
            net_cfg = UNetConfig.from_dict(ckpt["config"])
        else:
            cfg = TrainConfig(
                task=args.task, seed=args.seed, batch_size=args.batch_size,
                segment=args.segment, lr=args.lr, lr_final=args.lr_final,
                weight_decay=args.weight_decay, warmup=args.warmup, grad_clip=args.grad_clip,
                val_items=args.val_items, select=args.select, kbps=args.kbps, ema=args.ema,
                dull=args.dull,
                loss=LossConfig(w_stft=args.w_stft, w_l1=args.w_l1, w_snr=args.w_snr,
                                w_lsd=args.w_lsd, w_keep=args.w_keep, w_sc=args.w_sc,
                                w_log_mag=args.w_log_mag),
            )  # fmt: skip
            net_cfg = (
                init.config
                if init is not None
                else _net_config(args.config or args.task, TASKS[args.task])
            )
        task = TASKS[cfg.task]
        if cfg.kbps:
            try:
                task = with_kbps(task, tuple(cfg.kbps))
            except ValueError as err:
                raise DataError(f"--kbps: {err}") from None
        if not 0 <= cfg.dull <= 1:
            raise DataError(f"--dull {cfg.dull}: a probability, give a value in [0, 1]")
        if (net_cfg.rate_in, net_cfg.rate_out) != (task.rate_in, task.rate_out):
            raise DataError(
                f"--config is a {net_cfg.rate_in} -> {net_cfg.rate_out} Hz network, task "
                f"{task.name} is {task.rate_in} -> {task.rate_out} Hz"
            )
        if args.epochs is not None:
            cfg.epochs = args.epochs
        seed_everything(cfg.seed)
        net = (init if init is not None else WaveletUNet(net_cfg)).to(device)
        try:
            ema = WeightEMA(net, cfg.ema) if cfg.ema != 0 else None
        except ValueError as err:
            raise DataError(f"--ema {cfg.ema}: {err}; give e.g. 0.999, or 0 for none") from None
        multiple = net_cfg.ratio * net_cfg.block_multiple
        train_set, val_set = open_data(args.data, cfg, task, multiple)
    except DataError as err:
        return _fail(str(err))

    loss_fn = BWELoss(cfg.loss).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch, batch0, step, elapsed0 = 0, 0, 0, 0.0
    best = math.inf
    shown = net if ema is None else ema.shadow  # the network validated, saved and exported
    if ckpt is not None:
        shown.load_state_dict(ckpt["model"])
        if ema is not None:
            net.load_state_dict(ckpt["raw"])
        opt.load_state_dict(ckpt["optimizer"])
        epoch, batch0, step = int(ckpt["epoch"]), int(ckpt["batch"]), int(ckpt["step"])
        elapsed0, best = float(ckpt["elapsed_s"]), float(ckpt["best"])
        torch.set_rng_state(ckpt["torch_rng"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(
        json.dumps({"config": net_cfg.to_dict(), "train": cfg.to_dict()}, indent=2) + "\n"
    )

    gen = torch.Generator().manual_seed(cfg.seed)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False,
                            num_workers=args.workers, generator=gen)  # fmt: skip
    base_path = out / "baselines.json"
    if base_path.exists():
        base = json.loads(base_path.read_text())
    else:
        base = baseline_metrics(val_loader, task)
        base_path.write_text(json.dumps(base, indent=2) + "\n")
    steps_per_epoch = len(epoch_batches(len(train_set), cfg.batch_size, cfg.seed, 0))
    total = cfg.epochs * steps_per_epoch
    n_params = sum(p.numel() for p in net.parameters())
    print(
        f"{PROG}: {n_params / 1e6:.2f} M parameters, latency {net.latency_samples()} samples, "
        f"{len(train_set)} train / {len(val_set)} val segments, {steps_per_epoch} steps per epoch, "
        f"{total} steps planned, from step {step}",
        file=sys.stderr,
    )
    for name, b in base.items():
        print(f"{PROG}: baseline {name}: " + _fmt(b), file=sys.stderr)

    sign = SELECT[cfg.select]
    t0 = time.monotonic()
    budget = args.minutes * 60 if args.minutes is not None else math.inf
    deadline = t0 + budget
    sums: dict[str, float] = {}
    n = 0

    def checkpoint() -> None:
        """Validate, log a CSV row, save last.pt (and best.pt when better), redraw the curves."""
        nonlocal best, sums, n
        val = validate(shown, loss_fn, val_loader, device)
        elapsed = elapsed0 + time.monotonic() - t0
        row = {
            "epoch": round(epoch + batch0 / steps_per_epoch, 4), "step": step,
            "elapsed_s": round(elapsed, 1), "lr": opt.param_groups[0]["lr"],
            **{f"train_{k}": v / max(n, 1) for k, v in sums.items()}, **val,
        }  # fmt: skip
        append_csv(out / "log.csv", row)
        score = sign * val[cfg.select]
        state = {
            "config": net_cfg.to_dict(), "model": shown.state_dict(),
            "optimizer": opt.state_dict(), "train": cfg.to_dict(), "epoch": epoch,
            "batch": batch0, "step": step, "elapsed_s": elapsed, "best": min(best, score),
            "torch_rng": torch.get_rng_state(), "metrics": val,
        }  # fmt: skip
        if ema is not None:
            state["raw"] = net.state_dict()
        if score < best:
            best = score
            save_atomic(state, best_path)
        save_atomic(state, last_path)
        plot_curves(out / "log.csv", out / "curves.png", base)
        tqdm.write(f"{PROG}: step {step} ({elapsed / 60:.1f} min): " + _fmt(val), file=sys.stderr)
        sums, n = {}, 0

    stop = False
    while epoch < cfg.epochs and not stop:
        train_set.set_epoch(epoch)
        batches = epoch_batches(len(train_set), cfg.batch_size, cfg.seed, epoch)[batch0:]
        loader = DataLoader(train_set, batch_sampler=batches, num_workers=args.workers,
                            generator=gen)  # fmt: skip
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", initial=batch0,
                   total=steps_per_epoch, mininterval=2.0, leave=False)  # fmt: skip
        for x, y in bar:
            lr = lr_at(step, cfg, total, (time.monotonic() - t0) / budget)
            for g in opt.param_groups:
                g["lr"] = lr
            try:
                x, y = fold_channels(x).to(device), fold_channels(y).to(device)
                parts = train_step(net, loss_fn, opt, x, y, cfg.grad_clip)
            except NonFiniteLoss as err:
                bar.close()
                kept = last_path if last_path.exists() else "none saved yet"
                print(
                    f"{PROG}: non-finite {err} at step {step + 1} (epoch {epoch + 1}, batch "
                    f"{batch0 + 1}); stopped, last good checkpoint kept: {kept}",
                    file=sys.stderr,
                )
                return 1
            if ema is not None:
                ema.update(net, step)
            step, batch0, n = step + 1, batch0 + 1, n + 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{parts['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
            stop = time.monotonic() >= deadline or (
                args.max_steps is not None and step >= args.max_steps
            )
            if batch0 == steps_per_epoch:  # the loader ends here too
                epoch, batch0 = epoch + 1, 0
            if stop or batch0 == 0 or (args.val_every and step % args.val_every == 0):
                checkpoint()
            if stop:
                break
        bar.close()
    return 0


def _fmt(m: dict[str, float]) -> str:
    return ", ".join(f"{k.removeprefix('val_')} {v:.3f}" for k, v in m.items())


if __name__ == "__main__":
    sys.exit(main())
