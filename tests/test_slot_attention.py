"""Slot Attention pinned to a reference: both normalisations of ``models/slot_attention.py`` against an independent
numpy (float64) transcription of their equations, on fixed small weights and inputs (2 slots, dim 4, 3 inputs, MLP
hidden 5, 2 iterations).

"official" transcribes ``SlotAttention.step`` of the MusicSlots code (arahosu/MusicSlots,
models/MusicSlots/slot_attention.py, commit 7cf4fa2):

    attn = softmax(einsum('bkd,bqd->bkq', q, k), dim=-1) * d ** -0.5     # softmax over the inputs, no 1/sqrt(d) inside
    attn = attn / sum(attn + eps, dim=-2)                                 # renormalised over the slots
    updates = einsum('bjd,bij->bid', v, attn)                             # a weighted sum over the inputs

"standard" transcribes Locatello et al. 2020 (Algorithm 1; google-research slot_attention/model.py):

    attn = softmax(k . q / sqrt(d), over the slots) + eps
    updates = (attn / sum over the inputs) @ v                             # a weighted mean over the inputs

Both then: slots = GRUCell(updates, slots); slots = slots + MLP(LayerNorm(slots)), with q from LayerNorm(slots) and
k, v from LayerNorm(inputs), no bias on q, k, v; initial slots mu + exp(log_sigma) * noise, the noise drawn from the
generator handed to the module. The official code adds eps to each of the K terms of its sum (K * eps in all), ours
adds it once: a difference of (K - 1) * eps = 1e-8 in a sum of about 0.3, far below the tolerance.
"""

import numpy as np
import pytest
import torch

from musicdecomp.models.slot_attention import SlotAttention

K, D, N, HIDDEN, ITERS, B, EPS = 2, 4, 3, 5, 2, 2, 1e-8


def fixed_weights(module: SlotAttention) -> dict[str, np.ndarray]:
    """Give every parameter fixed values (uniform in [-0.8, 0.8], LayerNorm gains around 1); returns them (float64,
    as the module holds them in float32)."""
    rng = np.random.RandomState(0)
    weights = {}
    for name, p in module.named_parameters():
        w = rng.uniform(-0.8, 0.8, size=tuple(p.shape))
        if name.startswith("norm_") and name.endswith("weight"):
            w = 1.0 + 0.3 * w
        with torch.no_grad():
            p.copy_(torch.from_numpy(w))
        weights[name] = p.detach().double().numpy()
    return weights


def layer_norm(x, gain, bias, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gain + bias


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gru_cell(x, h, w):
    """torch.nn.GRUCell's equations (gates r, z, n in that order in weight_ih / weight_hh)."""
    gi = x @ w["gru.weight_ih"].T + w["gru.bias_ih"]
    gh = h @ w["gru.weight_hh"].T + w["gru.bias_hh"]
    (ir, iz, inn), (hr, hz, hn) = np.split(gi, 3, axis=-1), np.split(gh, 3, axis=-1)
    r, z = sigmoid(ir + hr), sigmoid(iz + hz)
    n = np.tanh(inn + r * hn)
    return (1.0 - z) * n + z * h


def reference(inputs, noise, w, attention):
    """Slot Attention's forward pass in numpy: slots (B, K, D) and the last iteration's attention (B, K, N)."""
    x = layer_norm(inputs, w["norm_inputs.weight"], w["norm_inputs.bias"])
    k, v = x @ w["to_k.weight"].T, x @ w["to_v.weight"].T
    slots = w["mu"] + np.exp(w["log_sigma"]) * noise
    for _ in range(ITERS):
        q = layer_norm(slots, w["norm_slots.weight"], w["norm_slots.bias"]) @ w["to_q.weight"].T
        logits = np.einsum("bkd,bnd->bkn", q, k)
        if attention == "official":
            attn = softmax(logits, axis=-1) * D ** -0.5
            attn = attn / (attn + EPS).sum(axis=1, keepdims=True)
            updates = np.einsum("bnd,bkn->bkd", v, attn)
        else:
            attn = softmax(logits / np.sqrt(D), axis=1) + EPS
            updates = np.einsum("bkn,bnd->bkd", attn / attn.sum(axis=-1, keepdims=True), v)
        slots = gru_cell(updates.reshape(-1, D), slots.reshape(-1, D), w).reshape(B, K, D)
        hidden = np.maximum(layer_norm(slots, w["norm_mlp.weight"], w["norm_mlp.bias"]) @ w["mlp.0.weight"].T
                            + w["mlp.0.bias"], 0.0)
        slots = slots + hidden @ w["mlp.2.weight"].T + w["mlp.2.bias"]
    return slots, attn


@pytest.mark.parametrize("implicit", [True, False])  # implicit differentiation changes gradients, not the output
@pytest.mark.parametrize("attention", ["official", "standard"])
def test_slot_attention_matches_the_reference_equations(attention, implicit):
    inputs = np.random.RandomState(1).normal(size=(B, N, D))
    module = SlotAttention(num_slots=K, dim=D, iters=ITERS, hidden=HIDDEN, implicit=implicit, attention=attention,
                           eps=EPS)  # float32 (the module normalises its attention in float32 in any case)
    w = fixed_weights(module)
    noise = torch.randn((B, K, D), generator=torch.Generator().manual_seed(0)).double().numpy()
    expected_slots, expected_attn = reference(inputs, noise, w, attention)
    with torch.no_grad():
        slots, attn = module(torch.from_numpy(inputs).float(), generator=torch.Generator().manual_seed(0))
    assert slots.shape == (B, K, D) and attn.shape == (B, K, N)
    np.testing.assert_allclose(slots.double().numpy(), expected_slots, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(attn.double().numpy(), expected_attn, rtol=1e-5, atol=1e-6)
    # the reference tells the two normalisations apart (and so pins which one each name is)
    other = reference(inputs, noise, w, "standard" if attention == "official" else "official")[0]
    assert np.abs(other - expected_slots).max() > 1e-2
