"""MusicSlots model: shapes for every variant, the size of the paper's model, the mask variants'
composition in the power domain, attention normalisation and implicit differentiation."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from musicdecomp.data.mel import db_to_power, power_to_db
from musicdecomp.models.encoder import token_matrix_norm
from musicdecomp.models.musicslots import MusicSlots
from musicdecomp.models.slot_attention import SlotAttention

SMALL = dict(dim=16, enc_channels=16, iters=2)


@pytest.mark.parametrize("mask, stride, implicit, attention",
                         list(itertools.product(["softmax", "sigmoid", "none"], [1, 2], [True, False],
                                                ["standard", "official"])))
def test_shapes_for_every_variant(mask, stride, implicit, attention):
    model = MusicSlots(num_slots=5, mask=mask, time_stride=stride, implicit=implicit, attention=attention, **SMALL)
    x = torch.randn(3, 1, 128, 32) * 10 - 40
    out = model(x)
    assert out["recon"].shape == (3, 1, 128, 32)
    assert out["slots"].shape == (3, 5, 16)
    assert out["slot_values"].shape == out["weights"].shape == (3, 5, 128, 32)
    assert out["attn"].shape == (3, 5, 128 * 32 // stride ** 4)
    assert model.slot_db(out).shape == (3, 5, 128, 32)
    out["recon"].mean().backward()
    assert model.encoder.convs[0].weight.grad is not None


def test_paper_model_size():
    """3.50 M parameters (encoder convolutions 1.23 M, slot attention 0.18 M, decoder 2.05 M), as the
    official model."""
    model = MusicSlots(mask="softmax")

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(model) == pytest.approx(3.50e6, rel=0.01)
    assert count(model.encoder.convs) == pytest.approx(1.23e6, rel=0.01)
    assert count(model.slot_attention) == pytest.approx(0.18e6, rel=0.03)
    assert count(model.decoder) == pytest.approx(2.05e6, rel=0.01)
    assert count(MusicSlots(mask="none")) < count(model)  # one output channel fewer


def test_masks_compose_in_the_power_domain():
    torch.manual_seed(0)
    for mask in ("softmax", "sigmoid", "none"):
        model = MusicSlots(num_slots=4, mask=mask, **SMALL)
        out = model(torch.randn(2, 1, 128, 32))
        w = out["weights"]
        if mask == "softmax":
            assert torch.allclose(w.sum(1), torch.ones(2, 128, 32), atol=1e-5)  # masks compete
        elif mask == "sigmoid":
            assert (w > 0).all() and (w < 1).all() and not torch.allclose(w.sum(1), torch.ones(2, 128, 32))
        else:
            assert torch.equal(w, torch.ones_like(w))  # plain addition
        mix = (db_to_power(out["slot_values"]) * w).sum(1, keepdim=True)
        assert torch.allclose(out["recon"], power_to_db(mix, 1e-10, 80.0), atol=1e-4)


def test_token_matrix_norm_is_layer_norm_over_the_whole_token_matrix():
    torch.manual_seed(0)
    feats = (torch.randn(3, 16, 8, 4) * 3 + 5).relu()
    for layout in (torch.contiguous_format, torch.channels_last):  # tokens are a strided view in either layout
        x = feats.contiguous(memory_format=layout).requires_grad_(True)
        tokens = x.permute(0, 2, 3, 1).flatten(1, 2)
        ref = F.layer_norm(tokens, tokens.shape[1:])
        got = token_matrix_norm(tokens, impl="reduce")  # the CUDA path
        assert got.dtype == torch.float32 and torch.allclose(got, ref, atol=1e-5)
        assert torch.allclose(got.mean((1, 2)), torch.zeros(3), atol=1e-5)
        g = torch.randn_like(ref)
        (ref_grad,) = torch.autograd.grad(ref, x, g)
        (got_grad,) = torch.autograd.grad(got, x, g)
        assert torch.allclose(got_grad, ref_grad, atol=1e-5)
        assert torch.equal(token_matrix_norm(tokens), ref)  # on CPU: the fused kernel itself
    # statistics in fp32, as autocast runs layer_norm
    half = token_matrix_norm(tokens.detach().bfloat16(), impl="reduce")
    assert half.dtype == torch.float32 and torch.allclose(half, ref, atol=0.05)


def test_attention_normalisations():
    torch.manual_seed(0)
    inputs = torch.randn(2, 50, 16)
    standard = SlotAttention(num_slots=4, dim=16, iters=1, attention="standard")
    official = SlotAttention(num_slots=4, dim=16, iters=1, attention="official")
    official.load_state_dict(standard.state_dict())
    _, a_std = standard(inputs, torch.Generator().manual_seed(1))
    _, a_off = official(inputs, torch.Generator().manual_seed(1))
    # both give each input a distribution over slots, but they are different functions
    assert torch.allclose(a_std.sum(1), torch.ones(2, 50), atol=1e-5)
    assert torch.allclose(a_off.sum(1), torch.ones(2, 50), atol=1e-5)
    assert not torch.allclose(a_std, a_off, atol=1e-3)
    with pytest.raises(ValueError):
        SlotAttention(attention="other")


def test_sharp_official_attention_stays_finite_in_float16():
    """Under float16 autocast an input whose attention underflows to 0 in every slot must not make the official
    renormalisation 0/0: the softmax and renormalisation run in float32 (CPU's autocast would keep float16)."""
    torch.manual_seed(0)
    sa = SlotAttention(num_slots=4, dim=16, iters=2, attention="official")
    with torch.no_grad():
        sa.to_q.weight.mul_(40)  # logits of several hundred: exp underflows float16 (and float32) for most inputs
    inputs = torch.randn(2, 50, 16)
    with torch.autocast("cpu", dtype=torch.float16):
        slots, attn = sa(inputs, torch.Generator().manual_seed(1))
        logits = torch.einsum("bkd,bnd->bkn", sa.to_q(sa.norm_slots(slots)), sa.to_k(sa.norm_inputs(inputs)))
    assert logits.dtype == torch.float16 and (logits.amax(-1) - logits.amin(-1)).min() > 100
    assert attn.dtype == torch.float32 and torch.isfinite(attn).all() and torch.isfinite(slots).all()
    assert (attn == 0).any()  # inputs no slot attends to, the case that was 0/0
    ref_slots, ref_attn = sa(inputs, torch.Generator().manual_seed(1))  # float32: the same noise, same slots
    assert torch.allclose(slots.float(), ref_slots, rtol=0.05, atol=0.05)


def test_implicit_differentiation_detaches_the_iterations():
    inputs = torch.randn(2, 30, 16)
    for implicit in (True, False):
        sa = SlotAttention(num_slots=3, dim=16, iters=3, implicit=implicit)
        slots, _ = sa(inputs)
        slots.sum().backward()
        # implicit: the initial slots are detached, so the learnt mu and log sigma get no gradient
        assert (sa.mu.grad is None) == implicit
        assert sa.to_k.weight.grad is not None


def test_slot_db_shares_one_floor_per_example():
    model = MusicSlots(num_slots=3, mask="none", **SMALL)
    out = model(torch.randn(2, 1, 128, 32))
    out["slot_power"] = torch.stack([torch.full((128, 32), 1.0), torch.full((128, 32), 1e-12),
                                     torch.full((128, 32), 1e-3)]).expand(2, -1, -1, -1)
    db = model.slot_db(out)
    assert torch.allclose(db[:, 0], torch.zeros(2, 128, 32))
    assert torch.allclose(db[:, 1], torch.full((2, 128, 32), -80.0))  # the loudest slot's max - 80 dB
    assert torch.allclose(db[:, 2], torch.full((2, 128, 32), -30.0), atol=1e-4)
