"""The recomposition prior of "Unsupervised Composable Representations for Audio" (§3.2, Algorithm 1).

A masked IADB model over the frozen decomposition encoder's latents z = [z_1, ..., z_N], stacked as (B, N, T). A
mask (B, N) says which latents are regenerated (True, the released 1) and which are given (False, 0); it enters the
released prior U-Net (``unet1d.prior_unet``) as N conditioning channels, m_i repeated over time. In the loss the
given latents enter z_alpha clean (Algorithm 1: z_alpha = z~_alpha * m + (1 - m) * z); in sampling they are re-imposed
after every step (``iadb_sample(known=...)``), so they come out exactly as given. All masked is unconditional
generation; one latent given is a variation of the others.

Masks (``sample_masks``). The paper masks "each latent with probability p_mask" (0.8 in Table 4), so the default
scheme draws each latent's mask from Bernoulli(p_mask) and draws again the rows with nothing masked (a row with
nothing to generate carries no training signal). For N = 2 and p_mask = 0.8 that is all-masked with probability
0.64 / 0.96 = 2/3 and each one-given mask with 1/6. The released code meant P(all masked) = p_drop = 0.5 with the
rest spread evenly, but its ``init_probs`` returns nothing, so it drew uniformly over the 2^N - 1 non-empty masks
(1/3 each for N = 2); ``scheme="uniform"`` reproduces that. p_mask = 1 (or ``unconditional=True``) trains the
unconditional-only model of Table 4.

Loss coverage (``MaskedPrior.loss``). ``loss_on="masked"`` (default) scores only the regenerated latents: the
denoiser passes the given latents through (their c-form prediction is the given latent itself, which
``iadb_loss`` puts clean in z_alpha), so their error is exactly zero, and the mean is taken over the masked
entries. The given latents' predictions are never used in sampling (they are re-imposed), so fitting them only
spends capacity on copying its input and dilutes the loss by the share of given entries. ``loss_on="all"`` is
Algorithm 1 and the released code literally: the U-Net's output everywhere, the mean over every entry; with variant
d the given entries' target z - z0 holds noise the network cannot see (the source of the released drift, removed
here by the re-imposition in sampling). The pass-through is only exact in the c form, so "masked" needs variant c.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from musicdecomp.models.iadb import VARIANTS, iadb_loss, iadb_sample
from musicdecomp.models.latent_norm import LatentNorm
from musicdecomp.models.unet1d import check_choice, prior_unet

MASK_SCHEMES = ("bernoulli", "uniform")
LOSS_COVERAGE = ("masked", "all")


def _check_mask_args(n_latents: int, p_mask: float, scheme: str) -> None:
    check_choice("scheme", scheme, MASK_SCHEMES)
    if n_latents < 1:
        raise ValueError(f"n_latents must be >= 1; got {n_latents}")
    if not 0 < p_mask <= 1:
        raise ValueError(f"p_mask must be in (0, 1]; got {p_mask}")


def sample_masks(batch: int, n_latents: int, p_mask: float = 0.8, generator: torch.Generator | None = None,
                 unconditional: bool = False, *, scheme: str = "bernoulli",
                 device: torch.device | str | None = None) -> torch.Tensor:
    """(batch, n_latents) bool masks, True = the latent is regenerated, at least one per row.

    bernoulli: each latent masked with probability p_mask, rows with none masked drawn again; uniform: one of the
    2^N - 1 non-empty masks with equal probability (the released draw, p_mask unused); ``unconditional``: all
    masked. Drawn on the generator's device (CPU without one), returned on ``device`` (default: that device).
    """
    _check_mask_args(n_latents, p_mask, scheme)
    if batch < 0:
        raise ValueError(f"batch must be >= 0; got {batch}")
    draw_on = generator.device if generator is not None else torch.device(device or "cpu")
    device = draw_on if device is None else device
    if unconditional:
        return torch.ones(batch, n_latents, dtype=torch.bool, device=device)
    if scheme == "uniform":
        code = torch.randint(1, 2 ** n_latents, (batch, 1), generator=generator, device=draw_on)
        bits = 2 ** torch.arange(n_latents - 1, -1, -1, device=draw_on)  # the released order: latent 0 = high bit
        return (code & bits).bool().to(device)
    masks = torch.rand(batch, n_latents, generator=generator, device=draw_on) < p_mask
    empty = ~masks.any(dim=1)
    while empty.any():
        masks[empty] = torch.rand(int(empty.sum()), n_latents, generator=generator, device=draw_on) < p_mask
        empty = ~masks.any(dim=1)
    return masks.to(device)


def mask_probabilities(n_latents: int, p_mask: float = 0.8, scheme: str = "bernoulli") -> dict[tuple[bool, ...], float]:
    """The exact distribution ``sample_masks`` draws from: {mask: probability} over the non-empty masks."""
    _check_mask_args(n_latents, p_mask, scheme)
    masks = [m for m in itertools.product((False, True), repeat=n_latents) if any(m)]
    if scheme == "uniform":
        return {m: 1 / len(masks) for m in masks}
    weight = {m: p_mask ** sum(m) * (1 - p_mask) ** (n_latents - sum(m)) for m in masks}
    total = sum(weight.values())
    return {m: w / total for m, w in weight.items()}


def flatten_latents(z: torch.Tensor, n_latents: int) -> torch.Tensor:
    """The encoder's z (B, N, 1, T), or (B, N, T), as the prior's (B, N, T)."""
    if z.dim() == 4 and z.shape[2] == 1:
        z = z[:, :, 0]
    if z.dim() != 3 or z.shape[1] != n_latents:
        raise ValueError(f"z must be (B, {n_latents}, 1, T) or (B, {n_latents}, T) (one-channel latents); "
                         f"got {tuple(z.shape)}")
    return z


class MaskedPrior(nn.Module):
    """The masked IADB prior: the released prior U-Net over z (B, N, T) with the mask as conditioning.

    variant: IADB's "c" (Algorithm 1, default) or "d"; loss_on: "masked" (default, variant c only) or "all" (see
    the module docstring); latent_norm: "none" (released), "global" or "channel" (one statistic per latent),
    fitted with ``fit_norm`` on training latents; unet: overrides of ``prior_unet``'s released settings.
    """

    def __init__(self, n_latents: int = 2, variant: str = "c", loss_on: str = "masked", latent_norm: str = "none",
                 **unet):
        super().__init__()
        check_choice("variant", variant, VARIANTS)
        check_choice("loss_on", loss_on, LOSS_COVERAGE)
        if loss_on == "masked" and variant != "c":
            raise ValueError("loss_on='masked' needs variant 'c' (its pass-through is the c-form prediction); "
                             "use loss_on='all' with variant 'd'")
        self.n_latents, self.variant, self.loss_on = n_latents, variant, loss_on
        self.unet = prior_unet(n_latents, mask_conditioning=True, **unet)
        self.norm = LatentNorm(n_latents, latent_norm)

    def _mask(self, mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if mask.shape != z.shape[:2]:
            raise ValueError(f"mask must be (B, N) = {tuple(z.shape[:2])}; got {tuple(mask.shape)}")
        return mask.to(device=z.device, dtype=torch.bool)

    def forward(self, z_alpha: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The denoiser: z_alpha (B, N, T), alpha (B,), mask (B, N) -> (B, N, T), normalised space.

        With loss_on="masked" the given latents pass through unchanged.
        """
        mask = self._mask(mask, z_alpha)
        out = self.unet(z_alpha, alpha, mask[..., None].to(z_alpha.dtype).expand_as(z_alpha))
        if self.loss_on == "masked":
            out = torch.where(mask[..., None], out, z_alpha)
        return out

    @torch.no_grad()
    def fit_norm(self, z: torch.Tensor) -> dict[str, float]:
        """Set the latent statistics from training latents z (M, N, 1, T) or (M, N, T); returns them."""
        return self.norm.fit(flatten_latents(z, self.n_latents))

    def loss(self, z: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The IADB loss of a batch of latents z (B, N, 1, T) or (B, N, T) under masks (B, N) (``sample_masks``);
        noise levels and noise from ``generator``."""
        flat = self.norm(flatten_latents(z, self.n_latents))
        mask = self._mask(mask, flat)
        value = iadb_loss(lambda x, a: self(x, a, mask), flat, variant=self.variant, generator=generator,
                          known=~mask[..., None])
        if self.loss_on == "masked":  # the given entries add exactly 0: rescale the mean to the masked entries
            value = value * mask.numel() / mask.sum().clamp_min(1)
        return value

    @torch.no_grad()
    def sample(self, z: torch.Tensor, mask: torch.Tensor, *, steps: int = 100,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Regenerate the masked latents of z (B, N, 1, T) or (B, N, T) given the others; same shape as z.

        Masked latents start from N(0, I) noise drawn from ``generator`` (their values in z are ignored); the given
        ones come out bit-exact. ``steps`` IADB steps (the paper's 100). Put the module in eval mode first.
        """
        flat = flatten_latents(z, self.n_latents)
        mask = self._mask(mask, flat)[..., None]
        noise = torch.randn(flat.shape, generator=generator, dtype=flat.dtype,
                            device=generator.device if generator is not None else flat.device).to(flat.device)
        given = self.norm(flat)
        out = iadb_sample(lambda x, a: self(x, a, mask[..., 0]), torch.where(mask, noise, given), steps=steps,
                          variant=self.variant, known=~mask)
        return torch.where(mask, self.norm.inverse(out), flat).reshape(z.shape)


def build_prior(cfg: dict, n_latents: int) -> MaskedPrior:
    """A prior from settings {variant, loss_on, latent_norm, unet: {prior_unet overrides}}; missing keys take
    ``MaskedPrior``'s defaults."""
    known = {"variant", "loss_on", "latent_norm", "unet"}
    if set(cfg) - known:
        raise ValueError(f"unknown prior settings {sorted(set(cfg) - known)}; allowed: {sorted(known)}")
    kwargs = {k: cfg[k] for k in ("variant", "loss_on", "latent_norm") if k in cfg}
    return MaskedPrior(n_latents, **kwargs, **dict(cfg.get("unet") or {}))


def regenerate_mask(batch: int, n_latents: int, keep: int | Sequence[int],
                    device: torch.device | str | None = None) -> torch.Tensor:
    """(batch, n_latents) bool: every latent regenerated but those in ``keep``."""
    keep = [keep] if isinstance(keep, int) else list(keep)
    if any(not 0 <= k < n_latents for k in keep) or len(set(keep)) == n_latents:
        raise ValueError(f"keep must list latent indices in 0..{n_latents - 1}, leaving at least one to "
                         f"regenerate; got {keep}")
    mask = torch.ones(batch, n_latents, dtype=torch.bool, device=device)
    mask[:, keep] = False
    return mask
