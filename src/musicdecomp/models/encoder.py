"""The MusicSlots CNN encoder (Locatello-style) with a soft position embedding."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def position_grid(height: int, width: int, device=None) -> torch.Tensor:
    """(H, W, 4) grid [y, x, 1-y, 1-x] with y, x in linspace(0, 1)."""
    ys = torch.linspace(0.0, 1.0, height, device=device)
    xs = torch.linspace(0.0, 1.0, width, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([y, x, 1.0 - y, 1.0 - x], dim=-1)


class SoftPositionEmbed(nn.Module):
    """Adds Linear(4 -> channels) of the position grid to a channels-first feature map."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Linear(4, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = position_grid(x.shape[-2], x.shape[-1], x.device).to(x.dtype)
        return x + self.proj(grid).permute(2, 0, 1).unsqueeze(0)


class Encoder(nn.Module):
    """4 x [Conv2d k5 + ReLU] (time stride 1 or 2 in every layer), position embedding, flatten to tokens,
    a parameter-free LayerNorm over the whole (N, D) token matrix (as the official code), then an MLP.

    (B, 1, F, T) -> (B, N, channels), N = F * T / time_stride**layers.
    """

    def __init__(self, channels: int = 128, layers: int = 4, kernel: int = 5, time_stride: int = 1):
        super().__init__()
        convs, in_ch = [], 1
        for _ in range(layers):
            if time_stride == 1:
                convs.append(nn.Conv2d(in_ch, channels, kernel, padding="same"))
            else:
                convs.append(nn.Conv2d(in_ch, channels, kernel, stride=(1, time_stride), padding=kernel // 2))
            in_ch = channels
        self.convs = nn.ModuleList(convs)
        self.pos = SoftPositionEmbed(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        x = self.pos(x)
        tokens = x.permute(0, 2, 3, 1).flatten(1, 2)  # (B, N, C), N in (F, T) order; a view in NHWC
        tokens = F.layer_norm(tokens, tokens.shape[1:])
        return self.mlp(tokens)
