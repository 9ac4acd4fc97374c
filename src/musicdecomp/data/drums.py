"""A seeded drum-part generator for the rendered multi-stem data: grooves in time with a chorale, varied per bar,
with fills and crashes at phrase boundaries (General MIDI drum notes, played on a GM drum kit).

A part is a list of (sixteenth, note, velocity) hits on a 16-steps-per-bar grid (4/4).
"""

from __future__ import annotations

import random

KICK, SIDESTICK, SNARE, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 42, 44, 46
LOW_TOM, LOW_MID_TOM, HI_MID_TOM, HIGH_TOM, FLOOR_TOM = 45, 47, 48, 50, 43
CRASH, RIDE = 49, 51

# groove families: per 16-step bar, the base pattern of each instrument (step indices)
GROOVES: dict[str, dict[int, list[int]]] = {
    "rock": {KICK: [0, 8], SNARE: [4, 12], CLOSED_HAT: [0, 2, 4, 6, 8, 10, 12, 14]},
    "halftime": {KICK: [0, 6], SNARE: [8], CLOSED_HAT: [0, 4, 8, 12]},
    "shuffle": {KICK: [0, 8], SNARE: [4, 12], CLOSED_HAT: [0, 3, 4, 7, 8, 11, 12, 15]},
    "ballad": {KICK: [0, 10], SIDESTICK: [4, 12], RIDE: [0, 4, 8, 12]},
    "disco": {KICK: [0, 4, 8, 12], SNARE: [4, 12], OPEN_HAT: [2, 6, 10, 14], CLOSED_HAT: [0, 4, 8, 12]},
    "sixteenths": {KICK: [0, 7, 10], SNARE: [4, 12], CLOSED_HAT: list(range(16))},
}
FILL_TOMS = [HIGH_TOM, HI_MID_TOM, LOW_MID_TOM, LOW_TOM, FLOOR_TOM]


def drum_part(n_sixteenths: int, rng: random.Random, groove: str | None = None,
              phrase_bars: int = 4) -> tuple[str, list[tuple[int, int, int]]]:
    """(groove name, hits) covering ``n_sixteenths`` steps."""
    groove = groove or rng.choice(sorted(GROOVES))
    base = GROOVES[groove]
    hits: list[tuple[int, int, int]] = []
    n_bars = -(-n_sixteenths // 16)
    for bar in range(n_bars):
        start = bar * 16
        last_of_phrase = bar % phrase_bars == phrase_bars - 1 or bar == n_bars - 1
        fill_from = 16 - rng.choice([4, 8]) if last_of_phrase and rng.random() < 0.8 else 16
        if bar % phrase_bars == 0:
            hits.append((start, CRASH, rng.randint(90, 120)))
        for note, steps in base.items():
            for s in steps:
                if s >= fill_from:
                    continue
                soft = note in (CLOSED_HAT, OPEN_HAT, RIDE, PEDAL_HAT)
                vel = rng.randint(55, 85) if soft else rng.randint(85, 120)
                if soft and s % 4:  # off-beat hats a little softer
                    vel -= 10
                hits.append((start + s, note, vel))
        # per-bar variation: an extra kick, ghost snares, an open hat
        if rng.random() < 0.35:
            hits.append((start + rng.choice([3, 6, 10, 11, 14]) % fill_from, KICK, rng.randint(70, 100)))
        for s in range(fill_from):
            if s % 4 and rng.random() < 0.06:
                hits.append((start + s, SNARE, rng.randint(25, 45)))
        if rng.random() < 0.2 and fill_from == 16:
            hits.append((start + 14, OPEN_HAT, rng.randint(60, 85)))
        # fill: toms down the kit, ending on a snare/kick flam
        if fill_from < 16:
            toms = sorted(rng.sample(FILL_TOMS, 3), reverse=True)
            for i, s in enumerate(range(fill_from, 16)):
                note = SNARE if s == fill_from else toms[min(len(toms) - 1, i * len(toms) // (16 - fill_from))]
                hits.append((start + s, note, rng.randint(80, 115)))
            hits.append((start + 15, KICK, rng.randint(90, 115)))
    return groove, sorted(h for h in hits if h[0] < n_sixteenths)
