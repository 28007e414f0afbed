"""The loader refuses bad plugins with one clear line; good ones load from every kind of spec."""

import pytest
import torch
from plugins import Fir, Gain

from realtime.contract import PluginError
from realtime.loader import available_plugins, load_plugin


@pytest.fixture(scope="module")
def fir_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugins") / "fir.ts"
    torch.jit.save(torch.jit.script(Fir([0.5, 0.5], block_multiple=4, latency=1)), str(path))
    return path


def test_torchscript_file_loads_with_its_metadata(fir_file):
    p = load_plugin(fir_file)
    assert (p.info.sample_rate_in, p.info.block_multiple, p.info.latency) == (16000, 4, 1)
    assert p.info.streaming and p.info.parameters == {"unused": (0.0, 1.0, 0.0)}
    y = p.process(torch.ones(1, 1, 8))
    assert y.shape == (1, 1, 8) and float(y[0, 0, -1]) == 1.0


def test_registered_name_and_module_attribute_load():
    assert "resample-8k-16k" in available_plugins()
    assert load_plugin("resample-8k-16k").info.ratio == 2
    p = load_plugin("realtime.plugins.resample:resample_8k_16k")
    assert p.info.sample_rate_out == 16000


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 320
    return msg


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("absent.ts", None, "not found"),
        ("empty.ts", b"", "empty"),
        ("junk.ts", b"PK\x03\x04 not a zip", "not a loadable TorchScript"),
        ("", None, "directory"),
    ],
)
def test_bad_files_are_refused(tmp_path, name, content, expect):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PluginError) as exc:
        load_plugin(path)
    assert expect in one_line(exc)


def broken(**changes):
    g = Gain(16000)
    for k, v in changes.items():
        if v is None:
            delattr(g, k)
        else:
            setattr(g, k, v)
    return g


@pytest.mark.parametrize(
    ("plugin", "expect"),
    [
        (broken(latency=None), "missing metadata attribute 'latency'"),
        (broken(sample_rate_in="16k"), "must be int"),
        (broken(latency=-3), "latency must be >= 0"),
        (broken(channels=0), "channels must be positive"),
        (broken(streaming=False), "missing metadata attribute 'window'"),
        (broken(parameter_min=[]), "same length"),
        (broken(parameter_default=[9.0]), "outside"),
    ],
)
def test_bad_metadata_is_refused(plugin, expect):
    with pytest.raises(PluginError) as exc:
        load_plugin(plugin)
    assert expect in one_line(exc)


class WrongLength(Gain):
    def forward(self, x):
        return x[..., :-1]


class Nan(Gain):
    def forward(self, x):
        return x * float("nan")


class Raises(Gain):
    def forward(self, x):
        raise RuntimeError("weights not initialised")


@pytest.mark.parametrize(
    ("cls", "expect"),
    [
        (WrongLength, "expected (1, 1, 256)"),
        (Nan, "NaN or Inf"),
        (Raises, "failed on a probe block"),
    ],
)
def test_probe_refuses_bad_output(cls, expect):
    with pytest.raises(PluginError) as exc:
        load_plugin(cls(16000))
    assert expect in one_line(exc)


def test_block_multiple_must_map_to_whole_output_samples():
    g = Gain(16000)
    g.sample_rate_out = 24000  # 3/2: an odd block multiple cannot work
    with pytest.raises(PluginError) as exc:
        load_plugin(g, probe=False)
    assert "whole number" in one_line(exc)


def test_parameters_are_range_checked():
    p = load_plugin(Gain(16000))
    p.set_parameter("gain", 2.0)
    with pytest.raises(PluginError, match="outside"):
        p.set_parameter("gain", 9.0)
    with pytest.raises(PluginError, match="no parameter"):
        p.set_parameter("volume", 1.0)
