"""``wavehost eval``: a plugin's quality against the sinc and cubic-spline baselines.

    wavehost eval --plugin P --data DIR [--out DIR] [--limit N] [--degrade soxr|mix|mp3:KBPS]
                  [--split val|train] [--mix-sweep M1,M2,...] [--band-split HZ]

``DIR`` holds wideband reference files (any format soundfile reads, searched recursively; files
above the plugin's output rate are resampled to it with soxr VHQ, files below it are refused) or
is a dataset built by :mod:`model.corpora` (then its validation segments are the references).

The narrowband inputs are made by a fixed degradation of each reference:

- ``soxr`` (default): soxr VHQ resampling from the output rate to the plugin's input rate (as the
  baselines of notes/metrics.md were measured);
- ``mix``: the random training degradation of the :mod:`model.tasks` task with the plugin's rates
  (8 → 16 kHz, 16 → 48 kHz, or MP3 at random bitrates for 48 → 48 kHz), file ``i`` seeded with
  ``(seed, i)``;
- ``mp3:KBPS``: LAME CBR MP3 at ``KBPS`` kb/s, decoded and delay-aligned (plugins whose input and
  output rates are equal); the decoded MP3 itself is then the baseline.

The plugin runs offline through the host loader (a streaming plugin in 1 s chunks, a windowed one
through the host's overlap-add); its input is padded at the end by its declared latency and its
output cropped by it, so output sample ``n`` lines up with reference sample ``n``. Metrics are those
of :mod:`model.metrics` (LSD log10 frequency first, Hann 2048 / hop 512 at the output rate; LSD-HF
above the input's Nyquist frequency; SNR; SI-SDR), per file (per channel, averaged), then the mean
over files. Writes ``metrics.md`` (also printed), ``metrics.json`` and ``spectrograms.png``
(input / plugin output / reference of the first file) to ``--out``.

``--mix-sweep`` runs the plugin once per value of its ``mix`` parameter (``dry + mix * residual``)
and picks the one to ship (:func:`choose_mix` for bandwidth extension, :func:`choose_mp3_mix` with
``--degrade mp3:KBPS``); run it on the training split (``--split train``) so the validation
figures stay unseen.

``--band-split HZ`` measures each reference's band (the highest frequency within 60 dB of its
0.2–4 kHz peak, :func:`model.corpora.measure_bandwidth`) and reports the files below ``HZ`` apart
from the rest: a reference whose top band an earlier coder removed scores an extender that fills
that band as wrong, and the two groups say how much of a mean that is.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
from tqdm import tqdm

from model.baselines import BASELINES
from model.corpora import (
    AUDIO_SUFFIXES,
    READ_ERRORS,
    CorpusError,
    Manifest,
    SegmentDataset,
    measure_bandwidth,
    read_reason,
    resample_to,
    spread_indices,
)
from model.degrade import mp3_channels
from model.metrics import all_metrics, mean_over_files, power_spectrogram
from model.tasks import TASKS
from realtime.chain import Chain
from realtime.contract import PluginError
from realtime.loader import LoadedPlugin, load_plugin

METRICS = ("lsd", "lsd_hf", "snr", "si_sdr")
CONVENTION = (
    "LSD: log10, frequency first (Hann, n_fft 2048, hop 512 at the output rate, "
    "P=|X|^2+1e-10), mean over frames then files; LSD-HF: bins above the input Nyquist; "
    "SNR and SI-SDR in dB, mean over files; outputs aligned by the declared latency."
)


class EvalError(Exception):
    """Bad evaluation input. The message is one line."""


def _references(
    data: Path, rate: int, limit: int | None, split: str = "val"
) -> list[tuple[str, np.ndarray]]:
    """``(name, reference (channels, time) at rate Hz)`` for each file of ``data`` (a dataset:
    the segments of ``split``)."""
    if not data.is_dir():
        raise EvalError(f"data folder {data} does not exist")
    if (data / "manifest.json").is_file():
        try:
            manifest = Manifest.load(data)
            segments = SegmentDataset(manifest, split)
        except CorpusError as exc:
            raise EvalError(str(exc)) from None
        if manifest.rate != rate:
            raise EvalError(
                f"dataset {data} is at {manifest.rate} Hz, the plugin outputs {rate} Hz"
            )
        if len(segments) == 0:
            raise EvalError(f"dataset {data} has no {split} segments")
        # a limit takes segments evenly spread over the split (which is ordered by source)
        picks = spread_indices(len(segments), len(segments) if limit is None else limit)
        return [(f"{split}-{i:05d}", segments[i].numpy()) for i in picks]
    paths = sorted(p for p in data.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise EvalError(f"no audio files in {data} (looked for {' '.join(AUDIO_SUFFIXES)})")
    refs = []
    for path in paths[:limit]:
        try:
            x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except READ_ERRORS as exc:
            raise EvalError(f"cannot read {path}: {read_reason(exc)}") from None
        if sr < rate:
            raise EvalError(
                f"{path} is at {sr} Hz, below the plugin's output rate {rate} Hz: "
                f"it cannot be a wideband reference"
            )
        x = resample_to(x, sr, rate)
        if len(x) == 0:
            raise EvalError(f"{path} is empty")
        refs.append((str(path.relative_to(data)), np.ascontiguousarray(x.T)))
    return refs


def _channels(ref: np.ndarray, channels: int) -> np.ndarray:
    if ref.shape[0] == channels:
        return ref
    mono = ref.mean(axis=0, keepdims=True)
    return np.repeat(mono, channels, axis=0)


def _degrade(
    ref: np.ndarray, rate_in: int, rate_out: int, how: str, seed: tuple[int, int]
) -> np.ndarray:
    """Narrowband input (channels, time·rate_in/rate_out) of a reference (channels, time)."""
    if how == "soxr":
        if rate_in == rate_out:
            raise EvalError(
                "degradation soxr needs a plugin whose input rate is below its output rate"
            )
        return np.stack([soxr.resample(c, rate_out, rate_in, quality="VHQ") for c in ref])
    if how == "mix":
        tasks = [t for t in TASKS.values() if (t.rate_in, t.rate_out) == (rate_in, rate_out)]
        if not tasks:
            pairs = ", ".join(f"{t.rate_in} -> {t.rate_out}" for t in TASKS.values())
            raise EvalError(
                f"degradation mix needs a training task at {rate_in} -> {rate_out} Hz ({pairs})"
            )
        y = tasks[0].train(torch.from_numpy(ref)[None], np.random.default_rng(seed))
        return y[0].numpy()
    kbps = int(how.partition(":")[2])
    if rate_in != rate_out:
        raise EvalError(
            f"degradation {how} needs equal input and output rates, not {rate_in} -> {rate_out}"
        )
    return mp3_channels(ref, rate_out, kbps)


def run_offline(plugin: LoadedPlugin, x: np.ndarray) -> np.ndarray:
    """Run ``plugin`` on ``x`` (channels, time) at its input rate; return (channels,
    time·ratio) at its output rate with the declared latency removed (pad at the end, crop).
    The host's own :class:`~realtime.chain.Chain` runs it, streaming or through overlap-add."""
    info = plugin.info
    chain = Chain([plugin])
    chain.reset()
    ratio = info.ratio
    n_out = int(x.shape[-1] * ratio)
    unit, latency = chain.block, chain.latency
    need_in = x.shape[-1] + math.ceil(latency / ratio)
    padded_len = -(-need_in // unit) * unit
    frames = np.pad(x, ((0, 0), (0, padded_len - x.shape[-1]))).T.astype(np.float32)
    chunk = max(unit, (info.sample_rate_in // unit) * unit)
    # copy: each step's output is a view valid until the next step
    out = np.concatenate(
        [
            chain.step(np.ascontiguousarray(frames[i : i + chunk])).copy()
            for i in range(0, padded_len, chunk)
        ]
    )
    health = chain.health[0]
    if health.bypassed:
        raise EvalError(health.error)
    if health.nonfinite_blocks:
        raise EvalError(f"plugin {info.name} produced NaN or Inf values")
    return np.ascontiguousarray(out[latency : latency + n_out].T)


def _file_metrics(ref: np.ndarray, est: np.ndarray, rate: int, rate_in: int) -> dict[str, float]:
    per_channel = [all_metrics(r, e, rate, rate_in) for r, e in zip(ref, est, strict=True)]
    return mean_over_files(per_channel)


def _markdown(means: dict[str, dict[str, float]], title: str) -> str:
    """One table of mean metrics, a row per system."""

    def cell(v: float) -> str:
        return "–" if math.isnan(v) else f"{v:.2f}"

    lines = [
        f"### {title}",
        "",
        "| system | LSD | LSD-HF | SNR (dB) | SI-SDR (dB) |",
        "|---|---|---|---|---|",
    ]
    for system, m in means.items():
        lines.append(f"| {system} | " + " | ".join(cell(m[k]) for k in METRICS) + " |")
    return "\n".join(lines)


def _system_means(
    files: Sequence[dict[str, Any]], systems: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Each system's metrics averaged over ``files`` (:func:`model.metrics.mean_over_files`)."""
    return {s: mean_over_files([f["metrics"][s] for f in files]) for s in systems}


def split_by_band(
    files: Sequence[dict[str, Any]], systems: Sequence[str], hz: float
) -> dict[str, Any]:
    """Mean metrics of the files whose reference band (``"band_hz"``) lies below ``hz`` and of
    those at or above it: ``{"hz", "below": {"files", "mean"}, "above": {...}}`` (``mean`` None
    for an empty group)."""
    split: dict[str, Any] = {"hz": hz}
    for group, keep in (("below", lambda b: b < hz), ("above", lambda b: b >= hz)):
        chosen = [f for f in files if keep(f["band_hz"])]
        split[group] = {
            "files": len(chosen),
            "mean": _system_means(chosen, systems) if chosen else None,
        }
    return split


def _plot(
    path: Path, x: np.ndarray, y: np.ndarray, ref: np.ndarray, rate_in: int, rate: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    n_fft = 512
    for ax, sig, sr, title in zip(
        axes,
        (x, y, ref),
        (rate_in, rate, rate),
        ("input", "plugin output", "reference"),
        strict=True,
    ):
        spec = 10 * np.log10(power_spectrogram(sig, n_fft * sr // rate, n_fft * sr // rate // 4))
        ax.imshow(
            spec.T,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=spec.max() - 100,
            extent=(0, len(sig) / sr, 0, sr / 2),
            vmax=spec.max(),
        )
        ax.set_ylim(0, rate / 2)
        ax.set_facecolor("black")
        ax.set_title(f"{title} ({sr} Hz)")
        ax.set_ylabel("Hz")
    axes[-1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


SNR_SPARE_DB = 0.4  # choose_mix: the SNR a mix may lose to the sinc baseline


def choose_mix(means: dict[str, dict[str, float]], mixes: Sequence[float]) -> float:
    """The ``mix`` to ship a bandwidth extender with, from a sweep's mean metrics (rows
    ``mix_row(m)``): the lowest LSD among the values whose SNR is at most :data:`SNR_SPARE_DB`
    below the sinc baseline's (the bandwidth-extension issue allows 0.5 dB), or the highest-SNR
    value if none is."""
    floor = means["sinc"]["snr"] - SNR_SPARE_DB
    ok = [m for m in mixes if means[mix_row(m)]["snr"] >= floor]
    if not ok:
        return max(mixes, key=lambda m: means[mix_row(m)]["snr"])
    return min(ok, key=lambda m: means[mix_row(m)]["lsd"])


GAIN_SE = 2.0  # choose_mp3_mix: standard errors the SI-SDR gain must stand above zero


def si_sdr_gain_bound(files: Sequence[dict[str, Any]], row: str) -> float:
    """Lower bound of the SI-SDR ``row`` gains over the decoded MP3 (dB): the mean over files
    less :data:`GAIN_SE` standard errors (files whose SI-SDR is not finite left out)."""
    gains = np.array([f["metrics"][row]["si_sdr"] - f["metrics"]["mp3"]["si_sdr"] for f in files])
    gains = gains[np.isfinite(gains)]
    if gains.size < 2:
        return float(gains.mean()) if gains.size else math.nan
    return float(gains.mean() - GAIN_SE * gains.std(ddof=1) / math.sqrt(gains.size))


def choose_mp3_mix(files: Sequence[dict[str, Any]], mixes: Sequence[float]) -> float:
    """The ``mix`` an MP3 restorer may use at one bitrate, from a sweep's per-file metrics: the
    largest value whose SI-SDR gain over the MP3 is :data:`GAIN_SE` standard errors above zero
    (the restoration issue: never below the MP3), or the one nearest to that if none is. The
    largest, because restoration at low bitrates grows with the mix; sweep every bitrate and ship
    the smallest of the choices."""
    bounds = {m: si_sdr_gain_bound(files, mix_row(m)) for m in mixes}
    ok = [m for m in mixes if bounds[m] >= 0.0]
    return max(ok) if ok else max(mixes, key=lambda m: bounds[m])


def mix_row(mix: float) -> str:
    """The table row of the plugin run at parameter ``mix``."""
    return f"plugin, mix {mix:.2f}"


def evaluate(
    plugin: LoadedPlugin,
    data: Path,
    out: Path,
    *,
    limit: int | None = None,
    degrade: str = "soxr",
    seed: int = 0,
    split: str = "val",
    mixes: Sequence[float] = (),
    band_split_hz: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``plugin`` on ``data`` (a dataset: its ``split`` segments); write the reports to
    ``out``; return the JSON dict. ``mixes``: run the plugin at each of these ``mix`` values
    instead of as loaded, and report the pick (:func:`choose_mp3_mix` with an ``mp3:KBPS``
    degradation, else :func:`choose_mix`) as ``"chosen_mix"``. ``band_split_hz``: also measure
    each reference's band (:func:`model.corpora.measure_bandwidth` of its channel mean, Hz, as
    ``"band_hz"``) and report the means below and above it apart (:func:`split_by_band`)."""
    info = plugin.info
    if mixes and ("mix" not in info.parameters or degrade == "mix"):
        raise EvalError(
            f"--mix-sweep needs a plugin with a mix parameter ({info.name} has "
            f"{', '.join(info.parameters) or 'none'}) and --degrade soxr or mp3:KBPS"
        )
    if mixes:
        lo, hi, default_mix = info.parameters["mix"]
        if any(not lo <= m <= hi for m in mixes):
            raise EvalError(
                f"--mix-sweep values must lie in the plugin's mix range [{lo:g}, {hi:g}], "
                f"got {', '.join(f'{m:g}' for m in mixes)}"
            )
    rate_in, rate = info.sample_rate_in, info.sample_rate_out
    if degrade not in ("soxr", "mix") and not (
        degrade.startswith("mp3:") and degrade[4:].isdigit()
    ):
        raise EvalError(f"unknown degradation {degrade!r} (use soxr, mix or mp3:KBPS)")
    refs = _references(data, rate, limit, split)
    step = Fraction(rate, rate_in).numerator  # reference samples per whole input sample
    runs = [mix_row(m) for m in mixes] or ["plugin"]
    systems = [*runs, *(["mp3"] if degrade.startswith("mp3:") else BASELINES)]
    files = []
    out.mkdir(parents=True, exist_ok=True)
    for i, (name, ref) in enumerate(tqdm(refs, desc="eval", unit="file", disable=not progress)):
        ref = _channels(ref, info.channels)
        ref = ref[:, : ref.shape[-1] // step * step].astype(np.float32)
        x = _degrade(ref, rate_in, rate, degrade, seed=(seed, i))
        outputs = {}
        for run, m in zip(runs, mixes or [None], strict=True):
            if m is not None:
                plugin.set_parameter("mix", m)
            outputs[run] = run_offline(plugin, x)
        for system in systems[len(runs) :]:
            outputs[system] = (
                x if system == "mp3" else np.stack([BASELINES[system](c, rate_in, rate) for c in x])
            )
        files.append(
            {
                "name": name,
                "seconds": ref.shape[-1] / rate,
                "metrics": {s: _file_metrics(ref, outputs[s], rate, rate_in) for s in systems},
            }
        )
        if band_split_hz is not None:
            files[-1]["band_hz"] = measure_bandwidth(ref.mean(axis=0), rate)
        if i == 0:
            _plot(out / "spectrograms.png", x[0], outputs[runs[-1]][0], ref[0], rate_in, rate)
    if mixes:
        plugin.set_parameter("mix", default_mix)
    means = _system_means(files, systems)
    title = (
        f"{info.name}: {len(files)} files from {data}"
        f"{' (' + split + ' split)' if split != 'val' else ''}, {rate_in} -> {rate} Hz, "
        f"degradation {degrade}"
    )
    table = _markdown(means, title)
    chosen = None
    if mixes:
        if degrade.startswith("mp3:"):
            chosen = choose_mp3_mix(files, mixes)
            rule = f"largest with SI-SDR above the MP3's by {GAIN_SE:g} standard errors"
        else:
            chosen = choose_mix(means, mixes)
            rule = f"lowest LSD with SNR >= sinc - {SNR_SPARE_DB} dB"
        table += f"\n\nchosen mix: {chosen:.2f} ({rule})"
    by_band = None
    if band_split_hz is not None:
        by_band = split_by_band(files, systems, band_split_hz)
        for group, side in (("below", "below"), ("above", "at or above")):
            n, group_means = by_band[group]["files"], by_band[group]["mean"]
            heading = f"{n} of them with a reference band {side} {band_split_hz:g} Hz"
            table += "\n\n" + (_markdown(group_means, heading) if n else f"### {heading}")
    table += f"\n\n{CONVENTION}"
    report = {
        "plugin": asdict(info),
        "data": str(data),
        "degradation": degrade,
        "seed": seed,
        "split": split,
        "chosen_mix": chosen,
        "convention": CONVENTION,
        "mean": means,
        "band_split": by_band,
        "files": files,
    }
    (out / "metrics.md").write_text(table + "\n")
    (out / "metrics.json").write_text(json.dumps(_json_safe(report), indent=1))
    report["markdown"] = table
    return report


def _json_safe(value: Any) -> Any:
    """Strict JSON: non-finite floats (an exact match's SNR) become the strings "inf"/"nan"."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def main(argv: list[str] | None = None) -> int:
    """``wavehost eval``; returns 0, or 2 with a one-line error on stderr."""
    p = argparse.ArgumentParser(prog="wavehost eval", description=__doc__.split("\n")[0])
    p.add_argument("--plugin", required=True, help="shipped plugin name, .ts path or module:attr")
    p.add_argument("--data", required=True, type=Path, help="folder of wideband references")
    p.add_argument("--out", type=Path, help="report folder (default eval/<plugin>)")
    p.add_argument(
        "--limit",
        type=int,
        help="evaluate N files only: a folder's first N, or N segments spread evenly over a "
        "dataset's validation split",
    )
    p.add_argument("--degrade", default="soxr", help="soxr (default), mix or mp3:KBPS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--split", choices=("val", "train"), default="val", help="a dataset's split (default val)"
    )
    p.add_argument(
        "--mix-sweep",
        help="comma-separated values of the plugin's mix parameter to compare and choose from "
        "(e.g. 0.5,0.6,0.7,0.8,0.9,1); use with --split train",
    )
    p.add_argument(
        "--band-split",
        type=float,
        metavar="HZ",
        help="also report the files whose reference band (highest frequency within 60 dB of "
        "its 0.2-4 kHz peak) is below HZ apart from the rest, e.g. 19000: references an "
        "earlier coder cut",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    if args.band_split is not None and not args.band_split > 0:
        p.error(f"--band-split needs a frequency in Hz above 0, got {args.band_split:g}")
    try:
        mixes = [float(m) for m in args.mix_sweep.split(",")] if args.mix_sweep else []
    except ValueError:
        p.error(f"--mix-sweep needs comma-separated numbers, got {args.mix_sweep!r}")
    try:
        plugin = load_plugin(args.plugin)
        out = args.out or Path("eval") / Path(plugin.info.name).stem
        report = evaluate(
            plugin,
            args.data,
            out,
            limit=args.limit,
            degrade=args.degrade,
            seed=args.seed,
            split=args.split,
            mixes=mixes,
            band_split_hz=args.band_split,
            progress=not args.no_progress,
        )
    except (EvalError, PluginError) as exc:
        print(f"wavehost eval: error: {exc}", file=sys.stderr)
        return 2
    print(report["markdown"])
    print(f"\nwrote {out / 'metrics.md'}, {out / 'metrics.json'}, {out / 'spectrograms.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
