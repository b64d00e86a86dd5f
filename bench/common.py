"""Shared pieces of the benchmarks: timing on the device, environment facts, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine()


def time_it(fn: Callable[[], Any], warmup: int = 3, repeat: int = 20) -> dict[str, float]:
    """Median/min/max wall time of ``fn`` in milliseconds, synchronising the GPU around it."""
    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeat": repeat}


def environment() -> dict[str, Any]:
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import gsplat

        info["gsplat"] = gsplat.__version__
    except ImportError:
        pass
    return info


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` as JSON into $OUT (the device machine's return folder) or bench/out."""
    folder = Path(os.environ.get("OUT", Path(__file__).parent / "out"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"environment": environment(), **result}, indent=2))
    return path
