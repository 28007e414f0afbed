"""Per-block latency: compute time distributions over a grid, host overhead, budget, misses.

For every plugin and every cell of rate × block × threads (device rate ``rate`` Hz, device block
``block`` samples) three things are measured on pre-generated inputs after a warm-up:

- ``plugin_ms``: the plugin's ``process`` alone (wall time; ``plugin_cpu_ms``: the thread's CPU
  time, which leaves out preemption by other processes on a shared machine), on blocks of the
  plugin's input rate that carry one device block of audio (``block · rate_in / rate``
  samples, rounded to its block multiple);
- ``path_ms``: :meth:`Processor.process` for one device block (edge resamplers, re-blocking,
  rings, the chain's tensor conversions and bypass, and the plugin): what an engine worker does;
- ``live``: per engine mode, the real :class:`Engine` callback driven by a clock thread at
  absolute deadlines ``t0 + (n + 1) · block / rate`` (as a device would), counting deadline
  misses, callback durations and, in threaded mode, the turnaround from the callback's hand-off
  to the worker's finished block.

The ``identity`` plugin (a pure delay of 0 samples at the device rate) isolates the host's own
overhead per block; the classic DSP resampler ``resample-8k-16k`` is measured in the same run as
the reference, so every plugin's cost is also a ratio to it.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from bench.machine import LoadSampler, machine_facts
from bench.streams import stream_rows
from realtime.accel import on_device
from realtime.chain import Chain
from realtime.contract import PluginError, PluginInfo
from realtime.engine import MODES, Engine
from realtime.loader import LoadedPlugin, load_plugin
from realtime.probe import measure_latency
from realtime.processor import Processor
from realtime.rt import gc_freeze

QUANTILES = (50.0, 90.0, 99.0, 99.9)
IDENTITY = "identity"
REFERENCE = "resample-8k-16k"
RANDOM_UNET = "random-unet"  # the shipped bwe-8k-16k architecture with random weights
MIN_LIVE_BLOCKS = 40


class BenchError(Exception):
    """A benchmark that cannot run as asked; the message is one line for the user."""


class DelayPlugin:
    """A plugin that delays its input by ``delay`` samples at ``rate`` Hz (0: the identity).

    Follows the plugin contract; costs next to nothing, so a path through it measures the host.
    """

    streaming = True
    block_multiple = 1
    parameter_names: list[str] = []
    parameter_min: list[float] = []
    parameter_max: list[float] = []
    parameter_default: list[float] = []

    def __init__(self, rate: int, delay: int = 0, channels: int = 1) -> None:
        self.sample_rate_in = self.sample_rate_out = rate
        self.channels = channels
        self.latency = delay
        self._tail = torch.zeros(1, channels, delay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, channels, T)`` → the same, ``latency`` samples later."""
        if not self.latency:
            return x
        full = torch.cat([self._tail, x], dim=-1)
        self._tail = full[..., x.shape[-1] :]
        return full[..., : x.shape[-1]]

    __call__ = forward

    def reset(self) -> None:
        """Silence the delay line."""
        self._tail.zero_()

    def set_parameter(self, name: str, value: float) -> None:
        """No parameters."""
        raise KeyError(name)


def delay_plugin(rate: int, delay: int = 0, name: str = IDENTITY) -> LoadedPlugin:
    """A loaded :class:`DelayPlugin` named ``name``."""
    module = DelayPlugin(rate, delay)
    return LoadedPlugin(module, PluginInfo.read(module, name))


def export_random_unet(path: Path, seed: int = 0) -> Path:
    """Export the shipped ``bwe-8k-16k`` architecture (``UNetConfig()``) with random weights
    through the real TorchScript path to ``path``: the trained plugin's cost, for timing before
    the weights land."""
    from model.export import export_plugin
    from model.unet import UNetConfig, WaveletUNet

    torch.manual_seed(seed)
    net = WaveletUNet(UNetConfig()).eval()
    torch.nn.init.normal_(net.body.out.conv.weight, std=0.01)  # zero at init: make it work
    return export_plugin(net, path, name=RANDOM_UNET)


def random_unet_plugin(seed: int = 0) -> LoadedPlugin:
    """:func:`export_random_unet` loaded as a plugin named ``random-unet``."""
    with tempfile.TemporaryDirectory(prefix="wavehost-bench-") as tmp:
        module = load_plugin(export_random_unet(Path(tmp) / f"{RANDOM_UNET}.ts", seed)).module
    return LoadedPlugin(module, PluginInfo.read(module, RANDOM_UNET))


def resolve(spec: str | Any) -> LoadedPlugin:
    """:func:`load_plugin`, plus the name ``random-unet`` (:func:`random_unet_plugin`)."""
    return random_unet_plugin() if spec == RANDOM_UNET else load_plugin(spec)


def summarize(times_s: np.ndarray) -> dict[str, float]:
    """``p50 p90 p99 p99.9 max mean`` of ``times_s`` (seconds) in ms, and ``count``."""
    t = np.asarray(times_s, np.float64) * 1e3
    qs = np.percentile(t, QUANTILES)
    d = {f"p{q:g}": float(v) for q, v in zip(QUANTILES, qs, strict=True)}
    d.update(max=float(t.max()), mean=float(t.mean()), count=int(t.size))
    return d


def budget_figures(times_s: np.ndarray, block: int, rate: int) -> dict[str, float]:
    """The block budget (``block / rate``, ms) and how ``times_s`` (s) spend it: budget ratios
    (time / budget) at p50 and p99, ``inv_rtf`` (budget / mean time: how many times faster than
    real time) and the share of blocks over budget."""
    t = np.asarray(times_s, np.float64)
    budget = block / rate
    p50, p99 = np.percentile(t, [50, 99])
    return {
        "budget_ms": 1e3 * budget,
        "ratio_p50": float(p50 / budget),
        "ratio_p99": float(p99 / budget),
        "inv_rtf": float(budget / t.mean()),
        "over_budget": float(np.mean(t > budget)),
    }


class Timings(NamedTuple):
    """Per-call times, s: ``wall`` (``perf_counter``: what a deadline sees, preemption by other
    processes included) and ``cpu`` (this thread's CPU time: the call's own cost)."""

    wall: np.ndarray
    cpu: np.ndarray


def time_calls(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    count: int,
    warmup: int,
) -> Timings:
    """Wall and thread CPU seconds per call of ``fn`` over ``count`` calls cycling through
    ``inputs``, after ``warmup`` untimed calls."""
    n = len(inputs)
    for i in range(warmup):
        fn(inputs[i % n])
    wall = np.empty(count, np.float64)
    cpu = np.empty(count, np.float64)
    perf, thread = time.perf_counter, time.thread_time
    with gc_freeze:  # the host runs its blocks with the collector frozen (see realtime.rt)
        for i in range(count):
            x = inputs[i % n]
            c0 = thread()
            t0 = perf()
            fn(x)
            wall[i] = perf() - t0
            cpu[i] = thread() - c0
    return Timings(wall, cpu)


def noise_blocks(n: int, frames: int, channels: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` pre-generated ``(frames, channels)`` float32 noise blocks at about -20 dBFS."""
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal((frames, channels))).astype(np.float32) for _ in range(n)]


def plugin_block(info: PluginInfo, block: int, rate: int) -> int:
    """Plugin input samples carrying one device block of ``block`` samples at ``rate`` Hz,
    rounded to the plugin's block multiple (at least one multiple)."""
    m = info.block_multiple
    return max(m, round(block * info.sample_rate_in / rate / m) * m)


def call_length(info: PluginInfo, block: int, rate: int) -> int:
    """Input samples of the call the host makes to a plugin per device block of ``block``
    samples at ``rate`` Hz: :func:`plugin_block`, or a whole window for a windowed plugin
    (called once per hop)."""
    return plugin_block(info, block, rate) if info.streaming else info.window


def cuda_check(device: str) -> None:
    """Raise :class:`BenchError` unless ``device`` can run here (the hook for the CUDA path)."""
    if device not in ("cpu", "cuda"):
        raise BenchError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        why = "torch is a CPU-only build" if torch.version.cuda is None else "no CUDA device found"
        raise BenchError(
            f"--device cuda: CUDA is not available here ({why}, torch {torch.__version__}); "
            "run on a GPU machine or use --device cpu"
        )


def time_plugin(plugin: LoadedPlugin, n_in: int, count: int, warmup: int) -> Timings:
    """Seconds per ``plugin.process`` call on ``(1, channels, n_in)`` CPU blocks (a plugin staged
    on a device by :func:`~realtime.accel.on_device` copies them there and back inside the call)."""
    ch = plugin.info.channels
    blocks = [torch.from_numpy(b.T.copy())[None] for b in noise_blocks(16, n_in, ch, seed=1)]
    plugin.reset()
    return time_calls(plugin.process, blocks, count, warmup)


def time_path(processor: Processor, count: int, warmup: int) -> Timings:
    """Seconds per :meth:`Processor.process` call on one device block."""
    blocks = noise_blocks(16, processor.block, processor.chain.channels, seed=2)
    processor.reset()
    return time_calls(processor.process, blocks, count, warmup)


def live_run(
    processor: Processor, mode: str, blocks: int, threads: int = 1, margin: int = 0
) -> dict[str, Any]:
    """Drive a real :class:`Engine` callback from a clock thread for ``blocks`` device blocks.

    Returns the callback count, deadline misses (``engine.counters.misses``: the worker was late
    in threaded mode, the block went over budget inline) and their rate, the callback duration
    (µs), the clock's own lateness (ms) and ``clock_xruns``, the blocks it started more than a
    period late (a device would have under-run there: the machine's fault, not the plugin's),
    the worker's compute time (ms) and, threaded, the turnaround from the callback's hand-off
    to the worker's finished block (ms).
    """
    rate, b, ch = processor.rate_in, processor.block, processor.chain.channels
    done = np.zeros(blocks + 8, np.float64)
    finished = [0]

    def on_block(_x: np.ndarray, _y: np.ndarray) -> None:
        if finished[0] < done.shape[0]:
            done[finished[0]] = time.perf_counter()
        finished[0] += 1

    engine = Engine(
        processor, mode=mode, margin_blocks=margin, on_block=on_block, adaptive=False
    )  # miss rates at a fixed margin
    inputs = noise_blocks(16, b, ch, seed=3)
    out = np.zeros((b, ch), np.float32)
    start = np.zeros(blocks, np.float64)
    end = np.zeros(blocks, np.float64)
    late = np.zeros(blocks, np.float64)
    period = b / rate

    def clock() -> None:
        perf = time.perf_counter
        t0 = perf()
        for n in range(blocks):
            deadline = t0 + (n + 1) * period
            wait = deadline - perf()
            if wait > 0:
                time.sleep(wait)
            start[n] = perf()
            late[n] = start[n] - deadline
            engine.callback(inputs[n % 16], out, 0)
            end[n] = perf()

    engine.start()
    torch.set_num_threads(threads)  # Engine.start sets one thread: the grid asks for `threads`
    thread = threading.Thread(target=clock, name="bench-clock")
    with gc_freeze:  # as a stream holds it: no full collection stalls the clock or the worker
        thread.start()
        thread.join()
        time.sleep(2 * period)  # let the worker finish the last block
    engine.stop()
    c = engine.counters
    result: dict[str, Any] = {
        "blocks": blocks,
        "seconds": blocks * period,
        "callbacks": c.callbacks,
        "misses": c.misses,
        "miss_rate": c.misses / max(c.callbacks, 1),
        "callback_us": {k: v * 1e3 for k, v in summarize(end - start).items() if k != "count"},
        "clock_late_ms": summarize(late),
        "clock_xruns": int(np.sum(late > period)),
        "worker_ms": summarize(engine.timer.recent()) if engine.timer.count else None,
    }
    k = min(finished[0], blocks)
    if mode == "threaded" and k:
        result["turnaround_ms"] = summarize(done[:k] - end[:k])
    return result


@dataclass
class LatencySettings:
    """The grid and the sample sizes of ``wavehost bench latency``."""

    rates: list[int]
    blocks: list[int]
    threads: list[int]
    modes: list[str]
    device: str = "cpu"
    count: int = 2000  # timed blocks per cell
    warmup: int = 200  # untimed blocks per cell
    live_seconds: float = 1.5  # engine run per cell and mode (at least MIN_LIVE_BLOCKS blocks)
    graphs: list[bool] = field(default_factory=lambda: [True])  # per device-staged plugin (CUDA)
    streams: list[int] = field(default_factory=list)  # batched stream counts to time
    sweep: bool = False  # search the largest stream count within the block budget
    stream_ticks: int = 300  # timed ticks per stream count

    def check(self) -> None:
        """Raise :class:`BenchError` for an impossible grid."""
        cuda_check(self.device)
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise BenchError(f"unknown engine mode {bad[0]!r} (choose from {', '.join(MODES)})")
        for name, values in (("rates", self.rates), ("blocks", self.blocks)):
            if not values or min(values) <= 0:
                raise BenchError(f"--{name} needs positive integers, got {values}")
        if not self.threads or min(self.threads) <= 0:
            raise BenchError(f"--threads needs positive integers, got {self.threads}")
        if self.count < 10 or self.warmup < 0:
            raise BenchError("--blocks-count must be >= 10 and --warmup >= 0")
        if not self.graphs:
            raise BenchError("--graphs needs on, off or on,off")
        if self.streams and min(self.streams) <= 0:
            raise BenchError(f"--streams needs positive integers, got {self.streams}")
        if self.stream_ticks < 10:
            raise BenchError("--stream-ticks must be >= 10")


def _cell_plugins(
    loaded: dict[str, LoadedPlugin], rate: int
) -> list[tuple[str, str, LoadedPlugin]]:
    """(name, role, plugin) measured in one cell: the host identity, the reference, the rest."""
    cell = [(IDENTITY, "host", delay_plugin(rate))]
    for name, plugin in loaded.items():
        cell.append((name, "reference" if name == REFERENCE else "plugin", plugin))
    return cell


def _staged(
    name: str, role: str, plugin: LoadedPlugin, n_in: int, s: LatencySettings
) -> list[tuple[str, LoadedPlugin, dict[str, Any]]]:
    """(row name, plugin, row fields) for each form ``plugin`` is measured in: as loaded, on the
    CPU; on a CUDA ``s.device``, staged by :func:`~realtime.accel.on_device` for ``n_in``-sample
    blocks once per graphs setting (named ``name@cuda``, ``name@cuda-plain`` without graphs).
    The host identity and the DSP reference always run on the CPU."""
    if s.device == "cpu" or role != "plugin":
        return [(name, plugin, {"device": "cpu"})]
    forms = []
    for graphs in s.graphs:
        staged = on_device(plugin, s.device, block=n_in, graphs=graphs)
        fields = {"device": s.device, "graph_status": staged.module.graph_status}
        forms.append((f"{name}@{s.device}{'' if graphs else '-plain'}", staged, fields))
    return forms


def run_latency(
    specs: Sequence[str | Any], settings: LatencySettings, progress: bool = True
) -> dict[str, Any]:
    """Measure every plugin of ``specs`` (plus the identity and the reference) over the grid,
    and with ``settings.streams`` / ``sweep`` the batched streams of each plugin that can.

    Returns the report dict: ``machine``, ``settings``, ``load`` (the whole run), ``rows``
    (one per plugin form × rate × block × threads; raw path times under ``_times`` for the
    plots), ``streams`` (:func:`~bench.streams.stream_rows`, empty unless asked) and
    ``latencies`` (:func:`probe_row` per plugin: declared latency against a noise probe's).
    """
    settings.check()
    loaded: dict[str, LoadedPlugin] = {}
    for spec in [*specs, REFERENCE]:
        plugin = resolve(spec)
        loaded.setdefault(plugin.info.name, plugin)
    machine = machine_facts(settings.device)
    cells = [(r, b, t) for r in settings.rates for b in settings.blocks for t in settings.threads]
    batched = [n for n in loaded if n != REFERENCE] if settings.streams or settings.sweep else []
    graphs = settings.graphs if settings.device != "cpu" else [False]
    n_stream_rows = len(batched) * len(settings.rates) * len(settings.blocks) * len(graphs)
    bar = tqdm(
        total=len(cells) * (len(loaded) + 1) + n_stream_rows,
        desc="latency",
        disable=not progress,
    )
    rows: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    with LoadSampler() as whole:
        for rate, block, threads in cells:
            torch.set_num_threads(threads)
            for name, role, plugin in _cell_plugins(loaded, rate):
                bar.set_postfix_str(f"{name} {rate} Hz b{block} t{threads}")
                n_in = call_length(plugin.info, block, rate)
                for label, form, fields in _staged(name, role, plugin, n_in, settings):
                    cell = (rate, block, threads, n_in)
                    rows.append(_measure_cell(label, role, form, cell, fields, settings))
                bar.update()
        torch.set_num_threads(settings.threads[0])
        for name in batched:
            plugin = loaded[name]
            grid = [
                (r, b, plugin_block(plugin.info, b, r))
                for r in settings.rates
                for b in settings.blocks
            ]
            streams += stream_rows(
                name,
                plugin,
                grid,
                settings.device,
                graphs,
                settings.streams,
                settings.sweep,
                settings.stream_ticks,
                bar,
            )
        latencies = [probe_row(name, plugin) for name, plugin in loaded.items()]
    bar.close()
    _add_reference_ratios(rows)
    return {
        "kind": "latency",
        "machine": machine,
        "settings": asdict(settings),
        "load": whole.summary(),
        "rows": rows,
        "streams": streams,
        "latencies": latencies,
    }


def probe_row(name: str, plugin: LoadedPlugin) -> dict[str, Any]:
    """The latency ``plugin`` declares (output samples, ms) beside the lag a second of noise
    comes out with (:func:`realtime.probe.measure_latency`, on the CPU): ``agrees`` is None
    where the output does not carry its input, ``error`` set where the probe failed."""
    info = plugin.info
    row: dict[str, Any] = {
        "plugin": name,
        "rate_in": info.sample_rate_in,
        "rate_out": info.sample_rate_out,
        "declared": info.latency,
        "declared_ms": 1e3 * info.latency / info.sample_rate_out,
    }
    try:
        est = measure_latency(plugin)
    except PluginError as exc:
        return {**row, "error": str(exc)}
    return {
        **row,
        "probe_lag": est.lag,
        "probe_correlation": est.correlation,
        "agrees": est.lag == est.declared if est.measurable else None,
    }


def _measure_cell(
    name: str,
    role: str,
    plugin: LoadedPlugin,
    cell: tuple[int, int, int, int],
    fields: dict[str, Any],
    s: LatencySettings,
) -> dict[str, Any]:
    """One row: ``plugin`` timed alone and on the host path for one (device rate Hz, device
    block, threads, plugin input samples per call) ``cell``, then run live per engine mode. A
    windowed plugin is timed on whole windows (the call the host makes once per hop), so its
    host overhead is not path − plugin: None."""
    rate, block, threads, n_in = cell
    info = plugin.info
    row: dict[str, Any] = {
        "plugin": name,
        "role": role,
        "rate": rate,
        "block": block,
        "threads": threads,
        **fields,
        "plugin_rate_in": info.sample_rate_in,
        "plugin_block_in": n_in,
    }
    with LoadSampler() as load:
        plugin_t = time_plugin(plugin, n_in, s.count, s.warmup)
        row["plugin_ms"] = summarize(plugin_t.wall)
        row["plugin_cpu_ms"] = summarize(plugin_t.cpu)
        processor = Processor(Chain([plugin]), rate_in=rate, rate_out=rate, block=block)
        path_t = time_path(processor, s.count, s.warmup)
        row["path_ms"] = summarize(path_t.wall)
        row["path_cpu_ms"] = summarize(path_t.cpu)
        if info.streaming:  # a windowed plugin is called once per hop, not once per block
            row["host_us_p50"] = 1e3 * (row["path_ms"]["p50"] - row["plugin_ms"]["p50"])
            row["host_cpu_us_p50"] = 1e3 * (row["path_cpu_ms"]["p50"] - row["plugin_cpu_ms"]["p50"])
        else:
            row["host_us_p50"] = row["host_cpu_us_p50"] = None
        row["budget"] = budget_figures(path_t.wall, block, rate)
        row["latency_samples"] = processor.latency.total
        n_live = max(MIN_LIVE_BLOCKS, round(s.live_seconds * rate / block))
        row["live"] = {m: live_run(processor, m, n_live, threads) for m in s.modes}
        row["_times"] = path_t.wall
    row["load"] = load.summary()
    row["fault"] = path_fault(processor)
    return row


def path_fault(processor: Processor) -> str | None:
    """What the path's guard did to the plugin while it was timed, if anything: a bypassed
    plugin's figures are the bypass's; NaN blocks were the bypass's and reset the plugin."""
    return processor.chain.health[0].fault or None


def _add_reference_ratios(rows: list[dict[str, Any]]) -> None:
    """``vs_reference``: each row's plugin p50 over the reference's in the same cell."""
    ref = {
        (r["rate"], r["block"], r["threads"]): r["plugin_ms"]["p50"]
        for r in rows
        if r["role"] == "reference"
    }
    for r in rows:
        base = ref.get((r["rate"], r["block"], r["threads"]))
        r["vs_reference_p50"] = r["plugin_ms"]["p50"] / base if base else None
