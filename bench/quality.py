"""Quality: ``wavehost eval`` for each shipped plugin against its baselines, on validation data.

Shipped plugins are the registered ``wavehost.plugins`` names. The data default is the speech
set built by ``python -m model.corpora --speech`` (``$WAVEHOST_CACHE/datasets/speech16k``);
a missing data set, or a registered plugin whose weights are not there yet, is skipped with a
one-line reason instead of failing the suite.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.machine import machine_facts
from realtime.contract import PluginError
from realtime.loader import available_plugins, load_plugin

MAX_PNG_BYTES = 200_000


def default_data() -> Path:
    """``$WAVEHOST_CACHE/datasets/speech16k`` (``WAVEHOST_CACHE`` default ``~/.cache/wavehost``)."""
    cache = Path(os.environ.get("WAVEHOST_CACHE", Path.home() / ".cache" / "wavehost"))
    return cache / "datasets" / "speech16k"


def shrink_png(path: Path, max_bytes: int = MAX_PNG_BYTES) -> None:
    """Halve a PNG's size in pixels until it is under ``max_bytes`` (committed results stay
    small); a missing file is left alone."""
    from PIL import Image

    while path.is_file() and path.stat().st_size > max_bytes:
        with Image.open(path) as im:
            small = im.convert("RGB").resize((im.width // 2, im.height // 2), Image.LANCZOS)
        small.quantize(colors=128).save(path, optimize=True)


def run_quality(
    out: Path,
    plugins: list[str] | None = None,
    data: Path | None = None,
    limit: int | None = None,
    degrade: str = "soxr",
) -> dict[str, Any]:
    """Run ``wavehost eval`` per plugin into ``out/<plugin>/``; return the collected report
    (``skipped`` lists ``{"plugin", "reason"}``; ``results`` the eval means per plugin)."""
    from model.evaluate import main as eval_main

    data = data or default_data()
    names = plugins or available_plugins()
    report: dict[str, Any] = {
        "kind": "quality",
        "machine": machine_facts(),
        "settings": {"data": str(data), "limit": limit, "degrade": degrade, "plugins": names},
        "results": {},
        "skipped": [],
    }
    if not data.is_dir():
        report["skipped"] = [
            {
                "plugin": n,
                "reason": f"no validation data at {data} (build it with "
                "scripts/install-corpora.sh --speech && python -m model.corpora --speech)",
            }
            for n in names
        ]
        return report
    for name in names:
        try:
            load_plugin(name)
        except PluginError as exc:
            report["skipped"].append({"plugin": name, "reason": str(exc)})
            continue
        folder = out / Path(name).stem
        argv = [
            "--plugin",
            name,
            "--data",
            str(data),
            "--out",
            str(folder),
            "--degrade",
            degrade,
            "--no-progress",
        ]
        if limit:
            argv += ["--limit", str(limit)]
        status = eval_main(argv)
        if status != 0:
            report["skipped"].append({"plugin": name, "reason": f"wavehost eval exit {status}"})
            continue
        shrink_png(folder / "spectrograms.png")
        metrics = json.loads((folder / "metrics.json").read_text())
        report["results"][name] = {
            "mean": metrics["mean"],
            "files": len(metrics["files"]),
            "convention": metrics["convention"],
            "markdown": (folder / "metrics.md").read_text(),
        }
    return report


def quality_markdown(report: dict[str, Any]) -> str:
    """The eval tables of every plugin, and the skipped ones with their reason."""
    from bench.report import machine_line

    lines = ["# wavehost bench quality", "", machine_line(report["machine"]), ""]
    for res in report["results"].values():
        lines += [res["markdown"].strip(), ""]
    for skip in report["skipped"]:
        lines.append(f"- skipped {skip['plugin']}: {skip['reason']}")
    return "\n".join(lines) + "\n"
