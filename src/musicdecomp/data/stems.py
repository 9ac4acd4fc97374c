"""Slakh-style multi-stem audio rendered from the JSB chorales (the default source of the composable-
representations side; Slakh itself was rendered from MIDI).

Per chorale of ``Jsb16thSeparated.json`` (SATB voices on a 16th-note grid; the Boulanger-Lewandowski split is
kept, so the splits are disjoint by chorale) and per render (``renders_per_chorale``, each with its own seed):

* **bass** = the bass voice an octave down on a GM bass program (32-39);
* **piano** = the soprano, alto and tenor voices on a GM piano program (0-7);
* **drums** = a generated drum part in time with the chorale (musicdecomp.data.drums) on a GM drum kit.

Tempo is drawn per render (``tempo`` range); consecutive equal pitches of a voice are one held note; -1 is a
rest. Each stem is rendered by its own fresh FluidSynth at 24 kHz (mono = mean of the two channels), all to the
same length, so the stems are sample-aligned. A render is stored as one FLAC file whose channels are the classes
(drums, bass, piano), scaled down together if its peak would clip. The index ``<split>.json`` lists the
renders and, per subset (e.g. drums+bass), the 7-s chunks kept: those where no class of the subset has RMS
below ``min_rms``. The mixture of a chunk is the mean of its classes (``load_chunk``).
"""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from musicdecomp.data import SPLITS
from musicdecomp.data.chunks import chunk_signals
from musicdecomp.data.drums import drum_part
from musicdecomp.data.jsb import fetch_source, read_splits_json
from musicdecomp.data.render import Synth, check_soundfont
from musicdecomp.data.slakh import class_signals, list_tracks
from musicdecomp.errors import UserError
from musicdecomp.io import atomic_path, read_json, sha256_of, write_json
from musicdecomp.logs import get_logger, progress

log = get_logger("stems")

CLASSES = ("drums", "bass", "piano")


def read_separated(path: str | Path) -> dict[str, list[list[list[int]]]]:
    """Parse and check Jsb16thSeparated.json ({train, valid, test}: chorales of [S, A, T, B] steps)."""
    data, fix = read_splits_json(path, "data.jsb16.source")
    for split in SPLITS:
        if not all(isinstance(ch, list) and all(isinstance(st, list) and len(st) == 4 for st in ch)
                   for ch in data[split]):
            raise UserError(f"{path}: split {split!r} is not a list of chorales of 4-voice steps; {fix}")
    return data


def voice_notes(chorale: list[list[int]], voice: int) -> list[tuple[int, int, int]]:
    """(start, end, pitch) in sixteenths; equal consecutive pitches are held, -1 is a rest."""
    notes, start, current = [], 0, None
    for i, step in enumerate(chorale + [[-2] * 4]):
        p = step[voice]
        if p != current:
            if current is not None and current >= 0:
                notes.append((start, i, current))
            start, current = i, p
    return notes


def render_plan(chorale: list[list[int]], cfg: dict, rng: random.Random) -> dict:
    """The musical choices of one render (all drawn from ``rng``)."""
    groove, hits = drum_part(len(chorale), rng)
    return {"tempo": round(rng.uniform(*cfg["tempo"]), 2), "bass_program": rng.choice(cfg["bass_programs"]),
            "piano_program": rng.choice(cfg["piano_programs"]), "drum_kit": rng.choice(cfg["drum_kits"]),
            "groove": groove, "hits": hits}


def render_stems(chorale: list[list[int]], plan: dict, cfg: dict) -> np.ndarray:
    """(3, n) float32 stems drums, bass, piano at ``cfg['sample_rate']``."""
    sr = cfg["sample_rate"]
    step = 60.0 / plan["tempo"] / 4 * sr  # samples per sixteenth
    n_total = int(np.ceil((len(chorale) * step + cfg["tail_seconds"] * sr) / 64) * 64)
    vel = cfg["velocity"]

    def notes_events(voices, channel, transpose):
        ev = []
        for v in voices:
            for start, end, pitch in voice_notes(chorale, v):
                key = pitch + transpose
                if 0 <= key <= 127:
                    ev += [(int(start * step), "on", channel, key, vel), (int(end * step), "off", channel, key, 0)]
        return ev

    parts = {
        "drums": (9, 128, plan["drum_kit"], [e for t, note, v in plan["hits"]
                                             for e in ((int(t * step), "on", 9, note, v),
                                                       (int(t * step) + int(step), "off", 9, note, 0))]),
        "bass": (0, 0, plan["bass_program"], notes_events([3], 0, -12)),
        "piano": (0, 0, plan["piano_program"], notes_events([0, 1, 2], 0, 0)),
    }
    out = np.zeros((len(CLASSES), n_total), np.float32)
    for i, cls in enumerate(CLASSES):
        channel, bank, program, events = parts[cls]
        synth = Synth(cfg["soundfont"], sr, cfg["gain"], cfg["reverb"], cfg["chorus"])
        try:
            synth.select(channel, bank, program)
            out[i] = synth.play(events, n_total).mean(axis=1)
        finally:
            synth.close()
    return out


def write_stems(path: str | Path, stems: np.ndarray, sample_rate: int) -> float:
    """(classes, n) stems -> one 16-bit FLAC with a channel per class, scaled down together if the peak
    would clip; returns the scale."""
    import soundfile as sf

    peak = float(np.abs(stems).max())
    scale = 1.0 if peak <= 0.99 else 0.99 / peak
    with atomic_path(path) as tmp:
        sf.write(tmp, (stems * scale).T, sample_rate, format="FLAC", subtype="PCM_16")
    return scale


def _render_job(args) -> dict:
    chorale, cfg, split, idx, r, out_path = args
    rng = random.Random(f"{cfg['seed']}/{split}/{idx}/{r}")
    plan = render_plan(chorale, cfg, rng)
    stems = render_stems(chorale, plan, cfg)
    scale = write_stems(out_path, stems, cfg["sample_rate"])
    plan = {k: v for k, v in plan.items() if k != "hits"}
    return {"file": Path(out_path).name, "chorale": idx, "render": r, "n_samples": stems.shape[1],
            "scale": scale, **plan}


def fetch_jsb16(cfg: dict, out: str | Path) -> dict:

    return fetch_source(cfg["data.jsb16.source"], "data.jsb16.source", out, read_separated)


def build_stems(cfg: dict, json_path: str | Path, out_dir: str | Path, workers: int = 0) -> dict:
    """The stems step: every (chorale, render) -> FLAC, plus per-split indexes with the kept chunks per subset."""
    import os


    s = {**cfg["stems"], "soundfont": cfg["data.render.soundfont"], "reverb": cfg["data.render.reverb"],
         "chorus": cfg["data.render.chorus"]}
    check_soundfont({"data.render": {"soundfont": s["soundfont"], "synth_rate": s["sample_rate"], "gain": s["gain"],
                                     "reverb": s["reverb"], "chorus": s["chorus"]}},
                    s["piano_programs"] + s["bass_programs"])
    out_dir = Path(out_dir)
    if s["source"] == "slakh":
        return build_slakh_stems(s, out_dir)
    data = read_separated(json_path)
    jobs = []
    for split in SPLITS:
        chorales = data[split][: s["max_chorales"]] if s["max_chorales"] else data[split]
        for idx, chorale in enumerate(chorales):
            for r in range(s["renders_per_chorale"]):
                jobs.append((chorale, s, split, idx, r, out_dir / split / f"c{idx:03d}_r{r}.flac"))
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = progress(total=len(jobs), desc="render stems", unit="render")
    results: dict[str, list[dict]] = {sp: [] for sp in SPLITS}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
        for job, res in zip(jobs, ex.map(_render_job, jobs, chunksize=2)):
            results[job[2]].append(res)
            bar.update()
    bar.close()
    summary = {"source": "rendered", "json_sha256": sha256_of(json_path), "soundfont": s["soundfont"],
               "renders_per_chorale": s["renders_per_chorale"], "seed": s["seed"],
               "soundfont_sha256": sha256_of(s["soundfont"]), "sample_rate": s["sample_rate"], "gain": s["gain"],
               "classes": list(CLASSES), "splits": {}}
    for split in SPLITS:
        index = index_chunks(results[split], out_dir / split, s)
        write_json(out_dir / f"{split}.json", index)
        summary["splits"][split] = _split_summary(results[split], index, s)
        log.info("%s: %d renders, %.2f h; chunks %s", split, len(results[split]),
                 summary["splits"][split]["rendered_hours"], summary["splits"][split]["chunks"])
    write_json(out_dir / "summary.json", summary)
    return summary


SLAKH_CLASSES = {"drums": "Drums", "bass": "Bass", "piano": "Piano"}


def build_slakh_stems(s: dict, out_dir: Path) -> dict:
    """The same outputs from Slakh2100 (``stems.slakh_root``): per track, the class signals (mean of the class's
    stems, 24 kHz mono) as one FLAC; tracks need drums and bass (piano is silence where a track has none)."""
    if not s["slakh_root"]:
        raise UserError("stems.source is slakh but stems.slakh_root is null; set it to the folder holding "
                        "train/, validation/ and test/ (slakh2100_flac_redux)")
    summary = {"source": "slakh", "slakh_root": str(s["slakh_root"]), "sample_rate": s["sample_rate"],
               "classes": list(CLASSES), "splits": {}}
    for split in SPLITS:
        tracks = list_tracks(s["slakh_root"], split, [SLAKH_CLASSES[c] for c in CLASSES], ["Drums", "Bass"])
        renders = []
        for track in progress(tracks, desc=f"slakh {split}", unit="track"):
            sig = class_signals(track, s["sample_rate"])
            stems = np.stack([sig[SLAKH_CLASSES[c]] for c in CLASSES])
            path = out_dir / split / f"{track.name}.flac"
            scale = write_stems(path, stems, s["sample_rate"])
            renders.append({"file": path.name, "track": track.name, "n_samples": stems.shape[1], "scale": scale})
        index = index_chunks(renders, out_dir / split, s)
        write_json(out_dir / f"{split}.json", index)
        summary["splits"][split] = _split_summary(renders, index, s)
    write_json(out_dir / "summary.json", summary)
    return summary


def _split_summary(renders: list[dict], index: dict, s: dict) -> dict:
    return {"renders": len(renders),
            "rendered_hours": round(sum(r["n_samples"] for r in renders) / s["sample_rate"] / 3600, 3),
            "chunks": {sub: len(v) for sub, v in index["chunks"].items()},
            "hours": {sub: round(len(v) * s["chunk_seconds"] / 3600, 3) for sub, v in index["chunks"].items()}}


def index_chunks(renders: list[dict], folder: Path, s: dict) -> dict:
    import soundfile as sf

    chunk_len = int(round(s["chunk_seconds"] * s["sample_rate"]))
    chunks: dict[str, list[list[int]]] = {name: [] for name in s["subsets"]}
    for i, r in enumerate(renders):
        audio, _ = sf.read(folder / r["file"], dtype="float32", always_2d=True)
        signals = {c: audio[:, k] for k, c in enumerate(CLASSES)}
        for name, classes in s["subsets"].items():
            for start, _, _ in chunk_signals({c: signals[c] for c in classes}, chunk_len, s["min_rms"]):
                chunks[name].append([i, start])
    return {"folder": folder.name, "classes": list(CLASSES), "chunk_len": chunk_len, "renders": renders,
            "subsets": s["subsets"], "chunks": chunks}


def load_chunk(index_path: str | Path, subset: str, i: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The ``i``-th kept chunk of ``subset``: ({class: audio}, mixture = mean of the classes)."""
    index_path = Path(index_path)
    return chunk_audio(read_json(index_path, "rerun the stems step"), index_path.parent, subset, i)


def read_position(index: dict, folder: Path, position: tuple[int, int]) -> np.ndarray:
    """(n_classes, chunk_len) audio of every class at one chunk position (render, start sample); ``folder``: the
    split's FLAC folder (``<stems_dir>/<index["folder"]>``)."""
    import soundfile as sf

    r, start = position
    audio, _ = sf.read(folder / index["renders"][r]["file"], dtype="float32", always_2d=True, start=start,
                       frames=index["chunk_len"])
    return audio.T


def chunk_audio(index: dict, stems_dir: Path, subset: str, i: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``load_chunk`` with the index already loaded (``stems_dir``: the folder holding the index)."""
    audio = read_position(index, stems_dir / index["folder"], index["chunks"][subset][i])
    stems = {c: audio[index["classes"].index(c)] for c in index["subsets"][subset]}
    return stems, np.mean(list(stems.values()), axis=0).astype(np.float32)
