"""Mel features against an independent NumPy computation, the dB floors and the mask threshold."""

import numpy as np
import pytest
import torch
import torchaudio

from musicdecomp.data.mel import MelFeatures, check_lengths, db_to_power, power_to_db
from musicdecomp.errors import UserError


def reference_mel_db(x: np.ndarray, sr=16000, n_fft=1024, hop=512, n_mels=128, f_min=0.0, f_max=8000.0,
                     n_frames=32, top_db=80.0, amin=1e-10) -> np.ndarray:
    """Written from the definitions: reflect-padded Hann STFT, power, HTK triangular filters, 10 log10."""
    pad = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
    frames = np.stack([pad[t * hop: t * hop + n_fft] * window for t in range(n_frames)], axis=1)
    power = np.abs(np.fft.rfft(frames, axis=0)) ** 2  # (n_fft/2+1, T)

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (c - lo)
        falling = (hi - freqs) / (hi - c)
        fb[m] = np.clip(np.minimum(rising, falling), 0, None)
    mel = fb @ power
    db = 10 * np.log10(np.maximum(mel, amin))
    return np.maximum(db, db.max() - top_db)


def test_mel_matches_an_independent_computation(params):
    rng = np.random.default_rng(0)
    t = np.arange(16384) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t) + 0.05 * np.sin(2 * np.pi * 1234.5 * t)
         + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    ours = MelFeatures(params["data"]["mel"], 16000).db(torch.from_numpy(x)).numpy()
    ref = reference_mel_db(x)
    assert ours.shape == (128, 32)
    assert np.abs(ours - ref).max() < 0.02  # float32 vs float64, in dB


def test_matches_torchaudio_amplitude_to_db_floors(params):
    gen = torch.Generator().manual_seed(0)
    power = 10 ** (-9 * torch.rand(3, 128, 32, generator=gen)) * torch.tensor([1.0, 1e-1, 0.3]).view(3, 1, 1)
    ours = power_to_db(power, 1e-10, 80.0)
    ref = torchaudio.functional.amplitude_to_DB(power.unsqueeze(1), 10.0, 1e-10, 0.0, top_db=80.0).squeeze(1)
    assert torch.allclose(ours, ref, atol=1e-4)
    for i in range(3):  # each example floors at its own max - 80 dB
        assert torch.isclose(ours[i].min(), ours[i].max() - 80.0, atol=1e-4)
    # slots that share a floor: the max over all of them
    joint = power_to_db(power, 1e-10, 80.0, dims=(-3, -2, -1))
    assert torch.isclose(joint.min(), joint.max() - 80.0, atol=1e-4)
    assert torch.allclose(db_to_power(ours[0]), torch.clamp(power[0], min=power[0].max() * 1e-8), rtol=1e-4)


def test_mask_threshold_is_inclusive_and_absolute(params):
    feats = MelFeatures(params["data"]["mel"], 16000)
    db = torch.tensor([-29.999, -30.0, -30.001, 0.0, -100.0])
    assert feats.mask(db).tolist() == [True, True, False, True, False]


def test_note_too_short_for_the_crop(params):
    check_lengths(params["data"]["mel"], 16384)
    with pytest.raises(UserError, match="n_samples = 15000 is too short for 32 frames"):
        check_lengths(params["data"]["mel"], 15000)
