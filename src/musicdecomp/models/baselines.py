"""Baselines of the MusicSlots paper (official code): an autoencoder / VAE whose latent is probed, and a
supervised CNN. Both use the 4-layer 5x5 CNN with stride (2, 2), which maps 128x32 to 128x8x2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StridedEncoder(nn.Module):
    """4 x [Conv2d 5x5 stride 2 + ReLU]: (B, 1, F, T) -> (B, channels * F/16 * T/16)."""

    def __init__(self, channels: int = 128, layers: int = 4):
        super().__init__()
        convs, in_ch = [], 1
        for _ in range(layers):
            convs += [nn.Conv2d(in_ch, channels, 5, stride=2, padding=2), nn.ReLU()]
            in_ch = channels
        self.net = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class VAE(nn.Module):
    """Encoder -> (mu, log variance) -> z -> Linear -> 128x8x2 -> transposed convolutions -> (B, 1, F, T) dB.
    With ``kld_weight`` 0 it is a deterministic autoencoder (z = mu)."""

    def __init__(self, latent: int = 128, channels: int = 128, size: tuple[int, int] = (128, 32)):
        super().__init__()
        self.size, self.channels = size, channels
        self.grid = (size[0] // 16, size[1] // 16)
        flat = channels * self.grid[0] * self.grid[1]
        self.encoder = StridedEncoder(channels)
        self.to_stats = nn.Linear(flat, 2 * latent)
        self.from_latent = nn.Linear(latent, flat)
        layers: list[nn.Module] = []
        for _ in range(4):
            layers += [nn.ConvTranspose2d(channels, channels, 5, stride=2, padding=2, output_padding=1), nn.ReLU()]
        layers += [nn.ConvTranspose2d(channels, channels, 5, padding=2), nn.ReLU(),
                   nn.ConvTranspose2d(channels, 1, 3, padding=1)]
        self.decoder = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=-1)
        return mu, logvar

    def forward(self, x: torch.Tensor, sample: bool, generator: torch.Generator | None = None):
        mu, logvar = self.encode(x)
        z = mu
        if sample:
            eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
            z = mu + (0.5 * logvar).exp() * eps
        h = self.from_latent(z).reshape(-1, self.channels, *self.grid)
        recon = self.decoder(h)[..., : self.size[0], : self.size[1]]
        kld = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(-1)).mean()
        return recon, kld, mu


class SupervisedCNN(nn.Module):
    """Encoder -> Linear 128 -> ReLU -> Linear 128 -> Linear (pitches x instruments) multi-label logits."""

    def __init__(self, n_pitches: int, n_instruments: int, channels: int = 128, size: tuple[int, int] = (128, 32)):
        super().__init__()
        flat = channels * (size[0] // 16) * (size[1] // 16)
        self.encoder = StridedEncoder(channels)
        self.head = nn.Sequential(nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, 128),
                                  nn.Linear(128, n_pitches * n_instruments))
        self.shape = (n_pitches, n_instruments)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)).reshape(-1, *self.shape)


class NoteProbe(nn.Module):
    """Linear heads on one slot vector: pitch class and instrument class (MusicSlots' MultiHeadClassifier)."""

    def __init__(self, dim: int, n_pitches: int, n_instruments: int):
        super().__init__()
        self.pitch = nn.Linear(dim, n_pitches)
        self.instrument = nn.Linear(dim, n_instruments)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pitch(x), self.instrument(x)


def multilabel_targets(pitch: torch.Tensor, instrument: torch.Tensor, n_pitches: int, n_instruments: int):
    """(B, V) class indices (-1 pads) -> (B, n_pitches, n_instruments) 0/1 grid of the chord's notes."""
    grid = torch.zeros(pitch.shape[0], n_pitches, n_instruments, device=pitch.device)
    valid = pitch >= 0
    b = torch.arange(pitch.shape[0], device=pitch.device)[:, None].expand_as(pitch)
    grid[b[valid], pitch[valid], instrument[valid]] = 1.0
    return grid


def multilabel_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target)
