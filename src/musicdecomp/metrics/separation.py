"""Scale-invariant blind-source-separation metrics: SI-SDR, SI-SIR and SI-SAR (Le Roux et al., "SDR -
half-baked or well done?", 2019), with best-permutation matching.

Closed form, for an estimate ŝ scored against reference s_j among the references S = (s_1 .. s_N):

* e_target = (<ŝ, s_j> / ||s_j||²) s_j          (projection on the own reference)
* P_S ŝ    = least-squares projection of ŝ on the span of all references
* e_interf = P_S ŝ - e_target,   e_artif = ŝ - P_S ŝ
* SI-SDR = 10 log10 ||e_target||² / ||e_interf + e_artif||²
* SI-SIR = 10 log10 ||e_target||² / ||e_interf||²
* SI-SAR = 10 log10 ||e_target||² / ||e_artif||²

museval (``bss_eval`` with ``window=np.inf, hop=np.inf, filters_len=1, bsseval_sources_version=True``)
returns the same SI-SDR and SI-SIR; its SAR puts target plus interference in the numerator
(||P_S ŝ||² / ||e_artif||²), so it reads higher than Le Roux's SI-SAR. ``museval_si_metrics`` wraps that
call for cross-checks.

Degenerate signals (energy at or below ``SILENCE_POWER`` per sample):

* a silent **reference** makes the three metrics of that source undefined: NaN. Average with ``np.nanmean``
  (``summarize`` does), which leaves the source out, as museval's NaN does. The paper's data filter drops
  chunks with a silent stem, so this only matters for unfiltered data.
* a silent **estimate** (against a non-silent reference) is a failed separation, so by default it scores
  the floor ``SILENT_ESTIMATE_DB`` on all three metrics rather than NaN, which would drop it from the mean
  and flatter a model whose component collapsed to silence. Pass ``silent_estimate_db=np.nan`` for
  museval's behaviour.

A perfect estimate has no error term and scores +inf dB, as in museval.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
from pathlib import Path

import numpy as np

METRICS = ("si_sdr", "si_sir", "si_sar")
SILENCE_POWER = 1e-20       # mean square per sample at or below which a signal counts as silent
SILENT_ESTIMATE_DB = -80.0  # score of a silent estimate; far below any estimate that carries signal
MAX_PERMUTED_SOURCES = 8    # exhaustive search over N! permutations


def _as_sources(x, name: str) -> np.ndarray:
    """Validate an (N, T) array of sources and return it as float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (n_sources, n_samples) array, got shape {x.shape}: "
                         "pass one chunk at a time, mono")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf: clean the signal before scoring it")
    return x


def _check_pair(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    """Validate reference and estimate arrays of the same (N, T) shape."""
    ref, est = _as_sources(reference, "reference"), _as_sources(estimate, "estimate")
    if ref.shape != est.shape:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} differ in shape: give one estimate "
                         "per reference, trimmed to the same length")
    return ref, est


def _db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """10 log10(num / den), +inf where den is 0 and num is not."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(num / den)


def pairwise_si_metrics(reference, estimate, zero_mean: bool = False,
                        silent_estimate_db: float = SILENT_ESTIMATE_DB) -> dict[str, np.ndarray]:
    """SI-SDR, SI-SIR and SI-SAR of every estimate against every reference.

    reference, estimate: (N, T) arrays (one chunk, mono). Returns a dict with keys ``METRICS``, each an
    (N_ref, N_est) array in dB: entry [i, j] scores estimate j as a rendition of reference i (the
    interference space is always all N references). ``zero_mean`` removes each signal's mean first, as
    Le Roux et al. do; the default leaves signals as they are, as museval does.
    """
    ref, est = _check_pair(reference, estimate)
    if zero_mean:
        ref = ref - ref.mean(axis=1, keepdims=True)
        est = est - est.mean(axis=1, keepdims=True)
    n, length = ref.shape
    ref_energy = np.sum(ref ** 2, axis=1)                                 # (N,)
    ref_silent = ref_energy <= SILENCE_POWER * length
    est_silent = np.sum(est ** 2, axis=1) <= SILENCE_POWER * length

    # Least-squares projection of every estimate on the span of the references (silent ones add nothing).
    coef = np.linalg.lstsq(ref.T, est.T, rcond=None)[0]                   # (N_ref, N_est)
    projected = coef.T @ ref                                              # (N_est, T)
    artif_energy = np.sum((est - projected) ** 2, axis=1)                 # (N_est,)

    safe_energy = np.where(ref_silent, 1.0, ref_energy)
    gain = (ref @ est.T) / safe_energy[:, None]                           # (N_ref, N_est)
    out = {name: np.empty((n, n)) for name in METRICS}
    for i in range(n):
        target = gain[i][:, None] * ref[i][None]                          # (N_est, T)
        target_energy = np.sum(target ** 2, axis=1)
        out["si_sdr"][i] = _db(target_energy, np.sum((est - target) ** 2, axis=1))
        out["si_sir"][i] = _db(target_energy, np.sum((projected - target) ** 2, axis=1))
        out["si_sar"][i] = _db(target_energy, artif_energy)
    for name in METRICS:
        out[name][:, est_silent] = silent_estimate_db
        out[name][ref_silent, :] = np.nan
    return out


def si_metrics(reference, estimate, zero_mean: bool = False,
               silent_estimate_db: float = SILENT_ESTIMATE_DB) -> dict[str, np.ndarray]:
    """SI-SDR, SI-SIR and SI-SAR of estimate i against reference i, without any matching.

    Returns a dict with keys ``METRICS``, each an (N,) array in dB.
    """
    pairs = pairwise_si_metrics(reference, estimate, zero_mean, silent_estimate_db)
    return {name: np.diagonal(values).copy() for name, values in pairs.items()}


def best_permutation(si_sir: np.ndarray) -> np.ndarray:
    """The assignment of estimates to references with the highest mean SI-SIR (museval's rule).

    si_sir: (N_ref, N_est) matrix from ``pairwise_si_metrics``. Returns perm with perm[i] = the estimate
    matched to reference i, the convention of museval's ``perm``. NaN entries (silent references) are left
    out of the mean; ties, including an all-NaN matrix, keep the first permutation in lexicographic order,
    which is the identity.
    """
    sir = np.asarray(si_sir, dtype=np.float64)
    if sir.ndim != 2 or sir.shape[0] != sir.shape[1]:
        raise ValueError(f"si_sir must be a square (N_ref, N_est) matrix, got shape {sir.shape}")
    n = sir.shape[0]
    if n > MAX_PERMUTED_SOURCES:
        raise ValueError(f"{n} sources are too many for an exhaustive permutation search "
                         f"(at most {MAX_PERMUTED_SOURCES}): score fewer sources per chunk")
    perms = np.array(list(itertools.permutations(range(n))))            # (N!, N), identity first
    picked = sir[np.arange(n)[None, :], perms]                          # (N!, N)
    valid = ~np.isnan(picked)
    counts = valid.sum(axis=1)
    total = np.where(valid, picked, 0.0).sum(axis=1)
    scores = np.where(counts > 0, total / np.maximum(counts, 1), -np.inf)
    return perms[int(np.argmax(scores))]


def matched_si_metrics(
        reference, estimate, zero_mean: bool = False, silent_estimate_db: float = SILENT_ESTIMATE_DB,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Score one chunk after matching estimates to references by the best mean SI-SIR.

    Returns (metrics, perm): metrics has keys ``METRICS``, each an (N,) array in reference order, and
    estimate perm[i] is the one scored against reference i.
    """
    pairs = pairwise_si_metrics(reference, estimate, zero_mean, silent_estimate_db)
    perm = best_permutation(pairs["si_sir"])
    rows = np.arange(len(perm))
    return {name: values[rows, perm] for name, values in pairs.items()}, perm


def batch_matched_si_metrics(
        references, estimates, zero_mean: bool = False, silent_estimate_db: float = SILENT_ESTIMATE_DB,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``matched_si_metrics`` on every chunk of a (B, N, T) batch, one permutation per chunk.

    Returns (metrics, perms): each metric a (B, N) array in reference order, perms a (B, N) int array.
    """
    refs, ests = np.asarray(references), np.asarray(estimates)
    if refs.ndim != 3 or refs.shape != ests.shape:
        raise ValueError(f"references {refs.shape} and estimates {ests.shape} must share one "
                         "(n_chunks, n_sources, n_samples) shape")
    rows = [matched_si_metrics(r, e, zero_mean, silent_estimate_db) for r, e in zip(refs, ests)]
    metrics = {name: np.stack([m[name] for m, _ in rows]) for name in METRICS}
    return metrics, np.stack([p for _, p in rows])


def summarize(metrics: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each metric over all chunks and sources, NaN (silent references) left
    out, as the paper's mean (std).

    Returns {metric: {"mean", "std", "count"}}, count being the values kept. An infinite value (a perfect
    estimate, or SI-SIR with no other non-silent reference) makes the mean infinite and the std NaN.
    """
    out = {}
    for name, values in metrics.items():
        values = np.asarray(values, dtype=np.float64).ravel()
        kept = values[~np.isnan(values)]
        with np.errstate(invalid="ignore"):
            mean = float(kept.mean()) if kept.size else float("nan")
            std = float(kept.std()) if kept.size and np.all(np.isfinite(kept)) else float("nan")
        out[name] = {"mean": mean, "std": std, "count": int(kept.size)}
    return out


@functools.lru_cache(maxsize=1)
def _museval_metrics_module():
    """museval's ``metrics`` module (numpy and scipy only).

    ``import museval`` also imports musdb and stempeg, which raise without an ffmpeg binary; the metrics
    file needs neither, so it is loaded on its own when the package import fails.
    """
    try:
        from museval import metrics
        return metrics
    except (ImportError, RuntimeError):
        spec = importlib.util.find_spec("museval")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("museval is not installed: pip install museval==0.4.1") from None
        path = Path(next(iter(spec.submodule_search_locations))) / "metrics.py"
        module_spec = importlib.util.spec_from_file_location("_museval_metrics", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module


def museval_si_metrics(reference, estimate,
                       compute_permutation: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """museval's BSSv4 run as the scale-invariant recipe, for cross-checks.

    Calls ``bss_eval(..., window=np.inf, hop=np.inf, filters_len=1, bsseval_sources_version=True)`` on one
    (N, T) chunk. Returns ({"si_sdr", "si_sir", "sar"}, perm): si_sdr and si_sir equal Le Roux's SI-SDR and
    SI-SIR; "sar" is museval's ||P_S ŝ||² / ||e_artif||², not SI-SAR. Each is (N,) in reference order, and
    perm follows museval's convention (perm[i] = estimate matched to reference i).
    """
    ref, est = _check_pair(reference, estimate)
    sdr, _, sir, sar, perm = _museval_metrics_module().bss_eval(
        ref[..., None], est[..., None], window=np.inf, hop=np.inf, compute_permutation=compute_permutation,
        filters_len=1, bsseval_sources_version=True)
    return {"si_sdr": sdr[:, 0], "si_sir": sir[:, 0], "sar": sar[:, 0]}, perm[:, 0]
