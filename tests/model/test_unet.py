"""The wavelet U-Net: baseline at init, declared latency, streaming == offline, config."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from model.streaming import causal_delay
from model.unet import UNetConfig, WaveletUNet, linear_interpolator, sinc_interpolator

TINY = [
    UNetConfig(levels=2, base_channels=4, kernel_size=3, lookahead=3),
    UNetConfig(levels=3, base_channels=4, growth=1.5, wavelet="haar", lookahead=0),
    UNetConfig(levels=2, channels=[3, 5], kernel_size=5, rate_in=16000, rate_out=48000),
    UNetConfig(levels=1, base_channels=2, wavelet="sym3", rate_in=16000, rate_out=16000),
    UNetConfig(levels=2, base_channels=4, lookahead=2, rate_in=16000, rate_out=48000,
               interp_zeros=3),
    UNetConfig(levels=2, base_channels=4, lookahead=1, interp_zeros=2, context=[1, 3, 2]),
    UNetConfig(levels=2, base_channels=4, lookahead=1, context=[1, 1], context_kernel=1),
    UNetConfig(levels=3, base_channels=3, lookahead=2, interp_zeros=2, gate="deep"),
]  # fmt: skip


def _randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        nn.init.normal_(p, std=0.3, generator=gen)
    return net


def _signal(cfg: UNetConfig, blocks: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    n = blocks * cfg.block_multiple
    return torch.randn(batch, 1, n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cfg", TINY, ids=str)
def test_zero_init_is_the_delayed_interpolator(cfg: UNetConfig) -> None:
    net = WaveletUNet(cfg)
    x = _signal(cfg, 20, batch=2)
    interp = (
        sinc_interpolator(cfg.ratio, cfg.interp_zeros)
        if cfg.interp_zeros
        else linear_interpolator(cfg.ratio)
    )
    with torch.no_grad():
        y = net(x)
        base = interp(x)
    assert y.shape == (2, 1, x.size(-1) * cfg.ratio)
    delay = net.latency_samples() - cfg.interp_delay
    assert torch.equal(y, causal_delay(base, delay))


@pytest.mark.parametrize("ratio", [2, 3])
def test_sinc_interpolator_passes_samples_and_keeps_the_band_flat(ratio: int) -> None:
    """Input samples come out unchanged after ``Z * R - 1`` samples; a tone at 3/4 of the input
    Nyquist frequency keeps its level within 0.5 dB, where linear interpolation loses > 2 dB."""
    zeros = 6
    n = torch.arange(600, dtype=torch.float64)
    x = torch.sin(2 * math.pi * 0.375 * n).float()[None, None]  # 0.375 cycles/sample = 3/4 Nyq
    delay = zeros * ratio - 1
    with torch.no_grad():
        y = sinc_interpolator(ratio, zeros)(x)[0, 0]
        lin = linear_interpolator(ratio)(x)[0, 0]
    torch.testing.assert_close(y[delay::ratio][:550], x[0, 0, :550], atol=1e-6, rtol=0)

    def level_db(sig: torch.Tensor) -> float:
        mid = sig[200 * ratio : 500 * ratio]
        return 10 * math.log10(float(mid.pow(2).mean()) / 0.5)  # a full-scale sine: 0.5

    assert abs(level_db(y)) < 0.5
    assert level_db(lin) < -2.0


@pytest.mark.parametrize("cfg", [UNetConfig(), *TINY], ids=str)
def test_latency_is_measured_by_an_impulse(cfg: UNetConfig) -> None:
    net = WaveletUNet(cfg)
    x = torch.zeros(1, 1, 32 * cfg.block_multiple * cfg.ratio)
    m0 = 5
    x[..., m0] = 1.0  # input time m0 = output time ratio * m0
    with torch.no_grad():
        y = net(x)[0, 0]
    assert int(y.argmax()) == cfg.ratio * m0 + net.latency_samples()
    assert float(y.max()) == pytest.approx(1.0)


def test_output_estimates_the_target_delayed_by_latency() -> None:
    cfg = UNetConfig(levels=2, base_channels=4, lookahead=5)
    net = WaveletUNet(cfg)
    n = torch.arange(400, dtype=torch.float64)
    freq = 150.0  # Hz, well inside the band where linear interpolation is accurate
    x = torch.sin(2 * math.pi * freq * n / cfg.rate_in).float()[None, None]
    t_out = torch.arange(400 * cfg.ratio, dtype=torch.float64) - net.latency_samples()
    target = torch.sin(2 * math.pi * freq * t_out / cfg.rate_out).float()
    with torch.no_grad():
        y = net(x)[0, 0]
    start = 2 * net.latency_samples()
    assert (y[start:] - target[start:]).abs().max() < 0.01


@pytest.mark.parametrize("cfg", TINY, ids=str)
def test_streaming_equals_offline(cfg: UNetConfig) -> None:
    net = _randomize(WaveletUNet(cfg))
    x = _signal(cfg, 60, batch=2, seed=1)
    with torch.no_grad():
        expected = net(x)
        stream = net.streaming()
        sizes = [1, 3, 7, 2, 16, 1, 5, 25]  # block multiples, sums to 60
        outs, start = [], 0
        for k in sizes:
            n = k * cfg.block_multiple
            outs.append(stream(x[..., start : start + n]))
            start += n
        torch.testing.assert_close(torch.cat(outs, -1), expected, atol=1e-5, rtol=1e-5)
        stream.reset()
        torch.testing.assert_close(stream(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stream(x[:1]), net(x[:1]), atol=1e-5, rtol=1e-5)


def test_default_config_fits_the_targets() -> None:
    cfg = UNetConfig()
    net = WaveletUNet(cfg)
    assert (cfg.rate_in, cfg.rate_out) == (8000, 16000)
    assert net.latency_samples() <= 64  # 4 ms at 16 kHz, lookahead and alignment included
    assert 32 % cfg.block_multiple == 0  # 32 input samples -> 64-sample output blocks
    assert 100_000 <= sum(p.numel() for p in net.parameters()) <= 500_000


def test_config_round_trip_and_refusals() -> None:
    cfg = UNetConfig(levels=2, channels=[3, 5], lookahead=7, wavelet="sym4")
    assert UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown UNetConfig keys"):
        UNetConfig.from_dict({**cfg.to_dict(), "nope": 1})
    with pytest.raises(ValueError, match="whole multiple"):
        UNetConfig(rate_in=16000, rate_out=44100)
    with pytest.raises(ValueError, match="channels needs"):
        UNetConfig(levels=3, channels=[4, 8])
    with pytest.raises(ValueError, match="discrete wavelet"):
        UNetConfig(wavelet="morl")
    with pytest.raises(ValueError, match="context dilations"):
        UNetConfig(context=[2, 0])
    with pytest.raises(ValueError, match="context_kernel"):
        UNetConfig(context=[1], context_kernel=-1)
    with pytest.raises(ValueError, match="gate must be"):
        UNetConfig(gate="both")
    old = {k: v for k, v in cfg.to_dict().items() if k != "gate"}  # a checkpoint from before
    assert UNetConfig.from_dict(old).gate == "skip"


def test_deep_gate_opens_the_skip_by_the_deep_path_too() -> None:
    """With the deep path's half of each gate at zero, the "deep" gate is the "skip" gate; with
    it non-zero, the deep path changes how much of the skip passes."""
    cfg = UNetConfig(levels=2, base_channels=4, lookahead=1, interp_zeros=2)
    skip = _randomize(WaveletUNet(cfg))
    deep = WaveletUNet(UNetConfig(**{**cfg.to_dict(), "gate": "deep"}))
    theirs = dict(skip.named_parameters())
    x = _signal(cfg, 40, batch=1, seed=2)
    with torch.no_grad():
        for name, p in deep.named_parameters():
            q = theirs[name]
            if ".gate." in name and name.endswith("weight"):
                c = q.size(1)  # the gate's input: [skip (c channels), deep path (c channels)]
                assert p.shape == (q.size(0), 2 * c, 1)
                p.zero_()
                p[:, :c] = q
            else:
                p.copy_(q)
        torch.testing.assert_close(deep(x), skip(x))
        for name, p in deep.named_parameters():
            if ".gate." in name and name.endswith("weight"):
                p[:, p.size(1) // 2 :] = 1.0
        assert (deep(x) - skip(x)).abs().max() > 1e-3


def test_bad_input_shape_or_length_is_refused() -> None:
    net = WaveletUNet(UNetConfig(levels=3, base_channels=2))
    with pytest.raises(ValueError, match="multiple of 4"):
        net(torch.zeros(1, 1, 30))
    with pytest.raises(ValueError, match=r"\(batch, 1, time\)"):
        net(torch.zeros(1, 2, 32))


def test_gradients_reach_the_output_conv_at_init() -> None:
    net = WaveletUNet(UNetConfig(levels=2, base_channels=4))
    net(torch.randn(2, 1, 64)).pow(2).mean().backward()
    out = net.body.out.conv.weight.grad
    assert out is not None and out.abs().sum() > 0


def test_pointwise_context_keeps_no_cache() -> None:
    """``context_kernel=1`` makes the context convs pointwise: capacity with no cache (nor any
    reach into the past); by default they take the network's kernel."""
    cfg = UNetConfig(levels=2, base_channels=4, lookahead=1, context=[1, 2])
    pointwise = UNetConfig(**{**cfg.to_dict(), "context_kernel": 1})
    caches = [c.cache.size(1) for c in WaveletUNet(cfg).streaming().body.context]
    assert caches == [cfg.kernel_size - 1, 2 * (cfg.kernel_size - 1)]
    assert [c.cache.size(1) for c in WaveletUNet(pointwise).streaming().body.context] == [0, 0]
