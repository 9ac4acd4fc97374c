"""The compiled fast path (the ``compile`` speed option) computes what the eager model computes: the same loss and
gradients on a batch, for MusicSlots and for the composable-representations model, and a state dict that loads
into an eager model."""

import copy

import pytest
import torch
from conftest import REPO

from musicdecomp.config import load_params
from musicdecomp.models.composable import build_model
from musicdecomp.models.musicslots import MusicSlots
from musicdecomp.train.composable import composable_loss
from musicdecomp.train.loop import compile_model


def musicslots_case():
    model = MusicSlots(dim=16, enc_channels=16, iters=2, num_slots=3, time_stride=2)
    x = torch.rand(4, 1, 128, 32, generator=torch.Generator().manual_seed(1)) * 80 - 90

    def loss(m):
        out = m(x, generator=torch.Generator().manual_seed(2))
        return torch.nn.functional.mse_loss(out["recon"].float(), x)

    return model, loss


def composable_case():
    params = load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"])
    model = build_model(params["composable"]["model"], "mean", 2).eval()  # dropout off: the same function twice
    x = torch.randn(2, 128, 64, generator=torch.Generator().manual_seed(1))

    def loss(m):
        return composable_loss(m, x, None, "d", torch.Generator().manual_seed(2))

    return model, loss


@pytest.mark.parametrize("case", [musicslots_case, composable_case])
def test_the_compiled_model_gives_the_eager_loss_and_gradients(case):
    torch.manual_seed(0)
    eager, loss = case()
    compiled = copy.deepcopy(eager)
    compile_model(compiled)
    values = []
    for model in (eager, compiled):
        value = loss(model)
        value.backward()
        values.append((value.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = values
    assert torch.allclose(l0, l1, rtol=1e-5), (l0, l1)
    assert g0.keys() == g1.keys()
    assert [n for n in g0 if g0[n] is None] == [n for n in g1 if g1[n] is None]  # e.g. implicit slots' initial mu
    for name in (n for n in g0 if g0[n] is not None):
        assert torch.allclose(g0[name], g1[name], rtol=1e-3, atol=1e-6), name
    # compiling in place keeps the parameter names: checkpoints of either load into the other
    assert compiled.state_dict().keys() == eager.state_dict().keys()
