"""The EnCodec 24 kHz model and the conversions code <-> latent <-> audio used downstream.

The continuous latent of the composable-representations method is the *quantized* embedding obtained by
decoding the RVQ codes (at 24 kbps: 32 codebooks), shape (128, 525) for 7 s; codes are cached instead of
latents (int16, 24x smaller) and decoded on the fly, which gives exactly the same tensor.
"""

from __future__ import annotations

import warnings

import torch


def build_encodec(bandwidth: float = 24.0):
    """The EnCodec 24 kHz architecture with fresh weights (load a state dict, or train it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # encodec uses the deprecated weight_norm
        from encodec import EncodecModel

        model = EncodecModel.encodec_model_24khz(pretrained=False)
    model.set_target_bandwidth(bandwidth)
    return model


@torch.no_grad()
def encode_codes(model, audio: torch.Tensor) -> torch.Tensor:
    """(B, T) or (B, 1, T) 24 kHz audio -> (B, n_q, T/320) int16 codes."""
    x = audio if audio.dim() == 3 else audio[:, None]
    emb = model.encoder(x)
    codes = model.quantizer.encode(emb, model.frame_rate, model.bandwidth)  # (n_q, B, T')
    return codes.transpose(0, 1).to(torch.int16)


@torch.no_grad()
def codes_to_latent(model, codes: torch.Tensor) -> torch.Tensor:
    """(B, n_q, T') codes -> (B, 128, T') quantized latents (the sum of the codebook vectors)."""
    return model.quantizer.decode(codes.long().transpose(0, 1))


@torch.no_grad()
def latent_to_audio(model, latent: torch.Tensor) -> torch.Tensor:
    """(B, 128, T') -> (B, T' * 320) audio."""
    return model.decoder(latent)[:, 0]
