"""``wavehost``: devices, run, render; other commands come from the ``wavehost.commands`` group.

Every failure the user can cause (a bad plugin, a missing device, an unreadable file) ends with
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from fractions import Fraction
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from realtime.contract import WINDOW_SHAPES, PluginError
from realtime.rt import gc_freeze, go_realtime

COMMAND_GROUP = "wavehost.commands"
DEFAULT_PLUGIN = "bwe-8k-16k"
FALLBACK_PLUGIN = "resample-8k-16k"
BUILTIN = ("devices", "run", "render", "wrap")
RT_PRIORITY = 10  # below PipeWire's own data threads (88), above ordinary processes
EXIT_USER_ERROR = 2  # nothing was done: bad plugin, device, file or argument
EXIT_REPAIRED = 3  # the job completed, but input or plugin faults were repaired (see stderr)
EXIT_STREAM_FAILED = 4  # the live stream ended on its own (device vanished, server gone)


def callback_rt_priority(worker: int) -> int:
    """SCHED_FIFO priority `wavehost run` gives the audio callback: above its worker's."""
    return min(99, worker + 5)


class UsageError(Exception):
    """Bad command-line input; one line for the user."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wavehost`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}
    if argv and argv[0] in extra and argv[0] not in BUILTIN:
        return int(extra[argv[0]].load()(argv[1:]) or 0)
    parser = _parser(sorted(extra))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        from realtime.errors import one_line

        print(f"wavehost: error: {one_line(exc, 300)}", file=sys.stderr)
        return EXIT_USER_ERROR


def _is_user_error(exc: Exception) -> bool:
    from realtime.accel import DeviceError as ComputeDeviceError
    from realtime.io.backend import DeviceError
    from realtime.render import RenderError

    return isinstance(
        exc, PluginError | RenderError | DeviceError | ComputeDeviceError | UsageError
    )


def _parser(extra: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavehost",
        description="Real-time streaming audio plugin host for neural audio models.",
        epilog="more commands: " + ", ".join(c for c in extra if c not in BUILTIN),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    dev = sub.add_parser("devices", help="list audio devices with host API, rates and channels")
    dev.add_argument(
        "--backend",
        default="sounddevice",
        choices=["sounddevice", "pyaudio", "pulse"],
        help="whose view of the devices: PortAudio's (sounddevice, pyaudio) or the server's "
        "sinks and sources (pulse)",
    )
    dev.set_defaults(func=cmd_devices)

    run = sub.add_parser("run", help="stream live audio through a plugin chain")
    _plugin_args(run)
    run.add_argument(
        "--backend",
        default="sounddevice",
        choices=["sounddevice", "pyaudio", "pulse", "file"],
        help="audio I/O: PortAudio through sounddevice or pyaudio, libpulse (pulse), or files "
        "at a real-time pace (default sounddevice)",
    )
    run.add_argument(
        "--input-device", help="input device index or name substring (pulse: a source name)"
    )
    run.add_argument(
        "--output-device", help="output device index or name substring (pulse: a sink name)"
    )
    run.add_argument("--monitor", metavar="SINK", help="capture what is played into SINK")
    run.add_argument("--sink", metavar="SINK", help="play the result into SINK")
    run.add_argument("--input-file", help="file backend: the audio to stream in real time")
    run.add_argument("--output-file", help="file backend: where the device output goes")
    run.add_argument("--rate", type=int, help="device rate, Hz (default: the chain's output rate)")
    run.add_argument("--block", type=int, default=256, help="device block, frames (default 256)")
    run.add_argument(
        "--mode",
        default="threaded",
        choices=["threaded", "inline"],
        help="threaded (the default): plugins on a worker thread, a hand-off block and --margin "
        "of latency; inline: plugins in the audio callback, no extra latency",
    )
    run.add_argument(
        "--margin",
        type=int,
        default=0,
        help="safety margin, blocks (threaded); the adaptive margin starts here",
    )
    run.add_argument(
        "--fixed-margin",
        action="store_true",
        help="never grow the margin on misses (late output is dropped instead)",
    )
    run.add_argument(
        "--latency",
        default="low",
        help="device latency: low, high or seconds (PortAudio's suggested latency; pulse: "
        "the playback buffering asked of the server)",
    )
    run.add_argument(
        "--rt-priority",
        type=int,
        default=RT_PRIORITY,
        metavar="N",
        help=f"SCHED_FIFO priority of the worker (the audio callback gets N+5) where allowed; "
        f"0 disables (default {RT_PRIORITY})",
    )
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument("--record", help="write the engine output (before the device) to this file")
    run.add_argument("--record-input", help="write the engine input to this file")
    run.add_argument("--report", help="write the final report as JSON to this file")
    run.add_argument("--quiet", action="store_true", help="no live status line")
    run.set_defaults(func=cmd_run)

    ren = sub.add_parser("render", help="process a file offline (same engine, file clock)")
    ren.add_argument("input", help="input audio (WAV, FLAC, OGG, MP3)")
    ren.add_argument("output", help="output audio (.wav float32 or .flac 24-bit)")
    _plugin_args(ren)
    ren.add_argument("--block", type=int, default=1024, help="frames per step (default 1024)")
    ren.add_argument("--rate", type=int, help="output rate, Hz (default: the chain's)")
    ren.add_argument("--quiet", action="store_true", help="no progress bar")
    ren.set_defaults(func=cmd_render)

    wrap = sub.add_parser(
        "wrap",
        help="declare a bare TorchScript audio model as a plugin (rates, latency, state)",
    )
    _wrap_args(wrap)
    wrap.set_defaults(func=cmd_wrap)
    return parser


def _wrap_args(p: argparse.ArgumentParser) -> None:
    """``wavehost wrap``'s options (:func:`realtime.wrap.wrap_file` says what they mean)."""
    p.add_argument("model", help="TorchScript file of the bare model (torch.jit.save)")
    p.add_argument("output", help="plugin file to write (.ts)")
    p.add_argument("--rate", type=int, required=True, help="input sample rate, Hz")
    p.add_argument("--rate-out", type=int, help="output sample rate, Hz (default: --rate)")
    p.add_argument("--channels", type=int, default=1, help="channels per stream (default 1)")
    p.add_argument(
        "--layout",
        choices=("bct", "bt"),
        default="bct",
        help="what forward takes: (batch, channels, time) or (batch, time) (default bct)",
    )
    p.add_argument(
        "--block-multiple",
        type=int,
        default=1,
        help="every call's length is a multiple of this, samples (default 1)",
    )
    p.add_argument(
        "--latency",
        type=int,
        help="the model's delay, output samples (default: measured from a noise probe)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=0,
        help="windowed model: window length, input samples (the host overlap-adds); 0: streaming",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="the model takes exactly --block-multiple samples a call (e.g. traced with that "
        "shape): longer blocks are fed to it in pieces",
    )
    p.add_argument("--hop", type=int, default=0, help="windowed model: hop, input samples")
    p.add_argument(
        "--window-shape",
        choices=WINDOW_SHAPES,
        default="hann",
        help="windowed model: hann (synthesis window only) or sqrt_hann (analysis and synthesis)",
    )


def _plugin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugin",
        action="append",
        metavar="P",
        help=f"plugin name or TorchScript path; repeat to chain (default {DEFAULT_PLUGIN})",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a plugin parameter (repeatable)",
    )
    p.add_argument(
        "--device", default="cpu", help="where the plugins run: cpu, cuda or cuda:N (default cpu)"
    )


def build_chain(
    specs: list[str] | None, params: list[str], device: str = "cpu", block: int = 0, rate: int = 0
):  # -> Chain
    """Load the plugins named on the command line (default plugin if none) into a chain; on a
    CUDA ``device`` each runs there, fast path for ``block`` device frames at ``rate`` Hz."""
    from realtime.chain import Chain
    from realtime.loader import load_plugin

    if specs:
        plugins = [load_plugin(s) for s in specs]
    else:
        try:
            plugins = [load_plugin(DEFAULT_PLUGIN)]
        except PluginError as exc:
            print(f"wavehost: note: {exc}; using {FALLBACK_PLUGIN}", file=sys.stderr)
            plugins = [load_plugin(FALLBACK_PLUGIN)]
    for item in params:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--param needs NAME=VALUE, got {item!r}")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--param {name}: {value!r} is not a number") from None
        owners = [p for p in plugins if name in p.info.parameters]
        if not owners:
            raise UsageError(f"no plugin in the chain has a parameter {name!r}")
        owners[0].set_parameter(name, number)
    if device != "cpu":
        from realtime.accel import on_device

        scale = Fraction(block, rate or plugins[0].info.sample_rate_in)
        moved = []
        for p in plugins:
            moved.append(on_device(p, device, block=int(scale * p.info.sample_rate_in)))
            status = moved[-1].module.graph_status  # graph replay, or why plain launches
            print(f"wavehost: note: plugin {p.info.name} on {device}: {status}", file=sys.stderr)
        plugins = moved
    return Chain(plugins)


def cmd_devices(args: argparse.Namespace) -> int:
    """``wavehost devices``."""
    from realtime.io.backend import DeviceError
    from realtime.io.devices import format_devices, list_devices, pulse_names

    if args.backend == "pulse":
        names = pulse_names()
        if names is None:
            raise DeviceError(
                "no PulseAudio/PipeWire server answers pactl (apt-get install -y "
                "pulseaudio-utils; start a server, e.g. scripts/audio-server.sh start)"
            )
        sinks, sources = names
        print("sinks (--sink, --monitor, --output-device):")
        print("\n".join(f"  {n}" for n in sinks) or "  (none)")
        print("sources (--input-device):")
        print("\n".join(f"  {n}" for n in sources) or "  (none)")
        return 0
    print(format_devices(list_devices(args.backend)))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """``wavehost render IN OUT``."""
    from realtime.render import render

    chain = build_chain(args.plugin, args.param, args.device, args.block)
    t0 = time.perf_counter()
    res = render(
        args.input,
        args.output,
        chain,
        block=args.block,
        rate_out=args.rate,
        progress=not args.quiet,
    )
    secs = time.perf_counter() - t0
    dur = res.frames_in / res.rate_in
    print(
        f"rendered {args.output}: {res.frames_out} frames at {res.rate_out} Hz "
        f"({dur:.2f} s of audio in {secs:.2f} s, {dur / max(secs, 1e-9):.1f}x real time), "
        f"latency {res.latency} samples compensated",
        file=sys.stderr,
    )
    return _report_faults(res.health, res.nonfinite_input)


def cmd_wrap(args: argparse.Namespace) -> int:
    """``wavehost wrap MODEL OUT``."""
    from realtime.wrap import format_report, wrap_file

    report = wrap_file(
        args.model,
        args.output,
        rate=args.rate,
        rate_out=args.rate_out,
        channels=args.channels,
        layout=args.layout,
        block_multiple=args.block_multiple,
        latency=args.latency,
        window=args.window,
        hop=args.hop,
        window_shape=args.window_shape,
        exact=args.exact,
    )
    print(format_report(args.model, args.output, report))
    return 0


def _report_faults(health: list, nonfinite: int) -> int:
    """Print one warning line per repaired fault; return the exit status."""
    status = 0
    if nonfinite:
        status = EXIT_REPAIRED
        print(
            f"wavehost: warning: {nonfinite} NaN/Inf input samples replaced by 0", file=sys.stderr
        )
    for h in health:
        if h.fault:
            status = EXIT_REPAIRED
            print(f"wavehost: warning: {h.fault}", file=sys.stderr)
    return status


def cmd_run(args: argparse.Namespace) -> int:
    """``wavehost run``: a live stream with a status line; Ctrl-C or --duration stops it."""
    from realtime.engine import Engine
    from realtime.io.backend import open_duplex
    from realtime.processor import Processor
    from realtime.recorder import Recorder

    if args.backend == "file" and not args.input_file:
        raise UsageError("--backend file needs --input-file")
    if args.block <= 0:
        raise UsageError(f"--block must be positive, got {args.block}")
    latency: float | str = args.latency
    if isinstance(latency, str) and latency not in ("low", "high"):
        try:
            latency = float(latency)
        except ValueError:
            raise UsageError(f"--latency must be low, high or seconds, got {latency!r}") from None
    chain = build_chain(args.plugin, args.param, args.device, args.block, args.rate or 0)
    rate = args.rate or chain.rate_out
    processor = Processor(chain, rate_in=rate, rate_out=rate, block=args.block)
    # its writer holds the GIL now and then: SCHED_FIFO too, below the worker (see Recorder)
    rt_recorder = 1 if args.rt_priority > 0 else 0
    recorder = Recorder(
        rate, chain.channels, args.record_input, args.record, rt_priority=rt_recorder
    )
    engine = Engine(
        processor,
        mode=args.mode,
        margin_blocks=args.margin,
        adaptive=not args.fixed_margin,
        on_block=recorder.write if recorder.active else None,
        rt_priority=max(0, args.rt_priority),
    )
    if args.rt_priority > 0:
        # threads inherit their creator's policy: the backend's own threads (PortAudio's,
        # libpulse's mainloop that feeds the server) are created while opening the stream
        go_realtime(args.rt_priority)  # best effort: each thread reports its own outcome
        os.environ["WAVEHOST_RT_PRIORITY"] = str(callback_rt_priority(args.rt_priority))
    try:
        stream = open_duplex(
            engine.callback,
            backend=args.backend,
            samplerate=rate,
            blocksize=args.block,
            channels=chain.channels,
            input_device=_device(args.input_device),
            output_device=_device(args.output_device),
            monitor=args.monitor,
            sink=args.sink,
            latency=latency,
            input_file=args.input_file,
            output_file=args.output_file,
        )
    except BaseException:
        recorder.close()
        raise
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.perf_counter()
    try:
        engine.start()
        stream.start()
        info = stream.info
        print(
            f"wavehost: {info.backend} {info.input_name} -> {info.output_name}, "
            f"{rate} Hz, block {args.block}, {args.mode}; Ctrl-C stops",
            file=sys.stderr,
        )
        finished = getattr(stream, "finished", None)
        while not stop.is_set():
            stop.wait(0.25)
            elapsed = time.perf_counter() - started
            if args.duration is not None and elapsed >= args.duration:
                break
            if finished is not None and finished.is_set():
                break
            if getattr(stream, "failed", False):
                break
            if not args.quiet and sys.stderr.isatty():
                print(f"\r{engine.status_line()}  ", end="", file=sys.stderr, flush=True)
    finally:
        stream.stop()
        stream.close()
        engine.stop()
        recorder.close()
        signal.signal(signal.SIGINT, previous)
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    report = _final_report(engine, stream, recorder, time.perf_counter() - started)
    print(_format_report(report))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    if getattr(stream, "failed", False):
        why = getattr(stream, "first_error", None) or "the device vanished or the server stopped"
        print(
            f"wavehost: error: the audio stream stopped on its own ({why}); recordings were kept",
            file=sys.stderr,
        )
        return EXIT_STREAM_FAILED
    if recorder.dropped:
        print(
            f"wavehost: warning: the recordings lost {recorder.dropped} frames (the disk fell "
            f"{recorder.buffer_s:g} s behind); they are that much shorter than the run",
            file=sys.stderr,
        )
    dropped = engine.counters.dropped_input
    if dropped:
        print(
            f"wavehost: warning: the plugins fell a whole input ring behind: {dropped} input "
            f"frames ({1e3 * dropped / rate:.0f} ms) were never processed (played dry, on "
            "time); the --record files lack them",
            file=sys.stderr,
        )
    return _report_faults(chain.health, engine.counters.nonfinite_input)


def _device(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.isdigit() else value


def _final_report(engine, stream, recorder, seconds: float) -> dict:
    info = stream.info
    lat = engine.latency(info.input_latency_s, info.output_latency_s)
    times = engine.timer.recent() * 1e3
    qs = [50, 90, 99, 99.9]
    dist = (
        dict(zip([f"p{q:g}" for q in qs], np.percentile(times, qs).tolist(), strict=True))
        if times.size
        else {}
    )
    c = engine.counters
    return {
        "backend": info.backend,
        "input": info.input_name,
        "output": info.output_name,
        "rate": engine.rate,
        "block": engine.block,
        "mode": engine.mode,
        "seconds": seconds,
        "latency": lat.to_dict(),
        "latency_ms": {
            k: lat.ms(v) for k, v in lat.to_dict().items() if k not in ("rate", "block")
        },
        "block_ms": {
            **dist,
            "max": float(times.max()) if times.size else None,
            "mean": float(times.mean()) if times.size else None,
            "budget": 1e3 * engine.timer.budget_s,
            "count": int(engine.timer.count),
        },
        "callbacks": c.callbacks,
        "longest_callback_gap_ms": 1e3 * getattr(stream, "longest_gap_s", 0.0),
        "misses": c.misses,
        "startup_misses": c.startup_misses,
        "missed_frames": c.missed_frames,
        "miss_times_s": engine.miss_times(),
        "margin_changes": engine.margin_changes(),
        "nonfinite_input": c.nonfinite_input,
        "dropped_input": c.dropped_input,
        "xruns": dict(stream.xruns) if info.xruns_visible else None,
        "callback_errors": getattr(stream, "callback_errors", 0),
        "recording_dropped": recorder.dropped,
        "worker_error": engine.worker_error,
        "gc": {"collections": gc_freeze.collections, "longest_ms": 1e3 * gc_freeze.longest_s},
        "scheduling": {
            "callback": f"SCHED_FIFO {stream.rt_priority}"
            if getattr(stream, "rt_priority", 0)
            else getattr(stream, "rt_error", None) or "normal scheduling",
            "worker": engine.worker_rt,
            "recorder": recorder.scheduling if recorder.active else None,
        },
        "plugins": [vars(h) for h in engine.processor.chain.health],
    }


def _format_report(r: dict) -> str:
    from realtime.latency import LatencyReport

    lat = LatencyReport(
        **{
            k: r["latency"][k]
            for k in (
                "rate",
                "block",
                "device_in",
                "device_out",
                "reblock",
                "resample",
                "threaded_block",
                "margin",
                "plugin",
            )
        }
    )
    b = r["block_ms"]
    lines = [lat.format()]
    if b.get("p50") is not None:
        lines.append(
            f"block time over {b['count']} blocks (budget {b['budget']:.2f} ms): "
            f"p50 {b['p50']:.3f}  p90 {b['p90']:.3f}  p99 {b['p99']:.3f}  "
            f"p99.9 {b['p99.9']:.3f}  max {b['max']:.3f}  mean {b['mean']:.3f} ms"
        )
    xr = (
        ", ".join(f"{k} {v}" for k, v in r["xruns"].items()) or "none"
        if r["xruns"] is not None
        else f"not visible to the {r['backend']} backend"
    )
    lines.append(
        f"{r['seconds']:.1f} s, {r['callbacks']} callbacks (longest interval "
        f"{r['longest_callback_gap_ms']:.1f} ms, period {1e3 * r['block'] / r['rate']:.1f} ms), "
        f"deadline misses {r['misses']} "
        f"(+{r['startup_misses']} while the device pre-filled its buffers), xruns: {xr}"
    )
    for t, m in r["margin_changes"]:
        lines.append(
            f"safety margin grew to {m} samples ({1e3 * m / r['rate']:.2f} ms) at {t:.2f} s"
        )
    sched = r["scheduling"]
    lines.append(
        f"scheduling: callback {sched['callback']}; worker {sched['worker']}"
        + (f"; recorder {sched['recorder']}" if sched.get("recorder") else "")
    )
    lines.append(
        f"garbage collector: {r['gc']['collections']} collections while streaming, longest "
        f"{r['gc']['longest_ms']:.2f} ms (what was alive at the start is frozen out of them)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
