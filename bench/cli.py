"""``wavehost bench latency | e2e | quality | compare``: see each subcommand's ``--help``.

Every report goes to ``--out`` (default ``bench-out/<machine kind>``) as JSON + markdown (+ PNG);
the markdown is also printed. A user error (unknown plugin, no CUDA, no audio server) ends with
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.latency import BenchError
from bench.machine import machine_kind
from realtime.contract import PluginError

EXIT_USER_ERROR = 2


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _words(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _switches(text: str) -> list[bool]:
    values = {"on": True, "off": False}
    words = _words(text)
    if not words or any(w not in values for w in words):
        raise argparse.ArgumentTypeError(f"expected on, off or on,off, got {text!r}")
    return [values[w] for w in dict.fromkeys(words)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wavehost bench", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    lat = sub.add_parser("latency", help="per-block compute time, host overhead, budget, misses")
    lat.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="P",
        help="plugin name, TorchScript path or module:attr (repeatable); the "
        "identity (host overhead) and resample-8k-16k (reference) are always added",
    )
    lat.add_argument("--rates", type=_ints, default=[16000, 48000], help="device rates, Hz")
    lat.add_argument(
        "--blocks", type=_ints, default=[64, 128, 256, 512, 1024], help="device blocks, samples"
    )
    lat.add_argument("--threads", type=_ints, default=[1, 2], help="torch intra-op threads")
    lat.add_argument("--modes", type=_words, default=["threaded", "inline"], help="engine modes")
    lat.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda: where the plugins run (cuda: staged with pinned copies, one stream)",
    )
    lat.add_argument(
        "--graphs",
        type=_switches,
        default=[True],
        help="cuda only: on, off or on,off: CUDA-graph replay of each step, plain launches, both",
    )
    lat.add_argument(
        "--streams",
        type=_ints,
        default=[],
        help="batched stream counts N to time per plugin (e.g. 1,16,256,1024): one tick serves "
        "N streams; plugins need reset_rows()",
    )
    lat.add_argument(
        "--sweep",
        action="store_true",
        help="also search the largest stream count whose p99 tick fits the block budget",
    )
    lat.add_argument("--stream-ticks", type=int, default=300, help="timed ticks per stream count")
    lat.add_argument("--blocks-count", type=int, default=2000, help="timed blocks per cell")
    lat.add_argument("--warmup", type=int, default=200, help="untimed blocks per cell")
    lat.add_argument(
        "--live-seconds",
        type=float,
        default=1.5,
        help="live engine run per cell and mode, s (at least 40 blocks)",
    )
    _common(lat)

    e2e = sub.add_parser("e2e", help="end-to-end latency through the private audio server")
    e2e.add_argument("--backends", type=_words, default=["sounddevice", "pyaudio"])
    e2e.add_argument("--rate", type=int, default=16000, help="device (and graph) rate, Hz")
    e2e.add_argument("--block", type=int, default=256, help="device block, samples")
    e2e.add_argument("--mode", default="threaded", choices=["threaded", "inline"])
    e2e.add_argument(
        "--plugin",
        default="delay-32",
        help="delay-N (identity with an N-sample delay) or a plugin spec",
    )
    _common(e2e)

    qual = sub.add_parser("quality", help="wavehost eval for each shipped plugin")
    qual.add_argument(
        "--plugin",
        action="append",
        metavar="P",
        help="plugins to evaluate (default: every registered one)",
    )
    qual.add_argument("--data", type=Path, help="validation data (default: the speech16k set)")
    qual.add_argument("--limit", type=int, help="first N files only")
    qual.add_argument("--degrade", default="soxr", help="soxr, mix or mp3:KBPS")
    _common(qual)

    cmp_ = sub.add_parser("compare", help="A/B interleaved in one run, reported as ratios")
    cmp_.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="P",
        help="two plugins (A then B), or one with two --commit",
    )
    cmp_.add_argument(
        "--commit",
        action="append",
        default=[],
        metavar="REV",
        help="two git revisions (WORKTREE: the working tree) for one --plugin",
    )
    cmp_.add_argument("--rate", type=int, default=16000, help="device rate, Hz")
    cmp_.add_argument("--block", type=int, default=64, help="device block, samples")
    cmp_.add_argument(
        "--what",
        default="path",
        choices=["path", "plugin"],
        help="time the whole path per block or the plugin alone (plugins only)",
    )
    cmp_.add_argument("--blocks-count", type=int, default=3000, help="timed blocks each")
    cmp_.add_argument("--warmup", type=int, default=200)
    _common(cmp_)
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="report folder (default bench-out/<machine kind>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no table printed")


def main(argv: list[str] | None = None) -> int:
    """``wavehost bench ...``; returns the exit status."""
    args = _parser().parse_args(argv)
    out = args.out or Path("bench-out") / machine_kind(getattr(args, "device", "cpu"))
    try:
        files, markdown = _run(args, out)
    except (BenchError, PluginError) as exc:
        print(f"wavehost bench: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    if not args.quiet:
        print(markdown)
    print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


def _run(args: argparse.Namespace, out: Path) -> tuple[list[Path], str]:
    from bench import report

    if args.command == "latency":
        from bench.latency import LatencySettings, run_latency

        settings = LatencySettings(
            rates=args.rates,
            blocks=args.blocks,
            threads=args.threads,
            modes=args.modes,
            device=args.device,
            count=args.blocks_count,
            warmup=args.warmup,
            live_seconds=args.live_seconds,
            graphs=args.graphs,
            streams=args.streams,
            sweep=args.sweep,
            stream_ticks=args.stream_ticks,
        )
        rep = run_latency(args.plugin, settings, progress=not args.quiet)
        return report.write_latency(rep, out), report.latency_markdown(rep)
    if args.command == "e2e":
        from bench.e2e import E2ESettings, run_e2e

        rep = run_e2e(
            E2ESettings(
                backends=args.backends,
                rate=args.rate,
                block=args.block,
                mode=args.mode,
                plugin=args.plugin,
            )
        )
        return report.write_e2e(rep, out), report.e2e_markdown(rep)
    if args.command == "quality":
        from bench.quality import quality_markdown, run_quality

        rep = run_quality(out / "quality", args.plugin, args.data, args.limit, args.degrade)
        md = quality_markdown(rep)
        (out / "quality").mkdir(parents=True, exist_ok=True)
        (out / "quality" / "quality.md").write_text(md)
        return [report.write_json(rep, out / "quality" / "quality.json")], md
    return _compare(args, out)


def _compare(args: argparse.Namespace, out: Path) -> tuple[list[Path], str]:
    from bench import report
    from bench.compare import compare_commits, compare_markdown, compare_plugins

    if len(args.commit) == 2 and len(args.plugin) == 1:
        rep = compare_commits(
            args.plugin[0],
            args.commit[0],
            args.commit[1],
            args.rate,
            args.block,
            args.blocks_count,
            args.warmup,
            progress=not args.quiet,
        )
    elif len(args.plugin) == 2 and not args.commit:
        rep = compare_plugins(
            args.plugin[0],
            args.plugin[1],
            args.rate,
            args.block,
            args.blocks_count,
            args.warmup,
            args.what,
            progress=not args.quiet,
        )
    else:
        raise BenchError("compare needs --plugin A --plugin B, or --plugin P --commit X --commit Y")
    md = compare_markdown(rep)
    path = out / "compare.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(md)
    return [report.write_json(rep, out / "compare.json"), path], md
