"""Mel spectrograms exactly as the official MusicSlots code computes them.

``torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, hop_length=512, n_mels=128)`` with every other
argument at torchaudio's default (f 0-8 kHz, Hann window, power 2, centred with reflect padding, HTK mel
scale, no filterbank normalisation), cropped to the first ``n_frames`` (32) frames, then
dB = 10*log10(max(power, amin)) referenced to power 1.0 and floored at (max - top_db) per example.
The floor uses each example's own maximum: a chord's for the chord input, a note's for its ground truth.
"""

from __future__ import annotations

import torch

from musicdecomp.errors import UserError


def mel_transform(mel: dict, sample_rate: int):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=mel["n_fft"], hop_length=mel["hop_length"], n_mels=mel["n_mels"],
        f_min=float(mel["f_min"]), f_max=float(mel["f_max"]), power=2.0, center=True, pad_mode="reflect",
        norm=None, mel_scale="htk")


def power_to_db(power: torch.Tensor, amin: float, top_db: float | None,
                dims: tuple[int, ...] = (-2, -1)) -> torch.Tensor:
    """10*log10(power / 1.0) with an ``amin`` floor; if ``top_db``, clamp at (max over ``dims``) - top_db.

    ``dims`` are the axes one example spans: (-2, -1) for one spectrogram; (-3, -2, -1) for a stack of
    slots that share one floor, as the official evaluation does.
    """
    db = 10.0 * torch.log10(torch.clamp(power, min=amin))
    if top_db is not None:
        db = torch.maximum(db, db.amax(dim=dims, keepdim=True) - top_db)
    return db


def db_to_power(db: torch.Tensor) -> torch.Tensor:
    return torch.pow(10.0, db / 10.0)


def check_lengths(mel: dict, n_samples: int) -> None:
    """The crop must come from real samples: the last kept frame may not reach the reflect padding."""
    need = (mel["n_frames"] - 1) * mel["hop_length"] + mel["n_fft"] // 2
    if n_samples < need:
        raise UserError(f"data.render.n_samples = {n_samples} is too short for {mel['n_frames']} frames "
                        f"(hop {mel['hop_length']}, n_fft {mel['n_fft']}): it needs at least {need}")


class MelFeatures:
    """Waveforms (..., n_samples) at ``sample_rate`` -> cropped dB mel spectrograms (..., n_mels, n_frames)."""
    def __init__(self, mel: dict, sample_rate: int):
        self.cfg = mel
        self.transform = mel_transform(mel, sample_rate)

    def power(self, audio: torch.Tensor) -> torch.Tensor:
        spec = self.transform(audio.float())
        if spec.shape[-1] < self.cfg["n_frames"]:
            spec = torch.nn.functional.pad(spec, (0, self.cfg["n_frames"] - spec.shape[-1]))
        return spec[..., : self.cfg["n_frames"]]

    def db(self, audio: torch.Tensor) -> torch.Tensor:
        return power_to_db(self.power(audio), self.cfg["amin"], self.cfg["top_db"])

    def mask(self, db: torch.Tensor) -> torch.Tensor:
        """Binary note mask: pixels at or above ``mask_db`` (absolute, referenced to power 1.0)."""
        return db >= self.cfg["mask_db"]
