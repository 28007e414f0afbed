"""``wavehost eval`` end to end on tiny tmp folders with a contract-following plugin."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from torch import nn

from model.baselines import cubic_spline, sinc
from model.corpora import SegmentDataset, build_dataset
from model.evaluate import choose_mix, choose_mp3_mix, main, mix_row, si_sdr_gain_bound
from model.export import export_plugin
from model.metrics import all_metrics, mean_over_files
from model.unet import UNetConfig, WaveletUNet
from realtime.loader import load_plugin

DELAY = 5  # output samples


class DelayedHold(nn.Module):
    """8 → 16 kHz zero-order hold, delayed by ``DELAY`` output samples (declared as latency)."""

    def __init__(self) -> None:
        super().__init__()
        self.sample_rate_in = 8000
        self.sample_rate_out = 16000
        self.channels = 1
        self.block_multiple = 4
        self.latency = DELAY
        self.streaming = True
        self.parameter_names = ["unused"]  # TorchScript cannot type an empty list attribute
        self.parameter_min = [0.0]
        self.parameter_max = [1.0]
        self.parameter_default = [0.0]
        self.register_buffer("tail", torch.zeros(1, 1, DELAY))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = torch.cat([self.tail, torch.repeat_interleave(x, 2, dim=-1)], dim=-1)
        cut = full.shape[-1] - self.latency
        self.tail = full[..., cut:]
        return full[..., :cut]

    @torch.jit.export
    def reset(self) -> None:
        self.tail.zero_()

    @torch.jit.export
    def set_parameter(self, name: str, value: float) -> None:
        pass


class StereoIdentity(nn.Module):
    """44.1 kHz stereo identity: the MP3 repair path of ``--degrade mp3:KBPS``."""

    def __init__(self) -> None:
        super().__init__()
        self.sample_rate_in = 44100
        self.sample_rate_out = 44100
        self.channels = 2
        self.block_multiple = 1
        self.latency = 0
        self.streaming = True
        self.parameter_names = ["unused"]
        self.parameter_min = [0.0]
        self.parameter_max = [1.0]
        self.parameter_default = [0.0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @torch.jit.export
    def reset(self) -> None:
        pass

    @torch.jit.export
    def set_parameter(self, name: str, value: float) -> None:
        pass


@pytest.fixture
def plugin(tmp_path: Path) -> str:
    path = tmp_path / "hold.ts"
    torch.jit.script(DelayedHold()).save(str(path))
    return str(path)


def speechlike(seed: int, seconds: float = 1.3, rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (150 + 100 * seed) * t * (1 + t)) + 0.05 * rng.standard_normal(
        len(t)
    )
    return (x * np.hanning(len(t))).astype(np.float32)


@pytest.fixture
def refs(tmp_path: Path) -> Path:
    folder = tmp_path / "refs"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"r{i}.wav", speechlike(i), 16000)
    return folder


def test_eval_reports_match_direct_metrics(
    plugin: str, refs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["--plugin", plugin, "--data", str(refs), "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "| plugin |" in stdout and "| sinc |" in stdout and "| cubic |" in stdout
    assert (out / "metrics.md").read_text().strip() in stdout
    assert (out / "spectrograms.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "metrics.json").read_text())
    assert [f["name"] for f in report["files"]] == ["r0.wav", "r1.wav", "r2.wav"]
    expected: dict[str, list[dict[str, float]]] = {"plugin": [], "sinc": [], "cubic": []}
    for i in range(3):
        ref, _ = sf.read(refs / f"r{i}.wav", dtype="float32")  # 16-bit WAV: read it back
        x = soxr.resample(ref, 16000, 8000, quality="VHQ").astype(np.float32)
        expected["plugin"].append(all_metrics(ref, np.repeat(x, 2), 16000, 8000))
        expected["sinc"].append(all_metrics(ref, sinc(x, 8000, 16000), 16000, 8000))
        expected["cubic"].append(all_metrics(ref, cubic_spline(x, 8000, 16000), 16000, 8000))
    for system, per_file in expected.items():
        mean = mean_over_files(per_file)
        for key, value in mean.items():
            assert report["mean"][system][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (
                system,
                key,
            )
    assert report["plugin"]["latency"] == DELAY


def tiny_dataset(tmp_path: Path) -> Path:
    """A 16 kHz segment set (model.corpora) of 4 noise 'speakers', one in the validation split."""
    corpus = tmp_path / "corpus"
    for spk in "ABCD":
        (corpus / spk).mkdir(parents=True)
        for i in range(2):
            rng = np.random.default_rng(ord(spk) + i)
            sf.write(corpus / spk / f"{i}.wav", 0.1 * rng.standard_normal(24000), 24000)
    build_dataset(
        [corpus],
        tmp_path / "ds",
        rate=16000,
        segment_s=0.5,
        min_band_hz=7500,
        val_fraction=0.25,
        seed=0,
        progress=False,
    )
    return tmp_path / "ds"


def test_eval_on_dataset_validation_split(plugin: str, tmp_path: Path) -> None:
    tiny_dataset(tmp_path)
    out = tmp_path / "out"
    args = [
        "--plugin",
        plugin,
        "--data",
        str(tmp_path / "ds"),
        "--out",
        str(out),
        "--limit",
        "2",
        "--degrade",
        "mix",
        "--no-progress",
    ]
    assert main(args) == 0
    report = json.loads((out / "metrics.json").read_text())
    last = len(SegmentDataset(tmp_path / "ds", "val")) - 1  # --limit spreads over the split
    assert [f["name"] for f in report["files"]] == ["val-00000", f"val-{last:05d}"]
    assert all(math.isfinite(report["mean"][s]["lsd"]) for s in ("plugin", "sinc", "cubic"))
    first = (out / "metrics.json").read_text()
    assert main(args) == 0
    assert (out / "metrics.json").read_text() == first  # seeded degradation


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("empty", "no audio files"),
        ("unreadable", "cannot read"),
        ("narrow", "8000 Hz, below the plugin's output rate 16000 Hz"),
        ("plugin", "unknown plugin"),
        ("missing", "does not exist"),
    ],
)
def test_eval_one_line_errors(
    plugin: str, tmp_path: Path, make: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    if make != "missing":
        data.mkdir()
    if make == "unreadable":
        (data / "bad.flac").write_bytes(b"fLaC nonsense")
    if make in ("narrow", "plugin"):
        sf.write(data / "n.wav", speechlike(0, rate=8000), 8000)
    spec = "no-such-plugin" if make == "plugin" else plugin
    assert (
        main(["--plugin", spec, "--data", str(data), "--out", str(tmp_path / "o"), "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("wavehost eval: error:") and message in err and "\n" not in err


def test_eval_mp3_baseline_is_the_decoded_mp3(tmp_path: Path) -> None:
    path = tmp_path / "ident.ts"
    torch.jit.script(StereoIdentity()).save(str(path))
    (tmp_path / "music").mkdir()
    x = np.stack([speechlike(0, 1.0, 44100), speechlike(1, 1.0, 44100)], axis=1)
    sf.write(tmp_path / "music" / "m.flac", x, 44100)
    out = tmp_path / "out"
    args = [
        "--plugin",
        str(path),
        "--data",
        str(tmp_path / "music"),
        "--out",
        str(out),
        "--degrade",
        "mp3:64",
        "--no-progress",
    ]
    assert main(args) == 0
    mean = json.loads((out / "metrics.json").read_text())["mean"]
    assert set(mean) == {"plugin", "mp3"}
    assert mean["plugin"] == mean["mp3"] and mean["mp3"]["lsd_hf"] == "nan"
    assert 5.0 < mean["mp3"]["snr"] < 60.0


def test_choose_mix_takes_the_lowest_lsd_within_the_snr_allowance() -> None:
    def row(lsd: float, snr: float) -> dict[str, float]:
        return {"lsd": lsd, "snr": snr}

    means = {
        "sinc": row(5.0, 18.0),
        mix_row(0.5): row(1.10, 17.8),
        mix_row(0.7): row(1.00, 17.7),
        mix_row(1.0): row(0.95, 17.0),  # best LSD, but 1 dB below sinc
    }
    assert choose_mix(means, [0.5, 0.7, 1.0]) == 0.7
    means["sinc"] = row(5.0, 19.0)  # nothing within 0.4 dB: the highest SNR
    assert choose_mix(means, [0.5, 0.7, 1.0]) == 0.5


def test_choose_mp3_mix_takes_the_largest_mix_that_keeps_the_mp3s_si_sdr() -> None:
    def files(gains: dict[float, list[float]]) -> list[dict]:
        n = len(next(iter(gains.values())))
        return [
            {
                "metrics": {
                    "mp3": {"si_sdr": 30.0},
                    **{mix_row(m): {"si_sdr": 30.0 + g[i]} for m, g in gains.items()},
                }
            }
            for i in range(n)
        ]

    sure = [0.02, 0.03, 0.025, 0.035]  # mean 0.0275 dB, standard error 0.0032
    spread = [0.1, -0.08, 0.09, -0.07]  # mean 0.01 dB, but 0.046 of standard error
    below = [-0.01, -0.02, -0.015, -0.012]
    assert si_sdr_gain_bound(files({0.5: sure}), mix_row(0.5)) == pytest.approx(0.0210, abs=1e-4)
    assert choose_mp3_mix(files({0.5: sure, 0.8: spread, 1.0: below}), [0.5, 0.8, 1.0]) == 0.5
    assert choose_mp3_mix(files({0.5: sure, 0.8: sure, 1.0: below}), [0.5, 0.8, 1.0]) == 0.8
    # none above: the one nearest to it
    assert choose_mp3_mix(files({0.5: spread, 1.0: below}), [0.5, 1.0]) == 1.0
    # a file whose SI-SDR is not finite (silence) does not count
    nan = files({0.5: [*sure, math.nan], 1.0: [*sure, math.nan]})
    assert choose_mp3_mix(nan, [0.5, 1.0]) == 1.0


def test_mix_sweep_on_the_training_split_and_export_with_the_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tiny_dataset(tmp_path)
    net = WaveletUNet(UNetConfig(levels=2, base_channels=4, lookahead=5))
    gen = torch.Generator().manual_seed(0)
    for p in net.parameters():
        nn.init.normal_(p, std=0.3, generator=gen)
    plain = export_plugin(net, tmp_path / "bwe.ts", name="bwe")
    sweep = tmp_path / "sweep"
    args = ["--plugin", str(plain), "--data", str(data), "--no-progress", "--limit", "3"]
    assert main([*args, "--out", str(sweep), "--split", "train", "--mix-sweep", "0,0.5,1"]) == 0
    report = json.loads((sweep / "metrics.json").read_text())
    assert report["split"] == "train"
    assert all(f["name"].startswith("train-") for f in report["files"])
    mean = report["mean"]
    assert set(mean) == {mix_row(0.0), mix_row(0.5), mix_row(1.0), "sinc", "cubic"}
    assert report["chosen_mix"] == choose_mix(mean, [0.0, 0.5, 1.0])
    assert mean[mix_row(0.0)] != mean[mix_row(1.0)]  # the sweep really changed the plugin
    assert main([*args, "--out", str(sweep), "--mix-sweep", "0.5,1.5"]) == 2
    err = capsys.readouterr().err
    assert "--mix-sweep values must lie in the plugin's mix range [0, 1], got 0.5, 1.5" in err

    # a plugin exported with mix 0.5 by default evaluates like the sweep's 0.5 row
    halved = export_plugin(net, tmp_path / "half.ts", name="bwe", mix=0.5)
    assert load_plugin(str(halved)).info.parameters == {"mix": (0.0, 1.0, 0.5)}
    out = tmp_path / "half"
    assert main([*args, "--plugin", str(halved), "--out", str(out), "--split", "train"]) == 0
    got = json.loads((out / "metrics.json").read_text())["mean"]["plugin"]
    assert got == pytest.approx(mean[mix_row(0.5)], rel=1e-6)


def test_mix_sweep_on_mp3_input_keeps_the_mp3s_si_sdr(tmp_path: Path) -> None:
    net = WaveletUNet(
        UNetConfig(levels=2, base_channels=4, lookahead=5, rate_in=48000, rate_out=48000)
    )
    gen = torch.Generator().manual_seed(0)
    for p in net.parameters():
        nn.init.normal_(p, std=0.3, generator=gen)  # a residual far from any restoration
    plugin = export_plugin(net, tmp_path / "mp3.ts", name="mp3", channels=2)
    (tmp_path / "music").mkdir()
    x = np.stack([speechlike(0, 1.0, 48000), speechlike(1, 1.0, 48000)], axis=1)
    sf.write(tmp_path / "music" / "m.flac", x, 48000)
    out = tmp_path / "sweep"
    args = ["--plugin", str(plugin), "--data", str(tmp_path / "music"), "--out", str(out)]
    assert main([*args, "--degrade", "mp3:64", "--mix-sweep", "0,0.5,1", "--no-progress"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    mean = report["mean"]
    assert set(mean) == {mix_row(0.0), mix_row(0.5), mix_row(1.0), "mp3"}
    assert mean[mix_row(0.0)] == mean["mp3"]  # mix 0 is the decoded MP3 itself, aligned
    assert mean[mix_row(1.0)]["si_sdr"] < mean["mp3"]["si_sdr"] - 1.0
    assert report["chosen_mix"] == 0.0 == choose_mp3_mix(report["files"], [0.0, 0.5, 1.0])
    assert (
        "chosen mix: 0.00 (largest with SI-SDR above the MP3's" in (out / "metrics.md").read_text()
    )


def test_mix_sweep_needs_a_mix_parameter(
    plugin: str, refs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--plugin", plugin, "--data", str(refs), "--out", str(tmp_path / "o")]
    assert main([*args, "--mix-sweep", "0.5,1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--mix-sweep needs a plugin with a mix parameter" in err and "\n" not in err


def test_band_split_reports_cut_references_apart(
    plugin: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "refs"
    folder.mkdir()
    noise = 0.1 * np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32)
    sf.write(folder / "full.wav", noise[0], 16000, subtype="FLOAT")  # band to 8 kHz
    cut = soxr.resample(soxr.resample(noise[1], 16000, 6000, quality="VHQ"), 6000, 16000)
    sf.write(folder / "cut.wav", cut, 16000, subtype="FLOAT")  # band ends near 3 kHz
    out = tmp_path / "out"
    args = ["--plugin", plugin, "--data", str(folder), "--out", str(out), "--no-progress"]
    assert main([*args, "--band-split", "6000"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    bands = {f["name"]: f["band_hz"] for f in report["files"]}
    assert 2500 < bands["cut.wav"] < 3200 and bands["full.wav"] > 7500
    split = report["band_split"]
    assert split["hz"] == 6000 and split["below"]["files"] == split["above"]["files"] == 1
    for group, name in (("below", "cut.wav"), ("above", "full.wav")):
        (metrics,) = [f["metrics"] for f in report["files"] if f["name"] == name]
        assert split[group]["mean"] == metrics  # one file: its own metrics
    # sinc leaves the band above 4 kHz empty: right for the cut reference, all wrong for the other
    assert split["below"]["mean"]["sinc"]["lsd_hf"] < split["above"]["mean"]["sinc"]["lsd_hf"] / 2
    md = (out / "metrics.md").read_text()
    assert "1 of them with a reference band below 6000 Hz" in md
    assert "1 of them with a reference band at or above 6000 Hz" in md
    assert md.rstrip().endswith(report["convention"])

    assert main([*args, "--band-split", "99000"]) == 0  # every file below: an empty group
    report = json.loads((out / "metrics.json").read_text())
    assert report["band_split"]["above"] == {"files": 0, "mean": None}
    md = (out / "metrics.md").read_text()
    assert "0 of them with a reference band at or above 99000 Hz" in md

    assert main(args) == 0  # without the option: no bands measured
    report = json.loads((out / "metrics.json").read_text())
    assert report["band_split"] is None and "band_hz" not in report["files"][0]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*args, "--band-split", "0"])
    assert "--band-split needs a frequency in Hz above 0" in capsys.readouterr().err
