"""The benchmark harness: its arithmetic on plugins of known cost, the report schema and files,
compare-mode ratios, the CUDA refusal, and (live) end-to-end latency = declared latency."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from unittest.mock import ANY

import numpy as np
import pytest
import torch
from plugins import Gain, Slow
from tqdm import tqdm

from bench.cli import main as bench_main
from bench.compare import WORKTREE, bootstrap_ratio, compare_commits, compare_plugins
from bench.e2e import E2ESettings, click_train, run_e2e
from bench.latency import (
    BenchError,
    LatencySettings,
    budget_figures,
    delay_plugin,
    live_run,
    probe_row,
    run_latency,
    summarize,
    time_plugin,
)
from bench.machine import REPO
from bench.quality import run_quality
from bench.report import latency_markdown, probe_markdown, streams_markdown
from bench.streams import stream_rows
from realtime.chain import Chain
from realtime.contract import PluginInfo
from realtime.loader import LoadedPlugin, load_plugin
from realtime.probe import correlate
from realtime.processor import Processor

RATE, BLOCK = 16000, 256
SLEEP_S = 0.002


def sleeper(seconds: float = SLEEP_S, every: int = 1) -> LoadedPlugin:
    module = Slow(RATE, factor=seconds * RATE / BLOCK, every=every, block=BLOCK)
    return LoadedPlugin(module, PluginInfo.read(module, "sleep"))


def path(plugin: LoadedPlugin) -> Processor:
    return Processor(Chain([plugin]), rate_in=RATE, rate_out=RATE, block=BLOCK)


def test_summary_and_budget_arithmetic_on_known_times():
    t = np.full(1000, 0.002)
    t[:10] = 0.005  # 1 % of blocks over a 4 ms budget
    s = summarize(t)
    assert s["p50"] == pytest.approx(2.0) and s["max"] == pytest.approx(5.0)
    assert s["mean"] == pytest.approx(2.03) and s["count"] == 1000
    assert set(s) == {"p50", "p90", "p99", "p99.9", "max", "mean", "count"}
    b = budget_figures(t, 64, 16000)  # 64 samples at 16 kHz: 4 ms
    assert b["budget_ms"] == pytest.approx(4.0)
    assert b["ratio_p50"] == pytest.approx(0.5)
    assert b["inv_rtf"] == pytest.approx(4.0 / 2.03)
    assert b["over_budget"] == pytest.approx(0.01)


def test_plugin_that_sleeps_a_fixed_time_measures_that_time():
    timings = time_plugin(sleeper(), n_in=64, count=60, warmup=3)
    times = timings.wall
    p50 = summarize(times)["p50"]
    assert summarize(timings.cpu)["p50"] < 0.25 * p50  # asleep: wall time, hardly any CPU
    assert 1e3 * SLEEP_S <= p50 < 1e3 * SLEEP_S * 1.5  # sleep never returns early
    b = budget_figures(times, 64, RATE)  # a 4 ms budget, half of it slept
    assert 0.5 <= b["ratio_p50"] < 0.75
    assert 1.0 < b["inv_rtf"] <= 2.0


def test_live_engine_counts_one_miss_per_slow_block_inline():
    budget = BLOCK / RATE
    proc = path(sleeper(2 * budget, every=4))
    res = live_run(proc, "inline", blocks=40)
    assert res["callbacks"] == 40
    assert 10 <= res["misses"] <= 12  # blocks 4, 8, ..., 40; a stray preemption at most twice
    assert res["miss_rate"] == pytest.approx(res["misses"] / 40)
    assert res["callback_us"]["max"] >= 2e6 * budget


def test_live_engine_threaded_reports_every_block_and_a_stalling_worker_misses():
    proc = path(delay_plugin(RATE))
    fast = live_run(proc, "threaded", blocks=40)
    assert fast["callbacks"] == 40 and fast["turnaround_ms"]["count"] == 40
    assert fast["miss_rate"] == pytest.approx(fast["misses"] / 40)
    budget = BLOCK / RATE
    slow = live_run(path(sleeper(3 * budget, every=8)), "threaded", blocks=40)
    assert slow["misses"] >= 5  # each 3-block stall outlasts the one-block hand-off buffer
    assert slow["worker_ms"]["max"] >= 3e3 * budget


def test_bootstrap_ratio_of_exactly_scaled_samples():
    a = np.random.default_rng(0).uniform(1.0, 2.0, 500)
    r = bootstrap_ratio(a, 2 * a, 50.0, n_boot=200)
    assert r["ratio"] == pytest.approx(2.0)
    assert r["ci_low"] == pytest.approx(2.0) and r["ci_high"] == pytest.approx(2.0)


@pytest.mark.parametrize("what", ["plugin", "path"])
def test_compare_runs_stereo_plugins_on_stereo_blocks(what):
    result = compare_plugins(
        Gain(48000, channels=2), Gain(48000, 0.5, channels=2), 48000, 256, 40, 4, what, False
    )
    assert result["a_ms"]["count"] == result["b_ms"]["count"] == 40
    assert result["b_over_a"]["p50"]["ratio"] > 0


def test_correlation_finds_a_known_lag_and_gain():
    x = np.zeros(4000)
    x[click_train(4000).nonzero()[0][:3]] = 1.0
    y = np.roll(x, 123) * 0.5
    c = correlate(x, y, 500)
    assert int(np.argmax(c)) == 123 and c[123] == pytest.approx(0.5)


def test_probe_row_flags_a_plugin_whose_output_is_later_than_it_declares():
    lying = Gain(16000, delay=12)
    lying.latency = 0
    row = probe_row("lying", load_plugin(lying))
    assert (row["declared"], row["probe_lag"], row["agrees"]) == (0, 12, False)
    assert "| lying | 16000 → 16000 | 0 | 0.00 | 12 | 1.00 | **no** |" in probe_markdown([row])


def test_a_windowed_plugin_is_timed_on_whole_windows():
    windowed = Gain(16000)
    windowed.streaming, windowed.window, windowed.hop, windowed.window_shape = (
        False,
        512,
        256,
        "hann",
    )
    s = LatencySettings([16000], [64], [1], ["inline"], count=20, warmup=2, live_seconds=0.05)
    rep = run_latency([windowed], s, progress=False)
    (row,) = [r for r in rep["rows"] if r["role"] == "plugin"]
    assert row["plugin_block_in"] == 512  # the call the host makes once per hop
    assert row["host_us_p50"] is None and row["host_cpu_us_p50"] is None
    line = next(x for x in latency_markdown(rep).splitlines() if x.startswith("| Gain |"))
    assert line.split(" | ")[13] == "–"  # host µs


def test_latency_cli_writes_json_markdown_and_plots(tmp_path):
    argv = [
        "latency", "--plugin", "resample-8k-16k", "--rates", "16000", "--blocks", "256",
        "--threads", "1", "--modes", "threaded,inline", "--blocks-count", "40", "--warmup", "4",
        "--live-seconds", "0.1", "--out", str(tmp_path), "--quiet",
    ]  # fmt: skip
    assert bench_main(argv) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"latency.json", "latency.md", "latency-cdf-t1.png", "block-time-t1.png"} <= names
    assert all(p.stat().st_size < 200_000 for p in tmp_path.glob("*.png"))
    rep = json.loads((tmp_path / "latency.json").read_text())
    for key, kind in [("kind", str), ("machine", dict), ("settings", dict), ("load", dict),
                      ("rows", list)]:  # fmt: skip
        assert isinstance(rep[key], kind), key
    for key in ("cpu", "cores", "torch", "numpy", "commit", "kind", "loadavg", "allocator"):
        assert key in rep["machine"], key
    assert f"heap {rep['machine']['allocator']}," in (tmp_path / "latency.md").read_text()
    assert {r["plugin"] for r in rep["rows"]} == {"identity", "resample-8k-16k"}
    (probe,) = rep["latencies"]  # the plugin's declared latency found again by a noise probe
    assert (probe["plugin"], probe["declared"], probe["probe_lag"], probe["agrees"]) == (
        "resample-8k-16k",
        32,
        32,
        True,
    )
    assert (
        "| resample-8k-16k | 8000 → 16000 | 32 | 2.00 | 32 | 1.00 | yes |"
        in (tmp_path / "latency.md").read_text()
    )
    for row in rep["rows"]:
        required = {"plugin", "role", "rate", "block", "threads", "plugin_ms", "path_ms"}
        required |= {"host_us_p50", "budget", "live", "load", "vs_reference_p50"}
        assert required <= set(row)
        for dist in (row["plugin_ms"], row["path_ms"], row["plugin_cpu_ms"], row["path_cpu_ms"]):
            assert all(isinstance(dist[k], float) for k in ("p50", "p90", "p99", "p99.9", "max"))
        assert set(row["live"]) == {"threaded", "inline"}
        for live in row["live"].values():
            assert isinstance(live["misses"], int) and 0.0 <= live["miss_rate"] <= 1.0
        assert row["budget"]["budget_ms"] == pytest.approx(16.0)
    ref = next(r for r in rep["rows"] if r["role"] == "reference")
    assert ref["vs_reference_p50"] == pytest.approx(1.0)
    assert "| identity | 16000 | 256 |" in (tmp_path / "latency.md").read_text()


@pytest.mark.skipif(
    ctypes.util.find_library("tcmalloc_minimal") is None,
    reason="libtcmalloc_minimal is not installed (scripts/setup.sh installs it)",
)
def test_the_machine_facts_name_the_heap_the_process_runs_on():
    probe = [sys.executable, "-c", "from bench.machine import allocator; print(allocator())"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LD_PRELOAD", None)
    plain = subprocess.run(probe, env=env, capture_output=True, text=True, check=True)
    env["LD_PRELOAD"] = "libtcmalloc_minimal.so.4"
    preloaded = subprocess.run(probe, env=env, capture_output=True, text=True, check=True)
    assert (plain.stdout.strip(), preloaded.stdout.strip()) == ("glibc", "tcmalloc")


def test_latency_cli_times_batched_streams_and_finds_the_largest_count(tmp_path):
    argv = [
        "latency", "--plugin", "bwe-8k-16k", "--rates", "16000", "--blocks", "160",
        "--threads", "1", "--modes", "inline", "--blocks-count", "20", "--warmup", "2",
        "--live-seconds", "0.1", "--streams", "1,3", "--stream-ticks", "10", "--sweep",
        "--out", str(tmp_path), "--quiet",
    ]  # fmt: skip
    assert bench_main(argv) == 0
    rep = json.loads((tmp_path / "latency.json").read_text())
    (row,) = rep["streams"]  # the reference resampler is not batched
    assert (row["plugin"], row["block"], row["block_in"]) == ("bwe-8k-16k", 160, 80)
    assert [r["n_streams"] for r in row["counts"]] == [1, 3]
    for r in row["counts"]:
        assert r["budget_ms"] == pytest.approx(10.0) and not r["graphs"]
        assert r["per_stream_us"] == pytest.approx(1e3 * r["p50_ms"] / r["n_streams"])
    sweep = row["sweep"]
    fits = [r["n_streams"] for r in sweep["runs"] if r["within_budget"]]
    assert sweep["max_streams"] == max(fits, default=0) >= 1
    md = (tmp_path / "latency.md").read_text()
    assert "| bwe-8k-16k | cpu | 16000 | 160 | 80 | no | 3 |" in md
    assert f"at most **{sweep['max_streams']}** streams" in md
    assert (tmp_path / "streams.png").stat().st_size > 0


def test_a_plugin_that_cannot_batch_streams_is_skipped_with_its_reason():
    module = Gain(RATE)
    plugin = LoadedPlugin(module, PluginInfo.read(module, "gain"))
    with tqdm(disable=True) as bar:
        rows = stream_rows("gain", plugin, [(RATE, 160, 160)], "cpu", [False], [1], True, 10, bar)
    assert rows == [{"plugin": "gain", "skipped": ANY}]
    assert "reset_rows" in rows[0]["skipped"]
    assert "- `gain`: skipped: no reset_rows()" in "\n".join(streams_markdown(rows))


def test_latency_cli_refuses_a_bad_graphs_switch(capsys):
    with pytest.raises(SystemExit):
        bench_main(["latency", "--graphs", "maybe"])
    assert "expected on, off or on,off" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_latency_cli_on_cuda_times_graphed_and_plain_forms_and_streams(tmp_path):
    argv = [
        "latency", "--device", "cuda", "--graphs", "on,off", "--plugin", "bwe-8k-16k",
        "--rates", "16000", "--blocks", "160", "--threads", "1", "--modes", "threaded",
        "--blocks-count", "50", "--warmup", "5", "--live-seconds", "0.2",
        "--streams", "1,8", "--stream-ticks", "20", "--out", str(tmp_path), "--quiet",
    ]  # fmt: skip
    assert bench_main(argv) == 0
    rep = json.loads((tmp_path / "latency.json").read_text())
    staged = {r["plugin"]: r for r in rep["rows"] if r["device"] == "cuda"}
    assert set(staged) == {"bwe-8k-16k@cuda", "bwe-8k-16k@cuda-plain"}
    assert staged["bwe-8k-16k@cuda"]["graph_status"].startswith("CUDA graph replay")
    assert "turned off" in staged["bwe-8k-16k@cuda-plain"]["graph_status"]
    assert [row["graphs_asked"] for row in rep["streams"]] == [True, False]
    assert [r["graphs"] for r in rep["streams"][0]["counts"]] == [True, True]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: the refusal cannot show")
def test_cuda_without_a_gpu_is_a_one_line_error(capsys):
    assert bench_main(["latency", "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "CUDA is not available" in err


def test_quality_without_data_skips_with_a_reason(tmp_path):
    rep = run_quality(tmp_path / "q", ["resample-8k-16k"], data=tmp_path / "missing")
    assert rep["results"] == {}
    assert "no validation data" in rep["skipped"][0]["reason"]


@pytest.mark.live
def test_e2e_measured_latency_matches_declared_within_one_block(audio_server):
    rep = run_e2e(E2ESettings(backends=["sounddevice"], rate=16000, block=BLOCK))
    row = rep["rows"][0]
    assert row["copy"]["gain"] > 0.5 and row["engine"]["gain"] > 0.5
    assert row["measured_engine"] > 0
    assert abs(row["measured_engine"] - row["declared"]["engine"]) <= BLOCK, row
    assert row["ok"] and row["fault"] is None


@pytest.mark.live
def test_e2e_measures_a_stereo_plugin_through_the_mono_sinks(audio_server, tmp_path):
    path = tmp_path / "stereo-delay.ts"
    torch.jit.script(Gain(48000, delay=37, channels=2)).save(str(path))
    s = E2ESettings(backends=["sounddevice"], rate=48000, block=BLOCK, plugin=str(path))
    row = run_e2e(s)["rows"][0]
    assert row["measured_engine"] > 0 and row["engine"]["gain"] > 0.5
    assert abs(row["measured_engine"] - row["declared"]["engine"]) <= BLOCK, row
    assert row["ok"] and row["fault"] is None


class SoursAfterTheProbe(Gain):
    """Passes the loader's probe (its first call), then returns NaN."""

    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * (self.calls <= 1).float() / (self.calls <= 1).float()

    @torch.jit.export
    def reset(self) -> None:
        self.tail.zero_()


def test_compare_commits_feeds_a_stereo_plugin_stereo_blocks(tmp_path):
    path = tmp_path / "stereo.ts"
    torch.jit.script(Gain(48000, 0.5, delay=3, channels=2)).save(str(path))
    res = compare_commits(str(path), WORKTREE, WORKTREE, 48000, 64, 16, 2, progress=False)
    assert res["a_ms"]["count"] == res["b_ms"]["count"] == 16


def test_compare_commits_refuses_a_plugin_the_path_bypasses(tmp_path):
    path = tmp_path / "sour.ts"
    torch.jit.script(SoursAfterTheProbe(16000)).save(str(path))
    with pytest.raises(BenchError, match=r"could not run plugin .*NaN"):
        compare_commits(str(path), WORKTREE, WORKTREE, 16000, 64, 16, 2, progress=False)


def test_a_plugin_the_path_bypasses_while_timed_is_flagged():
    s = LatencySettings([16000], [64], [1], ["inline"], count=20, warmup=2, live_seconds=0.05)
    rep = run_latency([SoursAfterTheProbe(16000)], s, progress=False)
    (row,) = [r for r in rep["rows"] if r["role"] == "plugin"]
    assert "returned NaN/Inf in" in row["fault"] and "(bypassed for those blocks)" in row["fault"]
    assert all(r["fault"] is None for r in rep["rows"] if r["role"] != "plugin")
    assert "**Faults: these rows timed the host's bypass" in latency_markdown(rep)


def test_compare_refuses_to_compare_a_bypassed_plugin():
    with pytest.raises(BenchError, match=r"guard stepped in .* NaN/Inf"):
        compare_plugins(Gain(16000), SoursAfterTheProbe(16000), 16000, 64, 20, 2, "path", False)


@pytest.mark.live
def test_e2e_says_when_the_plugin_was_bypassed(audio_server, tmp_path):
    path = tmp_path / "sour.ts"
    torch.jit.script(SoursAfterTheProbe(16000)).save(str(path))
    s = E2ESettings(backends=["sounddevice"], rate=16000, block=BLOCK, plugin=str(path))
    row = run_e2e(s)["rows"][0]
    assert "NaN/Inf" in row["fault"] and not row["ok"]
