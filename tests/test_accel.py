"""Plugins on a device: the staging path on the CPU here; the CUDA checks where a GPU is present."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from plugins import Fir, Gain, Slow
from test_multistream import (  # _one_thread: the autouse fixture, for these tests too
    BLOCK,
    CFG,
    _one_thread,  # noqa: F401
    exported,
    tiny_net,
)

from realtime.accel import DeviceError, DevicePlugin, module_on, on_device, resolve_device
from realtime.chain import Chain
from realtime.contract import PluginError, PluginInfo
from realtime.loader import LoadedPlugin
from realtime.multistream import StreamBatcher, bench_multistream

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: none on this machine"
)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return tiny_net(seed=3)


@pytest.fixture(scope="module")
def plugin(net: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> LoadedPlugin:
    return exported(net, tmp_path_factory.mktemp("accel"), "tiny")


def signal(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(batch, 1, n, generator=torch.Generator().manual_seed(seed))


def stream(runner, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``x`` through ``runner`` in consecutive blocks of ``sizes`` samples (outputs copied: the
    fast path hands back one reused buffer)."""
    outs, start = [], 0
    for n in sizes:
        outs.append(runner(x[..., start : start + n]).clone())
        start += n
    return torch.cat(outs, -1)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "bogus", "cuda:x"):
        with pytest.raises(DeviceError, match="use cpu, cuda or cuda:N"):
            resolve_device(bad)
    if torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA device\\(s\\) visible"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        for spec in ("cuda", "cuda:1"):
            with pytest.raises(DeviceError, match="CUDA is not available") as err:
                resolve_device(spec)
            assert "\n" not in str(err.value)


def test_device_plugin_on_cpu_streams_like_the_offline_net(
    net: torch.nn.Module, plugin: LoadedPlugin
) -> None:
    """Fast-path blocks and other lengths interleaved, batch 2, through the staging buffers."""
    runner = DevicePlugin(plugin, "cpu", block=BLOCK, batch=2)
    assert not runner.graphed and "need a CUDA device" in runner.graph_status
    sizes = [BLOCK, BLOCK, 6, BLOCK, 2 * BLOCK, BLOCK, 10]
    x = signal(2, sum(sizes))
    with torch.no_grad():
        expected = net(x)
    torch.testing.assert_close(stream(runner, x, sizes), expected, atol=1e-5, rtol=0)
    runner.reset()
    runner.host_input.copy_(x[..., :BLOCK])
    y = runner(runner.host_input)  # the zero-copy way in
    assert y is runner.host_output
    torch.testing.assert_close(y, expected[..., : BLOCK * CFG.ratio], atol=1e-5, rtol=0)
    runner.reset_rows(torch.tensor([1]))  # row 1 restarts, row 0 goes on
    y = runner(x[..., BLOCK : 2 * BLOCK])
    r = CFG.ratio
    torch.testing.assert_close(y[0], expected[0, :, BLOCK * r : 2 * BLOCK * r], atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(y[1], net(x[1:, :, BLOCK : 2 * BLOCK])[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="runs batch 2, got 1"):
        runner(x[:1, :, :BLOCK])


def test_device_plugin_is_a_copy(net: torch.nn.Module, plugin: LoadedPlugin) -> None:
    x = signal(1, BLOCK)
    before = plugin.process(x).clone()
    plugin.reset()
    runner = DevicePlugin(plugin, "cpu", block=BLOCK)
    runner.set_parameter("mix", 0.0)
    runner(signal(1, BLOCK, seed=1))
    torch.testing.assert_close(plugin.process(x), before)  # state and parameter untouched
    plugin.reset()


def test_chain_on_device_equals_chain_on_cpu(plugin: LoadedPlugin) -> None:
    """The wrapped plugin drops into a Chain unchanged: same output, reset and parameters."""
    plain = Chain([plugin])
    dev = Chain([on_device(plugin, "cpu", block=BLOCK)])
    assert (dev.block, dev.latency) == (plain.block, plain.latency)
    x = signal(1, 8 * BLOCK, seed=2)[0].T.numpy().copy()  # (frames, 1)
    for chain in (plain, dev):
        chain.reset()
    for mix in (1.0, 0.0):
        plain.stages[0].plugin.set_parameter("mix", mix)
        dev.stages[0].plugin.set_parameter("mix", mix)
        for k in range(8):
            block = x[k * BLOCK : (k + 1) * BLOCK]
            np.testing.assert_allclose(dev.step(block), plain.step(block), atol=1e-6, rtol=0)
    assert not any(h.bypassed for h in dev.health)
    plain.stages[0].plugin.set_parameter("mix", 1.0)


def test_refusals_are_one_line(plugin: LoadedPlugin) -> None:
    windowed = LoadedPlugin(
        plugin.module,
        replace(plugin.info, streaming=False, window=8, hop=4, window_shape="hann"),
    )
    with pytest.raises(PluginError, match="windowed"):
        DevicePlugin(windowed, "cpu", block=BLOCK)
    with pytest.raises(PluginError, match="not a positive multiple"):
        DevicePlugin(plugin, "cpu", block=BLOCK + 1)
    capped = LoadedPlugin(plugin.module, replace(plugin.info, max_batch=2))
    with pytest.raises(PluginError, match=r"batch 3 outside 1\.\.2"):
        DevicePlugin(capped, "cpu", block=BLOCK, batch=3)
    gain = Gain()
    no_rows = DevicePlugin(LoadedPlugin(gain, PluginInfo.read(gain, "gain")), "cpu", block=4)
    with pytest.raises(PluginError, match="no reset_rows"):
        no_rows.reset_rows(torch.tensor([0]))
    slow = Slow(16000)
    assert module_on(slow, torch.device("cpu"), "slow") is slow  # plain objects stay as they are
    with pytest.raises(PluginError, match=r"plain Python object.*cannot run on cuda"):
        module_on(slow, torch.device("cuda"), "slow")


# ---- CUDA (skipped, not faked, without a GPU) -----------------------------------------------


@needs_cuda
@pytest.mark.parametrize("graphs", [True, False])
def test_cuda_equals_cpu(net: torch.nn.Module, plugin: LoadedPlugin, graphs: bool) -> None:
    runner = DevicePlugin(plugin, "cuda", block=BLOCK, batch=3, graphs=graphs)
    assert runner.graphed == graphs, runner.graph_status
    sizes = [BLOCK] * 12 + [6, BLOCK, 2 * BLOCK, BLOCK]
    x = signal(3, sum(sizes), seed=4)
    with torch.no_grad():
        expected = net(x)
    torch.testing.assert_close(stream(runner, x, sizes), expected, atol=1e-4, rtol=0)


@needs_cuda
@pytest.mark.parametrize("graphs", [True, False])
def test_cuda_blocks_allocate_nothing(plugin: LoadedPlugin, graphs: bool) -> None:
    """Fast-path blocks: no device memory request at all with a graph; with plain launches,
    no new segment (cudaMalloc) and the same reserved memory."""
    runner = DevicePlugin(plugin, "cuda", block=BLOCK, batch=4, graphs=graphs)
    assert runner.graphed == graphs, runner.graph_status
    x = signal(4, BLOCK)
    for _ in range(5):
        runner(x)
    before = torch.cuda.memory_stats(runner.device)
    for _ in range(50):
        runner.host_input.copy_(x)
        runner(runner.host_input)
    after = torch.cuda.memory_stats(runner.device)

    def grew(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    assert grew("segment.all.allocated") == 0
    assert grew("reserved_bytes.all.current") == 0
    if graphs:
        assert grew("allocation.all.allocated") == 0


@needs_cuda
def test_graph_capture_falls_back_when_state_is_not_in_place() -> None:
    """Fir reassigns its cache each call, so a replayed graph would read a stale cache: the
    check against plain launches catches it, the reason is reported, the output stays right."""
    fir = Fir([0.5, -0.25, 0.125, 1.0])
    loaded = LoadedPlugin(fir, PluginInfo.read(fir, "fir"))
    runner = DevicePlugin(loaded, "cuda", block=8, graphs=True)
    assert not runner.graphed
    assert "differed from plain launches" in runner.graph_status
    x = signal(1, 64, seed=5)
    reference = DevicePlugin(loaded, "cpu", block=8)
    torch.testing.assert_close(stream(runner, x, [8] * 8), stream(reference, x, [8] * 8))


@needs_cuda
def test_multistream_on_cuda_equals_cpu(plugin: LoadedPlugin) -> None:
    """The same joins, leaves and input through a CUDA batcher (graph) and a CPU one."""
    rng = np.random.default_rng(6)
    gpu, cpu = (StreamBatcher(plugin, 4, BLOCK, d) for d in ("cuda", "cpu"))
    assert gpu.runner.graphed, gpu.runner.graph_status
    schedule = {0: [None, None, None], 3: [1], 4: [None], 6: [0, None], 9: [None, 2]}
    for t in range(12):
        for leave in schedule.get(t, []):  # None: a stream joins; a row: its stream leaves
            if leave is None:
                assert gpu.join() == cpu.join()
            else:
                gpu.leave(leave)
                cpu.leave(leave)
        blocks = {r: (0.3 * rng.standard_normal((BLOCK, 1))).astype(np.float32) for r in cpu.active}
        got, want = gpu.process(blocks), cpu.process(blocks)
        assert set(got) == set(want)
        for r in want:
            np.testing.assert_allclose(got[r], want[r], atol=1e-4, rtol=0)


@needs_cuda
def test_bench_multistream_on_cuda(plugin: LoadedPlugin) -> None:
    result = bench_multistream(plugin, 8, 80, "cuda", ticks=20, warmup=5)
    assert result["graphs"], result["graph_status"]
    assert result["device_name"] == torch.cuda.get_device_name(result["device"])
    assert len(result["tick_ms"]) == 20
