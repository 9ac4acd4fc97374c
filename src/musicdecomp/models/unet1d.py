"""The 1-D U-Net of "Unsupervised Composable Representations for Audio" (Bindi & Esling, ISMIR 2024).

Built as in the released code (``networks/unet.py``, ``networks/blocks.py``): residual conv blocks with GroupNorm,
FiLM from a noise-level embedding, a conditioning signal resized to each level's length and concatenated as extra
channels, self-attention at chosen levels and in the bottleneck, strided-conv downsampling, transposed-conv
upsampling and skips by concatenation. The defaults build the released decomposition U-Net; ``prior_unet`` builds
the released prior's.

Data flow of ``UNet1d.forward(x, alpha, cond)``: x (B, C, T), alpha (B,) in [0, 1], cond (B, cond_channels, T')
-> (B, C, T). T must be divisible by the product of the strides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("gn", "none")
ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}
SKIPS = ("cat", "add", "none")
UPSAMPLINGS = ("transposed", "nearest")
NOISE_EMBEDDINGS = ("sinusoidal", "constant")


def check_choice(name: str, value, allowed) -> None:
    """Raise a one-line ValueError naming the argument and its allowed values."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")


def activation_layer(name: str) -> nn.Module:
    check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]()


def norm_layer(norm: str, channels: int, groups: int) -> nn.Module:
    """GroupNorm with min(groups, channels) groups, as released, or no normalisation."""
    check_choice("norm", norm, NORMS)
    if norm == "none":
        return nn.Identity()
    n_groups = min(groups, channels)
    if channels % n_groups:
        raise ValueError(f"groups must divide every normalised channel count; {channels} channels, {groups} groups")
    return nn.GroupNorm(n_groups, channels)


class NoiseLevelEmbedding(nn.Module):
    """alpha (B,) -> (B, dim): a sinusoidal encoding of alpha * factor, then Linear -> SiLU -> Linear -> SiLU.

    The encoding is [cos(a f_k), sin(a f_k)] with f_k = (1 / max_positions) ** (k / (dim / 2)), k < dim / 2.
    ``mode="constant"`` reproduces the released code, whose ``TimeEmbedding`` passes ``factor`` into the
    ``endpoint`` slot, so alpha is multiplied by ``False``: the encoding is [1, ..., 1, 0, ..., 0] for every alpha
    and the network never sees the noise level (the MLP then only learns a constant).
    """

    def __init__(self, dim: int = 128, factor: float = 1000.0, max_positions: int = 10_000,
                 mode: str = "sinusoidal"):
        super().__init__()
        check_choice("noise_embedding", mode, NOISE_EMBEDDINGS)
        if dim < 2 or dim % 2:
            raise ValueError(f"emb_dim must be a positive even number; got {dim}")
        self.factor = factor if mode == "sinusoidal" else 0.0
        half = dim // 2
        self.register_buffer("freqs", (1 / max_positions) ** (torch.arange(half).float() / half), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim), nn.SiLU())

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(alpha * self.factor, self.freqs.to(alpha.dtype))
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=1))


class FiLM(nn.Module):
    """h (B, C, T), emb (B, E) -> act(gamma * h + beta), [gamma, beta] = Linear(act(Linear(emb))), no biases.

    Plain gamma (not 1 + gamma) as released.
    """

    def __init__(self, emb_dim: int, channels: int, activation: str = "silu"):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(emb_dim, channels, bias=False), activation_layer(activation),
                                  nn.Linear(channels, 2 * channels, bias=False))
        self.act = activation_layer(activation)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(emb).unsqueeze(-1).chunk(2, dim=1)
        return self.act(h * gamma + beta)


class ResConvBlock(nn.Module):
    """x (B, in, T) -> (B, out, T): skip(x) + conv1x1(act(norm(conv(drop([FiLM(act(norm(conv(x)))), c]))))).

    ``emb_dim > 0`` adds the FiLM step (needs ``emb``); ``cond_channels > 0`` adds the conditioning branch (needs
    ``cond`` (B, cond_channels, T'), resized to T with nearest-exact interpolation, then Conv1d + act, and
    concatenated as extra channels). The skip is a 1x1 conv when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, emb_dim: int = 0,
                 cond_channels: int = 0, norm: str = "gn", groups: int = 16, activation: str = "silu",
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Conv1d(in_channels, out_channels, 1, bias=bias))
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding="same", bias=bias)
        self.norm1 = norm_layer(norm, out_channels, groups)
        self.act1 = activation_layer(activation)
        self.film = FiLM(emb_dim, out_channels, activation) if emb_dim else None
        self.cond_conv = (nn.Sequential(nn.Conv1d(cond_channels, cond_channels, kernel_size, padding="same",
                                                  bias=bias), activation_layer(activation))
                          if cond_channels else None)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(out_channels + cond_channels, out_channels, kernel_size, padding="same", bias=bias)
        self.norm2 = norm_layer(norm, out_channels, groups)
        self.act2 = activation_layer(activation)
        self.out = nn.Conv1d(out_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act1(self.norm1(self.conv1(x)))
        if self.film is not None:
            h = self.film(h, emb)
        if self.cond_conv is not None:
            if cond.shape[-1] != h.shape[-1]:
                cond = F.interpolate(cond, size=h.shape[-1], mode="nearest-exact")
            h = torch.cat([h, self.cond_conv(cond)], dim=1)
        h = self.out(self.act2(self.norm2(self.conv2(self.drop(h)))))
        return self.skip(x) + h


class SelfAttention1d(nn.Module):
    """x (B, C, T) -> x + out(MHA(GroupNorm(1, C)(x))), C // head_dim heads, 1x1-conv projections."""

    def __init__(self, channels: int, head_dim: int = 32):
        super().__init__()
        self.heads = channels // head_dim
        if self.heads == 0 or channels % self.heads:
            raise ValueError(f"head_dim must give a whole number of heads for an attention level of "
                             f"{channels} channels; got head_dim={head_dim}")
        self.norm = nn.GroupNorm(1, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, t).transpose(-1, -2)
        y = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])  # (B, heads, T, C / heads)
        return x + self.proj(y.transpose(-1, -2).reshape(b, c, t))


def downsample(in_channels: int, out_channels: int, stride: int, bias: bool) -> nn.Module:
    """Stride > 1: Conv1d(kernel 2 * stride + 1, padding stride); stride 1: Conv1d(kernel 3, same)."""
    if stride == 1:
        return nn.Conv1d(in_channels, out_channels, 3, padding="same", bias=bias)
    return nn.Conv1d(in_channels, out_channels, 2 * stride + 1, stride=stride, padding=stride, bias=bias)


def upsample(in_channels: int, out_channels: int, stride: int, mode: str, bias: bool) -> nn.Module:
    """Stride > 1: ConvTranspose1d(kernel 2 * stride) or nearest-exact + Conv1d(3); stride 1: Conv1d(kernel 3)."""
    if stride == 1:
        return nn.Conv1d(in_channels, out_channels, 3, padding="same", bias=bias)
    if mode == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=stride, mode="nearest-exact"),
                             nn.Conv1d(in_channels, out_channels, 3, padding=1, bias=bias))
    return nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride,
                              padding=stride // 2 + stride % 2, output_padding=stride % 2, bias=bias)


class DownLevel(nn.Module):
    """One encoder level: ResConvBlock(in -> in), optional self-attention, then downsample(in -> out).

    Returns (downsampled, skip), skip being the input to the downsampling.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int, attention: bool,
                 head_dim: int = 32, bias: bool = True, **block):
        super().__init__()
        self.block = ResConvBlock(in_channels, in_channels, kernel_size=kernel_size, bias=bias, **block)
        self.attn = SelfAttention1d(in_channels, head_dim) if attention else nn.Identity()
        self.down = downsample(in_channels, out_channels, stride, bias)

    def forward(self, x, emb=None, cond=None):
        skip = self.attn(self.block(x, emb, cond))
        return self.down(skip), skip


class UpLevel(nn.Module):
    """One decoder level: upsample(in -> out), merge the skip, ResConvBlock(-> out), optional self-attention."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int, attention: bool,
                 skip: str, upsampling: str, head_dim: int = 32, bias: bool = True, **block):
        super().__init__()
        self.skip = skip
        self.up = upsample(in_channels, out_channels, stride, upsampling, bias)
        block_in = 2 * out_channels if skip == "cat" else out_channels
        self.block = ResConvBlock(block_in, out_channels, kernel_size=kernel_size, bias=bias, **block)
        self.attn = SelfAttention1d(out_channels, head_dim) if attention else nn.Identity()

    def forward(self, x, skip, emb=None, cond=None):
        x = self.up(x)
        if self.skip == "cat":
            x = torch.cat([x, skip], dim=1)
        elif self.skip == "add":
            x = x + skip
        return self.attn(self.block(x, emb, cond))


class UNet1d(nn.Module):
    """The released 1-D U-Net; the defaults are the decomposition U-Net of the released gin config.

    channels: [data channels, level 1, ..., level L]; kernels, strides, attention: one per level (the ResConvBlock
    kernel, the resampling stride, self-attention after the level's block in the encoder and the decoder).
    bottleneck_attention: self-attention after the bottleneck block (released: any(attention)).
    emb_dim: width of the noise-level embedding and of the FiLM input; factor: alpha's scale before the
    sinusoidal encoding; noise_embedding: "sinusoidal" (the paper's) or "constant" (the released bug).
    cond_channels: channels of the concatenated conditioning (1: a latent z_i; N: the prior's mask; 0: none).
    skip: "cat", "add" or "none"; upsampling: "transposed" or "nearest".
    """

    def __init__(self, channels: Sequence[int] = (128, 128, 256, 256, 512), kernels: Sequence[int] = (5, 3, 3, 3),
                 strides: Sequence[int] = (2, 2, 2, 2), attention: Sequence[bool] = (False, False, False, True),
                 bottleneck_attention: bool = True, emb_dim: int = 128, factor: float = 1000.0,
                 noise_embedding: str = "sinusoidal", cond_channels: int = 1, norm: str = "gn", groups: int = 16,
                 activation: str = "silu", skip: str = "cat", dropout: float = 0.1, bias: bool = True,
                 upsampling: str = "transposed", head_dim: int = 32):
        super().__init__()
        levels = len(channels) - 1
        if levels < 1:
            raise ValueError(f"channels must list the data channels and at least one level; got {list(channels)}")
        for name, values in (("kernels", kernels), ("strides", strides), ("attention", attention)):
            if len(values) != levels:
                raise ValueError(f"{name} must have one entry per level ({levels}); got {list(values)}")
        if any(s < 1 for s in strides):
            raise ValueError(f"strides must be positive integers; got {list(strides)}")
        if cond_channels < 0:
            raise ValueError(f"cond_channels must be >= 0; got {cond_channels}")
        check_choice("skip", skip, SKIPS)
        check_choice("upsampling", upsampling, UPSAMPLINGS)
        self.data_channels, self.cond_channels = channels[0], cond_channels
        self.time_factor = math.prod(strides)
        block = {"emb_dim": emb_dim, "cond_channels": cond_channels, "norm": norm, "groups": groups,
                 "activation": activation, "dropout": dropout, "bias": bias, "head_dim": head_dim}
        self.noise_embedding = NoiseLevelEmbedding(emb_dim, factor, mode=noise_embedding)
        self.down = nn.ModuleList(
            DownLevel(channels[i], channels[i + 1], kernel_size=kernels[i], stride=strides[i],
                      attention=bool(attention[i]), **block)
            for i in range(levels))
        block.pop("head_dim")
        self.middle = ResConvBlock(channels[-1], channels[-1], kernel_size=min(kernels), **block)
        self.middle_attn = SelfAttention1d(channels[-1], head_dim) if bottleneck_attention else nn.Identity()
        self.up = nn.ModuleList(
            UpLevel(channels[i], channels[i - 1], kernel_size=kernels[i - 1], stride=strides[i - 1],
                    attention=bool(attention[i - 1]), skip=skip, upsampling=upsampling, head_dim=head_dim,
                    **block)
            for i in range(levels, 0, -1))
        self.out = nn.Conv1d(channels[0], channels[0], 3, padding="same", bias=bias)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] % self.time_factor:
            raise ValueError(f"x's length must be divisible by the product of strides ({self.time_factor}); "
                             f"got {x.shape[-1]}")
        if (cond is None) != (self.cond_channels == 0):
            raise ValueError(f"cond must be given iff cond_channels > 0 (cond_channels={self.cond_channels})")
        emb = self.noise_embedding(alpha)
        skips = []
        for level in self.down:
            x, skip = level(x, emb, cond)
            skips.append(skip)
        x = self.middle_attn(self.middle(x, emb, cond))
        for level, skip in zip(self.up, reversed(skips)):
            x = level(x, skip, emb, cond)
        return self.out(x)


def prior_unet(n_latents: int = 2, mask_conditioning: bool = True, **overrides) -> UNet1d:
    """The released prior's U-Net over the stacked latents z (B, n_latents, T).

    channels [n_latents, 64, 128, 256, 512], kernels 3, strides [1, 2, 2, 2], attention at the last level and in
    the bottleneck. With ``mask_conditioning`` (released: ``add_mask_cond=True``, ``tcond_dim=2``) the mask
    (B, n_latents, T) enters every block as ``cond``, concatenated as n_latents extra channels.
    """
    kwargs = {"channels": (n_latents, 64, 128, 256, 512), "kernels": (3, 3, 3, 3), "strides": (1, 2, 2, 2),
              "attention": (False, False, False, True), "cond_channels": n_latents if mask_conditioning else 0}
    return UNet1d(**{**kwargs, **overrides})
