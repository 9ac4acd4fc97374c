"""The official MusicSlots generator's way of rendering a note, for checking the render step against it.

music21 writes a one-note MIDI file, the ``fluidsynth`` command line renders it (``fluidsynth -ni <sf2> <mid> -F
<wav> -r 44100 -q``, as the official ``midi2audio.py`` calls it), and the WAV file is read back as
torchaudio.load(normalize=True) reads it; the official lead zeros, resampling and channel are the render step's own
(``render.to_target_rate`` of the left channel). Needs the command line (Debian: ``apt-get install
--no-install-recommends fluidsynth``); the pipeline does not.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from musicdecomp.errors import UserError


def cli_version() -> str | None:
    """The fluidsynth command line's version line, or None where it is not installed."""
    if shutil.which("fluidsynth") is None:
        return None
    out = subprocess.run(["fluidsynth", "--version"], capture_output=True, text=True).stdout.splitlines()
    return out[0] if out else "fluidsynth (version unknown)"


def midi_file(path: Path, pitch: int, program: int, velocity: int, bpm: float, quarter_lengths: float) -> float:
    """One note in a music21 score, as the official generator builds it; returns the end of track in seconds."""
    import music21
    from music21 import midi

    part = music21.stream.Part()
    inst = music21.instrument.Instrument()
    inst.midiProgram = program
    part.insert(0, inst)
    note = music21.note.Note(pitch, quarterLength=quarter_lengths)
    note.volume.velocity = velocity
    part.append(note)
    score = music21.stream.Score([music21.tempo.MetronomeMark(number=bpm), part])
    score.write("midi", fp=str(path))
    mf = midi.MidiFile()
    mf.open(str(path))
    mf.read()
    mf.close()
    end = 0
    for track in mf.tracks:
        tick = 0
        for event in track.events:
            if isinstance(event, midi.DeltaTime):
                tick += event.time
            elif event.type == midi.MetaEvents.END_OF_TRACK:
                end = max(end, tick)
    return end / mf.ticksPerQuarterNote * 60.0 / bpm


def render_cli(soundfont: str, mid: Path, wav: Path, rate: int) -> np.ndarray:
    """Stereo (n, 2) float32, scaled as torchaudio.load(normalize=True) scales 16-bit WAV."""
    import soundfile as sf

    if shutil.which("fluidsynth") is None:
        raise UserError("no fluidsynth command line to check against: apt-get install --no-install-recommends "
                        "fluidsynth")
    subprocess.run(["fluidsynth", "-ni", soundfont, str(mid), "-F", str(wav), "-r", str(rate), "-q"],
                   check=True, capture_output=True)
    audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != rate:
        raise UserError(f"{wav}: the fluidsynth command line wrote {sr} Hz, not the {rate} asked for")
    return audio
