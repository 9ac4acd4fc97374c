"""Classic blind-source-separation baselines of Table 2 (composable representations), plus the oracle
ratio mask and the mixture, on a mono waveform.

Every method works on the mixture's STFT and returns masked STFTs inverted to waveforms with the mixture's
phase. The common entry point is ``separate(method, mixture, n_sources, sample_rate, **settings)``, which
returns an (n_sources, n_samples) float64 array.

nussl (deprecated, and broken on numpy >= 1.24) is the specification of the methods and their defaults;
librosa and scikit-learn do the work where they cover a step, and the rest (robust PCA, the 2-D Fourier
transform filter) is written here because no maintained library implements it.

Output order of the two-source methods: ``hpss`` gives (harmonic, percussive); ``repet_sim``, ``rpca`` and
``ft2d`` give (background, foreground). Evaluation matches them to references by permutation. These four
methods separate into exactly two sources; asking ``separate`` for another count raises ``UserError``.

STFT defaults follow nussl: a square-root Hann window of 2**ceil(log2(0.032 * sample_rate)) samples and a
hop of a quarter window; ``window_length`` and ``hop_length`` override them in every method.
"""

from __future__ import annotations

import inspect
import warnings

import librosa
import numpy as np
from scipy.ndimage import maximum_filter, uniform_filter
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from musicdecomp.errors import UserError

TWO_SOURCE_METHODS = ("hpss", "repet_sim", "rpca", "ft2d")
MASK_EPS = 1e-16   # keeps ratio masks defined in silent time-frequency bins

# Spectrogram-sized SVDs and products gain nothing from BLAS threads, and threads that outnumber free cores
# (several chunks evaluated at once, or a busy machine) stall them badly, so every method runs on one
# thread; parallelise over chunks instead.
_one_thread = threadpool_limits.wrap(limits=1)


# ---------------------------------------------------------------- STFT helpers

def stft_settings(sample_rate: int, window_length: int | None = None, hop_length: int | None = None) -> tuple[int, int]:
    """(window_length, hop_length) in samples: nussl's defaults (32 ms rounded up to a power of two,
    hop = window / 4) unless given."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if window_length is None:
        window_length = int(2 ** np.ceil(np.log2(0.032 * sample_rate)))
    if hop_length is None:
        hop_length = window_length // 4
    if window_length < 2 or not 0 < hop_length <= window_length // 2:
        raise UserError(f"STFT window {window_length} / hop {hop_length} samples: use a window of at least 2 "
                        "samples and a hop between 1 and half the window")
    return int(window_length), int(hop_length)


def _window(window_length: int) -> np.ndarray:
    """Square-root periodic Hann window (nussl's default)."""
    return np.sqrt(librosa.filters.get_window("hann", window_length, fftbins=True))


def _stft(mixture: np.ndarray, window_length: int, hop_length: int) -> np.ndarray:
    """Complex STFT (n_freq, n_frames), centred frames."""
    return librosa.stft(mixture, n_fft=window_length, hop_length=hop_length, window=_window(window_length),
                        center=True)


def _masked_waveforms(spec: np.ndarray, masks, window_length: int, hop_length: int, length: int) -> np.ndarray:
    """Apply each (n_freq, n_frames) mask to the complex STFT and invert: (n_masks, length)."""
    masked = np.stack([np.asarray(m) * spec for m in masks])
    return librosa.istft(masked, n_fft=window_length, hop_length=hop_length, window=_window(window_length),
                         center=True, length=length)


def _check_mixture(mixture) -> np.ndarray:
    """A finite mono waveform as float64."""
    x = np.asarray(mixture, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"mixture must be a non-empty mono waveform (n_samples,), got shape {x.shape}: "
                         "mix channels down first")
    if not np.all(np.isfinite(x)):
        raise ValueError("mixture contains NaN or inf: clean the signal before separating it")
    return x


def _ratio_masks(magnitudes: np.ndarray, power: float) -> np.ndarray:
    """Soft masks |V_k|^p / sum_j |V_j|^p over the first axis; bins where every V_k is 0 are split evenly."""
    weights = np.abs(magnitudes) ** power
    total = weights.sum(axis=0, keepdims=True)
    return (weights + MASK_EPS) / (total + MASK_EPS * len(weights))


def _high_pass(background: np.ndarray, foreground: np.ndarray, sample_rate: int, window_length: int,
               cutoff_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Give the bins below ``cutoff_hz`` to the background, as nussl's REPET-SIM, RPCA and FT2D do.

    The bins below the one closest to the cutoff get background mask 1 and foreground mask 0.
    """
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=window_length)
    low = np.zeros(len(freqs), dtype=bool)
    low[:int(np.argmin(np.abs(freqs - cutoff_hz)))] = True
    background, foreground = background.copy(), foreground.copy()
    background[low] = 1.0
    foreground[low] = 0.0
    return background, foreground


# ---------------------------------------------------------------- methods

@_one_thread
def hpss(mixture, sample_rate: int, kernel_size: int = 31, window_length: int | None = None,
         hop_length: int | None = None) -> np.ndarray:
    """Harmonic/percussive separation by median filtering (FitzGerald 2010) with librosa's soft masks.

    Returns (2, n_samples): harmonic, percussive. ``kernel_size`` is nussl's default.
    """
    x = _check_mixture(mixture)
    win, hop = stft_settings(sample_rate, window_length, hop_length)
    spec = _stft(x, win, hop)
    harmonic, percussive = librosa.decompose.hpss(spec, kernel_size=kernel_size, mask=True)
    return _masked_waveforms(spec, (harmonic, percussive), win, hop, len(x))


@_one_thread
def repet_sim(mixture, sample_rate: int, min_distance: float = 1.0, max_repeating_frames: int = 100,
              high_pass_cutoff: float = 100.0, window_length: int | None = None,
              hop_length: int | None = None) -> np.ndarray:
    """REPET-SIM (Rafii & Pardo 2012): the repeating background of each frame is the median of its most
    similar frames.

    librosa's nearest-neighbour filter finds, for each frame, up to ``max_repeating_frames`` nearest frames
    by cosine similarity at least ``min_distance`` seconds away and takes their median magnitude. As in
    nussl, the background mask is min(median, |X|) / |X|, the foreground mask its complement, and bins
    below ``high_pass_cutoff`` Hz go to the background. nussl's similarity threshold of 0 keeps every
    candidate, so there is none here. (nussl asks its neighbours to be ``min_distance`` apart from each
    other; librosa asks them to be that far from the frame itself.)
    Returns (2, n_samples): background, foreground.
    """
    x = _check_mixture(mixture)
    win, hop = stft_settings(sample_rate, window_length, hop_length)
    spec = _stft(x, win, hop)
    mag = np.abs(spec)
    n_frames = mag.shape[1]
    width = max(1, round(min_distance * sample_rate / hop))
    if width >= (n_frames - 1) // 2:
        raise UserError(f"repet_sim: the clip ({n_frames} frames) is too short for min_distance={min_distance} s "
                        f"({width} frames): give a clip longer than twice min_distance, or lower it")
    k = min(max_repeating_frames, n_frames - 1 - 2 * width)
    repeating = librosa.decompose.nn_filter(mag, aggregate=np.median, metric="cosine", width=width, k=k)
    repeating = np.minimum(repeating, mag)
    background = (repeating + MASK_EPS) / (mag + MASK_EPS)
    background, foreground = _high_pass(background, 1.0 - background, sample_rate, win, high_pass_cutoff)
    return _masked_waveforms(spec, (background, foreground), win, hop, len(x))


@_one_thread
def robust_pca(matrix: np.ndarray, num_iterations: int = 100, epsilon: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Split a matrix M into low-rank L plus sparse S by the inexact augmented Lagrange multiplier method
    (Lin, Chen & Ma 2010), with nussl's constants: lambda = 1 / sqrt(max(M.shape)), mu = 1.25 / ||M||_2,
    rho = 1.5, stop after ``num_iterations`` or when ||M - L - S||_F / ||M||_F < ``epsilon``.

    Written here because no maintained Python library ships robust PCA (nussl is deprecated).
    Returns (L, S).
    """
    m = np.asarray(matrix, dtype=np.float64)
    m_norm = np.linalg.norm(m)
    if m_norm == 0:
        return np.zeros_like(m), np.zeros_like(m)
    lam = 1.0 / np.sqrt(max(m.shape))
    two_norm = np.linalg.norm(m, ord=2)
    dual = m / max(two_norm, np.abs(m).max() / lam)
    mu, mu_max, rho = 1.25 / two_norm, 1.25e7 / two_norm, 1.5
    low_rank, sparse = np.zeros_like(m), np.zeros_like(m)
    for _ in range(num_iterations):
        u, sigma, vt = np.linalg.svd(m - sparse + dual / mu, full_matrices=False)
        low_rank = (u * _shrink(sigma, 1.0 / mu)) @ vt
        sparse = _shrink(m - low_rank + dual / mu, lam / mu)
        residual = m - low_rank - sparse
        dual += mu * residual
        mu = min(mu * rho, mu_max)
        if np.linalg.norm(residual) / m_norm < epsilon:
            break
    return low_rank, sparse


def _shrink(values: np.ndarray, tau: float) -> np.ndarray:
    """Soft thresholding: sign(v) * max(|v| - tau, 0)."""
    return np.sign(values) * np.maximum(np.abs(values) - tau, 0.0)


@_one_thread
def rpca(mixture, sample_rate: int, num_iterations: int = 100, epsilon: float = 1e-7,
         high_pass_cutoff: float = 100.0, mask: str = "soft", window_length: int | None = None,
         hop_length: int | None = None) -> np.ndarray:
    """Robust-PCA separation (Huang et al. 2012): the low-rank part of the magnitude spectrogram is the
    background, the sparse part the foreground.

    mask="soft" uses |L| / (|L| + |S|); mask="binary" is nussl's rule (background where |S| <= |L|).
    Bins below ``high_pass_cutoff`` Hz go to the background. Returns (2, n_samples): background, foreground.
    """
    if mask not in ("soft", "binary"):
        raise UserError(f"rpca mask={mask!r} is not supported: use 'soft' or 'binary'")
    x = _check_mixture(mixture)
    win, hop = stft_settings(sample_rate, window_length, hop_length)
    spec = _stft(x, win, hop)
    low_rank, sparse = robust_pca(np.abs(spec), num_iterations, epsilon)
    if mask == "soft":
        background = _ratio_masks(np.stack([low_rank, sparse]), power=1.0)[0]
    else:
        background = (np.abs(sparse) <= np.abs(low_rank)).astype(np.float64)
    background, foreground = _high_pass(background, 1.0 - background, sample_rate, win, high_pass_cutoff)
    return _masked_waveforms(spec, (background, foreground), win, hop, len(x))


def _ft2d_peaks(ft: np.ndarray, neighborhood_size: tuple[int, int]) -> np.ndarray:
    """Soft peak map of a 2-D FT by the local-standard-deviation rule (nussl's default 'local_std').

    At each local maximum of the normalised |FT| (centred), the peak strength is (local max - local mean) /
    local std over ``neighborhood_size`` (frequency, time) bins; elsewhere 0. The map is scaled to [0, 1],
    mirrored left-right (max with its flip) and returned in unshifted FT order. nussl's code also names an
    up-down flip, but passes it as numpy's ``out`` argument, so only the left-right mirror takes effect;
    that is the behaviour kept here.
    """
    data = np.abs(np.fft.fftshift(ft))
    data /= data.max() + 1e-7
    local_max = maximum_filter(data, neighborhood_size)
    local_mean = uniform_filter(data, neighborhood_size)
    local_sq = uniform_filter(data ** 2, neighborhood_size)
    local_std = np.sqrt(np.maximum(local_sq - local_mean ** 2, 0.0)) + 1e-7
    peaks = (local_max - local_mean) / local_std * (data == local_max)
    peaks /= peaks.max() + 1e-7
    peaks = np.maximum(peaks, np.fliplr(peaks))
    return np.fft.ifftshift(peaks)


@_one_thread
def ft2d(mixture, sample_rate: int, neighborhood_size: tuple[int, int] = (1, 25), high_pass_cutoff: float = 100.0,
         use_bg_2dft: bool = True, window_length: int | None = None, hop_length: int | None = None) -> np.ndarray:
    """2-D Fourier transform separation (Seetharaman, Pishdadian & Pardo 2017).

    Repeating patterns in the magnitude spectrogram are peaks of its 2-D FT. The peaks (``_ft2d_peaks``)
    are kept (background) or removed (foreground) and inverted to a magnitude estimate E; the mask is
    min(E, |X|) / |X| scaled to a maximum of 1, for the background when ``use_bg_2dft`` (nussl's default)
    or else for the foreground, and its complement is the other source. Bins below ``high_pass_cutoff`` Hz
    go to the background. Written here because no maintained library implements it; nussl's 'original'
    thresholding and quadrant filtering are left out. Returns (2, n_samples): background, foreground.
    """
    x = _check_mixture(mixture)
    win, hop = stft_settings(sample_rate, window_length, hop_length)
    spec = _stft(x, win, hop)
    mag = np.abs(spec) + 1e-7
    ft = np.fft.fft2(np.abs(spec))
    peaks = _ft2d_peaks(ft, tuple(neighborhood_size))
    kept = peaks * ft if use_bg_2dft else (1.0 - peaks) * ft
    estimate = np.minimum(np.abs(np.fft.ifft2(kept)), mag)
    reference_mask = estimate / mag
    reference_mask /= reference_mask.max() + 1e-7
    background = reference_mask if use_bg_2dft else 1.0 - reference_mask
    background, foreground = _high_pass(background, 1.0 - background, sample_rate, win, high_pass_cutoff)
    return _masked_waveforms(spec, (background, foreground), win, hop, len(x))


def _mfcc_of_templates(templates: np.ndarray, sample_rate: int, window_length: int, n_mfcc: int) -> np.ndarray:
    """MFCCs of NMF spectral templates (n_freq, K) -> (K, n_mfcc), as nussl's TimbreClustering computes
    them (mel power spectrum of each template, then the DCT)."""
    mel = librosa.feature.melspectrogram(S=templates ** 2, sr=sample_rate, n_fft=window_length)
    return librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=n_mfcc).T


@_one_thread
def nmf(mixture, n_sources: int, sample_rate: int, n_components: int = 16, n_mfcc: int = 13,
        mask_power: float = 2.0, max_iter: int = 200, seed: int = 0, window_length: int | None = None,
        hop_length: int | None = None) -> np.ndarray:
    """NMF separation (Lee & Seung 1999) with timbre clustering of the components.

    scikit-learn's NMF factors the magnitude spectrogram |X| ~ W H into ``n_components`` templates with
    nussl's choices (Frobenius loss, scikit-learn's start and ``max_iter``); its warning that it stopped
    before converging is silenced, since a baseline runs at a fixed cost per chunk. The paper does not
    give the number of components. k-means (``seed``) groups the templates into ``n_sources`` clusters by
    their MFCCs, the feature of nussl's TimbreClustering, computed per template rather than per
    time-frequency bin. Each source is masked by the Wiener-style ratio |W_c H_c|^p / sum_c |W_c H_c|^p
    with p = ``mask_power``. When the templates have fewer distinct MFCC vectors than ``n_sources`` (a silent
    or very simple mixture), some clusters stay empty and their sources come out (near) silent.
    Returns (n_sources, n_samples), in cluster order.
    """
    x = _check_mixture(mixture)
    n_sources = _check_count(n_sources)
    if n_components < n_sources:
        raise UserError(f"nmf: n_components={n_components} is below n_sources={n_sources}: "
                        "use at least one component per source")
    win, hop = stft_settings(sample_rate, window_length, hop_length)
    spec = _stft(x, win, hop)
    mag = np.abs(spec)
    model = NMF(n_components=n_components, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        templates = model.fit_transform(mag)                   # (n_freq, K)
        activations = model.components_                        # (K, n_frames)
        features = _mfcc_of_templates(templates, sample_rate, win, n_mfcc)
        labels = KMeans(n_clusters=n_sources, n_init=10, random_state=seed).fit_predict(features)
    parts = np.stack([templates[:, labels == c] @ activations[labels == c] for c in range(n_sources)])
    return _masked_waveforms(spec, _ratio_masks(parts, mask_power), win, hop, len(x))


@_one_thread
def oracle_irm(mixture, sources, sample_rate: int = 24000, power: float = 2.0, window_length: int | None = None,
               hop_length: int | None = None) -> np.ndarray:
    """Ideal ratio mask from the true sources: mask_i = |S_i|^p / sum_j |S_j|^p on the mixture's STFT.

    The upper bound of the ratio-mask methods above (they estimate such a mask without the sources).
    ``power`` 2 (default) is the ideal Wiener-like mask, the least-squares optimal ratio mask when sources
    are independent Gaussian in each bin (sigsep's "IRM2"); 1 is the magnitude ratio mask ("IRM1").
    sources: (N, n_samples), the mixture's length. Returns (N, n_samples) in source order.
    """
    x = _check_mixture(mixture)
    refs = np.asarray(sources, dtype=np.float64)
    if refs.ndim != 2 or refs.shape[1] != len(x):
        raise ValueError(f"sources must be (n_sources, {len(x)}) to match the mixture, got shape {refs.shape}")
    win, hop = stft_settings(sample_rate, window_length, hop_length)
    spec = _stft(x, win, hop)
    source_mags = np.abs(np.stack([_stft(s, win, hop) for s in refs]))
    return _masked_waveforms(spec, _ratio_masks(source_mags, power), win, hop, len(x))


def mixture_as_sources(mixture, n_sources: int) -> np.ndarray:
    """The lower bound: the mixture itself as every source estimate. Returns (n_sources, n_samples)."""
    x = _check_mixture(mixture)
    return np.repeat(x[None], _check_count(n_sources), axis=0)


# ---------------------------------------------------------------- common entry point

def _check_count(n_sources) -> int:
    """n_sources as a positive int."""
    if isinstance(n_sources, bool) or not isinstance(n_sources, (int, np.integer)) or n_sources < 1:
        raise UserError(f"n_sources={n_sources!r} is not a positive integer: give the number of stems, e.g. 2")
    return int(n_sources)


def _check_settings(method: str, settings: dict) -> None:
    """Refuse settings that the method does not take, naming the ones it does."""
    fixed = {"mixture", "n_sources", "sample_rate"}
    allowed = [p for p in inspect.signature(SEPARATORS[method]).parameters if p not in fixed]
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise UserError(f"{method} does not take {', '.join(unknown)}: its settings are "
                        f"{', '.join(allowed) or 'none'}")


SEPARATORS = {
    "hpss": hpss,
    "repet_sim": repet_sim,
    "rpca": rpca,
    "ft2d": ft2d,
    "nmf": nmf,
    "oracle_irm": oracle_irm,
    "mixture": mixture_as_sources,
}


def separate(method: str, mixture, n_sources: int, sample_rate: int, **settings) -> np.ndarray:
    """Separate a mono mixture with one of ``SEPARATORS`` into (n_sources, n_samples).

    ``settings`` go to the method (e.g. ``window_length``, ``kernel_size``); ``oracle_irm`` needs
    ``sources=`` (N, n_samples). The methods in ``TWO_SOURCE_METHODS`` only give two sources and raise
    ``UserError`` for any other n_sources.
    """
    if method not in SEPARATORS:
        raise UserError(f"unknown separation method {method!r}: use one of {', '.join(SEPARATORS)}")
    n_sources = _check_count(n_sources)
    _check_settings(method, settings)
    if method in TWO_SOURCE_METHODS:
        if n_sources != 2:
            raise UserError(f"{method} separates into 2 sources, not {n_sources}: evaluate it on two-stem mixes "
                            "only, or use nmf, oracle_irm or mixture")
        return SEPARATORS[method](mixture, sample_rate, **settings)
    if method == "nmf":
        return nmf(mixture, n_sources, sample_rate, **settings)
    if method == "mixture":
        return mixture_as_sources(mixture, n_sources)
    if "sources" not in settings:
        raise UserError("oracle_irm needs the true sources: call separate(..., sources=<(N, n_samples) array>)")
    estimates = oracle_irm(mixture, sample_rate=sample_rate, **settings)
    if len(estimates) != n_sources:
        raise UserError(f"oracle_irm got {len(estimates)} sources but n_sources={n_sources}: pass one row per source")
    return estimates
