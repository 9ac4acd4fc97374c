"""Where a trained MusicSlots model's note MSE above the floor comes from, note by note.

For each ground-truth note of the first ``--limit`` test chords: its matched note MSE (``note_metrics``, the
eval step's Hungarian matching; one stochastic pass, noise seed 0), the same for the ground-truth notes scored as slots
(the floor), and the excess between them. Grouped by instrument, register, whether another note of the chord
is an octave (or unison) away and whether another note has the same instrument; plus how concentrated the
excess is and how many slots carry sound (any pixel at or above the mask threshold) per chord size.

    python benchmarks/musicslots_error_analysis.py --run results/gpu_runs/none-t1-imp_true-k7 \
        --checkpoint results/gpu_runs/none-t1-imp_true-k7/ckpt/best.pt --data results/data/jsb_multi \
        --limit 512 --out benchmarks/musicslots_error_analysis_step76000.json
"""

from __future__ import annotations

import time

import numpy as np
import torch
from benchlib import checkpoint_parser, checkpoint_record, load_trained, save_record

from musicdecomp.data.jsb import midi_name
from musicdecomp.device import autocast
from musicdecomp.logs import progress
from musicdecomp.metrics.notes import note_metrics, oracle_slot_db

REGISTERS = ((0, 55), (56, 67), (68, 79), (80, 127))  # MIDI ranges (inclusive)


@torch.no_grad()
def note_rows(model, data, device, amp: str, batch_size: int, limit: int) -> list[dict]:
    model.eval()
    gen = torch.Generator(device=device).manual_seed(0)
    n, rows = min(limit, len(data)), []
    for start in progress(range(0, n, batch_size), desc="notes", unit="batch"):
        b = data.batch(torch.arange(start, min(start + batch_size, n), device=device))
        with autocast(device, amp):
            out = model(b["chord"], generator=gen)
        slots = model.slot_db(out)
        err = note_metrics(b["notes"], slots, b["n_notes"], data.mask_db)["note_mse"]
        flo = note_metrics(b["notes"], oracle_slot_db(b["notes"], b["valid"], model.num_slots, model.amin,
                                                      model.top_db), b["n_notes"], data.mask_db)["note_mse"]
        sounding = (slots >= data.mask_db).flatten(2).any(-1).sum(-1).cpu()
        for i in range(len(err)):
            v = int(b["n_notes"][i])
            midi = [data.pitches[p] for p in b["pitch"][i, :v].tolist()]
            inst = b["instrument"][i, :v].tolist()
            for j in range(v):
                rest = [k for k in range(v) if k != j]
                rows.append({"chord": start + i, "notes": v, "midi": midi[j],
                             "instrument": data.program_names[inst[j]],
                             "octave_partner": any((midi[k] - midi[j]) % 12 == 0 for k in rest),
                             "same_instrument_partner": any(inst[k] == inst[j] for k in rest),
                             "note_mse": float(err[i, j]), "floor": float(flo[i, j]),
                             "sounding_slots": int(sounding[i])})
    return rows


def group(rows: list[dict], key) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return {str(k): {"notes": len(rs), "note_mse": float(np.mean([r["note_mse"] for r in rs])),
                     "floor": float(np.mean([r["floor"] for r in rs])),
                     "excess": float(np.mean([r["note_mse"] - r["floor"] for r in rs]))}
            for k, rs in sorted(out.items())}


def summarise(rows: list[dict]) -> dict:
    excess = np.sort(np.array([r["note_mse"] - r["floor"] for r in rows]))[::-1]
    top = max(1, len(excess) // 10)
    register = {(f"up to {midi_name(hi)}" if lo == 0 else f"{midi_name(lo)} and up" if hi == 127
                 else f"{midi_name(lo)}-{midi_name(hi)}"): (lo, hi) for lo, hi in REGISTERS}
    chords = {}
    for r in rows:
        chords[r["chord"]] = (r["notes"], r["sounding_slots"])
    return {
        "all": group(rows, lambda r: "all")["all"],
        "by_instrument": group(rows, lambda r: r["instrument"]),
        "by_register": group(rows, lambda r: next(k for k, (lo, hi) in register.items() if lo <= r["midi"] <= hi)),
        "by_octave_partner": group(rows, lambda r: r["octave_partner"]),
        "by_same_instrument_partner": group(rows, lambda r: r["same_instrument_partner"]),
        "excess_share_of_worst_10pct_notes": float(excess[:top].sum() / excess.sum()),
        "notes_with_excess_above_20": {"share": float((excess > 20).mean()),
                                       "share_of_excess": float(excess[excess > 20].sum() / excess.sum())},
        "sounding_slots_per_chord": {str(v): float(np.mean([s for n, s in chords.values() if n == v]))
                                     for v in sorted({n for n, _ in chords.values()})},
    }


def main() -> None:
    a = checkpoint_parser(__doc__).parse_args()
    dev, state, test, model = load_trained(a)
    tc, t = state["config"]["train"], time.perf_counter()
    rows = note_rows(model, test, dev, tc["amp"], tc["eval_batch_size"], a.limit)
    save_record(a.out, checkpoint_record(__doc__, a, state, dev, time.perf_counter() - t,
                                         chords=min(a.limit, len(test)), **summarise(rows)))


if __name__ == "__main__":
    main()
