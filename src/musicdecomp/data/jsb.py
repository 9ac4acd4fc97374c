"""JSB Chorales: fetch the JSON (local copy or download, sha256-checked) and build the pooled chord table.

The chord protocol is the official MusicSlots generator's (see docs/data.md): every time step of every
chorale, left-padded with zeros to ``max_voices``, de-duplicated across the original train/valid/test
splits (pooled), chords with fewer than ``min_notes`` notes dropped, shuffled with
``torch.randperm`` under ``torch.manual_seed(seed)`` and cut 70/20/10.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from musicdecomp.data import SPLITS
from musicdecomp.errors import UserError
from musicdecomp.io import atomic_path, copy_file, download, read_json, sha256_of, verify_sha256, write_json
from musicdecomp.logs import get_logger

log = get_logger("jsb")

ORIGINAL_SPLITS = ("train", "valid", "test")
DOWNLOAD_DIR = Path("resources/jsb")


# --- fetch ---------------------------------------------------------------------------------------------

def read_splits_json(path: str | Path, key: str) -> tuple[dict, str]:
    """Parse a JSB JSON file holding train/valid/test; ``key`` is the params section that names it.
    Returns the data and the fix to suggest for a bad file."""
    path = Path(path)
    fix = f"delete it and rerun to fetch a fresh copy, or point {key}.json_path at a good file"
    data = read_json(path, f"run its fetch step or set {key}.json_path", fix)
    if not isinstance(data, dict) or any(k not in data for k in ORIGINAL_SPLITS):
        raise UserError(f"{path} does not hold the JSB splits {list(ORIGINAL_SPLITS)}; {fix}")
    return data, fix


def read_jsb_json(path: str | Path) -> dict[str, list[list[list[int]]]]:
    """Parse and check a JSB Chorales JSON file ({train, valid, test}: chorales of time steps of pitches)."""
    data, fix = read_splits_json(path, "data.jsb.source")
    for split in ORIGINAL_SPLITS:
        chorales = data[split]
        ok = isinstance(chorales, list) and all(
            isinstance(ch, list) and all(
                isinstance(step, list) and all(isinstance(p, int) and 0 <= p <= 127 for p in step) for step in ch)
            for ch in chorales)
        if not ok:
            raise UserError(f"{path}: split {split!r} is not a list of chorales of MIDI-pitch lists; {fix}")
    return data


def fetch_jsb(cfg: dict, out: str | Path) -> dict:
    """Find the JSB JSON (``json_path``, else ``local_dirs``, else download), check it, copy it to ``out``."""
    return fetch_source(cfg["data.jsb.source"], "data.jsb.source", out, read_jsb_json)


def fetch_source(src: dict, key: str, out: str | Path, reader) -> dict:
    """Find the file described by the params section ``key`` (json_path, local_dirs, url, sha256), check its
    sha256 and its content (``reader``), and copy it to ``out``."""
    expected = src["sha256"]
    bad_sum = (f"re-download it (delete the file and rerun), or set {key}.sha256: null "
               f"to accept a different file on purpose")
    if src["json_path"]:
        candidate = Path(src["json_path"]).expanduser()
        if not candidate.is_file():
            raise UserError(f"{key}.json_path: {candidate} does not exist; fix the path, "
                            f"or set it to null to look in {src['local_dirs']} and then download")
        found = candidate
    else:
        found = next((Path(d) / src["filename"] for d in src["local_dirs"]
                      if (Path(d) / src["filename"]).is_file()), None)
        if found is None:
            found = DOWNLOAD_DIR / src["filename"]
            log.info("downloading %s", src["url"])
            download(src["url"], found,
                     fix=f"download it by hand and put it at {found}, or set {key}.json_path to a local copy")
    digest = verify_sha256(found, expected, bad_sum)
    reader(found)
    copy_file(found, out)
    log.info("%s from %s (sha256 %s) -> %s", src["filename"], found, digest[:12], out)
    return {"source": str(found), "sha256": digest}


# --- chords --------------------------------------------------------------------------------------------

def pool_chords(data: dict, max_voices: int, min_notes: int) -> list[tuple[int, ...]]:
    """All distinct time steps, left-padded with 0 to ``max_voices``, sorted like ``torch.unique(dim=0)``."""
    pooled: set[tuple[int, ...]] = set()
    for split in ORIGINAL_SPLITS:
        for chorale in data[split]:
            for step in chorale:
                notes = sorted(step)
                if len(notes) > max_voices:
                    raise UserError(f"a JSB time step has {len(notes)} notes, more than "
                                    f"data.jsb.chords.max_voices = {max_voices}; raise max_voices")
                pooled.add(tuple([0] * (max_voices - len(notes)) + notes))
    return [c for c in sorted(pooled) if sum(1 for p in c if p) >= min_notes]


def split_chords(n: int, fractions: list[float], seed: int, max_chords: int | None) -> list[tuple[str, int]]:
    """Assign pooled chord indices to splits: a seeded ``torch.randperm``, then cuts at cumsum(fractions)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).tolist()
    if max_chords is not None:
        perm = perm[:max_chords]
    cuts = [int(c) for c in np.cumsum(fractions) * len(perm)]
    bounds = [0, cuts[0], cuts[1], len(perm)]
    return [(SPLITS[s], i) for s in range(3) for i in perm[bounds[s]:bounds[s + 1]]]


def build_chords(cfg: dict, json_path: str | Path, out_csv: str | Path, out_summary: str | Path) -> dict:
    """The chords step: JSB JSON -> chords.csv (chord, n_notes, split) + summary.json (counts, pitch classes)."""
    c = cfg["data.jsb.chords"]
    data = read_jsb_json(json_path)
    pooled = pool_chords(data, c["max_voices"], c["min_notes"])
    assignment = split_chords(len(pooled), c["split"], c["seed"], c["max_chords"])
    # the pitch classes come from the whole pool, so a capped (tiny) run keeps the paper's 52 classes
    pitches = sorted({p for chord in pooled for p in chord if p})
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["chord", "n_notes", "split"])
        for split, i in assignment:
            notes = [p for p in pooled[i] if p]
            w.writerow([" ".join(map(str, notes)), len(notes), split])
    counts = {s: sum(1 for split, _ in assignment if split == s) for s in SPLITS}
    n_notes = {}
    for _, i in assignment:
        k = sum(1 for p in pooled[i] if p)
        n_notes[k] = n_notes.get(k, 0) + 1
    summary = {
        "source_sha256": sha256_of(json_path),
        "n_time_steps": sum(len(ch) for s in ORIGINAL_SPLITS for ch in data[s]),
        "n_pooled_chords": len(pooled),
        "n_chords": len(assignment),
        "splits": counts,
        "chords_by_n_notes": {str(k): v for k, v in sorted(n_notes.items())},
        "pitches": pitches,
        "n_pitches": len(pitches),
        "split_fractions": c["split"],
        "seed": c["seed"],
        "max_chords": c["max_chords"],
    }
    write_json(out_summary, summary)
    log.info("%d chords (%s), %d pitch classes -> %s", len(assignment),
             " / ".join(f"{s} {counts[s]}" for s in SPLITS), len(pitches), out_csv)
    return summary


def read_chords(path: str | Path) -> list[tuple[tuple[int, ...], str]]:
    """chords.csv -> [(pitches ascending, split)]."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; run the chords step first") from None
    try:
        out = [(tuple(int(p) for p in r["chord"].split()), r["split"]) for r in rows]
    except (KeyError, ValueError, AttributeError):
        raise UserError(f"{path} is not a chords table (columns chord, n_notes, split); "
                        "rerun the chords step") from None
    if any(s not in SPLITS for _, s in out):
        raise UserError(f"{path} has an unknown split name; rerun the chords step")
    return out


def midi_name(pitch: int) -> str:
    """A MIDI pitch's note name, e.g. 60 -> C4."""
    names = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
    return f"{names[pitch % 12]}{pitch // 12 - 1}"
