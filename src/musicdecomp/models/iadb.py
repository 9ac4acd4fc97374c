"""Iterative alpha-(de)blending (IADB, Heitz, Belcour & Chambon, SIGGRAPH 2023): training loss and samplers.

x_alpha = alpha * x + (1 - alpha) * x0 with x0 ~ N(0, I) and alpha ~ U[0, 1] per example (alpha = 0 is noise,
alpha = 1 is data). A denoiser D(x_alpha, alpha) is regressed onto
  variant "d": x - x0 (the IADB paper's default and the composable paper's choice),
  variant "c": x (the form of the composable paper's Eq. 6 and Algorithm 1).
The denoiser is any callable (x_alpha (B, ...), alpha (B,)) -> (B, ...), e.g. a closure over a model and its
conditioning.

``known`` (bool, broadcastable to x) marks entries that are given rather than generated, as in the prior's
masked training and its variations: in the loss, those entries of x_alpha are the clean x (Algorithm 1's
z_alpha = z~_alpha * m + (1 - m) * z, with known = 1 - m); in sampling, x0's values there are re-imposed after
every step, so they come out exactly unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from musicdecomp.models.unet1d import check_choice

VARIANTS = ("c", "d")
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_example(alpha: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return alpha.reshape(-1, *([1] * (x.dim() - 1)))


def iadb_loss(denoiser: Denoiser, x: torch.Tensor, *, variant: str = "d",
              generator: torch.Generator | None = None, known: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of D(x_alpha, alpha) against the variant's target, alpha and x0 drawn from ``generator``.

    The error is averaged over every element, known ones included (as released).
    """
    check_choice("variant", variant, VARIANTS)
    alpha = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    x0 = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_alpha = _per_example(alpha, x) * x + (1 - _per_example(alpha, x)) * x0
    if known is not None:
        x_alpha = torch.where(known.bool(), x, x_alpha)
    target = x - x0 if variant == "d" else x
    return torch.mean((denoiser(x_alpha, alpha) - target) ** 2)


@torch.no_grad()
def iadb_sample(denoiser: Denoiser, x0: torch.Tensor, *, steps: int = 50, variant: str = "d",
                known: torch.Tensor | None = None) -> torch.Tensor:
    """Deterministic sampling from x0 in ``steps`` steps, alpha_t = t / steps for t = 0, ..., steps - 1.

    d: x <- x + D(x, alpha_t) / steps.
    c: x <- D + (1 - alpha_{t+1}) / (1 - alpha_t) * (x - D), with D = D(x, alpha_t).
    The released default is 50 steps; the paper samples with 100. Put modules in eval mode first.
    """
    check_choice("variant", variant, VARIANTS)
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    known = None if known is None else known.bool()
    x = x0.clone()
    for t in range(steps):
        alpha = torch.full((x.shape[0],), t / steps, device=x.device, dtype=x.dtype)
        d = denoiser(x, alpha)
        if variant == "d":
            x = x + (1 / steps) * d
        else:
            x = d + (1 - (t + 1) / steps) / (1 - t / steps) * (x - d)
        if known is not None:
            x = torch.where(known, x0, x)
    return x
