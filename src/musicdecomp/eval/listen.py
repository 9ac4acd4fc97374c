"""Listening to MusicSlots decompositions: dB mel spectrograms back to audio (least-squares inverse of the mel
filterbank, then Griffin-Lim phase reconstruction), written as WAV files with an index of what each one is.

The model never sees audio, so these are approximations: the audio rebuilt from a JSB chord's mel spectrogram
has a mel spectrogram within about 1.9 dB of it over its loudest 40 dB (benchmarks/mel_inversion.py). The input
chord is rebuilt the same way, so chord, reconstruction, slots and notes are compared like for like.
"""

from __future__ import annotations

from pathlib import Path

import torch

from musicdecomp.data.mel import db_to_power
from musicdecomp.errors import UserError
from musicdecomp.io import atomic_dir, read_json, write_json


class MelInverter:
    """(..., n_mels, frames) dB mel spectrograms -> (..., samples) waveforms, for the mel settings the dataset
    was built with (HTK mel scale, no filterbank normalisation, power 2, Hann window, centred frames)."""

    def __init__(self, mel: dict, sample_rate: int, n_iter: int = 64):
        import torchaudio.transforms as T

        self.to_linear = T.InverseMelScale(
            n_stft=mel["n_fft"] // 2 + 1, n_mels=mel["n_mels"], sample_rate=sample_rate,
            f_min=float(mel["f_min"]), f_max=float(mel["f_max"]), norm=None, mel_scale="htk")
        # a fixed (not random) initial phase: the same spectrogram always gives the same file
        self.griffin_lim = T.GriffinLim(n_fft=mel["n_fft"], hop_length=mel["hop_length"], power=2.0,
                                        n_iter=n_iter, momentum=0.99, rand_init=False)

    @torch.no_grad()
    def __call__(self, db: torch.Tensor) -> torch.Tensor:
        return self.griffin_lim(self.to_linear(db_to_power(db.detach().float().cpu())))


def dataset_audio_settings(data_dir: str | Path) -> tuple[dict, int]:
    """The mel settings and sample rate a dataset was built with (from its ``summary.json``)."""
    path = Path(data_dir) / "summary.json"
    fix = f"rebuild the dataset with the features step (snakemake --cores 2 {path})"
    summary = read_json(path, fix)
    try:
        return summary["mel"], int(summary["render"]["sample_rate"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} has no usable mel / render settings ({type(e).__name__}: {e}); {fix}") from None


def write_wav16(path: Path, wave, sample_rate: int) -> None:
    """A 16-bit PCM WAV file: with soundfile, or with scipy where soundfile is missing (the lent GPU machines have
    no soundfile; their evaluations ship with released runs)."""
    try:
        import soundfile as sf
    except ImportError:
        import numpy as np
        from scipy.io import wavfile

        pcm = np.clip(np.round(np.asarray(wave, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)
        wavfile.write(path, sample_rate, pcm)
        return
    sf.write(path, wave, sample_rate, subtype="PCM_16")


def write_decomposition_audio(examples: dict, audio_dir: str | Path, mel: dict, sample_rate: int) -> list[str]:
    """Write ``ex<r>_{chord,recon,slot<s>,note<v>}.wav`` for every example of ``examples`` (what
    ``decompose_examples`` returns) and ``index.json`` saying which note each slot was matched to. One gain
    per example (only lowered, to avoid clipping) keeps the levels of its chord, slots and notes comparable.
    Returns the WAV names."""
    inverter = MelInverter(mel, sample_rate)
    index: dict = {"sample_rate": sample_rate, "examples": [],
                   "method": f"inverse mel filterbank + Griffin-Lim ({inverter.griffin_lim.n_iter} iterations)"}
    names = []
    with atomic_dir(audio_dir) as tmp:
        for r in range(len(examples["chord"])):
            notes = examples["note_labels"][r]
            signals = {"chord": (examples["chord"][r, 0], "input chord: " + " + ".join(notes)),
                       "recon": (examples["recon"][r, 0], "reconstruction (the slots composed)")}
            for s in range(examples["slot_db"].shape[1]):
                v = examples["note_of_slot"][r].get(s)
                signals[f"slot{s}"] = (examples["slot_db"][r, s],
                                       f"slot {s}" + (f", matched to note {v} ({notes[v]})"
                                                      if v is not None else ", matched to no note"))
            for v, note in enumerate(notes):
                signals[f"note{v}"] = (examples["notes"][r, v], f"ground-truth note {v} ({note})")
            audio = inverter(torch.stack([db for db, _ in signals.values()]))
            gain = min(1.0, 0.99 / max(float(audio.abs().max()), 1e-12))
            files = {}
            for (name, (_, what)), wave in zip(signals.items(), audio):
                file = f"ex{r}_{name}.wav"
                write_wav16(tmp / file, (wave * gain).numpy(), sample_rate)
                files[file] = what
                names.append(file)
            index["examples"].append({"test_index": int(examples["index"][r]), "gain": gain, "files": files})
        write_json(tmp / "index.json", index)
    return names
