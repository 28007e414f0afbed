"""Training losses for bandwidth extension.

A multi-resolution STFT loss (auraloss) plus time-domain terms (L1; negative SNR in dB, auraloss),
and optionally the project's own LSD metric as a loss (notes/metrics.md: log10 power, Hann 2048,
hop 512, frequency first), so the two figures the targets are stated in can be traded directly.
The defaults are the shipped recipe: MR-STFT + 30 · L1; the SNR and LSD terms are off (in the
pilot runs of model/weights/TRAINING.md they slowed learning several-fold). A last, optional term
(``w_keep``) penalises only the SI-SDR an item loses against the network's own dry path (the
interpolated input, or the decoded MP3 itself): "do no harm" on input that needs no repair.

All signals are waveforms shaped `(batch, channels, time)` at the output rate, already aligned
(the model's declared latency removed before the loss sees them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import auraloss
import torch
from torch import nn


@dataclass
class LossConfig:
    """Weights and resolutions of :class:`BWELoss`.

    ``fft_sizes``, ``hop_sizes`` and ``win_lengths`` are in samples at the output rate (the defaults
    suit 16 kHz: 16, 32, 64 and 128 ms windows). ``w_sc`` and ``w_log_mag`` weight auraloss's
    spectral-convergence and log-magnitude terms inside each resolution; ``w_stft`` weights the
    whole multi-resolution term, ``w_l1`` the time-domain mean absolute error, ``w_snr`` the
    negative SNR (dB, per item, mean over the batch), ``w_lsd`` the LSD of :func:`lsd_loss` and
    ``w_keep`` the SI-SDR lost against the dry path (:func:`keep_loss`, dB).
    """

    w_stft: float = 1.0
    w_l1: float = 30.0
    w_snr: float = 0.0
    w_lsd: float = 0.0
    w_keep: float = 0.0
    w_sc: float = 1.0
    w_log_mag: float = 1.0
    fft_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    hop_sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    win_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON- and checkpoint-safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LossConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        return cls(**d)


def lsd_loss(
    y_hat: torch.Tensor, y: torch.Tensor, n_fft: int = 2048, hop: int = 512
) -> torch.Tensor:
    """The LSD metric of notes/metrics.md as a differentiable loss, mean over frames and items.

    Periodic Hann window, centred frames with reflect padding, ``P = |X|² + 1e-10``, per frame
    ``sqrt(mean_f (log10 P_y − log10 P_ŷ)²)``. Inputs `(batch, channels, time)`, time > n_fft / 2.
    """
    window = torch.hann_window(n_fft, device=y.device, dtype=y.dtype)

    def log_power(x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop, window=window,
                          center=True, pad_mode="reflect", return_complex=True)  # fmt: skip
        return torch.log10(spec.real**2 + spec.imag**2 + 1e-10)

    diff = log_power(y) - log_power(y_hat)  # (items, bins, frames)
    return torch.sqrt(diff.pow(2).mean(dim=1) + 1e-12).mean()


def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per item of `(batch, channels, time)` tensors -> `(batch,)`, as
    :func:`model.metrics.si_sdr` (zero-mean; channels and time flattened; ``eps`` keeps silent
    items finite)."""
    est, ref = est.flatten(1), ref.flatten(1)
    est, ref = est - est.mean(1, keepdim=True), ref - ref.mean(1, keepdim=True)
    scale = (est * ref).sum(1, keepdim=True) / (ref.pow(2).sum(1, keepdim=True) + eps)
    target = scale * ref
    return 10 * torch.log10((target.pow(2).sum(1) + eps) / ((est - target).pow(2).sum(1) + eps))


def keep_loss(y_hat: torch.Tensor, dry: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over items of the SI-SDR (dB) the estimate loses against the dry path, 0 where it
    loses none: ``mean relu(SI-SDR(dry, y) − SI-SDR(ŷ, y))``. All `(batch, channels, time)`."""
    return torch.relu(si_sdr(dry, y).detach() - si_sdr(y_hat, y)).mean()


class BWELoss(nn.Module):
    """``w_stft · MR-STFT + w_l1 · mean|ŷ − y| + w_snr · (−SNR dB) + w_lsd · LSD + w_keep · keep``.

    ``forward(y_hat, y, dry)`` takes `(batch, channels, time)` tensors of equal shape (time at least
    the largest FFT size; ``dry``, the network's output without its residual, is needed only when
    ``w_keep`` is set) and returns ``(total, parts)`` where ``parts`` holds the detached ``stft``,
    ``l1``, ``snr`` (dB, the SNR itself), ``lsd`` and ``keep`` terms (unweighted) as floats.
    """

    def __init__(self, cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LossConfig()
        c = self.cfg
        if not (len(c.fft_sizes) == len(c.hop_sizes) == len(c.win_lengths)):
            raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")
        self.stft = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=list(c.fft_sizes),
            hop_sizes=list(c.hop_sizes),
            win_lengths=list(c.win_lengths),
            w_sc=c.w_sc,
            w_log_mag=c.w_log_mag,
        )
        self.snr = auraloss.time.SNRLoss(zero_mean=False)

    def forward(
        self, y_hat: torch.Tensor, y: torch.Tensor, dry: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if y_hat.shape != y.shape:
            raise ValueError(
                f"shape mismatch: estimate {tuple(y_hat.shape)} vs target {tuple(y.shape)}"
            )
        c = self.cfg
        if c.w_keep and (dry is None or dry.shape != y.shape):
            raise ValueError("w_keep needs the dry path, shaped like the target")
        zero = y_hat.new_zeros(())
        stft = self.stft(y_hat, y) if c.w_stft else zero
        l1 = (y_hat - y).abs().mean()
        neg_snr = self.snr(y_hat, y) if c.w_snr else zero
        lsd = lsd_loss(y_hat, y) if c.w_lsd else zero
        keep = keep_loss(y_hat, dry, y) if c.w_keep and dry is not None else zero
        total = c.w_stft * stft + c.w_l1 * l1 + c.w_snr * neg_snr + c.w_lsd * lsd
        total = total + c.w_keep * keep
        parts = {"stft": stft, "l1": l1, "snr": -neg_snr, "lsd": lsd, "keep": keep}
        return total, {k: float(v.detach()) for k, v in parts.items()}
