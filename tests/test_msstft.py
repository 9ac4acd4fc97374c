"""MS-STFT distance on signals whose answer is known."""

import math

import pytest
import torch
import torchaudio

from musicdecomp.metrics.msstft import SCALES, ms_stft_distance


def test_identical_signals_are_at_distance_zero():
    x = torch.randn(2, 24000)
    assert torch.allclose(ms_stft_distance(x, x), torch.zeros(2), atol=1e-6)


def test_a_half_amplitude_copy():
    # |X - 0.5X|^2 / |X|^2 = 0.25 and |log X - log 0.5X| = log 2 at every bin (where X >> 1e-7), per scale
    x = torch.randn(3, 24000)
    d = ms_stft_distance(x, 0.5 * x)
    assert torch.allclose(d, torch.full((3,), len(SCALES) * (0.25 + math.log(2))), rtol=1e-3)
    # the relative term is normalised by the first argument's energy: not symmetric
    assert not torch.allclose(ms_stft_distance(0.5 * x, x), d, rtol=1e-3)


def test_matches_torchaudio_spectrograms():
    x, y = torch.randn(24000), torch.randn(24000)
    ref = 0.0
    for s in SCALES:
        spec = torchaudio.transforms.Spectrogram(n_fft=s, win_length=s, hop_length=s // 4, power=None)
        X, Y = spec(x).abs(), spec(y).abs()
        ref += ((X - Y) ** 2).mean() / (X ** 2).mean() + (torch.log(X + 1e-7) - torch.log(Y + 1e-7)).abs().mean()
    assert ms_stft_distance(x, y).item() == pytest.approx(ref.item(), rel=1e-4)
    with pytest.raises(ValueError, match="differ in shape"):
        ms_stft_distance(x, y[:-1])
