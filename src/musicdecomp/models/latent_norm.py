"""Standardisation of codec latents before diffusion: (x - mean) / std, with statistics of the training split.

IADB blends data with N(0, I) noise, so the latents' scale sets how much of the signal a noise level hides. The
released configuration feeds EnCodec latents as they are (``none``); ``global`` uses one mean and standard
deviation over every channel and frame, ``channel`` one per latent channel. The statistics are buffers, saved
with the model, so sampling maps back with the same numbers (``inverse``).
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("none", "global", "channel")


class LatentNorm(nn.Module):
    def __init__(self, channels: int = 128, mode: str = "global", eps: float = 1e-6):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"latent_norm must be one of {', '.join(MODES)}; got {mode!r}")
        self.mode, self.eps = mode, eps
        self.register_buffer("mean", torch.zeros(1, channels, 1))
        self.register_buffer("std", torch.ones(1, channels, 1))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> dict[str, float]:
        """Set the statistics from latents x (N, C, T) for this mode; returns the split's statistics for the log."""
        x = x.float()
        stats = latent_stats(x)
        if self.mode == "global":
            self.mean.fill_(x.mean().item())
            self.std.fill_(max(x.std().item(), self.eps))
        elif self.mode == "channel":
            self.mean.copy_(x.mean(dim=(0, 2)).reshape(1, -1, 1))
            self.std.copy_(x.std(dim=(0, 2)).clamp_min(self.eps).reshape(1, -1, 1))
        return stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


def latent_stats(x: torch.Tensor) -> dict[str, float]:
    """Global mean, std, min, max and the spread of the per-channel std of latents x (N, C, T)."""
    ch = x.std(dim=(0, 2))
    return {"mean": x.mean().item(), "std": x.std().item(), "min": x.min().item(), "max": x.max().item(),
            "channel_std_min": ch.min().item(), "channel_std_median": ch.median().item(),
            "channel_std_max": ch.max().item()}
