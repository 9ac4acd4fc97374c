"""Multi-scale STFT distance (RAVE's form, as the composable-representations paper reports it).

For each window size s in {2048, 1024, 512, 256, 128}: magnitude STFT (Hann window of s, hop s/4, centred,
not normalised) of both signals; distance += mean((X - Y)^2) / mean(X^2) + mean(|log(X + 1e-7) - log(Y + 1e-7)|),
summed over the scales. ``x`` is the first argument (the paper's code passes the generated audio first, so the
relative term is normalised by its energy). Lower is better; 0 for identical signals.
"""

from __future__ import annotations

import torch

SCALES = (2048, 1024, 512, 256, 128)


def ms_stft_distance(x: torch.Tensor, y: torch.Tensor, scales: tuple[int, ...] = SCALES,
                     eps: float = 1e-7) -> torch.Tensor:
    """(..., T) and (..., T) -> (...) distances."""
    if x.shape != y.shape:
        raise ValueError(f"signals differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    lead = x.shape[:-1]
    x, y = x.reshape(-1, x.shape[-1]).float(), y.reshape(-1, y.shape[-1]).float()
    total = torch.zeros(x.shape[0], device=x.device)
    for s in scales:
        window = torch.hann_window(s, device=x.device)
        X = torch.stft(x, s, s // 4, s, window, center=True, return_complex=True).abs()
        Y = torch.stft(y, s, s // 4, s, window, center=True, return_complex=True).abs()
        dims = (-2, -1)
        total += ((X - Y) ** 2).mean(dims) / (X ** 2).mean(dims).clamp_min(1e-12)
        total += (torch.log(X + eps) - torch.log(Y + eps)).abs().mean(dims)
    return total.reshape(lead)
