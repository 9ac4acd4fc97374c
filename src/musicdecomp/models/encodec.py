"""The EnCodec 24 kHz model and the conversions code <-> latent <-> audio used downstream.

The continuous latent of the composable-representations method is the *quantized* embedding obtained by
decoding the RVQ codes (at 24 kbps: 32 codebooks), shape (128, 525) for 7 s; codes are cached instead of
latents (int16, 24x smaller) and decoded on the fly, which gives exactly the same tensor.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from musicdecomp.io import load_torch

ENCODEC_KMEANS = None
MODEL_FILE = "model.pt"  # what the codec step writes: {state_dict, bandwidth, source, origin, sha256}


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 10):
    """encodec's codebook k-means (same sampling, same updates, same return) with the squared distances computed
    as |x|^2 - 2 x.c + |c|^2 instead of through an (n, clusters, dim) difference tensor. Same assignments up to
    float rounding in near-ties; on a 2-core CPU the 32 codebooks of a 24 kbps codec initialise on 8 one-second
    crops in seconds instead of 8 minutes."""
    from encodec.quantization.core_vq import sample_vectors

    dim, dtype = samples.shape[-1], samples.dtype
    means = sample_vectors(samples, num_clusters)
    sq = (samples ** 2).sum(-1, keepdim=True)
    for _ in range(num_iters):
        dists = -(sq - 2 * samples @ means.t() + (means ** 2).sum(-1)[None])
        buckets = dists.max(dim=-1).indices
        bins = torch.bincount(buckets, minlength=num_clusters)
        zero_mask = bins == 0
        bins_min_clamped = bins.masked_fill(zero_mask, 1)
        new_means = buckets.new_zeros(num_clusters, dim, dtype=dtype)
        new_means.scatter_add_(0, buckets[:, None].expand(-1, dim), samples)
        new_means = new_means / bins_min_clamped[..., None]
        means = torch.where(zero_mask[..., None], means, new_means)
    return means, bins


def build_encodec(bandwidth: float = 24.0):
    """The EnCodec 24 kHz architecture with fresh weights (load a state dict, or train it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # encodec uses the deprecated weight_norm
        from encodec import EncodecModel
        from encodec.quantization import core_vq

        if core_vq.kmeans is not kmeans:
            global ENCODEC_KMEANS
            ENCODEC_KMEANS = core_vq.kmeans  # the package's own, kept for comparison
            core_vq.kmeans = kmeans  # the codebooks' initialisation looks the function up here at call time

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


def load_codec(path: str | Path):
    """The codec written by the codec step (``musicdecomp.train.codec.prepare_codec``) (``results/codec/model.pt``), in eval mode, and its summary."""
    payload = load_torch(path, "a codec written by the codec step",
                         "run the codec step first (snakemake results/codec/model.pt)",
                         "delete it and run the codec step again")
    model = build_encodec(payload["bandwidth"])
    model.load_state_dict(payload.pop("state_dict"))
    return model.eval(), payload
