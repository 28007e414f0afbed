"""``wavehost wrap``: a bare TorchScript model becomes a plugin the host loads, streams and
renders, with the latency it measured or was told, and refusals that leave nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from plugins import Gain
from torch import Tensor, nn

from realtime.accel import DevicePlugin
from realtime.chain import Chain
from realtime.cli import EXIT_USER_ERROR, main
from realtime.contract import PluginError
from realtime.loader import load_plugin
from realtime.wrap import wrap_file


class HalfDelay(nn.Module):
    """``(batch, time)``: 0.5 · x delayed by ``d`` samples, state kept per batch row."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.register_buffer("tail", torch.zeros(1, d))

    def forward(self, x: Tensor) -> Tensor:
        if self.tail.size(0) != x.size(0):
            self.tail = torch.zeros(x.size(0), self.d, device=x.device)
        full = torch.cat([self.tail, x], -1)
        self.tail = full[:, x.size(-1) :]
        return 0.5 * full[:, : x.size(-1)]

    @torch.jit.export
    def reset(self) -> None:
        self.tail.zero_()


class Repeat2(nn.Module):
    """``(batch, channels, time)`` → twice the samples, each repeated (stateless)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.repeat_interleave(2, -1)


class SpectralGain(nn.Module):
    """Scales every bin of the whole input by 0.8 (a windowed model: no state, sees a window)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.fft.irfft(0.8 * torch.fft.rfft(x), n=x.size(-1))


class Smear(nn.Module):
    """``x[n] + x[n + 1]``: non-causal, no state; streamed block by block it leaves seams."""

    def forward(self, x: Tensor) -> Tensor:
        return x + F.pad(x, (0, 1))[..., 1:]


class Fixed128(nn.Module):
    """Like a model traced for one input shape: 128 samples a call, no other length."""

    def forward(self, x: Tensor) -> Tensor:
        if x.size(-1) != 128:
            raise RuntimeError("expected 128 samples, got " + str(x.size(-1)))
        return 0.5 * x


class TwoInputs(nn.Module):
    def forward(self, x: Tensor, gain: Tensor) -> Tensor:
        return x * gain


class TwoOutputs(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x


class DropsASample(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x[..., 1:]


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: none on this machine"
)


def saved(module: nn.Module, path) -> str:
    torch.jit.script(module).save(str(path))
    return str(path)


def noise(channels: int, frames: int, seed: int = 0) -> Tensor:
    return 0.1 * torch.randn(1, channels, frames, generator=torch.Generator().manual_seed(seed))


def test_stateful_model_of_batch_time_layout_streams_stereo_with_measured_latency(tmp_path):
    out = tmp_path / "delay.ts"
    report = wrap_file(
        saved(HalfDelay(37), tmp_path / "m.ts"), out, rate=48000, channels=2, layout="bt"
    )
    assert report.lag.lag == 37 and report.lag.correlation > 0.99 and report.seam == 0.0
    assert report.has_reset and not report.warnings
    plugin = load_plugin(out)  # the file, through the host's own loader
    info = plugin.info
    assert (info.sample_rate_in, info.sample_rate_out, info.channels) == (48000, 48000, 2)
    assert (info.latency, info.streaming, info.parameters) == (37, True, {})
    x = noise(2, 200)
    first = plugin.process(x)
    torch.testing.assert_close(first[..., 37:], 0.5 * x[..., :-37])  # each channel its own row
    assert float(first[..., :37].abs().max()) == 0.0
    assert float(plugin.process(x)[..., :37].abs().max()) > 0  # the state carried over
    plugin.reset()  # calls the model's own reset()
    torch.testing.assert_close(plugin.process(x), first)


def test_rate_changing_model_latency_is_counted_at_the_output_rate(tmp_path):
    out = tmp_path / "up.ts"
    report = wrap_file(
        saved(Repeat2(), tmp_path / "m.ts"), out, rate=8000, rate_out=16000, block_multiple=4
    )
    info = load_plugin(out).info
    assert info.ratio == 2 and info.block_multiple == 4 and not report.has_reset
    assert info.latency == report.lag.lag in (0, 1)  # a sample-and-hold: half a sample late


def test_windowed_model_is_overlap_added_by_the_host(tmp_path):
    out = tmp_path / "spec.ts"
    report = wrap_file(
        saved(SpectralGain(), tmp_path / "m.ts"), out, rate=16000, window=512, hop=256
    )
    assert report.seam is None and report.lag.lag == 0 and not report.warnings
    plugin = load_plugin(out)
    assert not plugin.info.streaming and (plugin.info.window, plugin.info.hop) == (512, 256)
    chain = Chain([plugin])
    assert chain.latency == 256  # the overlap-add's window - hop, the model's own 0
    x = noise(1, 4096)[0].T.numpy().copy()
    y = np.concatenate([chain.step(x[i : i + 256]).copy() for i in range(0, 4096, 256)])
    np.testing.assert_allclose(y[512 + 256 :], 0.8 * x[512:-256], atol=1e-5)


def test_seams_and_a_wrong_latency_are_reported_not_hidden(tmp_path):
    model = saved(Smear(), tmp_path / "m.ts")
    report = wrap_file(model, tmp_path / "smear.ts", rate=16000, latency=3)
    assert report.seam > 1e-3
    assert any("seams" in w and "--window" in w for w in report.warnings)
    assert any("declared latency 3" in w and "0 samples late" in w for w in report.warnings)
    windowed = wrap_file(model, tmp_path / "smear-w.ts", rate=16000, latency=0, window=256, hop=128)
    assert not windowed.warnings


@pytest.mark.parametrize(
    ("model", "kwargs", "expect"),
    [
        (TwoInputs(), {}, "must take one tensor of layout bct and return one tensor"),
        (TwoOutputs(), {}, "must take one tensor of layout bct and return one tensor"),
        (DropsASample(), {}, "expected (1, 1, 256)"),
        (Gain(16000), {}, "already declares the plugin contract"),
        (Repeat2(), {"window": 512}, "needs both --window and --hop"),
        (Repeat2(), {"layout": "tbc"}, "layout must be one of"),
        (Repeat2(), {"rate_out": 12000, "block_multiple": 1}, "whole number"),
    ],
)
def test_bad_models_and_declarations_are_refused_in_one_line(tmp_path, model, kwargs, expect):
    out = tmp_path / "out.ts"
    out.write_bytes(b"an older file")
    with pytest.raises(PluginError) as exc:
        wrap_file(saved(model, tmp_path / "m.ts"), out, rate=8000, **kwargs)
    msg = str(exc.value)
    assert expect in msg and "\n" not in msg and len(msg) < 320
    assert out.read_bytes() == b"an older file"  # left as it was
    assert {p.name for p in tmp_path.iterdir()} == {"m.ts", "out.ts"}  # no temporary left


def test_a_model_whose_output_ignores_its_input_needs_a_declared_latency(tmp_path):
    torch.manual_seed(0)
    conv = saved(nn.Conv1d(1, 1, 3, padding=1), tmp_path / "m.ts")
    with pytest.raises(PluginError, match="declare it with --latency SAMPLES"):
        wrap_file(conv, tmp_path / "out.ts", rate=16000)
    assert not (tmp_path / "out.ts").exists()


def test_cli_wraps_then_renders_through_the_wrapped_plugin(tmp_path, capsys):
    model = saved(HalfDelay(37), tmp_path / "m.ts")
    out = tmp_path / "delay.ts"
    assert main(["wrap", model, str(out), "--rate", "16000", "--layout", "bt"]) == 0
    printed = capsys.readouterr().out
    assert "latency 37 samples (2.31 ms)" in printed and "warning" not in printed
    x = noise(1, 16000)[0, 0].numpy()
    sf.write(tmp_path / "in.wav", x, 16000, subtype="FLOAT")
    argv = ["render", str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--plugin", str(out)]
    assert main([*argv, "--quiet"]) == 0
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    np.testing.assert_allclose(y, 0.5 * x, atol=1e-6)  # the declared 37 samples compensated


def test_cli_refusal_is_one_line_with_exit_2(tmp_path, capsys):
    argv = ["wrap", str(tmp_path / "absent.ts"), str(tmp_path / "out.ts"), "--rate", "16000"]
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("wavehost: error:") and "not found" in err and "\n" not in err


def test_loader_points_a_bare_model_at_wrap(tmp_path):
    with pytest.raises(PluginError, match=r"wavehost wrap MODEL OUT\.ts --rate HZ"):
        load_plugin(saved(Repeat2(), tmp_path / "bare.ts"))


def test_a_target_in_a_missing_folder_is_refused_before_anything_is_written(tmp_path):
    model = saved(HalfDelay(3), tmp_path / "m.ts")
    with pytest.raises(PluginError, match=r"folder .* does not exist"):
        wrap_file(model, tmp_path / "nowhere" / "out.ts", rate=16000, layout="bt")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("graphs", [True, False])
def test_wrapped_model_runs_staged_on_a_device_as_on_the_cpu(tmp_path, device, graphs):
    out = tmp_path / "delay.ts"
    wrap_file(saved(HalfDelay(37), tmp_path / "m.ts"), out, rate=48000, channels=2, layout="bt")
    runner = DevicePlugin(load_plugin(out), device, block=128, graphs=graphs)
    assert runner.graph_status  # the graph in use, or why plain launches are used
    x = noise(2, 128 * 8)
    got = torch.cat([runner(x[..., i : i + 128]).clone() for i in range(0, x.size(-1), 128)], -1)
    torch.testing.assert_close(got, load_plugin(out).process(x), atol=1e-5, rtol=0)


def test_a_fixed_length_model_is_fed_in_pieces_with_exact(tmp_path):
    model = saved(Fixed128(), tmp_path / "m.ts")
    out = tmp_path / "fixed.ts"
    with pytest.raises(PluginError, match="add --exact"):
        wrap_file(model, out, rate=16000, block_multiple=128)
    assert not out.exists()
    report = wrap_file(model, out, rate=16000, block_multiple=128, exact=True)
    assert report.exact and report.lag.lag == 0 and report.seam is None and not report.warnings
    plugin = load_plugin(out)
    x = noise(1, 128 * 5)
    torch.testing.assert_close(plugin.process(x), 0.5 * x)
    with pytest.raises(PluginError, match="--exact is for streaming models"):
        wrap_file(model, out, rate=16000, block_multiple=128, exact=True, window=256, hop=128)
