"""Spatial-broadcast decoder: each slot is tiled on a small grid and upsampled to a full spectrogram."""

from __future__ import annotations

import torch
from torch import nn

from musicdecomp.models.encoder import SoftPositionEmbed


class BroadcastDecoder(nn.Module):
    """(B*K, D) slots -> (B*K, out_channels, F, T).

    The slot is broadcast to an (F/2^L, T/2^L) grid (8 x 2 for 128 x 32), a position embedding is added, then
    L x [ConvTranspose2d k5 stride 2 + ReLU], ConvTranspose2d k5 stride 1 + ReLU, ConvTranspose2d k3 stride 1.
    """

    def __init__(self, dim: int = 128, out_channels: int = 2, size: tuple[int, int] = (128, 32),
                 upsamplings: int = 4):
        super().__init__()
        self.size = size
        self.grid = (size[0] // 2 ** upsamplings, size[1] // 2 ** upsamplings)
        if min(self.grid) < 1:
            raise ValueError(f"size {size} is too small for {upsamplings} upsamplings")
        self.pos = SoftPositionEmbed(dim)
        layers: list[nn.Module] = []
        for _ in range(upsamplings):
            layers += [nn.ConvTranspose2d(dim, dim, 5, stride=2, padding=2, output_padding=1), nn.ReLU()]
        layers += [nn.ConvTranspose2d(dim, dim, 5, stride=1, padding=2), nn.ReLU(),
                   nn.ConvTranspose2d(dim, out_channels, 3, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        x = slots[:, :, None, None].expand(-1, -1, *self.grid)
        x = self.net(self.pos(x))
        return x[..., : self.size[0], : self.size[1]]
