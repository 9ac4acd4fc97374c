"""Slot Attention (Locatello et al. 2020) with the MusicSlots options.

``attention="official"`` (default): the MusicSlots code's variant, which produced the paper's numbers: softmax
over *inputs* of q.k (no 1/sqrt(D) inside), renormalised over slots, then a weighted *sum* of values.
``attention="standard"``: the Slot Attention paper's: softmax over slots of q.k/sqrt(D), then a weighted *mean*
over inputs. (The official code adds eps to each of the K terms of its renormalising sum, K*eps in all, this one
adds it once: an input's weights differ by a relative (K-1)*eps over their sum across slots, which matters only for
inputs that hardly any slot attends to.) ``tests/test_slot_attention.py`` pins both to an independent
transcription of their equations.

``implicit=True`` detaches the slots at the start of every iteration (the official first-order implicit
differentiation): gradients flow through the last iteration only, and the learnt initial mu/log-sigma
receive none (as in the official code).
"""

from __future__ import annotations

import torch
from torch import nn


class SlotAttention(nn.Module):
    def __init__(self, num_slots: int = 7, dim: int = 128, iters: int = 3, hidden: int = 128,
                 implicit: bool = True, attention: str = "official", eps: float = 1e-8):
        super().__init__()
        if attention not in ("standard", "official"):
            raise ValueError(f"attention must be 'standard' or 'official', got {attention!r}")
        self.num_slots, self.dim, self.iters = num_slots, dim, iters
        self.implicit, self.attention, self.eps = implicit, attention, eps
        self.mu = nn.Parameter(torch.empty(1, num_slots, dim))
        self.log_sigma = nn.Parameter(torch.empty(1, num_slots, dim))
        nn.init.xavier_uniform_(self.mu)
        nn.init.xavier_uniform_(self.log_sigma)
        self.norm_inputs = nn.LayerNorm(dim)
        self.norm_slots = nn.LayerNorm(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def attend(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """(B, K, D), (B, N, D) -> attention (B, K, N) and the weights that make the updates."""
        logits = torch.einsum("bkd,bnd->bkn", q, k).float()  # normalised in float32 under any autocast: in
        # float16 the official variant's attention of an input underflows to 0 in every slot, and 0 / (0 + eps) is
        # NaN (eps = 1e-8 is 0 in float16); CUDA's autocast runs softmax in float32 anyway, CPU's does not
        if self.attention == "standard":
            attn = torch.softmax(logits * self.dim ** -0.5, dim=1) + self.eps  # slots compete for inputs
            return attn, attn / attn.sum(dim=-1, keepdim=True)  # weighted mean over inputs
        attn = torch.softmax(logits, dim=-1) * self.dim ** -0.5
        attn = attn / (attn.sum(dim=1, keepdim=True) + self.eps)
        return attn, attn  # weighted sum over inputs

    def forward(self, inputs: torch.Tensor, generator: torch.Generator | None = None):
        """(B, N, D) -> slots (B, K, D), attention (B, K, N) of the last iteration."""
        b = inputs.shape[0]
        inputs = self.norm_inputs(inputs)
        k, v = self.to_k(inputs), self.to_v(inputs)
        noise = torch.randn((b, self.num_slots, self.dim), device=inputs.device, dtype=self.mu.dtype,
                            generator=generator)
        slots = self.mu + self.log_sigma.exp() * noise
        attn = None
        for _ in range(self.iters):
            if self.implicit:
                slots = slots.detach()
            prev = slots
            q = self.to_q(self.norm_slots(slots))
            attn, weights = self.attend(q, k)
            updates = torch.einsum("bkn,bnd->bkd", weights, v)
            slots = self.gru(updates.reshape(-1, self.dim), prev.reshape(-1, self.dim)).reshape(b, -1, self.dim)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn
