"""Reports: JSON (everything), a markdown table, PNG plots (small: 80 dpi, few points)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

DPI = 80


def _clean(value: Any) -> Any:
    """JSON-safe copy: private ``_`` keys dropped, numpy scalars to Python, NaN/Inf to null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write ``report`` as indented JSON (without the raw ``_`` arrays)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(report), indent=1) + "\n")
    return path


def machine_line(m: dict[str, Any]) -> str:
    """One line naming the machine, versions and commit."""
    commit = (m.get("commit") or "?")[:10] + (" (dirty)" if m.get("dirty") else "")
    return (
        f"machine `{m['kind']}`: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
        f"numpy {m['numpy']}, Python {m['python']}, heap {m.get('allocator', '?')}, "
        f"commit {commit}, {m['time_utc']}"
    )


def load_line(load: dict[str, Any]) -> str:
    """One line: the background load during the run."""
    if not load.get("samples"):
        return f"load: loadavg {load.get('loadavg_mean', float('nan')):.2f}"
    return (
        f"background load during the run: loadavg {load['loadavg_mean']:.2f} "
        f"(max {load['loadavg_max']:.2f}), CPU busy {100 * load['busy_mean']:.0f} % of all "
        f"cores, of which other processes {100 * load['other_mean']:.0f} % "
        f"(max {100 * load['other_max']:.0f} %)"
    )


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def header(command: str, report: dict[str, Any]) -> list[str]:
    """The first lines of every report: title, machine, background load."""
    return [
        f"# wavehost bench {command}",
        "",
        machine_line(report["machine"]),
        "",
        load_line(report["load"]),
        "",
    ]


def latency_markdown(report: dict[str, Any]) -> str:
    """The latency table: one line per plugin × rate × block × threads."""
    s = report["settings"]
    modes = s["modes"]
    lines = [
        *header("latency", report),
        f"{s['count']} timed blocks per cell after {s['warmup']} warm-up blocks; live engine "
        f"runs of ≥ {s['live_seconds']} s per mode. Times in ms unless marked. `plugin`: the "
        "plugin's `process` alone; `path`: `Processor.process` for one device block (host + "
        "plugin); `cpu`: thread CPU time (preemption by other processes left out); `host µs`: "
        "path p50 − plugin p50 in CPU time (– for a windowed plugin, whose `plugin` times one "
        "call on a whole window, made once per hop); `ratio`: path p99 (wall) / block duration; "
        "`1/RTF`: "
        "block duration / mean path time; `×DSP`: plugin p50 / resample-8k-16k p50 in the same "
        "cell; `miss`: deadline misses / callbacks of the live engine driven by a clock thread, "
        "with (in brackets) the blocks the clock itself started more than a period late (the "
        "machine stalled the process: a device would have under-run); `other`: CPU share of "
        "other processes during the cell.",
        "",
    ]
    head = (
        "| plugin | rate | block | thr | budget | plugin p50 | plugin p99 | plugin cpu p99 "
        "| path p50 | path p99 | path p99.9 | path max | path cpu p99 | host µs | ratio p99 "
        "| 1/RTF | ×DSP | " + " | ".join(f"miss {m}" for m in modes) + " | other |"
    )
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in report["rows"]:
        p, path = r["plugin_ms"], r.get("path_ms")
        pc, pathc = r["plugin_cpu_ms"], r.get("path_cpu_ms")
        b = r["budget"]
        live = r.get("live", {})
        miss = [f"{live[m]['misses']}/{live[m]['callbacks']}" if m in live else "–" for m in modes]
        lines.append(
            f"| {r['plugin']} | {r['rate']} | {r['block']} | {r['threads']} | "
            f"{b['budget_ms']:.2f} | {_f(p['p50'])} | {_f(p['p99'])} | {_f(pc['p99'])} | "
            f"{_f(path and path['p50'])} | {_f(path and path['p99'])} | "
            f"{_f(path and path['p99.9'])} | {_f(path and path['max'], 2)} | "
            f"{_f(pathc and pathc['p99'])} | {_f(r.get('host_cpu_us_p50'), 1)} | "
            f"{b['ratio_p99']:.3f} | {b['inv_rtf']:.1f} | "
            f"{_f(r.get('vs_reference_p50'), 2)} | " + " | ".join(miss) + f" | "
            f"{100 * r['load'].get('other_mean', float('nan')):.0f} % |"
        )
    faults = [r for r in report["rows"] if r.get("fault")]
    if faults:
        lines += ["", "**Faults: these rows timed the host's bypass, not (only) the plugin:**", ""]
        lines += [
            f"- `{r['plugin']}` {r['rate']} Hz, block {r['block']}: {r['fault']}" for r in faults
        ]
    lines += ["", *probe_markdown(report.get("latencies", []))]
    staged = {r["plugin"]: r["graph_status"] for r in report["rows"] if "graph_status" in r}
    if staged:
        lines += ["", "Plugins on the device (times include the copies to it and back):", ""]
        lines += [f"- `{name}`: {status}" for name, status in staged.items()]
    if report.get("streams"):
        lines += ["", *streams_markdown(report["streams"])]
    return "\n".join(lines) + "\n"


def probe_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The algorithmic latency each plugin declares against the lag of a noise probe."""
    lines = [
        "Algorithmic latency, output samples: declared by the plugin, and the lag at which a "
        "second of white noise streamed through it best matches its input "
        "(`realtime/probe.py`; correlation under 0.3: the output does not carry the input).",
        "",
        "| plugin | rates Hz | declared | ms | noise probe | correlation | agrees |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rates = f"{r['rate_in']} → {r['rate_out']}"
        if "error" in r:
            probe = f"failed: {r['error']}"
            lines.append(f"| {r['plugin']} | {rates} | {r['declared']} | – | {probe} | – | – |")
            continue
        agrees = {True: "yes", False: "**no**", None: "not measurable"}[r["agrees"]]
        lines.append(
            f"| {r['plugin']} | {rates} | {r['declared']} | {r['declared_ms']:.2f} | "
            f"{r['probe_lag']} | {r['probe_correlation']:.2f} | {agrees} |"
        )
    return lines


def streams_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The batched-streams table (one line per stream count) and each sweep's result."""
    lines = [
        "Batched streams: one tick runs every stream's block (input written, copies, step, "
        "output on the host); `budget`: one block's duration; `per stream`: tick p50 / N.",
        "",
        "| plugin | device | rate | block | block in | graphs | N | tick p50 | tick p99 "
        "| tick max | budget | per stream µs | within budget |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for row in rows:
        if "skipped" in row:
            notes.append(f"- `{row['plugin']}`: skipped: {row['skipped']}")
            continue
        for r in row["counts"]:
            lines.append(
                f"| {row['plugin']} | {row['device']} | {row['rate']} | {row['block']} | "
                f"{row['block_in']} | {'yes' if r['graphs'] else 'no'} | {r['n_streams']} | "
                f"{_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {_f(r['max_ms'])} | "
                f"{r['budget_ms']:.2f} | {_f(r['per_stream_us'], 2)} | "
                f"{'yes' if r['within_budget'] else 'no'} |"
            )
        graphs = "on" if row["graphs_asked"] else "off"
        where = f"`{row['plugin']}` {row['rate']} Hz block {row['block']}, graphs {graphs}"
        if "out_of_memory_at" in row:
            notes.append(f"- {where}: out of device memory at {row['out_of_memory_at']} streams")
        if "sweep" in row:
            sw = row["sweep"]
            notes.append(
                f"- {where}: at most **{sw['max_streams']}** streams within budget "
                f"({sw['stopped']})"
            )
    return lines + (["", *notes] if notes else [])


def _save(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write ``fig`` to ``path`` at the reports' resolution, close it; return ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_cdfs(report: dict[str, Any], path: Path, threads: int = 1) -> Path:
    """Latency CDF (path time per block) per block size, one panel each, per rate a line style."""
    rows = [r for r in report["rows"] if r["threads"] == threads and "_times" in r]
    blocks = sorted({r["block"] for r in rows})
    rates = sorted({r["rate"] for r in rows})
    plugins = list(dict.fromkeys(r["plugin"] for r in rows))
    colors = {p: f"C{i}" for i, p in enumerate(plugins)}
    styles = dict(zip(rates, ["-", "--", ":", "-."], strict=False))
    fig, axes = plt.subplots(1, len(blocks), figsize=(3.0 * len(blocks), 3.0), squeeze=False)
    for ax, block in zip(axes[0], blocks, strict=True):
        for r in rows:
            if r["block"] != block:
                continue
            t = np.sort(r["_times"]) * 1e3
            q = np.linspace(0, 1, t.size, endpoint=False)
            keep = np.unique(np.linspace(0, t.size - 1, 300).astype(int))  # small PNGs
            ax.plot(
                t[keep],
                q[keep],
                styles.get(r["rate"], "-"),
                color=colors[r["plugin"]],
                label=f"{r['plugin']} {r['rate'] // 1000}k",
                lw=1,
            )
        for rate in rates:
            ax.axvline(1e3 * block / rate, color="k", ls=styles.get(rate, "-"), lw=0.6)
        ax.set_xscale("log")
        ax.set_title(f"block {block}", fontsize=9)
        ax.set_xlabel("path time per block (ms)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("CDF", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.suptitle(
        f"{report['machine']['kind']}: latency CDF, {threads} thread(s); black lines: block budget",
        fontsize=9,
    )
    return _save(fig, path)


def _log_axes(ax: plt.Axes, title: str, xlabel: str, per: str) -> None:
    """A time panel: log2 x axis labelled ``xlabel``, log time axis "time ``per`` (ms)"."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(f"time {per} (ms)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, which="both")


def plot_block_times(report: dict[str, Any], path: Path, threads: int = 1) -> Path:
    """Path time p50 (line) and p99 (dashed) against block size, with the budget line."""
    rows = [r for r in report["rows"] if r["threads"] == threads]
    rates = sorted({r["rate"] for r in rows})
    plugins = list(dict.fromkeys(r["plugin"] for r in rows))
    fig, axes = plt.subplots(1, len(rates), figsize=(4.2 * len(rates), 3.4), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        blocks = sorted({r["block"] for r in rows if r["rate"] == rate})
        ax.plot(blocks, [1e3 * b / rate for b in blocks], "k-", lw=1.5, label="budget")
        for i, p in enumerate(plugins):
            sel = sorted(
                (r for r in rows if r["rate"] == rate and r["plugin"] == p),
                key=lambda r: r["block"],
            )
            stats = [r.get("path_ms") or r["plugin_ms"] for r in sel]
            bs = [r["block"] for r in sel]
            ax.plot(bs, [s["p50"] for s in stats], "o-", color=f"C{i}", ms=3, label=f"{p} p50")
            ax.plot(bs, [s["p99"] for s in stats], "--", color=f"C{i}", lw=1, label=f"{p} p99")
        _log_axes(ax, f"{rate} Hz, {threads} thread(s)", "device block (samples)", "per block")
    axes[0][-1].legend(fontsize=6)
    return _save(fig, path)


def write_latency(report: dict[str, Any], out: Path) -> list[Path]:
    """``latency.json``, ``latency.md`` and the two PNGs (per thread count) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = [write_json(report, out / "latency.json")]
    md = out / "latency.md"
    md.write_text(latency_markdown(report))
    files.append(md)
    for t in report["settings"]["threads"]:
        files.append(plot_cdfs(report, out / f"latency-cdf-t{t}.png", t))
        files.append(plot_block_times(report, out / f"block-time-t{t}.png", t))
    if any(r.get("counts") for r in report.get("streams", [])):
        files.append(plot_streams(report, out / "streams.png"))
    return files


def plot_streams(report: dict[str, Any], path: Path) -> Path:
    """Tick time p50 (dots) and p99 (line) against the stream count (the counts asked for and the
    sweep's), one panel per device rate × block, graphs solid and plain dashed, with the budget."""
    rows = [r for r in report["streams"] if r.get("counts")]
    panels = list(dict.fromkeys((r["rate"], r["block"]) for r in rows))
    plugins = list(dict.fromkeys(r["plugin"] for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (rate, block) in zip(axes[0], panels, strict=True):
        ax.axhline(1e3 * block / rate, color="k", lw=1.2, label="budget")
        for r in rows:
            if (r["rate"], r["block"]) != (rate, block):
                continue
            runs = {c["n_streams"]: c for c in r["counts"] + r.get("sweep", {}).get("runs", [])}
            n = sorted(runs)
            color = f"C{plugins.index(r['plugin'])}"
            kind = "graphs" if r["graphs_asked"] else "plain"
            style = "-" if r["graphs_asked"] else "--"
            ax.plot(n, [runs[k]["p99_ms"] for k in n], style, color=color, lw=1,
                    label=f"{r['plugin']} {kind} p99")  # fmt: skip
            ax.plot(n, [runs[k]["p50_ms"] for k in n], "o", color=color, ms=2.5)
        _log_axes(ax, f"{rate} Hz, block {block}", "streams per tick", "per tick")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(f"{report['machine']['kind']}: batched streams; dots: p50", fontsize=9)
    return _save(fig, path)


def e2e_markdown(report: dict[str, Any]) -> str:
    """The end-to-end table: per backend, measured against declared latency."""
    s = report["settings"]
    lines = [
        *header("e2e", report),
        f"{s['rate']} Hz, device block {s['block']}, plugin `{s['plugin']}`, engine "
        f"{s['mode']}. A click train is played into sink `call` by `pw-play`; one `pw-record` "
        "stream records `call`'s monitor (the reference) and `listener`'s monitor on two "
        "channels of the same graph cycle, so their lag is exact. The train is played twice "
        "into one duplex stream: `copy` while its callback copies input to output (the server "
        "+ ALSA + PortAudio loopback alone), `engine` while the wavehost engine's output goes "
        "out. Samples at the device rate.",
        "",
        "| backend | copy lag | engine lag | measured engine (engine − copy) | declared engine "
        "| error | engine within one block | declared device in+out | declared total "
        "| engine lag − declared total | total within one block |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    yes = {True: "yes", False: "no"}
    for r in report["rows"]:
        d = r["declared"]
        off = r["engine"]["lag"] - d["total"]
        lines.append(
            f"| {r['backend']} | {r['copy']['lag']} | {r['engine']['lag']} | "
            f"{r['measured_engine']} | {d['engine']:.1f} | {r['error']:+.1f} | {yes[r['ok']]} | "
            f"{d['device_in'] + d['device_out']:.1f} | {d['total']:.1f} | {off:+.1f} | "
            f"{yes[abs(off) <= d['block']]} |"
        )
    for r in report["rows"]:
        if r.get("fault"):
            lines += ["", f"**{r['backend']}: the plugin did not run throughout:** {r['fault']}"]
    lines += ["", report.get("explanation", "")]
    return "\n".join(lines) + "\n"


def plot_correlation(report: dict[str, Any], path: Path) -> Path:
    """Cross-correlation of listener against reference around the peak, per backend and run."""
    rows = report["rows"]
    fig, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 3.0), squeeze=False)
    rate = report["settings"]["rate"]
    for ax, r in zip(axes[0], rows, strict=True):
        for kind, color in (("copy", "C0"), ("engine", "C1")):
            m = r[kind]
            corr = np.asarray(r[f"_{kind}_corr"])
            lags = np.arange(corr.size)
            lo, hi = max(0, m["lag"] - 400), min(corr.size, m["lag"] + 400)
            ax.plot(
                1e3 * lags[lo:hi] / rate,
                corr[lo:hi],
                color=color,
                lw=1,
                label=f"{kind}: {m['lag']} samples ({1e3 * m['lag'] / rate:.2f} ms)",
            )
        ax.axvline(
            1e3 * (r["copy"]["lag"] + r["declared"]["engine"]) / rate,
            color="k",
            ls=":",
            lw=1,
            label="copy + declared engine",
        )
        ax.set_title(r["backend"], fontsize=9)
        ax.set_xlabel("lag (ms)", fontsize=8)
        ax.set_ylabel("correlation / reference energy", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def write_e2e(report: dict[str, Any], out: Path) -> list[Path]:
    """``e2e.json``, ``e2e.md`` and ``e2e-correlation.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / "e2e.md"
    md.write_text(e2e_markdown(report))
    return [
        write_json(report, out / "e2e.json"),
        md,
        plot_correlation(report, out / "e2e-correlation.png"),
    ]
