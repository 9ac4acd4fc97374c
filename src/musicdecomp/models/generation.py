"""Generation with the recomposition prior and a trained decomposition model (the paper's §4.2, Tables 4-5).

unconditional: z sampled from the prior with every latent masked. variations: each example's kept latents
(e.g. the true drums z_1) given, the others regenerated, several draws per example. render: z -> codec latents
of the mixture (the decomposition model with its composition operator) and of each source (the U-Net
conditioned on one latent alone), from one noise draw shared by all of them, as the separation evaluation does;
with ``decode`` (codec latent -> audio, e.g. ``lambda l: encodec.latent_to_audio(codec, l)``), audio as well.
Put the modules in eval mode first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from musicdecomp.models.iadb import iadb_sample
from musicdecomp.models.prior import MaskedPrior, flatten_latents, regenerate_mask


@torch.no_grad()
def unconditional(prior: MaskedPrior, batch: int, frames: int, *, steps: int = 100,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """``batch`` latents z (batch, N, 1, frames) sampled from the prior, nothing given."""
    z = torch.zeros(batch, prior.n_latents, 1, frames, device=device)
    mask = torch.ones(batch, prior.n_latents, dtype=torch.bool, device=device)
    return prior.sample(z, mask, steps=steps, generator=generator)


@torch.no_grad()
def variations(prior: MaskedPrior, z: torch.Tensor, keep: int | Sequence[int], *, draws: int = 1,
               steps: int = 100, generator: torch.Generator | None = None) -> torch.Tensor:
    """``draws`` variations of each example of z (B, N, 1, T): the latents in ``keep`` exactly as given, the
    others regenerated. Returns (B, draws, N, 1, T) (or (B, draws, N, T) for z (B, N, T))."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1; got {draws}")
    flatten_latents(z, prior.n_latents)  # checks the shape
    repeated = z.repeat_interleave(draws, dim=0)
    mask = regenerate_mask(len(repeated), prior.n_latents, keep, device=z.device)
    out = prior.sample(repeated, mask, steps=steps, generator=generator)
    return out.reshape(z.shape[0], draws, *z.shape[1:])


@torch.no_grad()
def render(model, z: torch.Tensor, *, variant: str = "d", steps: int = 100, generator: torch.Generator | None = None,
           frames: int | None = None, sources: bool = True,
           decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Codec latents (and audio) of z (B, N, 1, T) through a decomposition model (``models.composable``).

    variant and steps: the decomposition model's IADB sampling (its run's ``train.iadb_variant``); frames: the
    codec latent's length (default T). Returns ``mixture_latent`` (B, C, frames) and, with ``sources``,
    ``source_latents`` (B, N, C, frames), in the codec's scale (the model's latent normalisation undone); with
    ``decode``, ``mixture`` (B, samples) and ``sources`` (B, N, samples) too.
    """
    b, n = z.shape[:2]
    shape = (b, model.unet.data_channels, frames or z.shape[-1])
    noise = torch.randn(shape, generator=generator, device=generator.device if generator is not None else z.device)
    noise = noise.to(device=z.device, dtype=z.dtype)

    def run(component: int | None) -> torch.Tensor:
        latent = iadb_sample(lambda x, a: model(x, a, z, component=component), noise, steps=steps, variant=variant)
        return model.norm.inverse(latent)

    out = {"mixture_latent": run(None)}
    if sources:
        out["source_latents"] = torch.stack([run(i) for i in range(n)], dim=1)
    if decode is not None:
        out["mixture"] = decode(out["mixture_latent"])
        if sources:
            out["sources"] = torch.stack([decode(out["source_latents"][:, i]) for i in range(n)], dim=1)
    return out
