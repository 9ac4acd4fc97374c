"""Render every distinct (pitch, GM program) note once with FluidSynth, cached across runs.

Protocol (official MusicSlots generator): a quarter note at 120 bpm (0.5 s) at velocity 90 (music21's
default when it writes MIDI), rendered at 44.1 kHz with FluidSynth's default gain, reverb and chorus;
4,000 zero samples prepended at 44.1 kHz; resampled to 16 kHz (torchaudio's default windowed sinc); left
channel. The official code renders a MIDI file with the fluidsynth CLI; here the same synth is driven
directly through pyfluidsynth: note-on at sample ``note_on_at`` (64: the CLI's MIDI player starts the note one
64-sample block into its file, the synth already running), note-off 0.5 s later, and rendering continues through
the release until ``n_samples`` at 16 kHz are covered (32 mel frames = 16,384 samples). With ``pcm16`` (below)
this reproduces the CLI's file (FluidSynth 2.3.1) to the bit for most notes and within 1/2^15 for the others
(benchmarks/render_vs_official.py).

Each note gets a fresh synth (with dynamic sample loading, about 20 ms): FluidSynth's reverb and chorus
are modulated, so a reused synth makes a note depend on what was rendered before it (differences up to
1e-4). A fresh synth makes every note bit-identical however the work is split across workers or runs.
Note-on and note-off fall on FluidSynth's 64-sample block boundaries.

The official notes pass through a 16-bit WAV file: the CLI writes it through libsndfile, which (up to 1.2.2, the
version of 2023, with the clipping FluidSynth turns on) floors each sample, floor(x * 2^15); torchaudio.load
reads it back divided by 2^15. ``pcm16`` (the default) does the same to the synth-rate audio, before the lead
zeros and the resampling, as the official generator does. Quantisation leaves a note's silent tail at -1/2^15
(a constant the mel spectrogram sees in its lowest bands, about -43 dB) and raises its quietest pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from musicdecomp.data.jsb import read_chords
from musicdecomp.errors import UserError
from musicdecomp.io import atomic_path, sha256_of
from musicdecomp.logs import get_logger, progress

log = get_logger("render")

CACHE_DIR = Path("results/cache/render")
BLOCK = 64  # FluidSynth renders in blocks of 64 samples; events take effect at block boundaries


def import_fluidsynth():
    """pyfluidsynth, bound to ``$MUSICDECOMP_FLUIDSYNTH_LIB`` when set (a libfluidsynth.so.3 outside the system's
    library folders, e.g. the kit of workflow/scripts/fluidsynth_kit.sh; pyfluidsynth itself only looks where
    ``ctypes.util.find_library`` looks)."""
    lib = os.environ.get("MUSICDECOMP_FLUIDSYNTH_LIB")
    if lib and "fluidsynth" not in sys.modules:
        if not Path(lib).is_file():
            raise UserError(f"MUSICDECOMP_FLUIDSYNTH_LIB={lib} does not exist; point it at libfluidsynth.so.3 "
                            f"(source the kit's env.sh) or unset it to use the system's FluidSynth")
        import ctypes.util

        find = ctypes.util.find_library
        ctypes.util.find_library = lambda name: lib if "fluidsynth" in name else find(name)
        try:
            import fluidsynth  # noqa: F401
        except OSError as e:  # a library it needs is missing
            raise UserError(f"cannot load {lib} ({e}); set LD_LIBRARY_PATH to the folder of the libraries it "
                            f"needs (the kit's env.sh does)") from None
        finally:
            ctypes.util.find_library = find
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth)
    except ImportError as e:
        raise UserError(f"cannot use FluidSynth ({e}); install the library: apt-get install libfluidsynth3 "
                        f"(Debian/Ubuntu; ./setup.sh does it) or conda install -c conda-forge fluidsynth, "
                        f"and pip install pyfluidsynth") from None
    return fluidsynth


class Synth:
    """One FluidSynth instance with one soundfont loaded (samples loaded on demand)."""
    def __init__(self, soundfont: str, rate: int, gain: float, reverb: bool, chorus: bool):
        import ctypes

        fs = import_fluidsynth()
        self._synth = fs.Synth(gain=gain, samplerate=float(rate))
        self._synth.setting("synth.dynamic-sample-loading", 1)
        self._synth.setting("synth.reverb.active", int(reverb))
        self._synth.setting("synth.chorus.active", int(chorus))
        self.sfid = self._synth.sfload(str(soundfont))
        if self.sfid < 0:
            self.close()
            raise UserError(f"FluidSynth cannot load {soundfont} (not a SoundFont 2 file?); "
                            f"set data.render.soundfont to a valid .sf2 file")
        write = fs._fl.fluid_synth_write_float
        write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                          ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        write.restype = ctypes.c_int
        self._write = write

    def preset_name(self, program: int) -> str | None:
        return self._synth.sfpreset_name(self.sfid, 0, program)

    def _render(self, n: int) -> np.ndarray:
        buf = np.zeros((n, 2), dtype=np.float32)
        ptr = buf.ctypes.data
        if self._write(self._synth.synth, n, ptr, 0, 2, ptr, 1, 2) != 0:
            raise RuntimeError("fluid_synth_write_float failed")
        return buf

    def select(self, channel: int, bank: int, program: int) -> None:
        if self._synth.program_select(channel, self.sfid, bank, program) != 0:
            raise UserError(f"the soundfont has no preset {program} in bank {bank}; choose another program/kit "
                            f"or another soundfont")

    def play(self, events: list[tuple[int, str, int, int, int]], n_total: int) -> np.ndarray:
        """Render ``n_total`` stereo samples (n, 2) of timed events (sample, "on"|"off", channel, key, velocity).
        Events take effect at the 64-sample block boundary at or after their time."""
        out, pos = [], 0
        for t, kind, channel, key, velocity in sorted(events, key=lambda e: (e[0], e[1] == "on")):
            t = min(BLOCK * -(-t // BLOCK), n_total)
            if t > pos:
                out.append(self._render(t - pos))
                pos = t
            if kind == "on":
                self._synth.noteon(channel, key, velocity)
            else:
                self._synth.noteoff(channel, key)
        if n_total > pos:
            out.append(self._render(n_total - pos))
        return np.concatenate(out) if out else np.zeros((0, 2), np.float32)

    def note(self, pitch: int, program: int, velocity: int, n_on: int, n_total: int, n_pre: int = 0) -> np.ndarray:
        """Left channel of one note: ``n_pre`` samples of the running synth before the note-on, then on for ``n_on``
        samples, then released, ``n_total`` samples in all."""
        if self._synth.program_select(0, self.sfid, 0, program) != 0:
            raise UserError(f"the soundfont has no preset for GM program {program} (bank 0); "
                            f"choose another program in datasets.*.programs or another data.render.soundfont")
        pre = self._render(n_pre)
        self._synth.noteon(0, pitch, velocity)
        on = self._render(n_on)
        self._synth.noteoff(0, pitch)
        off = self._render(n_total - n_pre - n_on)
        return np.concatenate([pre, on, off])[:, 0]

    def close(self) -> None:
        if getattr(self, "_synth", None) is not None:
            self._synth.delete()
            self._synth = None


def render_lengths(cfg: dict) -> tuple[int, int, int]:
    """(samples before the note-on, note-on samples, total samples) at the synth rate, all whole FluidSynth blocks."""
    r = cfg["data.render"]
    n_pre = BLOCK * -(-r["note_on_at"] // BLOCK)
    on_seconds = r["quarter_lengths"] * 60.0 / r["bpm"]
    n_on = max(BLOCK, BLOCK * round(on_seconds * r["synth_rate"] / BLOCK))
    # enough synth samples that, after the lead zeros and resampling, n_samples are covered (+ filter margin)
    need = math.ceil(r["n_samples"] * r["synth_rate"] / r["sample_rate"]) + 256 - r["lead_zeros"]
    n_total = max(n_pre + n_on + BLOCK, BLOCK * math.ceil(need / BLOCK))
    return n_pre, n_on, n_total


def _render_one(args: tuple) -> tuple[int, int, np.ndarray]:
    """One note at the synth rate (float, before ``pcm16``) in a fresh synth."""
    soundfont, r, pitch, program, n_pre, n_on, n_total = args
    synth = Synth(soundfont, r["synth_rate"], r["gain"], r["reverb"], r["chorus"])
    try:
        audio = synth.note(pitch, program, r["velocity"], n_on, n_total, n_pre)
    finally:
        synth.close()
    return pitch, program, audio


def as_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio as a 16-bit WAV file keeps it, read back as float: floor(x * 2^15) clipped to int16, / 2^15."""
    return (np.clip(np.floor(audio * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


def to_target_rate(audio: np.ndarray, cfg: dict) -> np.ndarray:
    """Synth-rate notes (M, n) -> lead zeros, resample, first ``n_samples`` (M, n_samples) float32."""
    import torch
    import torchaudio.functional as AF

    r = cfg["data.render"]
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    x = torch.nn.functional.pad(x, (r["lead_zeros"], 0))
    y = AF.resample(x, r["synth_rate"], r["sample_rate"])
    if y.shape[-1] < r["n_samples"]:
        y = torch.nn.functional.pad(y, (0, r["n_samples"] - y.shape[-1]))
    return y[..., : r["n_samples"]].contiguous().numpy()


def cache_key(cfg: dict, soundfont_sha256: str) -> str:
    r = {k: v for k, v in cfg["data.render"].items() if k != "soundfont"}
    blob = json.dumps({"render": r, "soundfont_sha256": soundfont_sha256}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_soundfont(cfg: dict, programs: list[int]) -> dict[int, str]:
    """Fail early, in one line, on a missing soundfont or a program it lacks; return preset names."""
    r = cfg["data.render"]
    path = Path(r["soundfont"])
    if not path.is_file():
        raise UserError(f"soundfont {path} does not exist; install it (apt-get install fluid-soundfont-gm, "
                        f"which ./setup.sh does) or set data.render.soundfont to an .sf2 file")
    synth = Synth(str(path), r["synth_rate"], r["gain"], r["reverb"], r["chorus"])
    try:
        names = {p: synth.preset_name(p) for p in programs}
    finally:
        synth.close()
    missing = [p for p, name in names.items() if name is None]
    if missing:
        raise UserError(f"soundfont {path} has no preset for GM program(s) {missing} in bank 0; "
                        f"remove them from datasets.*.programs or use another data.render.soundfont")
    return names


def render_notes(cfg: dict, chords_csv: str | Path, out: str | Path, workers: int = 0) -> dict:
    """The render step: every (pitch in chords.csv, program) note -> notes.pt (16 kHz waveforms).

    ``workers`` processes render in parallel (0: one per core); the result does not depend on it.
    """
    import torch


    r = cfg["data.render"]
    programs = cfg["programs"]
    pitches = sorted({p for chord, _ in read_chords(chords_csv) for p in chord})
    names = check_soundfont(cfg, programs)
    sf_sha = sha256_of(r["soundfont"])
    cache = CACHE_DIR / cache_key(cfg, sf_sha)
    wanted = [(p, prog) for prog in programs for p in pitches]
    todo = [(p, prog) for p, prog in wanted if not (cache / f"p{prog:03d}_n{p:03d}.npy").is_file()]
    n_pre, n_on, n_total = render_lengths(cfg)
    log.info("%d notes (%d pitches x %d programs); %d cached in %s, %d to render",
             len(wanted), len(pitches), len(programs), len(wanted) - len(todo), cache, len(todo))
    if todo:
        workers = workers or os.cpu_count() or 1
        workers = max(1, min(workers, len(todo) // 8 or 1))
        jobs = [(r["soundfont"], r, p, prog, n_pre, n_on, n_total) for p, prog in todo]
        bar = progress(total=len(jobs), desc="render notes", unit="note")
        raw: list[tuple[int, int, np.ndarray]] = []
        if workers == 1:
            for job in jobs:
                raw.append(_render_one(job))
                bar.update()
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
                for res in ex.map(_render_one, jobs, chunksize=4):
                    raw.append(res)
                    bar.update()
        bar.close()
        audio = np.stack([a for _, _, a in raw])
        audio = to_target_rate(as_pcm16(audio) if r["pcm16"] else audio, cfg)
        for (p, prog, _), wave in zip(raw, audio):
            with atomic_path(cache / f"p{prog:03d}_n{p:03d}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, wave)
    bank = np.stack([np.load(cache / f"p{prog:03d}_n{p:03d}.npy") for p, prog in wanted])
    silent = [(p, prog) for (p, prog), w in zip(wanted, bank) if not np.abs(w).max() > 0]
    if silent:
        raise UserError(f"the soundfont rendered silence for (pitch, program) {silent[:5]}; "
                        f"check data.render.soundfont and the programs")
    payload = {
        "audio": torch.from_numpy(bank),
        "pitch": torch.tensor([p for p, _ in wanted], dtype=torch.int64),
        "program": torch.tensor([prog for _, prog in wanted], dtype=torch.int64),
        "program_names": {int(p): names[p] for p in programs},
        "sample_rate": r["sample_rate"],
        "soundfont": str(r["soundfont"]),
        "soundfont_sha256": sf_sha,
        "render": dict(r),
    }
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    log.info("rendered %d new notes, %d from cache -> %s", len(todo), len(wanted) - len(todo), out)
    return {"rendered": len(todo), "cached": len(wanted) - len(todo), "notes": len(wanted)}
