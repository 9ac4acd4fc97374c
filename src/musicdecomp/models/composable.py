"""The decomposition model of "Unsupervised Composable Representations for Audio" (Bindi & Esling, ISMIR 2024).

A semantic encoder maps the clean mixture latent x to N latents z_i. One shared U-Net g denoises x_alpha once per
latent, conditioned on z_i, and a fixed composition operator C merges the N outputs:
D(x_alpha, alpha, z) = C(g(x_alpha, alpha, z_1), ..., g(x_alpha, alpha, z_N)), trained with the IADB objective
against x. Source i is sampled with g conditioned on z_i alone (``component=i``).
"""

from __future__ import annotations

import torch
from torch import nn

from musicdecomp.models.latent_encoder import SemanticEncoder
from musicdecomp.models.latent_norm import LatentNorm
from musicdecomp.models.unet1d import UNet1d, check_choice

OPERATORS = ("sum", "mean", "min", "max")
SUPERVISED = "supervised"  # the variant name of the supervised separator


def compose(components: torch.Tensor, operator: str) -> torch.Tensor:
    """(B, N, C, T) -> (B, C, T) by an element-wise sum, mean, min or max over the N components."""
    check_choice("operator", operator, OPERATORS)
    if operator == "sum":
        return components.sum(dim=1)
    if operator == "mean":
        return components.mean(dim=1)
    if operator == "min":
        return components.amin(dim=1)
    return components.amax(dim=1)


class DecompositionModel(nn.Module):
    """Semantic encoder + one shared U-Net + composition operator.

    encoder: x (B, C, T) -> z (B, N, c, T'); unet: (x (B', C, T), alpha (B',), cond (B', c, T')) -> (B', C, T).
    ``encode`` gives z once per example; ``forward`` is the denoiser that IADB trains and samples.
    """

    def __init__(self, encoder: nn.Module, unet: nn.Module, operator: str = "mean", norm: nn.Module | None = None):
        super().__init__()
        check_choice("operator", operator, OPERATORS)
        self.encoder, self.unet, self.operator = encoder, unet, operator
        self.norm = norm if norm is not None else LatentNorm(mode="none")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def components(self, x_alpha: torch.Tensor, alpha: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, N, C, T): the U-Net run once on the B * N batch, copy n of x_alpha conditioned on z_n."""
        b, n = z.shape[:2]
        out = self.unet(x_alpha.repeat_interleave(n, dim=0), alpha.repeat_interleave(n, dim=0),
                        z.reshape(b * n, *z.shape[2:]))
        return out.reshape(b, n, *out.shape[1:])

    def forward(self, x_alpha: torch.Tensor, alpha: torch.Tensor, z: torch.Tensor,
                component: int | None = None) -> torch.Tensor:
        """The composed prediction (B, C, T); with ``component=i``, the U-Net's output for z_i alone."""
        if component is None:
            return compose(self.components(x_alpha, alpha, z), self.operator)
        if not 0 <= component < z.shape[1]:
            raise ValueError(f"component must be in 0..{z.shape[1] - 1}; got {component}")
        return self.unet(x_alpha, alpha, z[:, component])


class SupervisedSeparator(nn.Module):
    """The reference point trained on the true stems: the same U-Net, conditioned on the mixture latent and the
    source's index instead of a learnt z_i, generates source i's latent (IADB, like the decomposition model).

    forward(x_alpha (B, C, T), alpha (B,), mixture (B, C, T), source (B,) long) -> (B, C, T).
    """

    def __init__(self, unet: nn.Module, n_sources: int, norm: nn.Module | None = None):
        super().__init__()
        self.unet, self.n_sources = unet, n_sources
        self.norm = norm if norm is not None else LatentNorm(mode="none")

    def forward(self, x_alpha: torch.Tensor, alpha: torch.Tensor, mixture: torch.Tensor,
                source: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(source, self.n_sources).to(mixture.dtype)
        cond = torch.cat([mixture, onehot[:, :, None].expand(-1, -1, mixture.shape[-1])], dim=1)
        return self.unet(x_alpha, alpha, cond)


def build_model(model_cfg: dict, variant: str, n_sources: int, channels: int = 128) -> nn.Module:
    """The decomposition model with operator ``variant``, or the supervised separator (``variant="supervised"``),
    from a run's ``model`` settings (params.yaml ``composable.model``) for latents of ``channels`` channels."""
    unet_cfg = dict(model_cfg["unet"])
    unet_cfg["channels"] = [channels, *unet_cfg["channels"]]
    norm = LatentNorm(channels, model_cfg["latent_norm"])
    if variant == SUPERVISED:
        return SupervisedSeparator(UNet1d(cond_channels=channels + n_sources, **unet_cfg), n_sources, norm)
    encoder = SemanticEncoder(n_sources, in_channels=channels, **model_cfg["encoder"])
    return DecompositionModel(encoder, UNet1d(cond_channels=model_cfg["encoder"]["channels"][-1], **unet_cfg),
                              variant, norm)
