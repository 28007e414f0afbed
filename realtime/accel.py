"""Streaming plugins on a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``) behind the contract.

:class:`DevicePlugin` runs a copy of a streaming plugin on a device and is itself called like a
plugin: CPU tensors ``(batch, channels, time)`` in, CPU tensors out, so the
:class:`~realtime.chain.Chain`, the processor and the engine use it unchanged (:func:`on_device`).
Blocks of exactly ``block`` input samples take the fast path:

- fixed staging tensors, pinned host memory on CUDA; the caller may write straight into
  :attr:`DevicePlugin.host_input` and pass it back (no copy at all on the way in);
- on CUDA, one dedicated high-priority stream: non-blocking host→device copy, the step, non-blocking
  device→host copy, then one event wait per block; no allocation per block;
- the step captured once as a CUDA graph (the plugin's state tensors are updated in place, the
  input and output tensors are static) and replayed per block. Capture is checked against plain
  launches on probe blocks; where it fails or differs, plain launches are used and
  :attr:`DevicePlugin.graph_status` says why.

Other lengths run through plain launches on the same state (they allocate). On the CPU the same
staging runs with plain tensors and no graphs, so the whole path is exercised without a GPU.
"""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import Tensor, nn

from realtime.contract import PluginError
from realtime.errors import one_line
from realtime.loader import LoadedPlugin

WARMUP_CALLS = 3  # TorchScript's profiling executor settles after two calls; one more to spare
PROBE_BLOCKS = 3  # graph replay is compared with plain launches over this many blocks
GRAPH_TOLERANCE = 1e-4  # stale state shows up at signal level, rounding far below


class DeviceError(ValueError):
    """A device that cannot be used here. The message is one line meant for the user."""


def resolve_device(spec: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` → a usable ``torch.device``; :class:`DeviceError`
    with a one-line reason otherwise (CUDA requested but absent, index out of range...)."""
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {spec!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"device {spec!r} is not supported: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "no GPU visible"
        raise DeviceError(
            f"device {spec!r} requested but CUDA is not available "
            f"({why}, torch {torch.__version__})"
        )
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) visible"
        )
    return torch.device("cuda", index)


def module_on(module: object, device: torch.device, name: str) -> object:
    """A copy of plugin ``module`` on ``device``. TorchScript goes through save and load with
    ``map_location`` (``.to()`` leaves a frozen module's folded constants behind); an
    ``nn.Module`` is deep-copied and moved; any other Python object can only stay on the CPU
    (and is used as is)."""
    if isinstance(module, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # TorchScript is deprecated upstream; it is our format
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module, buffer)
            buffer.seek(0)
            return torch.jit.load(buffer, map_location=device).eval()
    if isinstance(module, nn.Module):
        return copy.deepcopy(module).to(device)
    if device.type == "cpu":
        return module
    raise PluginError(
        f"plugin {name} is a plain Python object, not a torch module: it cannot run on {device}"
    )


class DevicePlugin:
    """A copy of streaming ``plugin`` on ``device``, called like a plugin.

    Args:
        plugin: a loaded streaming plugin (not modified: it is copied, see :func:`module_on`).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        block: input samples per call on the fast path (a multiple of the block multiple).
        batch: batch rows per call (streams); fixed, since a change could reallocate state.
        graphs: capture the fast-path step as a CUDA graph (CUDA only).

    Attributes:
        host_input: ``(batch, channels, block)`` float32 staging tensor (pinned on CUDA).
        host_output: ``(batch, channels, block·R)`` float32, what the fast path returns.
        graph_status: one line: the graph in use, or why plain launches are used.
    """

    def __init__(
        self,
        plugin: LoadedPlugin,
        device: str = "cpu",
        *,
        block: int,
        batch: int = 1,
        graphs: bool = True,
    ) -> None:
        info = plugin.info
        if not info.streaming:
            raise PluginError(
                f"plugin {info.name} is windowed: only streaming plugins run on a device stage"
            )
        if block <= 0 or block % info.block_multiple:
            raise PluginError(
                f"plugin {info.name}: block {block} is not a positive multiple of its block "
                f"multiple {info.block_multiple}"
            )
        if batch < 1 or (info.max_batch and batch > info.max_batch):
            raise PluginError(
                f"plugin {info.name}: batch {batch} outside 1..{info.max_batch or 'any'}"
            )
        self.info, self.block, self.batch = info, block, batch
        self.device = resolve_device(device)
        self.module = module_on(plugin.module, self.device, info.name)
        cuda = self.device.type == "cuda"
        out = block * info.sample_rate_out // info.sample_rate_in
        shape_in, shape_out = (batch, info.channels, block), (batch, info.channels, out)
        self.host_input = torch.zeros(shape_in, pin_memory=cuda)
        self.host_output = torch.zeros(shape_out, pin_memory=cuda)
        self._dev_in = torch.zeros(shape_in, device=self.device) if cuda else self.host_input
        self._stream = torch.cuda.Stream(self.device, priority=-1) if cuda else None
        self._done = torch.cuda.Event() if cuda else None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._dev_out: Tensor | None = None  # the graph's static output
        try:
            self._warm_up()  # sizes the state for `batch`; checks the plugin runs there
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {info.name} failed on {self.device} with batch {batch}, block {block}: "
                f"{one_line(exc, 160)}"
            ) from None
        if not cuda:
            self.graph_status = "plain launches: CUDA graphs need a CUDA device"
        elif not graphs:
            self.graph_status = "plain launches: CUDA graphs turned off"
        else:
            self.graph_status = self._capture()
        self.reset()

    @property
    def graphed(self) -> bool:
        """Whether the fast path replays a CUDA graph."""
        return self._graph is not None

    def __call__(self, x: Tensor) -> Tensor:
        """``x`` ``(batch, channels, time)`` float32 on the CPU → ``(batch, channels, time·R)``
        on the CPU. For ``time == block`` the result is :attr:`host_output` (valid until the next
        call); passing :attr:`host_input` itself skips the copy in."""
        if x.size(0) != self.batch:
            raise ValueError(
                f"{self.info.name} on {self.device} runs batch {self.batch}, got {x.size(0)}"
            )
        if x.size(-1) != self.block:
            with torch.cuda.stream(self._stream), torch.inference_mode():
                return self.module(x.to(self.device)).cpu()
        if x is not self.host_input:
            self.host_input.copy_(x)
        with torch.cuda.stream(self._stream), torch.inference_mode():
            if self._dev_in is not self.host_input:
                self._dev_in.copy_(self.host_input, non_blocking=True)
            if self._graph is None:
                self.host_output.copy_(self.module(self._dev_in), non_blocking=True)
            else:
                self._graph.replay()
                self.host_output.copy_(self._dev_out, non_blocking=True)
            if self._done is not None:
                self._done.record()
                self._done.synchronize()
        return self.host_output

    forward = __call__

    def reset(self) -> None:
        """Clear the plugin's streaming state (in place)."""
        with torch.cuda.stream(self._stream), torch.inference_mode():
            self.module.reset()

    def reset_rows(self, rows: Tensor) -> None:
        """Clear the state of batch rows ``rows`` (indices) only; needs the plugin's optional
        ``reset_rows`` (:attr:`~realtime.contract.PluginInfo.batch_reset`)."""
        if not self.info.batch_reset:
            raise PluginError(f"plugin {self.info.name} has no reset_rows(): cannot reset one row")
        rows = torch.as_tensor(rows, dtype=torch.int64)
        with torch.cuda.stream(self._stream), torch.inference_mode():
            self.module.reset_rows(rows.to(self.device))

    def set_parameter(self, name: str, value: float) -> None:
        """Set a parameter on the device copy (ordered with the blocks on its stream)."""
        with torch.cuda.stream(self._stream), torch.inference_mode():
            self.module.set_parameter(name, float(value))

    def _warm_up(self) -> None:
        for _ in range(WARMUP_CALLS):
            self(self.host_input)
        if self._stream is not None:
            self._stream.synchronize()

    def _capture(self) -> str:
        graph = torch.cuda.CUDAGraph()
        try:
            with (
                torch.inference_mode(),
                torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"),
            ):
                self._dev_out = self.module(self._dev_in)
        except Exception as exc:
            torch.cuda.synchronize(self.device)
            return f"plain launches: CUDA graph capture failed: {one_line(exc, 160)}"
        self._graph = graph
        diff = self._replay_error()
        if diff > GRAPH_TOLERANCE:
            self._graph = self._dev_out = None
            return (
                f"plain launches: graph replay differed from plain launches by {diff:.3g} "
                "(plugin state not updated in place?)"
            )
        return f"CUDA graph replay (batch {self.batch}, block {self.block})"

    def _replay_error(self) -> float:
        """Largest difference between graph replay and plain launches over probe blocks."""
        gen = torch.Generator().manual_seed(0)
        shape = self.host_input.shape
        probes = [0.1 * torch.randn(shape, generator=gen) for _ in range(PROBE_BLOCKS)]
        graph, runs = self._graph, []
        for use in (graph, None):
            self._graph = use
            self.reset()
            runs.append([self(p).clone() for p in probes])
        self._graph = graph
        return max(float((a - b).abs().max()) for a, b in zip(*runs, strict=True))


def on_device(
    plugin: LoadedPlugin, device: str, *, block: int, graphs: bool = True
) -> LoadedPlugin:
    """``plugin`` as a batch-1 :class:`DevicePlugin` wrapped as a :class:`LoadedPlugin` (same
    info), for a :class:`~realtime.chain.Chain` whose blocks are ``block`` input samples."""
    return LoadedPlugin(DevicePlugin(plugin, device, block=block, graphs=graphs), plugin.info)
