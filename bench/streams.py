"""Many streams through one plugin: the tick time of ``N`` batched streams, and the largest ``N``
that fits the block budget (``wavehost bench latency --streams / --sweep``).

Each plugin of the run that can batch streams (the contract's optional ``reset_rows``) is put in
a :class:`~realtime.multistream.StreamBatcher` of ``N`` rows on the run's device, for every
device rate × block of the grid and every graphs setting. A tick is timed from the streams'
blocks landing in the input to every stream's output being on the host (copies, step, event
wait: :func:`~realtime.multistream.bench_multistream`).
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from realtime.loader import LoadedPlugin
from realtime.multistream import bench_multistream, sweep_streams


def stream_rows(
    name: str,
    plugin: LoadedPlugin,
    cells: list[tuple[int, int, int]],
    device: str,
    graphs: list[bool],
    counts: list[int],
    sweep: bool,
    ticks: int,
    bar: tqdm,
) -> list[dict[str, Any]]:
    """Rows for ``plugin``: one per (rate, block, in-block) cell × graphs setting, with the tick
    figures of each stream count in ``counts`` under ``counts`` and, with ``sweep``, the
    largest count within budget under ``sweep``. ``cells`` holds (device rate Hz, device block,
    plugin input samples per tick); a plugin without ``reset_rows`` gives one row saying so."""
    if not plugin.info.batch_reset:
        bar.update(len(cells) * len(graphs))
        why = "no reset_rows(): streams cannot join one at a time"
        return [{"plugin": name, "skipped": why}]
    rows = []
    for rate, block, n_in in cells:
        for g in graphs:
            bar.set_postfix_str(f"{name} streams {rate} Hz b{block} graphs={g}")
            row: dict[str, Any] = {
                "plugin": name,
                "device": device,
                "rate": rate,
                "block": block,
                "block_in": n_in,
                "graphs_asked": g,
            }
            runs = []
            for n in counts:
                try:
                    r = bench_multistream(plugin, n, n_in, device, graphs=g, ticks=ticks)
                except torch.cuda.OutOfMemoryError:
                    row["out_of_memory_at"] = n
                    break
                r.pop("tick_ms")
                runs.append(r)
            row["counts"] = runs
            if sweep:
                row["sweep"] = sweep_streams(plugin, n_in, device, graphs=g, ticks=ticks)
            rows.append(row)
            bar.update()
    return rows
