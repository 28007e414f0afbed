"""TorchScript export: the plugin contract, streaming through the host loader, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from model import weights
from model.bandlimit import lowpass_taps
from model.export import export_plugin, load_checkpoint, main
from model.unet import UNetConfig, WaveletUNet
from realtime.contract import PluginInfo
from realtime.loader import load_plugin

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

CFG = UNetConfig(levels=2, base_channels=4, lookahead=5, context=[1, 2])


@pytest.fixture(scope="module")
def net() -> WaveletUNet:
    net = WaveletUNet(CFG)
    gen = torch.Generator().manual_seed(0)
    for p in net.parameters():
        nn.init.normal_(p, std=0.3, generator=gen)
    return net.eval()


@pytest.fixture(scope="module")
def exported(net: WaveletUNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_plugin(net, tmp_path_factory.mktemp("export") / "tiny.ts", name="tiny")


def _stream(step, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    outs, start = [], 0
    for n in sizes:
        outs.append(step(x[..., start : start + n]))
        start += n
    return torch.cat(outs, -1)


def test_plugin_declares_the_contract(net: WaveletUNet, exported: Path) -> None:
    module = torch.jit.load(str(exported))
    info = PluginInfo.read(module, "tiny")
    assert (info.sample_rate_in, info.sample_rate_out, info.channels) == (8000, 16000, 1)
    assert info.streaming is True
    assert info.latency == net.latency_samples()
    assert info.block_multiple == CFG.block_multiple
    assert info.parameters == {"mix": (0.0, 1.0, 1.0)}
    meta = json.loads(exported.with_suffix(".json").read_text())
    assert UNetConfig.from_dict(meta["config"]) == CFG
    assert (meta["name"], meta["latency"]) == ("tiny", net.latency_samples())


def test_loaded_plugin_streams_like_the_offline_net(net: WaveletUNet, exported: Path) -> None:
    module = torch.jit.load(str(exported))
    x = torch.randn(2, 1, 40 * CFG.block_multiple, generator=torch.Generator().manual_seed(1))
    sizes = [CFG.block_multiple * k for k in (1, 4, 2, 13, 20)]
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(_stream(module, x, sizes), expected, atol=1e-5, rtol=1e-5)
        module.reset()
        torch.testing.assert_close(module(x[:1]), expected[:1], atol=1e-5, rtol=1e-5)
        module.reset()
        module.set_parameter("mix", 0.0)  # dry: the latency-aligned interpolated input
        dry = module(x)
        module.set_parameter("mix", 1.0)
    zero = WaveletUNet(CFG)
    with torch.no_grad():
        torch.testing.assert_close(dry, zero(x), atol=1e-6, rtol=0)
    with pytest.raises(torch.jit.Error, match="unknown parameter"):
        module.set_parameter("gain", 1.0)


def test_host_loader_accepts_and_streams_it(net: WaveletUNet, exported: Path) -> None:
    plugin = load_plugin(str(exported))
    assert plugin.info.latency == net.latency_samples()
    x = torch.randn(1, 1, 32 * 12, generator=torch.Generator().manual_seed(2))
    got = _stream(plugin.process, x, [32] * 12)  # 64-sample output blocks
    with torch.no_grad():
        torch.testing.assert_close(got, net(x), atol=1e-5, rtol=1e-5)
    plugin.set_parameter("mix", 0.5)


def _band_power_db(y: torch.Tensor, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(y.flatten().double().numpy())) ** 2
    freqs = np.fft.rfftfreq(y.numel(), 1 / CFG.rate_out)
    return 10 * np.log10(spec[(freqs >= lo) & (freqs < hi)].sum())


def test_band_top_low_passes_the_residual_only(net: WaveletUNet, tmp_path: Path) -> None:
    plugin = load_plugin(str(export_plugin(net, tmp_path / "top.ts", name="top", band_top=7600)))
    assert json.loads((tmp_path / "top.json").read_text())["band_top_hz"] == 7600
    sizes = [CFG.block_multiple * k for k in (3, 250, 1, 496, 250)]
    x = torch.randn(1, 1, sum(sizes), generator=torch.Generator().manual_seed(3))
    got = _stream(plugin.process, x, sizes)
    with torch.no_grad():
        dry, residual = net.streaming().step(x)
    taps = lowpass_taps(CFG.rate_out, 7600)
    filtered = np.convolve(residual.flatten().double().numpy(), taps)[: residual.numel()]
    expected = dry.flatten().double() + torch.from_numpy(filtered)
    torch.testing.assert_close(got.flatten().double(), expected, atol=1e-5, rtol=1e-5)
    # above the top the residual loses at least 25 dB; below top - 300 Hz it keeps its level
    top, lost = _band_power_db(residual, 7600, 8000), _band_power_db(got - dry, 7600, 8000)
    assert top - lost >= 25
    kept = _band_power_db(got - dry, 4000, 7300) - _band_power_db(residual, 4000, 7300)
    assert abs(kept) < 0.25
    # a batch of streams gets a band limit per stream
    plugin.reset()
    two = _stream(plugin.process, torch.cat([x, x]), sizes)
    torch.testing.assert_close(two, torch.cat([got, got]))


def test_cli_exports_a_checkpoint(net: WaveletUNet, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"config": CFG.to_dict(), "model": net.state_dict()}, ckpt)
    out = tmp_path / "out" / "bwe.ts"
    assert main(["--checkpoint", str(ckpt), "--out", str(out)]) == 0
    info = load_plugin(str(out)).info
    assert info.latency == net.latency_samples()
    assert json.loads(out.with_suffix(".json").read_text())["name"] == "bwe"
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--mix", "0.7"]) == 0
    assert load_plugin(str(out)).info.parameters["mix"] == pytest.approx((0.0, 1.0, 0.7))
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "--out", str(out), "--mix", "1.5"])
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--band-top", "9000"]) == 2
    slim = tmp_path / "weights" / "bwe.pt"
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--save-weights", str(slim)]) == 0
    assert set(torch.load(slim, weights_only=True)) == {"config", "model"}
    x = torch.randn(1, 1, 64)
    torch.testing.assert_close(load_checkpoint(slim)(x), net.eval()(x), atol=0, rtol=0)


@pytest.mark.parametrize(
    "content", [None, b"", b"not a checkpoint", "truncated", "dict", "mismatch"]
)
def test_cli_refuses_bad_checkpoints(
    content: bytes | str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "ckpt.pt"
    if isinstance(content, bytes):
        ckpt.write_bytes(content)
    elif content == "truncated":
        torch.save({"config": CFG.to_dict(), "model": {}}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    elif content == "dict":
        torch.save({"weights": {}}, ckpt)
    elif content == "mismatch":
        torch.save({"config": CFG.to_dict(), "model": WaveletUNet(UNetConfig()).state_dict()}, ckpt)
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "x.ts")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wavehost export: error:") and err.count("\n") == 1
    assert "Traceback" not in err
    assert not (tmp_path / "x.ts").exists()


def test_shipped_weights_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"bwe-8k-16k\.ts"):
        weights.bwe_8k_16k()
    (tmp_path / "bwe-8k-16k.ts").write_bytes(b"x")
    assert weights.bwe_8k_16k() == tmp_path / "bwe-8k-16k.ts"


@pytest.mark.parametrize("mode", ["lr", "ms"])
def test_stereo_plugin_restores_each_channel_with_the_mono_net(
    net: WaveletUNet, tmp_path: Path, mode: str
) -> None:
    """A stereo export runs the mono network on left/right (or mid/side) as batch rows,
    streaming, and resets one stream's rows only."""
    path = export_plugin(net, tmp_path / "st.ts", name="st", channels=2, stereo=mode)
    plugin = load_plugin(str(path))
    assert plugin.info.channels == 2
    assert json.loads(path.with_suffix(".json").read_text())["stereo"] == mode
    x = torch.randn(1, 2, 32 * 8, generator=torch.Generator().manual_seed(3))
    got = _stream(plugin.process, x, [32] * 8)
    rows = (
        x[0, :, None]
        if mode == "lr"
        else torch.stack([x[0, 0] + x[0, 1], x[0, 0] - x[0, 1]])[:, None] / 2
    )
    with torch.no_grad():
        y = net(rows)[:, 0]
    if mode == "ms":
        y = torch.stack([y[0] + y[1], y[0] - y[1]])
    torch.testing.assert_close(got[0], y, atol=1e-5, rtol=1e-5)
    module = torch.jit.load(str(path))
    two = torch.cat([x, x.flip(1)])  # two stereo streams in one batch
    with torch.no_grad():
        module(two[..., :128])
        module.reset_rows(torch.tensor([1]))
        tail = module(two[..., 128:])
        module.reset()
        fresh = module(two[..., 128:])
    torch.testing.assert_close(tail[1], fresh[1], atol=1e-5, rtol=1e-5)  # stream 1 restarted
    assert not torch.allclose(tail[0], fresh[0], atol=1e-3)  # stream 0 kept its history
