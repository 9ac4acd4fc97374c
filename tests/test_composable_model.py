"""The composable-representations networks: U-Net, semantic encoder, decomposition model, IADB."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from musicdecomp.models.composable import OPERATORS, DecompositionModel, compose
from musicdecomp.models.iadb import iadb_loss, iadb_sample
from musicdecomp.models.latent_encoder import LatentEncoder, SemanticEncoder
from musicdecomp.models.unet1d import NoiseLevelEmbedding, UNet1d, prior_unet

# Parameter counts of the released networks, computed by building the official code
# (ismir-24-sub/unsupervised_compositional_representations @ 71203f4, networks/unet.py and networks/encoder.py)
# with the arguments of config/slakh/db/encodec_iadb.gin (DecompUNet, MultiEncoder) and
# config/slakh/db/encodec_prior_iadb.gin (UNet) and summing p.numel() over .parameters().
RELEASED_UNET = 10_483_368  # DecompUNet, any n_comp
RELEASED_ENCODER = 2_904_971  # one EncoderAudio; MultiEncoder(n_comp=2) has 5_809_942
RELEASED_PRIOR_UNET = 7_732_832


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_released_configuration():
    assert n_params(UNet1d()) == RELEASED_UNET
    assert n_params(LatentEncoder()) == RELEASED_ENCODER
    assert n_params(prior_unet()) == RELEASED_PRIOR_UNET
    for n in (2, 3):
        model = DecompositionModel(SemanticEncoder(n_latents=n), UNet1d())
        assert n_params(model.unet) == RELEASED_UNET
        assert n_params(model.encoder) == n * RELEASED_ENCODER  # independent encoders, no shared weights


def test_noise_level_conditions_the_unet_unless_the_released_bug_is_reproduced():
    torch.manual_seed(0)
    x, z = torch.randn(2, 128, 32), torch.randn(2, 1, 32)
    low, high = torch.full((2,), 0.1), torch.full((2,), 0.9)
    with torch.no_grad():
        unet = UNet1d().eval()
        assert (unet(x, low, z) - unet(x, high, z)).abs().max() > 1e-3
        unet = UNet1d(noise_embedding="constant").eval()
        assert torch.equal(unet(x, low, z), unet(x, high, z))
        emb = NoiseLevelEmbedding(mode="constant")
        assert torch.equal(emb(low), emb(high))


class StubUNet(nn.Module):
    """Output = x_alpha + alpha + the latent broadcast over the data channels."""

    def forward(self, x, alpha, cond):
        return x + alpha[:, None, None] + cond


@pytest.mark.parametrize("operator", OPERATORS)
def test_composition_operators_on_hand_built_latents(operator):
    x = torch.arange(2.0)[:, None, None].expand(2, 3, 4)  # examples differ, so a batch mix-up shows
    alpha = torch.tensor([0.25, 0.5])
    z = torch.tensor([[1.0, -2.0, 5.0], [0.0, 3.0, -1.0]])[:, :, None, None].expand(2, 3, 1, 4)  # (B, N=3, 1, T)
    reduced = {"sum": z.sum(1), "mean": z.mean(1), "min": z.amin(1), "max": z.amax(1)}[operator]
    n = 3 if operator == "sum" else 1  # the sum adds x_alpha + alpha once per component
    expected = n * (x + alpha[:, None, None]) + reduced
    model = DecompositionModel(nn.Identity(), StubUNet(), operator=operator)
    torch.testing.assert_close(model(x, alpha, z), expected)
    expected_component = x + alpha[:, None, None] + z[:, 1]
    torch.testing.assert_close(model(x, alpha, z, component=1), expected_component)
    assert compose(torch.stack([z[:, 0], z[:, 2]], dim=1), "max").tolist() == torch.maximum(z[:, 0], z[:, 2]).tolist()


def test_component_path_uses_its_latent_alone():
    torch.manual_seed(0)
    model = DecompositionModel(SemanticEncoder(n_latents=2, in_channels=8, channels=(16, 1)),
                               UNet1d(channels=(8, 16, 32), kernels=(3, 3), strides=(2, 2), attention=(0, 1),
                                      head_dim=16)).eval()
    x, alpha = torch.randn(2, 8, 32), torch.rand(2)
    z = model.encode(x)
    other, own = z.clone(), z.clone()
    other[:, 1] += 1.0
    own[:, 0] += 1.0
    with torch.no_grad():
        out = model(x, alpha, z, component=0)
        assert torch.equal(out, model(x, alpha, other, component=0))
        assert torch.equal(out, model.unet(x, alpha, z[:, 0]))
        assert not torch.allclose(out, model(x, alpha, own, component=0))


@pytest.mark.parametrize("n_latents", [2, 3])
def test_shapes_with_the_released_sizes(n_latents):
    torch.manual_seed(0)
    model = DecompositionModel(SemanticEncoder(n_latents=n_latents), UNet1d(), operator="mean").eval()
    x = torch.randn(2, 128, 512)  # an EnCodec mixture latent crop
    alpha = torch.rand(2)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (2, n_latents, 1, 512)
        assert model.components(x, alpha, z).shape == (2, n_latents, 128, 512)
        assert model(x, alpha, z).shape == (2, 128, 512)
        assert model(x, alpha, z, component=n_latents - 1).shape == (2, 128, 512)
        prior = prior_unet(n_latents=n_latents).eval()
        z_flat, mask = z.reshape(2, n_latents, 512), torch.ones(2, n_latents, 512)
        assert prior(z_flat, alpha, mask).shape == (2, n_latents, 512)


@pytest.fixture
def one_thread():
    """A tiny MLP gains nothing from threads, and loses much to them on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ToyDenoiser(nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x, alpha):
        return self.net(torch.cat([x, alpha[:, None]], dim=1))


@pytest.mark.parametrize("variant", ["d", "c"])
def test_iadb_recovers_both_modes_of_a_toy_distribution(variant, one_thread):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = ToyDenoiser()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):  # data: +-2 with equal odds, standard deviation 0.1
        x = (torch.randint(0, 2, (128, 1), generator=gen) * 4.0 - 2.0) + 0.1 * torch.randn(128, 1, generator=gen)
        loss = iadb_loss(model, x, variant=variant, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    samples = iadb_sample(model, torch.randn(2000, 1, generator=gen), steps=50, variant=variant)
    assert (samples - 2).abs().lt(0.5).float().mean() > 0.35
    assert (samples + 2).abs().lt(0.5).float().mean() > 0.35
    assert samples.abs().lt(1.0).float().mean() < 0.05


def zero_denoiser(x_alpha, alpha):
    return torch.zeros_like(x_alpha)


def half_denoiser(x_alpha, alpha):
    return torch.full_like(x_alpha, 0.5)


def test_iadb_loss_targets_and_generator():
    x = torch.randn(4, 2, 8)
    draws = torch.Generator().manual_seed(3)  # the loss draws alpha (B,), then x0 like x, from its generator
    alpha = torch.rand(4, generator=draws)[:, None, None]
    x0 = torch.randn(x.shape, generator=draws)
    loss = iadb_loss(zero_denoiser, x, variant="d", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss, ((x - x0) ** 2).mean())
    loss = iadb_loss(zero_denoiser, x, variant="c", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss, (x ** 2).mean())

    seen = {}

    def record(x_alpha, a):
        seen["x_alpha"], seen["alpha"] = x_alpha, a
        return x_alpha

    known = torch.zeros(4, 2, 1, dtype=torch.bool)
    known[:, 0] = True  # channel 0 given, channel 1 generated
    iadb_loss(record, x, generator=torch.Generator().manual_seed(3), known=known)
    torch.testing.assert_close(seen["alpha"], alpha.flatten())
    torch.testing.assert_close(seen["x_alpha"][:, 0], x[:, 0])
    torch.testing.assert_close(seen["x_alpha"][:, 1], (alpha * x + (1 - alpha) * x0)[:, 1])


@pytest.mark.parametrize("variant", ["d", "c"])
def test_sampling_keeps_known_entries_exactly(variant):
    torch.manual_seed(0)
    unet = prior_unet(n_latents=2, channels=(2, 16, 32), kernels=(3, 3), strides=(1, 2),
                      attention=(0, 1), head_dim=16).eval()
    mask = torch.zeros(3, 2, 32)
    mask[:, 1] = 1.0  # regenerate latent 1 given latent 0 (the released mask: 1 = regenerate)
    z = torch.randn(3, 2, 32)
    x0 = torch.where(mask.bool(), torch.randn(3, 2, 32), z)

    def denoiser(x, alpha):
        return unet(x, alpha, mask)

    out = iadb_sample(denoiser, x0, steps=5, variant=variant, known=~mask.bool())
    assert torch.equal(out[:, 0], z[:, 0])
    assert not torch.allclose(out[:, 1], x0[:, 1])
    assert not torch.equal(iadb_sample(denoiser, x0, steps=5, variant=variant)[:, 0], z[:, 0])  # unclamped


def test_sampler_updates_match_the_iadb_formulas():
    x0 = torch.tensor([[1.0], [-3.0]])
    # d: x0 + the sum of D / steps; c: the last step's factor is 0, which leaves D
    torch.testing.assert_close(iadb_sample(half_denoiser, x0, steps=4, variant="d"), x0 + 0.5)
    torch.testing.assert_close(iadb_sample(half_denoiser, x0, steps=4, variant="c"), torch.full_like(x0, 0.5))


@pytest.mark.parametrize("build, message", [
    (lambda: UNet1d(skip="sum"), "skip"),
    (lambda: UNet1d(norm="bn"), "norm"),
    (lambda: UNet1d(noise_embedding="off"), "noise_embedding"),
    (lambda: UNet1d(kernels=(3, 3)), "kernels"),
    (lambda: UNet1d(channels=(128, 100, 256, 256, 512)), "groups"),
    (lambda: DecompositionModel(nn.Identity(), nn.Identity(), operator="prod"), "operator"),
    (lambda: SemanticEncoder(n_latents=0), "n_latents"),
    (lambda: iadb_loss(zero_denoiser, torch.zeros(2, 1), variant="e"), "variant"),
    (lambda: iadb_sample(zero_denoiser, torch.zeros(2, 1), steps=0), "steps"),
])
def test_bad_arguments_raise_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_inputs_raise_value_error():
    unet = UNet1d(channels=(8, 16), kernels=(3,), strides=(2,), attention=(0,), head_dim=16)
    with pytest.raises(ValueError, match="divisible"):
        unet(torch.zeros(1, 8, 15), torch.zeros(1), torch.zeros(1, 1, 15))
    with pytest.raises(ValueError, match="cond"):
        unet(torch.zeros(1, 8, 16), torch.zeros(1))
    with pytest.raises(ValueError, match="component"):
        DecompositionModel(nn.Identity(), unet)(torch.zeros(1, 8, 16), torch.zeros(1), torch.zeros(1, 2, 1, 16),
                                                component=2)
