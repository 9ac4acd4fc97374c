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


# --- scripts that study one trained MusicSlots checkpoint on the test split ---------------------------------

def checkpoint_parser(doc: str):
    """Arguments shared by those scripts: --run, --checkpoint, --data, --limit, --device, --out."""
    import argparse

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--run", required=True, help="training run folder (its best.pt, or --checkpoint)")
    p.add_argument("--checkpoint", help="a checkpoint file instead of the run's best.pt")
    p.add_argument("--data", required=True, help="dataset folder holding test.pt")
    p.add_argument("--limit", type=int, default=512, help="first N test chords")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="JSON record to write")
    return p


def load_trained(args) -> tuple[torch.device, dict, object, torch.nn.Module]:
    """(device, checkpoint state, test split, model with the checkpoint's weights) for ``checkpoint_parser``'s args."""
    from musicdecomp.data.datasets import load_split
    from musicdecomp.device import pick_device
    from musicdecomp.models.musicslots import build_model
    from musicdecomp.train.checkpoints import load_best, load_checkpoint

    dev = pick_device(args.device)
    state = load_best(args.run) if args.checkpoint is None else load_checkpoint(args.checkpoint)
    test = load_split(Path(args.data) / "test.pt", dev)
    model = build_model(state["config"]["model"], tuple(test.chord_db.shape[-2:])).to(dev)
    model.load_state_dict(state["model"])
    return dev, state, test, model


def checkpoint_record(doc: str, args, state: dict, dev: torch.device, seconds: float, **fields) -> dict:
    """The head of such a script's record (what, run, checkpoint, step, device and precision, time, date)."""
    cfg = state["config"]
    return {"what": doc.splitlines()[0], "run": str(args.run), "variant": cfg["variant"],
            "checkpoint": args.checkpoint or "best.pt", "step": state["step"],
            "device": device_name(dev) + (", float32" if dev.type == "cpu" else f", {cfg['train']['amp']}"),
            "seconds": round(seconds), "date": time.strftime("%Y-%m-%d"), **fields}


def save_record(path: str | Path, record: dict) -> None:
    Path(path).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
