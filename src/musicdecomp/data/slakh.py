"""Slakh2100 as a source of class stems, grouped as the official composable-representations code does.

For each track folder ``<root>/<split>/Track*/`` with ``metadata.yaml`` and ``stems/S*.flac``: stems are grouped
by their ``inst_class`` (``Drums``, ``Bass``, ``Piano``, ...); a class signal is the **mean** of its stems, mono,
at 24 kHz; a track that lacks a class, or whose stem file is missing, is skipped (with the reason logged).
Chunks (``musicdecomp.data.chunks``) then cut 7 s pieces, drop those where any class is near silent, and
mix = mean of the classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicdecomp.errors import UserError
from musicdecomp.logs import get_logger

log = get_logger("slakh")

SPLIT_DIRS = {"train": "train", "valid": "validation", "test": "test"}


@dataclass
class Track:
    name: str
    stems: dict[str, list[Path]]  # class -> stem files


def read_track(folder: Path, classes: list[str], required: list[str] | None = None) -> tuple[Track | None, str]:
    """The track's stems of ``classes``, or (None, why it is skipped): a track lacking one of ``required``
    (default: all of ``classes``) is skipped; a missing optional class becomes silence."""
    import yaml

    meta_path = folder / "metadata.yaml"
    try:
        meta = yaml.safe_load(meta_path.read_text())
    except FileNotFoundError:
        return None, "no metadata.yaml"
    except yaml.YAMLError as e:
        raise UserError(f"{meta_path} is not valid YAML ({str(e).splitlines()[0]}); "
                        "re-extract the Slakh track") from None
    stems: dict[str, list[Path]] = {c: [] for c in classes}
    for stem_id, info in (meta.get("stems") or {}).items():
        cls = (info or {}).get("inst_class")
        if cls in stems:
            path = folder / "stems" / f"{stem_id}.flac"
            if not path.is_file():
                return None, f"missing stem {path.name}"
            stems[cls].append(path)
    empty = [c for c, paths in stems.items() if not paths and c in (classes if required is None else required)]
    if empty:
        return None, f"no {', '.join(empty)} stem"
    return Track(folder.name, stems), ""


def list_tracks(root: str | Path, split: str, classes: list[str], required: list[str] | None = None) -> list[Track]:
    root = Path(root)
    split_dir = root / SPLIT_DIRS[split]
    if not split_dir.is_dir():
        raise UserError(f"Slakh split folder {split_dir} does not exist; set stems.slakh_root to the folder that "
                        f"holds train/, validation/ and test/ (slakh2100_flac_redux)")
    tracks, skipped = [], 0
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        track, why = read_track(folder, classes, required)
        if track is None:
            skipped += 1
            log.info("skipping %s: %s", folder.name, why)
        else:
            tracks.append(track)
    log.info("Slakh %s: %d tracks with %s (%d skipped)", split, len(tracks), "+".join(classes), skipped)
    return tracks


def load_mono(path: Path, sample_rate: int) -> np.ndarray:
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except RuntimeError as e:
        raise UserError(f"cannot read {path} ({e}); re-extract the Slakh track") from None
    mono = audio.mean(axis=1)
    if sr != sample_rate:
        mono = AF.resample(torch.from_numpy(mono), sr, sample_rate).numpy()
    return mono


def class_signals(track: Track, sample_rate: int = 24000) -> dict[str, np.ndarray]:
    """Each class = the mean of its stems (mono, ``sample_rate``), all cut to the shortest class."""
    out = {}
    for cls, paths in track.stems.items():
        if paths:
            stems = [load_mono(p, sample_rate) for p in paths]
            n = min(len(s) for s in stems)
            out[cls] = np.mean([s[:n] for s in stems], axis=0).astype(np.float32)
    n = min(len(s) for s in out.values())
    return {c: out[c][:n] if c in out else np.zeros(n, np.float32) for c in track.stems}
