"""The shipped plugins of model/weights/, loaded by name through the host's loader.

Each declares the contract its JSON sidecar and its network config say, delays a noise probe by
the latency it declares, streams without seams (any block split gives the one-shot output) and
does its job on real audio: the 48 kHz MP3 restorer on the bundled 64 kb/s MP3 clip, also as a
44.1 kHz stream through the host's edge resamplers (``wavehost render``). Each ships with the
checkpoint it was exported from: exported again by today's code, it streams the same output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import soxr
import torch
from spectrum import band_db

from model import weights
from model.export import load_checkpoint, script_plugin
from model.unet import UNetConfig, WaveletUNet
from realtime.chain import Chain
from realtime.loader import load_plugin
from realtime.probe import measure_latency
from realtime.render import render

REPO = Path(__file__).resolve().parents[2]
MP3_CLIP = REPO / "realtime" / "data" / "music-64k.mp3"
SHIPPED = {  # name: (rate in, rate out, channels)
    "bwe-8k-16k": (8000, 16000, 1),
    "bwe-16k-48k": (16000, 48000, 2),
    "mp3-restore-48k": (48000, 48000, 2),
}


@pytest.mark.parametrize("name", SHIPPED)
def test_contract_and_streaming_without_seams(name: str) -> None:
    plugin = load_plugin(name)
    info = plugin.info
    meta = json.loads(weights.WEIGHTS_DIR.joinpath(f"{name}.json").read_text())
    net = WaveletUNet(UNetConfig.from_dict(meta["config"]))
    assert (info.sample_rate_in, info.sample_rate_out, info.channels) == SHIPPED[name]
    assert info.streaming and info.latency == net.latency_samples() == meta["latency"]
    m = info.block_multiple
    x = 0.3 * torch.randn(1, info.channels, 96 * m, generator=torch.Generator().manual_seed(0))
    whole = plugin.process(x)
    plugin.reset()
    sizes = [m, 7 * m, 40 * m, 3 * m, 45 * m]
    parts, start = [], 0
    for n in sizes:
        parts.append(plugin.process(x[..., start : start + n]))
        start += n
    torch.testing.assert_close(torch.cat(parts, -1), whole, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", SHIPPED)
def test_noise_through_the_plugin_comes_out_as_late_as_it_declares(name: str) -> None:
    est = measure_latency(load_plugin(name))
    assert est.lag == est.declared and est.correlation > 0.9


@pytest.mark.parametrize("name", SHIPPED)
def test_checkpoint_exports_to_the_shipped_plugin(name: str) -> None:
    meta = json.loads(weights.WEIGHTS_DIR.joinpath(f"{name}.json").read_text())
    net = load_checkpoint(weights.WEIGHTS_DIR / f"{name}.pt")
    assert net.config == UNetConfig.from_dict(meta["config"])  # fields added since take defaults
    channels, stereo = meta["channels"], meta["stereo"] or "lr"
    mix, band_top = meta["parameter_default"][0], meta.get("band_top_hz") or 0.0
    again = script_plugin(net, channels, stereo, mix, band_top)
    shipped = load_plugin(name)
    m = meta["block_multiple"] * 4
    x = 0.3 * torch.randn(1, channels, 30 * m, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        for start in range(0, x.size(-1), m):
            block = x[..., start : start + m]
            torch.testing.assert_close(again(block), shipped.process(block), atol=1e-5, rtol=0)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_mp3_restorer_puts_back_the_band_mp3_removed(rate: int, tmp_path: Path) -> None:
    """The decoded 64 kb/s MP3 stops at 11.3 kHz; the restored output has energy again in
    12–18 kHz (at least 15 dB more) and keeps 0.2–4 kHz within 0.5 dB, at 48 kHz natively and
    at 44.1 kHz through the host's edge resamplers."""
    decoded, sr = sf.read(MP3_CLIP, dtype="float32", always_2d=True)
    src = tmp_path / "in.wav"
    x = decoded if rate == sr else soxr.resample(decoded, sr, rate, quality="VHQ")
    sf.write(src, x, rate, subtype="FLOAT")
    out = tmp_path / "out.wav"
    render(src, out, Chain([load_plugin("mp3-restore-48k")]), block=512, rate_out=rate,
           progress=False)  # fmt: skip
    y, r = sf.read(out, dtype="float32", always_2d=True)
    assert r == rate and y.shape == x.shape
    mid = slice(rate, 9 * rate)
    gain_hf = band_db(y[mid], rate, 12000, 18000) - band_db(x[mid], rate, 12000, 18000)
    gain_lf = band_db(y[mid], rate, 200, 4000) - band_db(x[mid], rate, 200, 4000)
    assert gain_hf > 15.0 and abs(gain_lf) < 0.5, (gain_hf, gain_lf)
