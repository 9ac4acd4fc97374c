"""Scale-invariant separation metrics (closed form, museval cross-check, permutation matching) and the
classic Table 2 separators on a synthetic harmonic + percussive pair."""

import numpy as np
import pytest

from musicdecomp.errors import UserError
from musicdecomp.eval import separators
from musicdecomp.metrics import separation as sep

SR = 24000


def _db(x):
    return 10 * np.log10(x)


def _orthonormal(n, length, seed=0):
    """n exactly orthonormal signals of the given length (rows)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((length, n)))
    return q.T


def harmonic_percussive_pair(seconds=3.0, seed=0):
    """(2, T) at 24 kHz: three sustained sine tones, and decaying white-noise bursts at random onsets,
    scaled to the same RMS."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    harmonic = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in (220.0, 330.0, 495.0))
    percussive = np.zeros_like(t)
    burst = int(0.15 * SR)
    for onset in rng.uniform(0, seconds - 0.2, 10):
        start = int(onset * SR)
        percussive[start:start + burst] += rng.standard_normal(burst) * np.exp(-np.arange(burst) / (0.02 * SR))
    pair = np.stack([harmonic, percussive])
    return pair / np.sqrt(np.mean(pair ** 2, axis=1, keepdims=True))


# ---------------------------------------------------------------- metrics


def test_si_metrics_equal_the_closed_form_on_orthogonal_parts():
    s1, s2, s3, noise = _orthonormal(4, 4000) * np.array([[3.0], [1.0], [0.5], [2.0]])
    refs = np.stack([s1, s2, s3])
    a, b, c = 0.9, 0.3, 0.2
    est = np.stack([a * s1 + b * s2 + c * noise, 2.0 * s2 - 0.5 * s3 + 0.1 * noise, s3])
    got = sep.si_metrics(refs, est)

    target, interf, artif = (a * s1) @ (a * s1), (b * s2) @ (b * s2), (c * noise) @ (c * noise)
    assert got["si_sdr"][0] == pytest.approx(_db(target / (interf + artif)), abs=1e-9)
    assert got["si_sir"][0] == pytest.approx(_db(target / interf), abs=1e-9)
    assert got["si_sar"][0] == pytest.approx(_db(target / artif), abs=1e-9)
    target, interf, artif = 4 * s2 @ s2, 0.25 * s3 @ s3, 0.01 * noise @ noise
    assert got["si_sdr"][1] == pytest.approx(_db(target / (interf + artif)), abs=1e-9)
    assert got["si_sir"][1] == pytest.approx(_db(target / interf), abs=1e-9)
    assert got["si_sar"][1] == pytest.approx(_db(target / artif), abs=1e-9)
    assert got["si_sdr"][2] > 200                       # a perfect estimate: error at rounding level


def test_si_metrics_match_an_explicit_projection_on_correlated_references():
    rng = np.random.default_rng(1)
    refs = rng.standard_normal((3, 2000))
    refs[1] += 0.6 * refs[0]                            # correlated references
    est = rng.uniform(-0.5, 1.0, (3, 3)) @ refs + 0.3 * rng.standard_normal((3, 2000))
    got = sep.si_metrics(refs, est)
    projector = refs.T @ np.linalg.pinv(refs @ refs.T) @ refs
    for j in range(3):
        e_target = (est[j] @ refs[j]) / (refs[j] @ refs[j]) * refs[j]
        projected = projector @ est[j]
        e_interf, e_artif = projected - e_target, est[j] - projected
        assert got["si_sdr"][j] == pytest.approx(_db(e_target @ e_target / np.sum((e_interf + e_artif) ** 2)))
        assert got["si_sir"][j] == pytest.approx(_db(e_target @ e_target / (e_interf @ e_interf)))
        assert got["si_sar"][j] == pytest.approx(_db(e_target @ e_target / (e_artif @ e_artif)))


def test_si_metrics_agree_with_museval_si_recipe_and_its_permutation():
    rng = np.random.default_rng(2)
    refs = rng.standard_normal((3, 6000))
    noise = rng.standard_normal((3, 6000))
    est = np.stack([0.8 * refs[2] + 0.2 * refs[0] + 0.1 * noise[0],
                    1.5 * refs[0] - 0.3 * refs[1] + 0.05 * noise[1],
                    refs[1] + 0.4 * noise[2]])
    ours, perm = sep.matched_si_metrics(refs, est)
    theirs, their_perm = sep.museval_si_metrics(refs, est)
    np.testing.assert_array_equal(perm, their_perm)
    np.testing.assert_array_equal(perm, [1, 2, 0])
    np.testing.assert_allclose(ours["si_sdr"], theirs["si_sdr"], atol=1e-2)
    np.testing.assert_allclose(ours["si_sir"], theirs["si_sir"], atol=1e-2)
    # museval's SAR counts target plus interference as signal: SI-SIR and SI-SAR combine into it.
    sir_ratio, sar_ratio = 10 ** (ours["si_sir"] / 10), 10 ** (ours["si_sar"] / 10)
    museval_sar = _db((1 + 1 / sir_ratio) * sar_ratio)
    np.testing.assert_allclose(museval_sar, theirs["sar"], atol=1e-2)
    assert np.all(theirs["sar"] > ours["si_sar"])


def test_rescaled_estimate_scores_the_same():
    rng = np.random.default_rng(3)
    refs = rng.standard_normal((2, 3000))
    est = refs + 0.3 * rng.standard_normal((2, 3000))
    base = sep.si_metrics(refs, est)
    scaled = sep.si_metrics(refs, est * np.array([[7.5], [-0.01]]))
    for name in sep.METRICS:
        np.testing.assert_allclose(scaled[name], base[name], atol=1e-9)


def test_zero_mean_removes_an_offset():
    rng = np.random.default_rng(8)
    refs = rng.standard_normal((2, 3000))
    est = refs + 0.1 * rng.standard_normal((2, 3000)) + 2.0
    plain = sep.si_metrics(refs, est)["si_sdr"]
    centred = sep.si_metrics(refs, est, zero_mean=True)["si_sdr"]
    assert np.all(centred > plain + 10)
    np.testing.assert_allclose(centred, sep.si_metrics(refs, est - 2.0, zero_mean=True)["si_sdr"])


def test_swapped_estimates_are_matched_back():
    rng = np.random.default_rng(4)
    refs = rng.standard_normal((2, 3000))
    est = refs + 0.5 * rng.standard_normal((2, 3000))
    direct, perm = sep.matched_si_metrics(refs, est)
    swapped, swapped_perm = sep.matched_si_metrics(refs, est[::-1])
    np.testing.assert_array_equal(perm, [0, 1])
    np.testing.assert_array_equal(swapped_perm, [1, 0])
    for name in sep.METRICS:
        np.testing.assert_allclose(swapped[name], direct[name])

    batch, perms = sep.batch_matched_si_metrics(np.stack([refs, refs]), np.stack([est, est[::-1]]))
    np.testing.assert_array_equal(perms, [[0, 1], [1, 0]])
    assert batch["si_sdr"].shape == (2, 2)


def test_best_permutation_skips_silent_references():
    sir = np.array([[np.nan, np.nan, np.nan],
                    [1.0, 2.0, 30.0],
                    [25.0, 3.0, 4.0]])
    np.testing.assert_array_equal(sep.best_permutation(sir), [1, 2, 0])
    np.testing.assert_array_equal(sep.best_permutation(np.full((2, 2), np.nan)), [0, 1])


def test_silent_reference_is_nan_and_left_out_of_the_summary():
    rng = np.random.default_rng(5)
    refs = rng.standard_normal((2, 2000))
    refs[1] = 0.0
    est = rng.standard_normal((2, 2000))
    est[0] += 3 * refs[0]
    metrics, perm = sep.matched_si_metrics(refs, est)
    np.testing.assert_array_equal(perm, [0, 1])
    assert all(np.isnan(metrics[name][1]) for name in sep.METRICS)
    assert np.isfinite(metrics["si_sdr"][0]) and np.isfinite(metrics["si_sar"][0])
    assert np.isposinf(metrics["si_sir"][0])            # the only other reference is silent: no interference
    summary = sep.summarize(metrics)
    assert summary["si_sdr"]["count"] == 1
    assert summary["si_sdr"]["mean"] == pytest.approx(metrics["si_sdr"][0])


def test_silent_estimate_scores_the_floor_without_crashing():
    rng = np.random.default_rng(6)
    refs = rng.standard_normal((2, 2000))
    est = refs.copy()
    est[0] = 0.0
    metrics, _ = sep.matched_si_metrics(refs, est)
    assert all(metrics[name][0] == sep.SILENT_ESTIMATE_DB for name in sep.METRICS)
    assert np.isnan(sep.si_metrics(refs, est, silent_estimate_db=np.nan)["si_sdr"][0])
    assert np.all(np.isfinite(sep.si_metrics(refs, np.zeros_like(refs))["si_sdr"]))


def test_metric_arguments_are_checked():
    with pytest.raises(ValueError, match="differ in shape"):
        sep.si_metrics(np.ones((2, 100)), np.ones((2, 99)))
    with pytest.raises(ValueError, match="NaN"):
        sep.si_metrics(np.ones((2, 100)), np.full((2, 100), np.nan))
    with pytest.raises(ValueError, match="square"):
        sep.best_permutation(np.zeros((2, 3)))


# ---------------------------------------------------------------- separators


@pytest.fixture(scope="module")
def pair_scores():
    """Mean SI-SDR of every method on the synthetic pair, and the estimates."""
    sources = harmonic_percussive_pair()
    mixture = sources.mean(axis=0)
    scores, estimates = {}, {}
    for method in separators.SEPARATORS:
        settings = {"sources": sources / 2} if method == "oracle_irm" else {}
        estimates[method] = separators.separate(method, mixture, 2, SR, **settings)
        metrics, _ = sep.matched_si_metrics(sources, estimates[method])
        scores[method] = float(np.mean(metrics["si_sdr"]))
    return scores, estimates, mixture


def test_separators_return_two_finite_sources(pair_scores):
    _, estimates, mixture = pair_scores
    for method, est in estimates.items():
        assert est.shape == (2, len(mixture)), method
        assert est.dtype == np.float64 and np.all(np.isfinite(est)), method


def test_every_baseline_beats_the_mixture_and_the_oracle_beats_every_baseline(pair_scores):
    scores, _, _ = pair_scores
    baselines = {m: s for m, s in scores.items() if m not in ("mixture", "oracle_irm")}
    assert set(baselines) == {"hpss", "repet_sim", "rpca", "ft2d", "nmf"}
    assert abs(scores["mixture"]) < 0.5                 # equal-power uncorrelated pair: about 0 dB
    for method, score in baselines.items():
        assert score > scores["mixture"] + 1.0, (method, scores)
        assert score < scores["oracle_irm"], (method, scores)


def test_masks_split_the_mixture(pair_scores):
    _, estimates, mixture = pair_scores
    for method in ("hpss", "repet_sim", "rpca", "ft2d", "nmf", "oracle_irm"):
        np.testing.assert_allclose(estimates[method].sum(axis=0), mixture, atol=1e-6, err_msg=method)


def test_three_sources():
    sources = harmonic_percussive_pair(seconds=1.0)
    sources = np.concatenate([sources, sources[:1] * np.linspace(0, 1, sources.shape[1])])
    mixture = sources.sum(axis=0)
    for method in separators.TWO_SOURCE_METHODS:
        with pytest.raises(UserError, match="2 sources, not 3"):
            separators.separate(method, mixture, 3, SR)
    assert separators.separate("nmf", mixture, 3, SR, n_components=6).shape == (3, len(mixture))
    assert separators.separate("mixture", mixture, 3, SR).shape == (3, len(mixture))
    assert separators.separate("oracle_irm", mixture, 3, SR, sources=sources).shape == (3, len(mixture))


def test_silent_mixture_does_not_crash():
    silent = np.zeros(int(2.5 * SR))
    for method in separators.SEPARATORS:
        settings = {"sources": np.zeros((2, len(silent)))} if method == "oracle_irm" else {}
        est = separators.separate(method, silent, 2, SR, **settings)
        assert est.shape == (2, len(silent)) and np.all(est == 0), method


def test_robust_pca_recovers_low_rank_plus_sparse():
    rng = np.random.default_rng(7)
    low = rng.standard_normal((120, 5)) @ rng.standard_normal((5, 90))
    sparse = np.where(rng.random(low.shape) < 0.05, 10 * rng.standard_normal(low.shape), 0.0)
    got_low, got_sparse = separators.robust_pca(low + sparse)
    assert np.linalg.norm(got_low - low) / np.linalg.norm(low) < 1e-4
    assert np.linalg.norm(got_sparse - sparse) / np.linalg.norm(sparse) < 1e-4


def test_separator_arguments_are_checked():
    mixture = harmonic_percussive_pair(seconds=1.0).sum(axis=0)
    assert separators.stft_settings(24000) == (1024, 256)
    assert separators.stft_settings(44100) == (2048, 512)
    with pytest.raises(UserError, match="unknown separation method"):
        separators.separate("demucs", mixture, 2, SR)
    with pytest.raises(UserError, match="does not take kernal_size"):
        separators.separate("hpss", mixture, 2, SR, kernal_size=17)
    with pytest.raises(UserError, match="needs the true sources"):
        separators.separate("oracle_irm", mixture, 2, SR)
    with pytest.raises(UserError, match="too short"):
        separators.separate("repet_sim", mixture, 2, SR)
    with pytest.raises(UserError, match="positive integer"):
        separators.separate("mixture", mixture, 0, SR)
    with pytest.raises(ValueError, match="mono"):
        separators.separate("hpss", np.stack([mixture, mixture]), 2, SR)
