"""The recomposition prior (masks, loss, sampling, generation) and its metrics (Fréchet distance, diversity, the
offline FAD embedding)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from scipy import linalg

from musicdecomp.errors import UserError
from musicdecomp.metrics.diversity import diversity, diversity_values
from musicdecomp.metrics.embeddings import DEFAULT_EMBEDDING, get_embedding
from musicdecomp.metrics.frechet import Gaussian, fad, frechet_distance, gaussian_fit
from musicdecomp.models.composable import DecompositionModel
from musicdecomp.models.generation import render, unconditional, variations
from musicdecomp.models.iadb import iadb_loss
from musicdecomp.models.latent_encoder import SemanticEncoder
from musicdecomp.models.latent_norm import LatentNorm
from musicdecomp.models.prior import MaskedPrior, build_prior, mask_probabilities, sample_masks
from musicdecomp.models.unet1d import UNet1d, prior_unet

RELEASED_PRIOR_UNET = 7_732_832  # config/slakh/db/encodec_prior_iadb.gin's UNet, built with the official code
TINY = {"channels": (2, 16, 32), "kernels": (3, 3), "strides": (1, 2), "attention": (0, 1), "head_dim": 16,
        "dropout": 0.0}


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks gain nothing from threads, and lose much to them on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_prior_is_the_released_unet_with_the_mask_as_conditioning():
    prior = MaskedPrior(n_latents=2)
    assert n_params(prior) == n_params(prior_unet(2)) == RELEASED_PRIOR_UNET
    assert prior.unet.cond_channels == 2
    assert n_params(build_prior({"variant": "c", "unet": {"dropout": 0.0}}, 2)) == RELEASED_PRIOR_UNET


@pytest.mark.parametrize("n_latents, p_mask", [(2, 0.8), (3, 0.5), (2, 0.2)])
def test_bernoulli_masks_have_the_stated_frequencies(n_latents, p_mask):
    masks = sample_masks(40_000, n_latents, p_mask, torch.Generator().manual_seed(0))
    assert masks.dtype == torch.bool and masks.shape == (40_000, n_latents)
    assert masks.any(dim=1).all()  # no row with nothing to regenerate
    expected = p_mask / (1 - (1 - p_mask) ** n_latents)  # per latent, given at least one masked
    np.testing.assert_allclose(masks.float().mean(0).numpy(), expected, atol=0.01)
    probs = mask_probabilities(n_latents, p_mask)
    assert sum(probs.values()) == pytest.approx(1.0)
    for mask, p in probs.items():
        assert (masks == torch.tensor(mask)).all(dim=1).float().mean().item() == pytest.approx(p, abs=0.01)


def test_table_4_masks_and_the_released_uniform_draw():
    assert mask_probabilities(2, 0.8)[(True, True)] == pytest.approx(2 / 3)
    uniform = sample_masks(30_000, 2, 0.8, torch.Generator().manual_seed(1), scheme="uniform")
    for mask in [(False, True), (True, False), (True, True)]:
        share = (uniform == torch.tensor(mask)).all(dim=1).float().mean().item()
        assert share == pytest.approx(1 / 3, abs=0.015)
    assert sample_masks(5, 3, 0.8, unconditional=True).all()
    assert sample_masks(5, 2, 1.0, torch.Generator().manual_seed(2)).all()  # the unconditional-only model


@pytest.mark.parametrize("variant, loss_on", [("c", "masked"), ("c", "all"), ("d", "all")])
def test_sampling_keeps_given_latents_bit_exact(variant, loss_on):
    torch.manual_seed(0)
    prior = MaskedPrior(2, variant=variant, loss_on=loss_on, latent_norm="global", **TINY).eval()
    prior.fit_norm(3 * torch.randn(16, 2, 1, 32) + 1)
    z = 3 * torch.randn(4, 2, 1, 32) + 1
    mask = torch.tensor([[False, True], [True, False], [False, True], [True, True]])
    out = prior.sample(z, mask, steps=6, generator=torch.Generator().manual_seed(1))
    assert out.shape == z.shape
    for row, m in enumerate(mask):
        for i in range(2):
            if m[i]:
                assert not torch.allclose(out[row, i], z[row, i])
            else:
                assert torch.equal(out[row, i], z[row, i])
    again = prior.sample(z, mask, steps=6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_variations_and_unconditional_generation_shapes():
    torch.manual_seed(0)
    prior = MaskedPrior(2, **TINY).eval()
    z = torch.randn(3, 2, 1, 16)
    var = variations(prior, z, keep=0, draws=4, steps=3, generator=torch.Generator().manual_seed(0))
    assert var.shape == (3, 4, 2, 1, 16)
    assert torch.equal(var[:, :, 0], z[:, None, 0].expand(-1, 4, -1, -1))
    assert not torch.allclose(var[:, 0, 1], var[:, 1, 1])  # the draws differ
    assert unconditional(prior, 5, 16, steps=3).shape == (5, 2, 1, 16)
    with pytest.raises(ValueError, match="keep"):
        variations(prior, z, keep=[0, 1])


def test_masked_loss_scores_only_the_regenerated_latents():
    torch.manual_seed(0)
    prior = MaskedPrior(2, **TINY)
    z, alpha = torch.randn(4, 2, 16), torch.rand(4)
    mask = torch.tensor([[False, True], [True, False], [True, True], [False, True]])
    assert torch.equal(prior(z, alpha, mask)[~mask], z[~mask])  # given latents pass through
    everything = torch.ones(4, 2, dtype=torch.bool)
    direct = iadb_loss(lambda x, a: prior.unet(x, a, torch.ones_like(x)), z, variant="c",
                       generator=torch.Generator().manual_seed(3))
    assert prior.loss(z, everything, torch.Generator().manual_seed(3)).item() == pytest.approx(direct.item(), rel=1e-6)
    value = prior.loss(z, mask, torch.Generator().manual_seed(3))
    value.backward()
    assert value.item() > 0 and all(p.grad is not None for p in prior.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="variant 'c'"):
        MaskedPrior(2, variant="d", loss_on="masked")


def test_a_tiny_prior_learns_that_z2_follows_z1():
    """z_1 = a * u (a ~ N(0, 1), u a fixed pattern), z_2 = f(z_1) = -z_1; z_2's marginal is z_1's, so only the
    dependence can put a regenerated z_2 near -z_1."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    t = torch.arange(16.0)
    u = torch.sin(2 * torch.pi * t / 16) + 0.5 * torch.cos(2 * torch.pi * t / 8)

    def data(n):
        z1 = torch.randn(n, 1, generator=gen) * u
        return torch.stack([z1, -z1], dim=1)  # (n, 2, 16)

    prior = MaskedPrior(2, variant="c", **{**TINY, "channels": (2, 32, 64)})
    steps = 250
    opt = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    for _ in range(steps):
        loss = prior.loss(data(64), sample_masks(64, 2, 0.8, gen), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    prior.eval()
    test = data(64)
    out = variations(prior, test, keep=0, draws=1, steps=20, generator=gen)[:, 0]
    err = ((out[:, 1] - test[:, 1]) ** 2).mean()
    shuffled = ((test[torch.randperm(64), 1] - test[:, 1]) ** 2).mean()  # a z_2 unrelated to z_1
    assert err < 0.1 * shuffled
    assert torch.equal(out[:, 0], test[:, 0])


def test_render_gives_the_mixture_and_each_source():
    torch.manual_seed(0)
    unet = UNet1d(channels=(8, 16), kernels=(3,), strides=(2,), attention=(0,), head_dim=16, dropout=0.0)
    model = DecompositionModel(SemanticEncoder(2, in_channels=8, channels=(8, 1)), unet, norm=LatentNorm(8, "none")).eval()
    z = torch.randn(3, 2, 1, 16)
    out = render(model, z, steps=2, generator=torch.Generator().manual_seed(0), decode=lambda l: l.sum(1))
    assert out["mixture_latent"].shape == (3, 8, 16) and out["source_latents"].shape == (3, 2, 8, 16)
    assert out["mixture"].shape == (3, 16) and out["sources"].shape == (3, 2, 16)


def closed_form(mu1, c1, mu2, c2):
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), the symmetric form."""
    root1 = linalg.sqrtm(c1).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(root1 @ c2 @ root1).real))


def test_frechet_distance_matches_the_closed_form():
    a = Gaussian(np.zeros(2), np.diag([1.0, 4.0]), 10)
    b = Gaussian(np.array([1.0, 2.0]), np.diag([9.0, 1.0]), 10)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2 = 5 + (1 - 3)^2 + (2 - 1)^2
    assert frechet_distance(a, b) == pytest.approx(10.0, abs=1e-9)
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    c1, c2 = m1.T @ m1 + np.eye(6) * 0.1, m2.T @ m2 + np.eye(6) * 0.3  # full-rank, not diagonal
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    assert frechet_distance(Gaussian(mu1, c1, 2), Gaussian(mu2, c2, 2)) == pytest.approx(
        closed_form(mu1, c1, mu2, c2), rel=1e-8)


def test_fad_of_identical_sets_is_zero_and_fits_merge_clip_by_clip():
    rng = np.random.default_rng(1)
    clips = [rng.normal(size=(n, 8)) @ rng.normal(size=(8, 8)) for n in (1, 5, 30, 12)]
    fit = gaussian_fit(clips)
    frames = np.concatenate(clips)
    np.testing.assert_allclose(fit.mean, frames.mean(0), atol=1e-12)
    np.testing.assert_allclose(fit.cov, np.cov(frames, rowvar=False), atol=1e-10)
    assert fit.count == 48
    assert abs(fad(clips, frames)) < 1e-8 * np.trace(fit.cov)
    shifted = fad(frames, frames + 1.0)
    assert shifted == pytest.approx(8.0, rel=1e-6)  # a mean shift of one in each of 8 dims
    with pytest.raises(ValueError, match="two"):
        gaussian_fit([np.zeros((1, 3))])


def test_gaussian_fit_round_trips_through_a_file(tmp_path):
    fit = gaussian_fit(np.random.default_rng(2).normal(size=(20, 3)))
    fit.save(tmp_path / "ref.npz")
    back = Gaussian.load(tmp_path / "ref.npz")
    assert back.count == 20 and np.array_equal(back.cov, fit.cov) and fad(back, fit) == pytest.approx(0, abs=1e-9)


def test_diversity_on_hand_built_latents():
    truth = np.zeros((2, 2, 4))  # 2 examples, 2 sources, 4 elements; example 0 is all 0, example 1 all 1
    truth[1] = 1.0
    pool = np.stack([truth[0], truth[1], np.full((2, 4), 3.0)])  # the examples are pool rows 0 and 1
    var = np.repeat(truth[:, None], 20, axis=1)  # 20 draws
    var[:, :, 1] += 0.25  # source 1 regenerated: off by 0.25 everywhere
    values = diversity_values(var, truth, pool, [1], own_index=[0, 1], seed=0)
    np.testing.assert_allclose(values[1]["real"], 0.0625)
    # example 0 (0.25) meets row 1 (1) or row 2 (3), never its own row 0 (0.0625); example 1 (1.25): rows 0 or 2
    assert set(np.round(values[1]["rand"][0], 6)) == {0.5625, 7.5625}
    assert set(np.round(values[1]["rand"][1], 6)) == {1.5625, 3.0625}
    summary = diversity(var, truth, pool, [1], names=["drums", "bass"], own_index=[0, 1], reduction="sum")
    assert set(summary) == {"bass"}
    assert summary["bass"]["real"] == {"mean": pytest.approx(0.25), "std": pytest.approx(0.0), "count": 40}
    assert summary["bass"]["rand"]["mean"] > summary["bass"]["real"]["mean"]
    assert diversity(var, truth, pool, [1], names=["drums", "bass"], own_index=[0, 1], reduction="sum") == summary
    with pytest.raises(ValueError, match="regenerated"):
        diversity_values(var, truth, pool, [2])


def test_offline_embedding_shape_and_determinism():
    emb = get_embedding(DEFAULT_EMBEDDING)
    assert not emb.info.comparable_to_paper and "not comparable" in emb.info.label
    t = np.arange(24_000) / 24_000
    clip = (0.3 * np.sin(2 * np.pi * 110 * t) + 0.05 * np.random.default_rng(0).normal(size=t.size))
    first = emb(clip.astype(np.float32), 24_000)
    assert first.shape == (11, emb.info.dim) and np.isfinite(first).all()  # one frame per 0.1 s, padded ends
    assert np.array_equal(first, emb(clip, 24_000))
    assert get_embedding("crepe-tiny")(clip, 24_000).shape == (11, 256)


def test_clap_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "fadtk", None)
    with pytest.raises(UserError, match="fadtk"):
        get_embedding("clap-laion-audio")
    fake = types.ModuleType("fadtk.model_loader")
    fake.__file__ = str(tmp_path / "model_loader.py")
    package = types.ModuleType("fadtk")
    package.model_loader = fake
    monkeypatch.setitem(sys.modules, "fadtk", package)
    monkeypatch.setitem(sys.modules, "fadtk.model_loader", fake)
    with pytest.raises(UserError, match="music_audioset_epoch_15_esc_90.14.pt.*not downloaded"):
        get_embedding("clap-laion-music", checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(UserError, match="unknown FAD embedding"):
        get_embedding("vggish")
