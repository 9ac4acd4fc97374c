"""The MusicSlots datasets (JSB-single, JSB-multi): chord spectrograms with per-note ground truth.

Each split is one file ``results/data/<dataset>/<split>.pt`` (``torch.load(..., weights_only=True)``), a
dict that a training loop loads whole (onto the GPU if it likes) with ``load_split``:

=================  =====================  ==========================================================
key                dtype, shape           meaning
=================  =====================  ==========================================================
chord_db           float16 (N, F, T)      the chord's dB mel spectrogram (model input), F=128, T=32
note_index         int16 (N, V)           each note's row in ``bank_db``; -1 pads (V = max voices, 4)
pitch              int16 (N, V)           pitch class (index into ``pitches``, 52 for JSB); -1 pads
instrument         int16 (N, V)           instrument class (index into ``programs``); -1 pads
n_notes            int8 (N,)              number of notes (2-4)
chord_id           int32 (N,)             row of the chord among this split's chords in chords.csv
bank_db            float32 (M, F, T)      ground-truth dB spectrogram of every (pitch, program) note
bank_pitch         int16 (M,)             MIDI pitch of each bank row
bank_program       int16 (M,)             GM program of each bank row
pitches            list[int]              MIDI pitch of each pitch class
programs           list[int]              GM program of each instrument class
program_names      list[str]              soundfont preset name of each instrument class
mask_db            float                  threshold of the binary note masks (bank_db >= mask_db)
source_id          str                    what the dataset was built from: the chords file, the notes'
                                          soundfont and render settings, the dataset and mel parameters
=================  =====================  ==========================================================

Notes within an example are in ascending pitch order, real notes first. A note's ground truth is its
bank row: the dB mel of the isolated note at the gain it has in the mix (floored at its own max - 80 dB);
its mask is ``bank_db >= mask_db`` (-30 dB, absolute). chord_db is stored as float16 (|error| <= 0.03 dB).
``source_id`` names the inputs, not the bytes: a dataset rebuilt from the same inputs on another machine has the
same id even where its floats differ in the last bit. A training checkpoint records it, so that an interrupted run
is not continued on other data.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from musicdecomp.data import SPLITS
from musicdecomp.data.jsb import midi_name, read_chords
from musicdecomp.data.mel import MelFeatures, check_lengths
from musicdecomp.errors import UserError
from musicdecomp.io import atomic_path, load_torch, read_json, sha256_of, write_json
from musicdecomp.logs import get_logger, progress

log = get_logger("datasets")

FORMAT = "musicdecomp.musicslots/v1"


def sample_assignments(chords: list[tuple[tuple[int, ...], str]], programs: list[int], k: int,
                       seed: int) -> dict[str, list[tuple[int, tuple[int, ...]]]]:
    """Instrument assignments per chord: ``k`` of the ordered assignments (``itertools.product``), drawn
    without replacement by ``random.sample`` under ``random.seed(seed)``, splits in train/valid/test order,
    as the official generator does (so a 2-note chord of 3 programs gets all 9, in shuffled order).

    Returns {split: [(row of the chord within its split, programs per note)]}.
    """
    rng = random.Random(seed)
    out: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
    for split in SPLITS:
        rows = [c for c, s in chords if s == split]
        picks = []
        for row, chord in enumerate(rows):
            combos = list(itertools.product(programs, repeat=len(chord)))
            picks += [(row, a) for a in rng.sample(combos, min(k, len(combos)))]
        out[split] = picks
    return out


def expected_counts(chords: list[tuple[tuple[int, ...], str]], n_programs: int, k: int) -> dict[str, int]:
    return {s: sum(min(k, n_programs ** len(c)) for c, split in chords if split == s) for s in SPLITS}


def build_dataset(cfg: dict, dataset: str, chords_csv: str | Path, chords_summary: str | Path,
                  notes_pt: str | Path, out_dir: str | Path) -> dict:
    """The features step: chords + rendered notes -> {train,valid,test}.pt and summary.json for ``dataset``."""
    ds = cfg[f"datasets.{dataset}"]
    mel = cfg["data.mel"]
    programs, k, seed = ds["programs"], ds["assignments_per_chord"], ds["seed"]
    chords = read_chords(chords_csv)
    summary = read_json(chords_summary, "rerun the chords step")
    if not isinstance(summary, dict) or "pitches" not in summary:
        raise UserError(f"{chords_summary} is not a chords summary (it has no pitches); rerun the chords step")
    pitches = summary["pitches"]
    notes = load_torch(notes_pt, "a notes file", "run the render step first", "rerun the render step")
    check_lengths(mel, notes["audio"].shape[-1])
    max_voices = max(len(c) for c, _ in chords)

    rendered = {(int(p), int(g)): i for i, (p, g) in enumerate(zip(notes["pitch"], notes["program"]))}
    needed = sorted({(p, g) for c, _ in chords for p in c for g in programs}, key=lambda t: (t[1], t[0]))
    missing = [t for t in needed if t not in rendered]
    if missing:
        raise UserError(f"{notes_pt} lacks the (pitch, program) notes {missing[:4]}...; rerun the render step "
                        f"(its programs come from every datasets.*.programs)")
    bank_of = {t: i for i, t in enumerate(needed)}
    bank_audio = notes["audio"][[rendered[t] for t in needed]]
    features = MelFeatures(mel, notes["sample_rate"])
    bank_db = features.db(bank_audio)
    pitch_class = {p: i for i, p in enumerate(pitches)}
    program_class = {g: i for i, g in enumerate(programs)}
    inaudible = inaudible_notes(bank_db, needed, mel["mask_db"], notes["program_names"])
    if inaudible:
        log.warning("%s: %d rendered note(s) have no pixel at or above %s dB, so no slot can match them (IoU 0, "
                    "a large note MSE) in every example that holds them: %s. The soundfont renders them (almost) "
                    "silent; the official generator renders with the same soundfont (summary.json: "
                    "inaudible_notes)", dataset, len(inaudible), mel["mask_db"],
                    ", ".join(n["name"] for n in inaudible))
    silent_rows = torch.tensor([bank_of[(n["pitch"], n["program"])] for n in inaudible], dtype=torch.int16)
    chords_sha256 = sha256_of(chords_csv)
    source_id = hashlib.sha256(json.dumps(
        {"format": FORMAT, "dataset": dataset, "chords_sha256": chords_sha256, "pitches": list(pitches),
         "soundfont_sha256": notes["soundfont_sha256"], "render": notes["render"], "dataset_params": ds, "mel": mel},
        sort_keys=True).encode()).hexdigest()[:16]

    assignments = sample_assignments(chords, programs, k, seed)
    summary_splits = {}
    for split in SPLITS:
        rows = [c for c, s in chords if s == split]
        picks = assignments[split]
        n = len(picks)
        note_index = torch.full((n, max_voices), -1, dtype=torch.int16)
        pitch = torch.full((n, max_voices), -1, dtype=torch.int16)
        instrument = torch.full((n, max_voices), -1, dtype=torch.int16)
        n_notes = torch.zeros(n, dtype=torch.int8)
        chord_id = torch.zeros(n, dtype=torch.int32)
        for j, (row, progs) in enumerate(picks):
            chord = rows[row]
            for v, (p, g) in enumerate(zip(chord, progs)):
                note_index[j, v] = bank_of[(p, g)]
                pitch[j, v] = pitch_class[p]
                instrument[j, v] = program_class[g]
            n_notes[j] = len(chord)
            chord_id[j] = row
        chord_db = torch.empty((n, mel["n_mels"], mel["n_frames"]), dtype=torch.float16)
        batch = 512
        for start in progress(range(0, n, batch), desc=f"{dataset} {split}", unit="batch"):
            idx = note_index[start:start + batch].long()
            audio = (bank_audio[idx.clamp(min=0)] * (idx >= 0).unsqueeze(-1)).sum(1)
            chord_db[start:start + batch] = features.db(audio).half()
        payload = {
            "format": FORMAT, "dataset": dataset, "split": split,
            "chord_db": chord_db, "note_index": note_index, "pitch": pitch, "instrument": instrument,
            "n_notes": n_notes, "chord_id": chord_id,
            "bank_db": bank_db.contiguous(),
            "bank_pitch": torch.tensor([p for p, _ in needed], dtype=torch.int16),
            "bank_program": torch.tensor([g for _, g in needed], dtype=torch.int16),
            "pitches": list(pitches), "programs": list(programs),
            "program_names": [notes["program_names"][g] for g in programs],
            "mask_db": float(mel["mask_db"]), "sample_rate": int(notes["sample_rate"]), "source_id": source_id,
        }
        path = Path(out_dir) / f"{split}.pt"
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        summary_splits[split] = {"examples": n, "chords": len(rows), "bytes": path.stat().st_size,
                                 "examples_with_inaudible_notes": int(torch.isin(note_index, silent_rows).any(1).sum())}
        log.info("%s %s: %d examples from %d chords -> %s", dataset, split, n, len(rows), path)

    summary = {
        "dataset": dataset,
        "format": FORMAT,
        "source_id": source_id,
        "chords_sha256": chords_sha256,
        "splits": summary_splits,
        "examples": {s: v["examples"] for s, v in summary_splits.items()},
        "shapes": {"chord_db": [mel["n_mels"], mel["n_frames"]], "max_voices": max_voices,
                   "bank_db": list(bank_db.shape)},
        "n_pitch_classes": len(pitches),
        "programs": list(programs),
        "program_names": [notes["program_names"][g] for g in programs],
        "assignments_per_chord": k,
        "assignment_seed": seed,
        "mask_db": mel["mask_db"],
        "mask_fraction": float((bank_db >= mel["mask_db"]).float().mean()),
        "inaudible_notes": inaudible,
        "soundfont": notes["soundfont"],
        "soundfont_sha256": notes["soundfont_sha256"],
        "mel": mel,
        "render": notes["render"],
    }
    write_json(Path(out_dir) / "summary.json", summary)
    return summary


def inaudible_notes(bank_db: torch.Tensor, bank: list[tuple[int, int]], mask_db: float,
                    program_names: dict[int, str]) -> list[dict]:
    """The (pitch, program) notes of the bank whose ground-truth mask is empty: nothing at or above ``mask_db``.
    (FluidR3_GM's violin renders MIDI 94 as silence.) Such a note is in the metrics but no slot can find it."""
    empty = ~(bank_db >= mask_db).flatten(1).any(1)
    return [{"pitch": p, "program": g, "name": f"{midi_name(p)} {program_names[g]}",
             "max_db": round(float(bank_db[i].max()), 2)} for i, (p, g) in enumerate(bank) if empty[i]]


@dataclass
class MusicSlotsSplit:
    """One split held in memory (CPU or GPU); ``batch`` gathers examples without any disk access."""
    chord_db: torch.Tensor     # (N, 1, F, T) float32
    note_index: torch.Tensor   # (N, V) long, -1 pads
    pitch: torch.Tensor        # (N, V) long, -1 pads
    instrument: torch.Tensor   # (N, V) long, -1 pads
    n_notes: torch.Tensor      # (N,) long
    bank_db: torch.Tensor      # (M, F, T) float32
    mask_db: float
    pitches: list[int]
    programs: list[int]
    program_names: list[str]
    source_id: str | None = None  # None: a split built before it was recorded

    def __len__(self) -> int:
        return self.chord_db.shape[0]

    @property
    def floor_db(self) -> float:
        return float(self.bank_db.min())

    def to(self, device) -> "MusicSlotsSplit":
        kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return MusicSlotsSplit(**kw)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """chord (B,1,F,T); notes (B,V,F,T) dB and masks (B,V,F,T) bool (pads: floor dB, all False);
        valid (B,V) bool; pitch, instrument (B,V) long (-1 pads); n_notes (B,)."""
        ni = self.note_index[idx]
        valid = ni >= 0
        notes = self.bank_db[ni.clamp(min=0)]
        notes = torch.where(valid[..., None, None], notes, torch.full_like(notes, self.floor_db))
        masks = (notes >= self.mask_db) & valid[..., None, None]
        return {"chord": self.chord_db[idx], "notes": notes, "masks": masks, "valid": valid,
                "pitch": self.pitch[idx], "instrument": self.instrument[idx], "n_notes": self.n_notes[idx]}


def load_split(path: str | Path, device: str | torch.device = "cpu") -> MusicSlotsSplit:
    path = Path(path)
    d = load_torch(path, "a dataset split", f"build it with the features step (snakemake --cores 2 {path})",
                   "rebuild it with the features step")
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise UserError(f"{path} is not a {FORMAT} split; rebuild it with the features step")
    split = MusicSlotsSplit(
        chord_db=d["chord_db"].float().unsqueeze(1), note_index=d["note_index"].long(), pitch=d["pitch"].long(),
        instrument=d["instrument"].long(), n_notes=d["n_notes"].long(), bank_db=d["bank_db"].float(),
        mask_db=d["mask_db"], pitches=d["pitches"], programs=d["programs"], program_names=d["program_names"],
        source_id=d.get("source_id"))
    return split.to(device)
