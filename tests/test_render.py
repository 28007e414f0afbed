"""``wavehost render``: length, alignment, formats, bad input, no half-written files."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from plugins import Fir, Gain

from realtime.chain import Chain
from realtime.cli import EXIT_REPAIRED, EXIT_USER_ERROR, main
from realtime.loader import load_plugin
from realtime.render import RenderError, render


@pytest.fixture
def tone8k(tmp_path):
    sr = 8000
    t = np.arange(int(2.5 * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1700 * t)).astype(np.float32)
    path = tmp_path / "in.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    return path, x


@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg", "mp3"])
def test_formats_read_and_length_is_input_times_ratio(tmp_path, tone8k, suffix):
    src, x = tone8k
    if suffix != "wav":
        other = tmp_path / f"in.{suffix}"
        sf.write(other, x, 8000, format=suffix.upper())
        src = other
    out = tmp_path / "out.wav"
    res = render(src, out, Chain([load_plugin("resample-8k-16k")]), progress=False)
    y, sr = sf.read(out)
    assert sr == 16000 and len(y) == res.frames_out == 2 * sf.info(src).frames


def test_output_is_latency_compensated(tmp_path, tone8k):
    src, _ = tone8k
    out = tmp_path / "out.flac"
    render(src, out, Chain([load_plugin("resample-8k-16k")]), block=100, progress=False)
    y, _ = sf.read(out)
    t = np.arange(len(y)) / 16000
    ref = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1700 * t)
    assert np.max(np.abs(y - ref)[200:-200]) < 1e-4  # 24-bit FLAC + filter ripple


def test_fir_render_equals_offline_convolution(tmp_path, tone8k):
    src, x = tone8k
    taps = [0.25, 0.5, 0.25]
    fir = Fir(taps, rate=8000, block_multiple=32, latency=1)
    out = tmp_path / "out.wav"
    render(src, out, Chain([load_plugin(fir)]), block=100, progress=False)
    y, _ = sf.read(out, dtype="float32")
    ref = np.convolve(x, taps)[1 : len(x) + 1]  # latency 1 removed
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_nan_input_is_sanitized_counted_and_reported(tmp_path, tone8k, capsys):
    _, x = tone8k
    x = x.copy()
    x[[10, 500, 501]] = [np.nan, np.inf, -np.inf]
    src = tmp_path / "nan.wav"
    sf.write(src, x, 8000, subtype="FLOAT")
    out = tmp_path / "out.wav"
    code = main(["render", str(src), str(out), "--plugin", "resample-8k-16k", "--quiet"])
    assert code == EXIT_REPAIRED
    assert "3 NaN/Inf input samples replaced" in capsys.readouterr().err
    assert np.isfinite(sf.read(out)[0]).all()


class GoesBad(Gain):
    """Passes the probe, then returns NaN (call 5) or a wrong length (call 9)."""

    def __init__(self, mode: str) -> None:
        super().__init__(8000)
        self.mode, self.calls = mode, 0

    def forward(self, x):
        self.calls += 1
        if self.mode == "nan" and self.calls == 5:
            return x * float("nan")
        if self.mode == "length" and self.calls >= 9:
            return x[..., :-3]
        return x.clone()


@pytest.mark.parametrize("mode", ["nan", "length"])
def test_plugin_going_bad_midway_is_bypassed_and_reported(tmp_path, tone8k, mode):
    src, x = tone8k
    out = tmp_path / "out.wav"
    res = render(src, out, Chain([load_plugin(GoesBad(mode))]), block=256, progress=False)
    y, _ = sf.read(out, dtype="float32")
    assert len(y) == len(x) and np.isfinite(y).all()
    health = res.health[0]
    if mode == "nan":
        assert health.nonfinite_blocks == 1 and not health.bypassed
    else:
        assert health.bypassed and "returned (1, 1, 253)" in health.error
    # the bypass is a delay line of the declared latency (0): the audio is still the input
    assert np.max(np.abs(y - x)) < 1e-6


def assert_one_line_error(code: int, err: str, expect: str) -> None:
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("wavehost: error:") and expect in lines[0], err


def test_cli_bad_inputs_one_line_each(tmp_path, tone8k, capsys):
    src, _ = tone8k
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00junkjunkjunk")
    data = src.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "bad.ts").write_bytes(b"garbage")
    out = str(tmp_path / "o.wav")
    default = ["--plugin", "resample-8k-16k"]
    cases = [
        ([str(tmp_path / "missing.wav"), out, *default], "not found"),
        ([str(tmp_path / "zero.wav"), out, *default], "empty"),
        ([str(tmp_path / "junk.wav"), out, *default], "cannot read junk.wav"),
        ([str(tmp_path / "cut.wav"), out, *default], "truncated"),
        ([str(src), "/proc/nope/o.wav", *default], "cannot write output"),
        ([str(src), str(tmp_path / "o.mp3"), *default], "must be .wav or .flac"),
        ([str(src), out, "--plugin", str(tmp_path / "bad.ts")], "TorchScript"),
        ([str(src), out, "--plugin", "no-such-plugin"], "unknown plugin"),
        ([str(src), out, *default, "--param", "gain=7"], "outside"),
        ([str(src), out, *default, "--param", "gain"], "NAME=VALUE"),
        ([str(src), out, *default, "--device", "tpu"], "unknown device 'tpu'"),
    ]
    if not torch.cuda.is_available():
        cases.append(([str(src), out, *default, "--device", "cuda"], "CUDA is not available"))
    for args, expect in cases:
        code = main(["render", *args, "--quiet"])
        assert_one_line_error(code, capsys.readouterr().err, expect)
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_render_on_cuda_reports_the_graph_and_equals_the_cpu(tmp_path, tone8k, capsys):
    src, _ = tone8k
    outs = {}
    for device in ("cpu", "cuda"):
        outs[device] = tmp_path / f"{device}.wav"
        args = ["render", str(src), str(outs[device]), "--plugin", "bwe-8k-16k", "--quiet"]
        assert main([*args, "--device", device]) == 0
    assert "plugin bwe-8k-16k on cuda: CUDA graph replay" in capsys.readouterr().err
    y_cpu, y_cuda = (sf.read(outs[d], dtype="float32")[0] for d in ("cpu", "cuda"))
    assert y_cpu.shape == y_cuda.shape and np.max(np.abs(y_cpu - y_cuda)) <= 1e-4


def test_installed_command_reports_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "realtime.cli",
            "render",
            str(tmp_path / "none.wav"),
            "o.wav",
            "--plugin",
            "resample-8k-16k",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(proc.returncode, proc.stderr, "input file not found")


def test_failed_render_leaves_no_file(tmp_path):
    x = np.random.default_rng(0).standard_normal(16000 * 4).astype(np.float32) * 0.1
    full = tmp_path / "full.flac"
    sf.write(full, x, 16000)
    data = full.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])  # decodes until the middle, then fails
    out = tmp_path / "out.wav"
    with pytest.raises(RenderError, match="truncated or corrupt"):
        render(cut, out, Chain([load_plugin(torch.jit.script(Gain(16000)))]), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.flac", "full.flac"]


def test_render_memory_does_not_grow_with_the_file(tmp_path):
    import tracemalloc

    peaks = []
    for seconds in (6, 60):
        x = np.random.default_rng(0).standard_normal(8000 * seconds).astype(np.float32) * 0.1
        src = tmp_path / f"in{seconds}.wav"
        sf.write(src, x, 8000, subtype="FLOAT")
        del x
        chain = Chain([load_plugin("resample-8k-16k")])
        tracemalloc.start()
        render(src, tmp_path / f"out{seconds}.wav", chain, block=1024, progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # 10x the audio (3.8 MB of output at 60 s), the same working memory
    assert peaks[1] < 1.3 * peaks[0] + 200_000, peaks
