"""Diversity of the prior's variations (the paper's Table 5): latent MSE of each regenerated source against the
true source of its example (Real) and against the same source of a random other example of the test split (Rand).

Real < Rand says the variations follow the given source; Real > 0 says they are not copies. The latents can be the
prior's z or the codec latents rendered from them (the paper says only "latent space"), any trailing shape. Each
value is one (example, draw) pair; ``reduction`` "mean" averages the squared error over the latent's elements,
"sum" adds it up (the released code's logged convention). Mean and std (numpy's, ddof 0) are over all pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from musicdecomp.metrics.separation import summarize

REDUCTIONS = ("mean", "sum")


def _array(x, name: str) -> np.ndarray:
    x = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if x.ndim < 3:
        raise ValueError(f"{name} has too few dimensions: {x.shape}")
    return x


def _error(a: np.ndarray, b: np.ndarray, reduction: str) -> np.ndarray:
    sq = ((a - b) ** 2).reshape(*a.shape[:2], -1)
    return sq.mean(axis=-1) if reduction == "mean" else sq.sum(axis=-1)


def diversity_values(variations, truth, pool, regenerated: Sequence[int], *, own_index: Sequence[int] | None = None,
                     seed: int = 0, reduction: str = "mean") -> dict[int, dict[str, np.ndarray]]:
    """{source index: {"real": (B, draws), "rand": (B, draws)}} errors for each regenerated source.

    variations (B, draws, N, ...); truth (B, N, ...): the examples' true latents; pool (M, N, ...): the test split's
    latents the random sources come from; own_index (B,): each example's row in the pool, never drawn as its
    random source (None: the pool holds other examples only). One random row per (example, draw, source), drawn
    with numpy's generator seeded ``seed``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
    var, truth, pool = _array(variations, "variations"), _array(truth, "truth"), _array(pool, "pool")
    b, draws, n = var.shape[:3]
    if truth.shape != (b, *var.shape[2:]) or pool.shape[1:] != truth.shape[1:]:
        raise ValueError(f"shapes disagree: variations {var.shape} must be (B, draws, N, ...) for truth (B, N, ...) "
                         f"{truth.shape} and pool (M, N, ...) {pool.shape}")
    if any(not 0 <= i < n for i in regenerated) or not regenerated:
        raise ValueError(f"regenerated must list source indices in 0..{n - 1}; got {list(regenerated)}")
    m = len(pool)
    if own_index is not None and (len(own_index) != b or any(not 0 <= k < m for k in own_index)):
        raise ValueError(f"own_index must give one pool row (0..{m - 1}) per example ({b}); got {list(own_index)}")
    if m - (own_index is not None) < 1:
        raise ValueError("pool must hold at least one latent besides each example's own")
    rng = np.random.default_rng(seed)
    out = {}
    for i in regenerated:
        rows = rng.integers(0, m - (own_index is not None), size=(b, draws))
        if own_index is not None:  # skip each example's own row
            rows = rows + (rows >= np.asarray(own_index)[:, None])
        real = _error(var[:, :, i], truth[:, None, i], reduction)
        rand = _error(var[:, :, i], pool[rows, i], reduction)
        out[i] = {"real": real, "rand": rand}
    return out


def diversity(variations, truth, pool, regenerated: Sequence[int], *, names: Sequence[str] | None = None,
              own_index: Sequence[int] | None = None, seed: int = 0,
              reduction: str = "mean") -> dict[str, dict[str, dict[str, float]]]:
    """Table 5's rows: {source name: {"real": {mean, std, count}, "rand": {mean, std, count}}} (see
    ``diversity_values``; ``names`` the N source names, default their indices)."""
    values = diversity_values(variations, truth, pool, regenerated, own_index=own_index, seed=seed,
                              reduction=reduction)
    n = np.shape(truth)[1]
    if names is not None and len(names) != n:
        raise ValueError(f"names must give one name per source ({n}); got {list(names)}")
    return {(names[i] if names is not None else str(i)): summarize(v) for i, v in values.items()}
