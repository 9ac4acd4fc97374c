"""Fréchet audio distance as fadtk (Gui et al., ICASSP 2024) computes it.

Each set of embeddings is fitted by a Gaussian: the mean and the unbiased covariance (``np.cov``) of all the
frames of all its clips, merged clip by clip in float64 as fadtk's ``calculate_embd_statistics_online`` does, so
that a large set need not fit in memory at once. The distance between N(mu1, C1) and N(mu2, C2) is
  |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^(1/2)),
with fadtk's numerics (``calc_frechet_distance``): the square root of C1 C2 from its eigendecomposition
(V sqrt(D) V^-1, complex square roots of tiny negative eigenvalues allowed); when that is not finite, scipy's
``sqrtm`` of (C1 + eps I)(C2 + eps I); an imaginary part larger than 1e-3 on the diagonal is an error, a smaller
one is dropped; scipy's ``sqrtm`` of C1 C2 is computed as well and a trace differing by more than 1e-3 is logged.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.lib.scimath import sqrt as complex_sqrt
from scipy import linalg

from musicdecomp.logs import get_logger

log = get_logger("frechet")


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's ``sqrtm`` without its singular-matrix warning (fadtk calls it with ``disp=False``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


@dataclass(frozen=True)
class Gaussian:
    """A Gaussian fit of a set of embeddings: mean (dim,), covariance (dim, dim), number of frames."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    def save(self, path) -> None:
        """Write the fit to an .npz file (the mean and covariance of a reference set are reused across tables)."""
        np.savez(path, mean=self.mean, cov=self.cov, count=self.count)

    @classmethod
    def load(cls, path) -> Gaussian:
        with np.load(path) as data:
            return cls(data["mean"], data["cov"], int(data["count"]))


def _clips(embeddings) -> Iterable[np.ndarray]:
    if isinstance(embeddings, np.ndarray):
        return [embeddings]
    return embeddings


def gaussian_fit(embeddings: np.ndarray | Iterable[np.ndarray]) -> Gaussian:
    """The Gaussian fit of embeddings: one (n_frames, dim) array, or per-clip (n_frames_i, dim) arrays (all the
    frames of all clips are the samples)."""
    mean = scatter = None
    count = 0
    for clip in _clips(embeddings):
        clip = np.asarray(clip, dtype=np.float64)
        if clip.ndim != 2 or clip.shape[0] == 0:
            raise ValueError(f"embeddings must be (n_frames, dim) arrays with at least one frame; got {clip.shape}")
        if mean is None:
            mean, scatter = np.zeros(clip.shape[1]), np.zeros((clip.shape[1], clip.shape[1]))
        elif clip.shape[1] != mean.shape[0]:
            raise ValueError(f"embeddings differ in dimension: {clip.shape[1]} vs {mean.shape[0]}")
        n = clip.shape[0]
        clip_mean = clip.mean(axis=0)
        centred = clip - clip_mean
        delta = clip_mean - mean
        mean = mean + n / (count + n) * delta
        scatter += centred.T @ centred + np.outer(delta, delta) * count * n / (count + n)
        count += n
    if count < 2:
        raise ValueError(f"a Gaussian fit needs at least two embedding frames; got {count}")
    return Gaussian(mean, scatter / (count - 1), count)


def frechet_distance(a: Gaussian, b: Gaussian, eps: float = 1e-6, cross_check: bool = True) -> float:
    """The Fréchet distance between two Gaussian fits (fadtk's ``calc_frechet_distance``); ``cross_check=False``
    skips fadtk's second square root (scipy's ``sqrtm``, as slow as the first), which only logs."""
    mu1, mu2 = np.atleast_1d(a.mean), np.atleast_1d(b.mean)
    cov1, cov2 = np.atleast_2d(a.cov), np.atleast_2d(b.cov)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape:
        raise ValueError(f"the two fits differ in dimension: {mu1.shape[0]} vs {mu2.shape[0]}")
    diff = mu1 - mu2
    product = cov1 @ cov2
    eigenvalues, vectors = linalg.eig(product)
    covmean = (vectors * complex_sqrt(eigenvalues)) @ linalg.inv(vectors)
    if not np.isfinite(covmean).all():
        log.info("the covariance product is singular; adding %g to the diagonals", eps)
        offset = np.eye(cov1.shape[0]) * eps
        covmean = _sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"the covariance square root has an imaginary part of {np.abs(covmean.imag).max():g}; "
                             f"use more embedding frames than dimensions")
        covmean = covmean.real
    tr_covmean = float(np.trace(covmean))
    if cross_check:
        check = np.trace(_sqrtm(product))
        if abs(check.imag) < 1e-3 and abs(tr_covmean - check.real) > 1e-3:
            log.warning("the two square-root methods disagree on the trace by %g", abs(tr_covmean - check.real))
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_covmean)


def fad(reference: Gaussian | np.ndarray | Iterable[np.ndarray], evaluated: Gaussian | np.ndarray |
        Iterable[np.ndarray], eps: float = 1e-6, cross_check: bool = True) -> float:
    """FAD between a reference set and an evaluated set, each given as embeddings (see ``gaussian_fit``) or as a
    fit already made (``Gaussian``, e.g. the test split's, fitted once)."""
    fits = [x if isinstance(x, Gaussian) else gaussian_fit(x) for x in (reference, evaluated)]
    return frechet_distance(*fits, eps=eps, cross_check=cross_check)
