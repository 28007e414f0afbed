"""Compare mode: two plugins, or one plugin at two git commits, interleaved in one run.

These machines are shared and noisy: two absolute figures taken minutes apart differ by more
than most changes. Here A and B alternate (plugins: block by block, ABAB in one process; commits:
in chunks of a few blocks, ABBA, each in its own worker process importing that commit's code),
so both see the same background load, and the result is reported as ratios B/A with a paired
bootstrap confidence interval.

A commit's tree is extracted read-only with ``git archive COMMIT | tar -x`` into a temporary
folder (no worktree is registered; ``WORKTREE`` means the current working tree, uncommitted
changes included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.latency import (
    IDENTITY,
    RANDOM_UNET,
    BenchError,
    call_length,
    delay_plugin,
    export_random_unet,
    noise_blocks,
    path_fault,
    resolve,
    summarize,
)
from bench.machine import REPO, LoadSampler, machine_facts
from realtime.chain import Chain
from realtime.processor import Processor

WORKTREE = "WORKTREE"
CHUNK = 16  # blocks per turn of a commit worker

# Runs inside a worker process whose sys.path starts with one commit's tree: builds the path
# for one plugin and answers each line "N" on stdin with N block times (s) as a JSON list.
WORKER = """
import json, sys, time
import numpy as np, torch
from realtime.chain import Chain
from realtime.loader import load_plugin
from realtime.processor import Processor
spec, rate, block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)


class Identity:  # the host-overhead plugin, defined here: old trees have no bench package
    streaming, channels, latency, block_multiple = True, 1, 0, 1
    parameter_names, parameter_min, parameter_max, parameter_default = [], [], [], []
    sample_rate_in = sample_rate_out = rate
    def forward(self, x): return x
    __call__ = forward
    def reset(self): pass
    def set_parameter(self, name, value): raise KeyError(name)


plugin = load_plugin(Identity() if spec == "identity" else spec)
proc = Processor(Chain([plugin]), rate_in=rate, rate_out=rate, block=block)
rng = np.random.default_rng(2)
shape = (block, plugin.info.channels)
blocks = [(0.1 * rng.standard_normal(shape)).astype(np.float32) for _ in range(16)]
for b in blocks[:3]:
    proc.process(b)
# StageHealth.fault spelled out: the trees compared may be older than it
sick = [h.error or "NaN output" for h in getattr(proc.chain, "health", [])
        if h.bypassed or h.nonfinite_blocks]
k = 0
print("error: " + sick[0] if sick else "ready", flush=True)
for line in sys.stdin:
    n = int(line)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc.process(blocks[k % 16])
        out.append(time.perf_counter() - t0)
        k += 1
    print(json.dumps(out), flush=True)
"""


def bootstrap_ratio(
    a: np.ndarray, b: np.ndarray, q: float = 50.0, n_boot: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Ratio ``quantile_q(b) / quantile_q(a)`` of paired samples and its 95 % bootstrap CI
    (blocks resampled in pairs, so the load they shared stays paired)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    ratios = np.percentile(b[idx], q, axis=1) / np.percentile(a[idx], q, axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return {
        "ratio": float(np.percentile(b, q) / np.percentile(a, q)),
        "ci_low": float(lo),
        "ci_high": float(hi),
    }


def _ratios(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    return {
        "p50": bootstrap_ratio(a, b, 50.0),
        "p90": bootstrap_ratio(a, b, 90.0),
        "p99": bootstrap_ratio(a, b, 99.0),
        "mean": float(b.mean() / a.mean()),
    }


def compare_plugins(
    spec_a: str,
    spec_b: str,
    rate: int,
    block: int,
    count: int,
    warmup: int,
    what: str = "path",
    progress: bool = True,
) -> dict[str, Any]:
    """Plugins A and B in one process, block by block ABAB: ``what`` is ``path``
    (:meth:`Processor.process` per device block) or ``plugin`` (``process`` alone)."""
    torch.set_num_threads(1)
    runners, paths = [], []
    for spec in (spec_a, spec_b):
        plugin = delay_plugin(rate) if spec == IDENTITY else resolve(spec)
        ch = plugin.info.channels
        if what == "path":
            proc = Processor(Chain([plugin]), rate_in=rate, rate_out=rate, block=block)
            paths.append(proc)
            runners.append((plugin.info.name, proc.process, noise_blocks(16, block, ch, seed=2)))
        else:
            n_in = call_length(plugin.info, block, rate)
            xs = [torch.from_numpy(x.T.copy())[None] for x in noise_blocks(16, n_in, ch, seed=1)]
            runners.append((plugin.info.name, plugin.process, xs))
    times = np.zeros((2, count))
    perf = time.perf_counter
    with LoadSampler() as load:
        for i in tqdm(range(-warmup, count), desc="compare", unit="block", disable=not progress):
            for j, (_, fn, xs) in enumerate(runners):
                x = xs[i % 16]
                t0 = perf()
                fn(x)
                if i >= 0:
                    times[j, i] = perf() - t0
    for proc in paths:
        fault = path_fault(proc)
        if fault:
            raise BenchError(
                f"no comparison: the path's guard stepped in while it was timed: {fault}"
            )
    return _result("plugins", [r[0] for r in runners], times, rate, block, what, load.summary())


def _tree(commit: str, tmp: Path) -> Path:
    """The source tree of ``commit`` extracted under ``tmp`` (``WORKTREE``: the repository)."""
    if commit == WORKTREE:
        return REPO
    dest = tmp / commit.replace("/", "_")
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True)
    if archive.returncode != 0:
        raise BenchError(f"git archive {commit}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def compare_commits(
    spec: str,
    commit_a: str,
    commit_b: str,
    rate: int,
    block: int,
    count: int,
    warmup: int,
    progress: bool = True,
) -> dict[str, Any]:
    """One plugin's path at two commits: a worker process per commit, turns of :data:`CHUNK`
    blocks in ABBA order. ``spec``: a plugin name or file, ``identity`` (host overhead) or
    ``random-unet``."""
    with tempfile.TemporaryDirectory(prefix="wavehost-compare-") as tmp:
        if spec == RANDOM_UNET:  # a file both trees can load
            spec = str(export_random_unet(Path(tmp) / f"{RANDOM_UNET}.ts"))
        workers = []
        for commit in (commit_a, commit_b):
            tree = _tree(commit, Path(tmp))
            proc = subprocess.Popen(
                [sys.executable, "-c", WORKER, spec, str(rate), str(block)],
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            line = "" if proc.stdout is None else proc.stdout.readline().strip()
            if line != "ready":
                proc.kill()
                why = line.removeprefix("error: ") if line.startswith("error: ") else "no reply"
                raise BenchError(f"the worker for {commit} could not run plugin {spec!r}: {why}")
            workers.append(proc)
        times: list[list[float]] = [[], []]
        with LoadSampler() as load:
            for order in ((0, 1), (1, 0)):  # warm-up both
                for j in order:
                    _ask(workers[j], warmup)
            turns = -(-count // CHUNK)
            for t in tqdm(range(turns), desc="compare", unit="turn", disable=not progress):
                for j in (0, 1) if t % 2 == 0 else (1, 0):
                    times[j] += _ask(workers[j], CHUNK)
        for w in workers:
            w.stdin.close()  # type: ignore[union-attr]
            w.wait(timeout=10)
    arr = np.array([times[0][:count], times[1][:count]])
    return _result(
        "commits", [commit_a, commit_b], arr, rate, block, "path", load.summary(), plugin=spec
    )


def _ask(worker: subprocess.Popen[str], n: int) -> list[float]:
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(f"{n}\n")
    worker.stdin.flush()
    line = worker.stdout.readline()
    if not line:
        raise BenchError("a compare worker died")
    return json.loads(line)


def _result(
    kind: str,
    names: list[str],
    times: np.ndarray,
    rate: int,
    block: int,
    what: str,
    load: dict[str, Any],
    plugin: str | None = None,
) -> dict[str, Any]:
    return {
        "kind": "compare",
        "machine": machine_facts(),
        "settings": {
            "compare": kind,
            "a": names[0],
            "b": names[1],
            "plugin": plugin,
            "rate": rate,
            "block": block,
            "what": what,
            "count": times.shape[1],
        },
        "load": load,
        "a_ms": summarize(times[0]),
        "b_ms": summarize(times[1]),
        "b_over_a": _ratios(times[0], times[1]),
    }


def compare_markdown(r: dict[str, Any]) -> str:
    """A small table: A and B distributions and the B/A ratios with their CI."""
    from bench.report import header

    s = r["settings"]
    a, b, q = r["a_ms"], r["b_ms"], r["b_over_a"]
    what = "Processor.process per device block" if s["what"] == "path" else "plugin process"
    lines = [
        *header("compare", r),
        f"A = `{s['a']}`, B = `{s['b']}`"
        + (f", plugin `{s['plugin']}`" if s["plugin"] else "")
        + f"; {what}, {s['rate']} Hz, block {s['block']}, {s['count']} interleaved blocks each; "
        "ratios B/A with 95 % paired bootstrap CI.",
        "",
        "| | p50 ms | p90 ms | p99 ms | mean ms |",
        "|---|---|---|---|---|",
        f"| A | {a['p50']:.4f} | {a['p90']:.4f} | {a['p99']:.4f} | {a['mean']:.4f} |",
        f"| B | {b['p50']:.4f} | {b['p90']:.4f} | {b['p99']:.4f} | {b['mean']:.4f} |",
        "| B/A | "
        + " | ".join(
            f"{q[k]['ratio']:.3f} [{q[k]['ci_low']:.3f}, {q[k]['ci_high']:.3f}]"
            for k in ("p50", "p90", "p99")
        )
        + f" | {q['mean']:.3f} |",
    ]
    return "\n".join(lines) + "\n"
