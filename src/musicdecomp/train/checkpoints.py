"""A run folder's checkpoints: the best model (``best.pt``, ``ckpt/best.pt``), the state that continues a run
(``ckpt/last.pt``) and its compact copy for carrying it between machines, comparing configurations, and setting a
run's state aside (``stale/<time>/``) when it starts over."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from musicdecomp.config import flatten
from musicdecomp.errors import UserError
from musicdecomp.io import atomic_path, load_torch


def load_best(run_dir: str | Path) -> dict:
    """A finished run's ``best.pt`` ({model, config, step, val})."""
    return load_checkpoint(Path(run_dir) / "best.pt", missing="train the run first (an unfinished run's "
                                                             "ckpt/best.pt can be evaluated with --checkpoint)")


def load_checkpoint(path: str | Path, missing: str = "train the run first") -> dict:
    """A best-model file ({model, config, step, val}): ``best.pt`` or an unfinished run's ``ckpt/best.pt``."""
    path = Path(path)
    state = load_torch(path, "a readable checkpoint", missing, "train the run again")
    if not isinstance(state, dict) or not {"model", "config", "step", "val"} <= set(state):
        raise UserError(f"{path} is not a best-model file (model, config, step, val); ckpt/last.pt cannot be "
                        f"evaluated, use ckpt/best.pt")
    return state


def read_best(path: str | Path) -> tuple[float, int]:
    """(validation score, step) of a best-model file (``ckpt/best.pt`` or ``best.pt``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return float(state["val"]["score"]), int(state["step"])


# what a run folder holds of its training (set aside together when a run starts over)
RUN_STATE = ("ckpt", "best.pt", "train.json", "config.json", "metrics.jsonl", "progress.json", "curves.png",
             "test.json", "test.png", "test_audio", "probe", "probe.json", "adopted.json")


COMPACT = "bfloat16 optimizer moments"


def compact_checkpoint(src: str | Path, dst: str | Path) -> dict:
    """Write ``src`` (a ``ckpt/last.pt``) to ``dst`` with the optimiser's floating-point state (Adam's moments, not
    its step counts) in bfloat16; weights, random streams and the rest are unchanged. Returns {bytes_before,
    bytes_after}. See the module docstring."""
    src, dst = Path(src), Path(dst)
    before = src.stat().st_size if src.exists() else 0
    state = load_torch(src, "a readable checkpoint", "train the run first", "train the run again")
    if not isinstance(state, dict) or "optimizer" not in state:
        raise UserError(f"{src} is not a training checkpoint (ckpt/last.pt, with the optimiser state)")
    for slot in state["optimizer"]["state"].values():
        for key, value in slot.items():
            if key != "step" and torch.is_tensor(value) and value.is_floating_point():
                slot[key] = value.to(torch.bfloat16)
    state["compact"] = COMPACT
    save(dst, state)
    return {"bytes_before": before, "bytes_after": dst.stat().st_size}


def config_differences(trained: dict, cfg: dict, here: str, most: int = 4) -> str:
    """``key (value in the run, value <here>), ...`` for the first ``most`` keys where two configurations differ."""
    keys, was, now = differing_keys(trained, cfg), flatten(trained), flatten(cfg)
    shown = ", ".join(f"{k} ({was.get(k)!r} in the run, {now.get(k)!r} {here})" for k in keys[:most])
    return shown + (", ..." if len(keys) > most else "")


def differing_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b))
                for k in differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def set_aside(run_dir: Path) -> Path:
    """Move the run folder's training state (checkpoints, published results, logs) to ``stale/<time>/``."""
    dest = run_dir / "stale" / time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while dest.exists():
        dest, n = dest.with_name(f"{dest.name.split('.')[0]}.{n}"), n + 1
    dest.mkdir(parents=True)
    for name in RUN_STATE:
        if (run_dir / name).exists():
            (run_dir / name).rename(dest / name)
    return dest


def save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
