"""Shared by the benchmark scripts: timing on a device, the device's name, the JSON record named after it."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch


def timed(fn, repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls (kernel selection, allocator), GPU work included."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"


def write_record(out_dir: str | Path, prefix: str, name: str, record: dict) -> Path:
    """``<out_dir>/<prefix>_<device slug>.json``; returns its path."""
    out = Path(out_dir) / f"{prefix}_{device_slug(name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out


def device_slug(name: str) -> str:
    """The device part of a record's file name: "NVIDIA H100 80GB HBM3" -> "nvidia_h100_80gb_hbm3"."""
    return "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]).strip("_").lower()
