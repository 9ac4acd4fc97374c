"""Synthetic JSB Chorales in the two JSON formats the pipeline reads, so the tests run without ../shared.

Each chorale is four voices (soprano, alto, tenor, bass) on a 16th-note grid, written as the real files are:

* ``Jsb16thSeparated.json``: {train, valid, test}: chorales of [S, A, T, B] steps, -1 a rest;
* ``jsb-chorales-quarter.json``: the same chorales sampled at every quarter note (every 4th step), each step the
  distinct sounding pitches in ascending order (so unisons and rests give 3-, 2-note and empty steps, as in the
  real file).

The voices are seeded random walks inside SATB ranges over the real quarter file's 52 pitch classes (MIDI 43, 45,
46, 48-96); the first training chorale opens with 13 chords that hold every one of them, so a chord table built
from these files has exactly the real data's pitch classes (the tiny datasets keep the paper's 52 classes).
Notes last a quarter or half note, with a few eighth-note passing steps inside a beat; phrases of 8 beats end with
a held note, sometimes with one voice resting. Pure Python, deterministic, a few milliseconds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

QUARTER = "jsb-chorales-quarter.json"
SEPARATED = "Jsb16thSeparated.json"
SPLITS = ("train", "valid", "test")

OFFICIAL_PITCHES = [43, 45, 46] + list(range(48, 97))  # the real quarter file's pitch classes (52)
RANGES = ((67, 96), (57, 81), (48, 72), (43, 64))  # soprano, alto, tenor, bass
N_CHORALES = {"train": 6, "valid": 3, "test": 3}
BEATS = (40, 60)  # quarter notes per chorale: 160-240 sixteenths, 7-s stem chunks at any tempo of 70-140 bpm


def _opening() -> list[list[int]]:
    """13 four-voice chords holding all 52 pitch classes once: bass the lowest 13, soprano the highest 13."""
    n = len(OFFICIAL_PITCHES) // 4
    return [[OFFICIAL_PITCHES[3 * n + j], OFFICIAL_PITCHES[2 * n + j], OFFICIAL_PITCHES[n + j], OFFICIAL_PITCHES[j]]
            for j in range(n)]


def _step(rng: random.Random, current: int, lo: int, hi: int) -> int:
    return rng.choice([p for p in OFFICIAL_PITCHES if lo <= p <= hi and abs(p - current) <= 4])


def _chorale(rng: random.Random, opening: list[list[int]] = ()) -> list[list[int]]:
    """One chorale as [S, A, T, B] sixteenth steps."""
    beats = [list(chord) for chord in opening]
    voices = [rng.choice([p for p in OFFICIAL_PITCHES if lo + 4 <= p <= hi - 4]) for lo, hi in RANGES]
    n_beats = rng.randint(*BEATS)
    while len(beats) < n_beats:
        if rng.random() < 0.6 or not beats:  # a new chord; else every voice holds the last one (a half note)
            voices = [_step(rng, v, lo, hi) for v, (lo, hi) in zip(voices, RANGES)]
            for i in (1, 2, 3):  # no voice crossing; a voice meeting the one above is a unison
                voices[i] = min(voices[i], voices[i - 1])
        beats.append(list(voices))
    steps = []
    for b, chord in enumerate(beats):
        beat = [list(chord) for _ in range(4)]
        if len(opening) <= b < n_beats - 1 and rng.random() < 0.25:  # an eighth-note passing step in one voice
            v = rng.randrange(4)
            lo, hi = RANGES[v]
            moved = _step(rng, chord[v], lo, hi)
            if (v == 0 or moved <= chord[v - 1]) and (v == 3 or moved >= chord[v + 1]):
                for s in (2, 3):
                    beat[s][v] = moved
        if b % 8 == 7 and b > len(opening) and rng.random() < 0.3:  # a phrase end: one inner voice rests
            v = rng.choice((1, 2))
            for s in range(4):
                beat[s][v] = -1
        steps += beat
    return steps


def chorales(seed: int = 0) -> dict[str, list[list[list[int]]]]:
    """{split: [chorale: [[S, A, T, B] per sixteenth]]}: the content of ``Jsb16thSeparated.json``."""
    rng = random.Random(seed)
    out = {split: [] for split in SPLITS}
    for split in SPLITS:
        for i in range(N_CHORALES[split]):
            out[split].append(_chorale(rng, _opening() if (split, i) == ("train", 0) else ()))
    out["valid"][0][-8:] = [[-1] * 4 for _ in range(8)]  # a chorale ending on two silent beats: empty quarter steps
    out["test"][0][-4:] = [[out["test"][0][-1][0], -1, -1, -1] for _ in range(4)]  # the soprano alone: a 1-note step
    return out


def quarter(separated: dict) -> dict[str, list[list[list[int]]]]:
    """The quarter-note file of the same chorales: at every 4th sixteenth, the sounding pitches ascending."""
    return {split: [[sorted({p for p in ch[t] if p >= 0}) for t in range(0, len(ch), 4)] for ch in chs]
            for split, chs in separated.items()}


def write(folder: Path, seed: int = 0) -> Path:
    """Write both JSON files into ``folder`` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    separated = chorales(seed)
    (folder / SEPARATED).write_text(json.dumps(separated))
    (folder / QUARTER).write_text(json.dumps(quarter(separated)))
    return folder
