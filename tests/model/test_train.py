"""`wavehost train` on a tiny synthetic speech-like set.

Learning on a fixed batch, exact resume, a NaN in the data, bad data folders.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model.corpora import Manifest, Source, build_dataset
from model.degrade import degrade_band, draw_dull, dull, mp3_channels
from model.export import load_checkpoint
from model.losses import BWELoss, LossConfig
from model.metrics import lsd, si_sdr, snr
from model.tasks import TASKS, with_kbps
from model.train import TrainPairs, align, epoch_batches, main, train_step
from model.unet import UNetConfig, WaveletUNet

RATE = 16000
TINY = {"levels": 2, "base_channels": 4, "lookahead": 2}
BATCH = 4


def _voice(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A vowel-like harmonic tone with a gliding pitch plus a little broadband noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 40) if k * f0.max() < RATE / 2)
    x = x + 0.05 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built dataset: 5 speaker folders of WAV files, 0.25 s segments, split by folder."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for g in range(5):
        (root / f"spk{g}").mkdir()
        for k in range(2):
            sf.write(root / f"spk{g}" / f"utt{k}.wav", _voice(rng, 1.6), RATE, subtype="FLOAT")
    out = root.parent / "set"
    build_dataset([Source("synthetic", root)], out, segment_s=0.25, val_fraction=0.2,
                  min_band_hz=7000.0, progress=False)  # fmt: skip
    return out


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--config", json.dumps(TINY),
        "--batch-size", str(BATCH), "--segment", "2560", "--val-items", "4", "--warmup", "2",
        "--lr", "3e-3", "--threads", "1", *extra,
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny models run fastest so, and a shared CPU does not stall them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_loss_decreases_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    y = torch.from_numpy(np.stack([_voice(rng, 0.25) for _ in range(BATCH)]))[:, None]
    x = degrade_band(y, rng)
    net = WaveletUNet(UNetConfig(**TINY))
    loss_fn = BWELoss(LossConfig())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    with torch.no_grad():
        first = float(loss_fn(*align(net(x), y, net.latency_samples()))[0])
    losses = [train_step(net, loss_fn, opt, x, y, grad_clip=1.0)["loss"] for _ in range(30)]
    assert losses[0] == pytest.approx(first)
    assert min(losses[-5:]) < first - 0.15 * abs(first)


def test_loss_parts_are_the_metrics() -> None:
    rng = np.random.default_rng(2)
    y = torch.from_numpy(np.stack([_voice(rng, 0.5) for _ in range(2)]))[:, None]
    y_hat = y + 0.02 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    _, parts = BWELoss(LossConfig(w_snr=1.0, w_lsd=1.0))(y_hat, y)
    pairs = list(zip(y[:, 0].double().numpy(), y_hat[:, 0].double().numpy(), strict=True))
    assert parts["lsd"] == pytest.approx(np.mean([lsd(r, e, RATE) for r, e in pairs]), 1e-4)
    assert parts["snr"] == pytest.approx(np.mean([snr(r, e) for r, e in pairs]), 1e-4)


def test_keep_term_counts_only_the_si_sdr_lost_against_the_dry_path() -> None:
    """Per item: the SI-SDR the estimate loses against the dry path, 0 where it loses none."""
    rng = np.random.default_rng(3)
    y = torch.from_numpy(np.stack([_voice(rng, 0.5) for _ in range(2)]))[:, None]
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    dry = y + 0.02 * noise
    y_hat = y + torch.tensor([0.05, 0.01]).view(2, 1, 1) * noise.flip(-1)  # worse, then better
    loss_fn = BWELoss(LossConfig(w_stft=0.0, w_l1=0.0, w_keep=2.0))
    total, parts = loss_fn(y_hat, y, dry)
    r, d, e = (t[:, 0].double().numpy() for t in (y, dry, y_hat))
    lost = [si_sdr(r[0], d[0]) - si_sdr(r[0], e[0]), si_sdr(r[1], d[1]) - si_sdr(r[1], e[1])]
    assert lost[0] > 5 and lost[1] < 0
    assert parts["keep"] == pytest.approx(lost[0] / 2, rel=1e-4)
    assert float(total) == pytest.approx(2.0 * parts["keep"], rel=1e-5)
    assert loss_fn(dry, y, dry)[1]["keep"] == 0.0
    with pytest.raises(ValueError, match="dry path"):
        loss_fn(y_hat, y)


def test_kbps_sets_the_mp3_training_bitrates() -> None:
    y = torch.from_numpy(np.stack([_voice(np.random.default_rng(4), 0.3)] * 2))[None]
    x = with_kbps(TASKS["mp3-48k"], (320,)).train(y, np.random.default_rng(0))
    assert torch.equal(x[0], torch.from_numpy(mp3_channels(y[0].numpy(), 48000, 320)))
    with pytest.raises(ValueError, match="choose from"):
        with_kbps(TASKS["mp3-48k"], (100,))
    with pytest.raises(ValueError, match="mp3-48k"):
        with_kbps(TASKS["bwe-8k-16k"], (64,))


@pytest.mark.parametrize(("task", "kbps"), [("mp3-48k", "64,100"), ("bwe-8k-16k", "64")])
def test_bad_kbps_is_one_clear_line(
    task: str, kbps: str, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(dataset, tmp_path / "run", "--task", task, "--kbps", kbps)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wavehost train: --kbps: ")
    assert not (tmp_path / "run").exists()


def test_align_delays_the_target() -> None:
    y_hat = torch.arange(10.0).view(1, 1, 10)
    target = torch.arange(10.0).view(1, 1, 10)
    est, ref = align(y_hat, target, 3)
    assert est.tolist() == [[[3, 4, 5, 6, 7, 8, 9]]]  # output n ...
    assert ref.tolist() == [[[0, 1, 2, 3, 4, 5, 6]]]  # ... against target n - 3


def test_run_writes_its_files_and_resume_is_exact(dataset: Path, tmp_path: Path) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(_args(dataset, whole, "--epochs", "2")) == 0
    assert main(_args(dataset, split, "--epochs", "2", "--max-steps", "3")) == 0
    mid = torch.load(split / "last.pt", weights_only=True)
    assert mid["step"] == 3 and mid["epoch"] == 0 and mid["batch"] == 3
    assert main(_args(dataset, split, "--resume")) == 0

    a = torch.load(whole / "last.pt", weights_only=True)
    b = torch.load(split / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 2 * len(epoch_batches(_n_train(dataset), BATCH, 0, 0))
    assert a["config"] == b["config"] and UNetConfig.from_dict(a["config"]).lookahead == 2
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["metrics"] == b["metrics"]
    for f in ("best.pt", "log.csv", "curves.png", "baselines.json", "config.json"):
        assert (whole / f).stat().st_size > 0, f
    rows = (whole / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step") and len(rows) == 3  # header + one row per epoch
    assert all(math.isfinite(v) for v in a["metrics"].values())
    # a finished run refuses to be overwritten
    assert main(_args(dataset, whole)) == 2


def test_init_fine_tunes_from_a_checkpoint(dataset: Path, tmp_path: Path) -> None:
    """``--init`` starts a new run from a checkpoint's network: its config and weights (with a
    zero learning rate the weights come out unchanged), not its optimizer or step."""
    first, tuned = tmp_path / "first", tmp_path / "tuned"
    assert main(_args(dataset, first, "--max-steps", "2")) == 0
    src = torch.load(first / "last.pt", weights_only=True)
    args = _args(dataset, tuned, "--max-steps", "1", "--init", str(first / "last.pt"))
    args[args.index("--config") : args.index("--config") + 2] = []  # the config comes with it
    args[args.index("--lr") + 1] = "0"
    assert main(args) == 0
    out = torch.load(tuned / "last.pt", weights_only=True)
    assert out["step"] == 1 and out["config"] == src["config"]
    for k, v in src["model"].items():
        assert torch.equal(v, out["model"][k]), k
    again = [*args, "--config", "{}"]
    again[again.index("--out") + 1] = str(tmp_path / "other")
    assert main(again) == 2  # --init brings its own network
    assert not (tmp_path / "other").exists()


def test_ema_saves_the_average_and_resumes_exactly(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--ema``: the trained weights (``raw``) follow the very path of a run without it, the
    checkpoint's ``model`` (what is validated and exported) is their moving average, and a
    resumed run ends where an uninterrupted one does."""
    plain, whole, split = tmp_path / "plain", tmp_path / "whole", tmp_path / "split"
    ema = ("--epochs", "2", "--ema", "0.9")
    assert main(_args(dataset, plain, "--epochs", "2")) == 0
    assert main(_args(dataset, whole, *ema)) == 0
    assert main(_args(dataset, split, *ema, "--max-steps", "3")) == 0
    assert main(_args(dataset, split, "--resume")) == 0
    p, a, b = (torch.load(d / "last.pt", weights_only=True) for d in (plain, whole, split))
    assert a["train"]["ema"] == b["train"]["ema"] == 0.9 and "raw" not in p
    for k, v in p["model"].items():
        assert torch.equal(v, a["raw"][k]) and torch.equal(v, b["raw"][k]), k
        assert torch.equal(a["model"][k], b["model"][k]), k
    net = load_checkpoint(whole / "last.pt")  # the loader of `wavehost export` takes the average
    lag = {k for k, v in a["model"].items() if not torch.equal(v, a["raw"][k])}
    assert lag == {k for k, _ in net.named_parameters()}  # the buffers are the fixed filters
    assert a["metrics"] == b["metrics"] != p["metrics"]
    for k, v in net.state_dict().items():
        assert torch.equal(v, a["model"][k]), k

    capsys.readouterr()
    assert main(_args(dataset, tmp_path / "bad", "--ema", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ema 1.0" in err[0], err


def _n_train(dataset: Path) -> int:
    return sum(n for _, n in Manifest.load(dataset).shards("train"))


def test_nan_in_the_data_stops_with_the_step_and_keeps_the_checkpoint(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for f in dataset.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    run = tmp_path / "run"
    assert main(_args(data, run, "--epochs", "3", "--max-steps", "4")) == 0
    saved = (run / "last.pt").read_bytes()

    # poison the first segment of the 5th batch of epoch 1: step 5 must stop the run
    bad = epoch_batches(_n_train(data), BATCH, 0, 0)[4][0]
    shard, _ = Manifest.load(data).shards("train")[0]
    segments = np.load(shard)
    segments[bad] = np.nan
    np.save(shard, segments)

    capsys.readouterr()
    assert main(_args(data, run, "--resume")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "non-finite loss nan at step 5 " in err[-1]
    assert "last good checkpoint kept" in err[-1]
    assert (run / "last.pt").read_bytes() == saved


@pytest.mark.parametrize("problem", ["missing", "empty", "no_shard", "garbage"])
def test_bad_data_folder_is_one_clear_line(
    problem: str, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    if problem != "missing":
        data.mkdir()
    if problem in ("no_shard", "garbage"):
        (data / "manifest.json").write_text((dataset / "manifest.json").read_text())
    if problem == "garbage":
        for f in Manifest.load(dataset).shards("train") + Manifest.load(dataset).shards("val"):
            (data / f[0].name).write_bytes(b"not a numpy file")
    assert main(_args(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wavehost train: ") and str(data) in err[0]
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("task", ["bwe-8k-16k", "bwe-16k-48k", "mp3-48k"])
def test_train_pairs_line_up_per_task(task: str) -> None:
    """Crops of stereo items: input sample k lines up with target sample factor * k (a tone
    that passes every degradation comes out in phase), new draws each epoch."""
    t = TASKS[task]
    n = np.arange(t.rate_out)  # 1 s items
    tone = [np.sin(2 * np.pi * 440 * n / t.rate_out + ph) * 0.5 for ph in (0.0, 1.0)]
    items = [torch.from_numpy(np.stack(tone).astype(np.float32)) for _ in range(2)]
    pairs = TrainPairs(items, length=4800, seed=0, task=t, multiple=48)
    x, y = pairs[1]
    assert x.shape == (2, 4800 // t.factor) and y.shape == (2, 4800)
    mid = slice(200, -200)  # away from the crop edges
    err = x[:, mid] - y[:, :: t.factor][:, mid]
    assert float(err.pow(2).mean() / y.pow(2).mean()) < 0.01
    pairs.set_epoch(1)
    assert not torch.equal(pairs[1][1], y)  # another crop


def test_dulled_pairs_share_the_dulled_reference() -> None:
    """With ``dull`` 1 every target is its crop of the dulled item and the input is degraded from
    it (a high tone loses the same level in both); with ``dull`` 0 nothing changes."""
    t = TASKS["bwe-8k-16k"]
    n = np.arange(t.rate_out)
    item = torch.from_numpy((0.5 * np.sin(2 * np.pi * 3000 * n / t.rate_out))[None].astype("f4"))
    plain = TrainPairs([item], length=4800, seed=0, task=t, multiple=48)
    dulled = TrainPairs([item], length=4800, seed=0, task=t, multiple=48, dull=1.0)
    x0, y0 = plain[0]
    x1, y1 = dulled[0]
    rng = np.random.default_rng((0, 0, 0))
    start = t.factor * int(rng.integers(0, (t.rate_out - 4800) // t.factor + 1))
    rng.random()  # the draw that decides whether to dull
    expect = dull(item[None], draw_dull(rng), t.rate_out)[0, :, start : start + 4800]
    torch.testing.assert_close(y1, expect, atol=1e-5, rtol=0)
    loss_y = float(y1.pow(2).mean() / item[:, start : start + 4800].pow(2).mean())
    loss_x = float(x1.pow(2).mean() / x0.pow(2).mean())
    assert loss_y < 0.5 and loss_x == pytest.approx(loss_y, rel=0.15)
    assert torch.equal(y0, item[:, start : start + 4800])  # the same crop, not dulled
