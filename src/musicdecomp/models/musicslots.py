"""MusicSlots: encoder -> Slot Attention -> per-slot spectrogram decoder, slots mixed in the power domain.

``mask`` picks how the slots are composed (the paper's point: audio has no occlusion):

* ``softmax``: vision-style alpha masks that compete across slots, sum_k softmax_k(alpha) * p_k
* ``sigmoid``: independent gates, sum_k sigmoid(alpha_k) * p_k
* ``none``: plain addition, sum_k p_k (the official code's ``linear``)

where p_k = 10^(x_k / 10) is slot k's decoded dB spectrogram in power. The mixture goes back to dB with the
chord's 80 dB floor. The dB -> power -> dB path always runs in float32 (also under autocast).
"""

from __future__ import annotations

import torch
from torch import nn

from musicdecomp.data.mel import db_to_power, power_to_db
from musicdecomp.models.decoder import BroadcastDecoder
from musicdecomp.models.encoder import Encoder
from musicdecomp.models.slot_attention import SlotAttention

MASKS = ("softmax", "sigmoid", "none")


class MusicSlots(nn.Module):
    def __init__(self, num_slots: int = 7, dim: int = 128, iters: int = 3, enc_channels: int = 128,
                 enc_layers: int = 4, kernel: int = 5, time_stride: int = 1, mask: str = "none",
                 implicit: bool = True, attention: str = "official", size: tuple[int, int] = (128, 32),
                 amin: float = 1e-10, top_db: float | None = 80.0):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        self.mask, self.amin, self.top_db, self.num_slots = mask, amin, top_db, num_slots
        self.encoder = Encoder(enc_channels, enc_layers, kernel, time_stride)
        self.to_slot_dim = nn.Identity() if enc_channels == dim else nn.Linear(enc_channels, dim)
        self.slot_attention = SlotAttention(num_slots, dim, iters, dim, implicit, attention)
        self.decoder = BroadcastDecoder(dim, 1 if mask == "none" else 2, size)

    def forward(self, chord_db: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """(B, 1, F, T) dB -> recon (B, 1, F, T) dB, slots (B, K, D), slot_db / weights (B, K, F, T), attn."""
        b = chord_db.shape[0]
        tokens = self.to_slot_dim(self.encoder(chord_db))
        slots, attn = self.slot_attention(tokens, generator)
        out = self.decoder(slots.reshape(b * self.num_slots, -1)).float()
        out = out.reshape(b, self.num_slots, *out.shape[1:])  # (B, K, C, F, T)
        with torch.autocast(device_type=chord_db.device.type, enabled=False):
            values = out[:, :, 0]
            if self.mask == "softmax":
                weights = torch.softmax(out[:, :, 1], dim=1)
            elif self.mask == "sigmoid":
                weights = torch.sigmoid(out[:, :, 1])
            else:
                weights = torch.ones_like(values)
            slot_power = db_to_power(values) * weights
            recon = power_to_db(slot_power.sum(1, keepdim=True), self.amin, self.top_db)
        return {"recon": recon, "slots": slots, "slot_values": values, "weights": weights,
                "slot_power": slot_power, "attn": attn}

    def slot_db(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-slot dB spectrograms for evaluation: masked power, one 80 dB floor shared by all slots of an
        example (the official evaluation's clamp)."""
        return power_to_db(out["slot_power"], self.amin, self.top_db, dims=(-3, -2, -1))


def build_model(model_cfg: dict, size: tuple[int, int]) -> MusicSlots:
    """A MusicSlots model from a run's ``model`` settings, for spectrograms of ``size`` (F, T)."""
    return MusicSlots(size=size, **model_cfg)
