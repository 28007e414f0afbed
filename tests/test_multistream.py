"""Many streams through one plugin instance: each stream's output equals running it alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plugins import Gain
from torch import nn

from model.export import export_plugin
from model.unet import UNetConfig, WaveletUNet
from realtime.contract import PluginError, PluginInfo
from realtime.loader import LoadedPlugin, load_plugin
from realtime.multistream import StreamBatcher, bench_multistream, sweep_streams

CFG = UNetConfig(levels=2, base_channels=4, lookahead=5)  # 8 -> 16 kHz, block multiple 2
BLOCK = 16  # input samples per tick
CAPACITY = 4


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Two OpenMP threads on a loaded 2-core machine cost ~200 ms a step; the host uses one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_net(seed: int = 0, trained: bool = True) -> WaveletUNet:
    """A tiny U-Net; ``trained``: random weights everywhere (else the exact delayed
    interpolator an untrained net is)."""
    net = WaveletUNet(CFG)
    if trained:
        gen = torch.Generator().manual_seed(seed)
        for p in net.parameters():
            nn.init.normal_(p, std=0.3, generator=gen)
    return net.eval()


def exported(net: WaveletUNet, folder: Path, name: str, band_top: float = 0.0) -> LoadedPlugin:
    """``net`` through the real export and the host's loader."""
    return load_plugin(export_plugin(net, folder / f"{name}.ts", name=name, band_top=band_top))


@pytest.fixture(scope="module", params=[0.0, 7600.0], ids=["plain", "band-top"])
def band_top(request: pytest.FixtureRequest) -> float:
    """Without and with the band top (its FIR keeps a state per stream too)."""
    return request.param


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory, band_top: float) -> LoadedPlugin:
    return exported(tiny_net(), tmp_path_factory.mktemp("ms"), "tiny", band_top)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, band_top: float) -> LoadedPlugin:
    """A second, independent instance for the streams-alone references."""
    return exported(tiny_net(), tmp_path_factory.mktemp("ms1"), "tiny1", band_top)


def alone(plugin: LoadedPlugin, x: np.ndarray) -> np.ndarray:
    """``x`` ``(ticks, BLOCK)`` streamed through a fresh batch-1 plugin, tick by tick."""
    plugin.reset()
    outs = [plugin.process(torch.from_numpy(b).view(1, 1, -1))[0, 0].numpy() for b in x]
    return np.stack(outs)


def test_loader_exposes_the_optional_batch_reset(plugin: LoadedPlugin) -> None:
    assert plugin.info.batch_reset is True
    assert plugin.info.max_batch == 0
    gain = Gain()
    assert PluginInfo.read(gain, "gain").batch_reset is False  # existing plugins still load
    gain.max_batch = 2
    assert PluginInfo.read(gain, "gain").max_batch == 2
    for bad in (-1, "2"):
        gain.max_batch = bad
        with pytest.raises(PluginError, match="max_batch"):
            PluginInfo.read(gain, "gain")


def test_refuses_a_plugin_without_reset_rows() -> None:
    gain = Gain()
    with pytest.raises(PluginError, match="no reset_rows"):
        StreamBatcher(LoadedPlugin(gain, PluginInfo.read(gain, "gain")), CAPACITY, BLOCK)


def test_rows_run_out_and_unknown_rows_are_refused(plugin: LoadedPlugin) -> None:
    batcher = StreamBatcher(plugin, 2, BLOCK)
    assert [batcher.join(), batcher.join()] == [0, 1]
    with pytest.raises(RuntimeError, match="all 2 stream rows"):
        batcher.join()
    batcher.leave(0)
    with pytest.raises(ValueError, match="no stream"):
        batcher.leave(0)
    with pytest.raises(ValueError, match=r"rows \[0\] have no stream"):
        batcher.process({0: np.zeros((BLOCK, 1), np.float32)})
    assert batcher.join() == 0


# Each tick: streams leave (indices into the active list, sorted), then some join.
EVENTS = st.lists(
    st.tuples(st.lists(st.integers(0, CAPACITY - 1), max_size=2), st.integers(0, 2)),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=EVENTS, seed=st.integers(0, 2**16))
def test_each_stream_equals_running_it_alone(
    plugin: LoadedPlugin, single: LoadedPlugin, events: list[tuple[list[int], int]], seed: int
) -> None:
    """Random joins and leaves at random ticks; every stream's output, from its join to its
    leave, equals the same input through a fresh single-stream plugin."""
    rng = np.random.default_rng(seed)
    batcher = StreamBatcher(plugin, CAPACITY, BLOCK)
    sessions: dict[int, tuple[list, list]] = {}  # row -> (inputs, outputs) of its current stream
    finished: list[tuple[list, list]] = []
    for leaves, joins in [*events, ([], 0)]:
        active = sorted(batcher.active)
        for i in sorted({i for i in leaves if i < len(active)}):
            batcher.leave(active[i])
            finished.append(sessions.pop(active[i]))
        for _ in range(min(joins, CAPACITY - len(batcher.active))):
            sessions[batcher.join()] = ([], [])
        blocks = {r: (0.3 * rng.standard_normal((BLOCK, 1))).astype(np.float32) for r in sessions}
        out = batcher.process(blocks)
        assert set(out) == set(sessions)
        for row, (ins, outs) in sessions.items():
            ins.append(blocks[row][:, 0])
            outs.append(out[row][:, 0].copy())
    for ins, outs in [*finished, *sessions.values()]:
        np.testing.assert_allclose(np.stack(outs), alone(single, np.stack(ins)), atol=1e-5, rtol=0)


def test_a_late_joiner_gets_a_fresh_run_in_a_used_row(
    plugin: LoadedPlugin, single: LoadedPlugin
) -> None:
    """Row 1 carries a loud stream for 5 ticks, which leaves; a stream joining there later gets
    exactly a fresh run, and row 0's stream never notices."""
    rng = np.random.default_rng(7)
    x = (0.3 * rng.standard_normal((12, 2, BLOCK))).astype(np.float32)
    batcher = StreamBatcher(plugin, 2, BLOCK)
    a, b = batcher.join(), batcher.join()
    out_a, out_c = [], []
    for t in range(12):
        if t == 5:
            batcher.leave(b)
        if t == 8:
            assert batcher.join() == b
        blocks = {a: x[t, 0, :, None]}
        if t < 5 or t >= 8:
            blocks[b] = 10 * x[t, 1, :, None] if t < 5 else x[t, 1, :, None]
        out = batcher.process(blocks)
        out_a.append(out[a][:, 0].copy())
        if t >= 8:
            out_c.append(out[b][:, 0].copy())
    np.testing.assert_allclose(np.stack(out_a), alone(single, x[:, 0]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.stack(out_c), alone(single, x[8:, 1]), atol=1e-5, rtol=0)


def test_per_stream_latency_is_the_declared_latency(tmp_path: Path) -> None:
    """An untrained net is the delayed linear interpolator: an impulse at a stream's input
    sample m peaks at its output sample R·m + latency, counted from its own join."""
    plugin = exported(tiny_net(trained=False), tmp_path, "dry")
    batcher = StreamBatcher(plugin, 3, BLOCK)
    first = batcher.join()
    outs = []
    for t in range(6):
        if t == 2:
            late = batcher.join()
        blocks = {first: np.zeros((BLOCK, 1), np.float32)}
        if t >= 2:
            x = np.zeros((BLOCK, 1), np.float32)
            x[5, 0] = 1.0 if t == 2 else 0.0
            blocks[late] = x
        out = batcher.process(blocks)
        if t >= 2:
            outs.append(out[late][:, 0].copy())
    ratio = CFG.ratio
    assert batcher.latency == plugin.info.latency
    assert int(np.argmax(np.concatenate(outs))) == ratio * 5 + batcher.latency
    assert batcher.block_out == BLOCK * ratio


def test_bench_hooks_run_on_the_cpu(plugin: LoadedPlugin) -> None:
    result = bench_multistream(plugin, 3, 80, "cpu", ticks=5, warmup=1)
    assert (result["n_streams"], result["device"], result["graphs"]) == (3, "cpu", False)
    assert len(result["tick_ms"]) == 5 and result["budget_ms"] == pytest.approx(10.0)
    assert result["within_budget"] == (result["p99_ms"] <= result["budget_ms"])
    sweep = sweep_streams(plugin, 80, "cpu", ticks=3, limit=2)
    assert [r["n_streams"] for r in sweep["runs"]][:1] == [1]
    assert sweep["max_streams"] in (0, 1, 2)
