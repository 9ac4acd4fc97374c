"""The semantic encoder of "Unsupervised Composable Representations for Audio": x (B, C, T) -> z (B, N, c, T).

As released (``networks/encoder.py``, ``MultiEncoder`` of ``EncoderAudio``): N independent encoders (no shared
weights, so latent i always comes from encoder i), each the U-Net's encoder levels without noise-level or latent
conditioning: per level a ResConvBlock(in -> in) and a Conv1d(in -> out), then a final ResConvBlock(c -> c).
The encoders see the clean mixture latent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from musicdecomp.models.unet1d import DownLevel, ResConvBlock


class LatentEncoder(nn.Module):
    """One encoder: (B, in_channels, T) -> (B, channels[-1], T / prod(strides)).

    The level convs have kernel 3 for stride 1 and 2 * stride + 1 otherwise, and the final block kernel 3, as
    released; ``kernel_size`` sets the level blocks' kernel.
    """

    def __init__(self, in_channels: int = 128, channels: Sequence[int] = (256, 512, 1), kernel_size: int = 3,
                 strides: int | Sequence[int] = 1, attention: bool | Sequence[bool] = False, norm: str = "none",
                 groups: int = 16, activation: str = "silu", dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if not channels:
            raise ValueError("channels must list at least one level; got []")
        strides = [strides] * len(channels) if isinstance(strides, int) else list(strides)
        attention = [attention] * len(channels) if isinstance(attention, bool) else list(attention)
        for name, values in (("strides", strides), ("attention", attention)):
            if len(values) != len(channels):
                raise ValueError(f"{name} must have one entry per level ({len(channels)}); got {values}")
        block = {"norm": norm, "groups": groups, "activation": activation, "bias": bias}
        widths = [in_channels, *channels]
        self.levels = nn.ModuleList(
            DownLevel(widths[i], widths[i + 1], kernel_size=kernel_size, stride=strides[i],
                      attention=bool(attention[i]), dropout=dropout, **block)
            for i in range(len(channels)))
        self.final = ResConvBlock(channels[-1], channels[-1], kernel_size=3, **block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for level in self.levels:
            x, _ = level(x)
        return self.final(x)


class SemanticEncoder(nn.Module):
    """N independent ``LatentEncoder``s: x (B, in_channels, T) -> z (B, n_latents, channels[-1], T)."""

    def __init__(self, n_latents: int = 2, **encoder):
        super().__init__()
        if n_latents < 1:
            raise ValueError(f"n_latents must be >= 1; got {n_latents}")
        self.n_latents = n_latents
        self.encoders = nn.ModuleList(LatentEncoder(**encoder) for _ in range(n_latents))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([encoder(x) for encoder in self.encoders], dim=1)
