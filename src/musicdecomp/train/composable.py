"""Train a composable-representations model on the cached codec codes of one stems subset.

``variant`` is a composition operator (``mean``, ``sum``, ``min``, ``max``): the decomposition model, whose N
encoders split the mixture latent into z_1..z_N and whose shared U-Net, run once per z_i, is composed and
trained with IADB against the mixture latent; or ``supervised``: the same U-Net generating each true stem's
latent from the mixture latent and the stem's index (the supervised reference point of the separation table).

The data are the split's cached codes decoded once into latents on the device (``models.codes.subset_latents``;
the codec is the codec step's ``model.pt``, or a codebooks file of its quantizer, which needs no encodec),
standardised as ``model.latent_norm`` says with statistics of the training split (written to
``latent_stats.json`` in the run folder), cropped to ``crop_frames`` at one random offset per batch, as the
released code. ``train.epochs`` sets the steps: epochs x (training chunks // batch size). The loop (AdamW,
constant learning rate, mixed precision on CUDA, checkpoints, resuming, MLflow) is ``musicdecomp.train.loop``;
the best model is selected by the IADB loss on fixed validation chunks, noise levels and noise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from musicdecomp.device import autocast, pick_device
from musicdecomp.errors import UserError
from musicdecomp.io import write_json
from musicdecomp.logs import get_logger
from musicdecomp.models.codes import codes_data_id, latent_decoder, subset_latents
from musicdecomp.models.composable import SUPERVISED, build_model
from musicdecomp.models.iadb import iadb_loss
from musicdecomp.train.loop import run_training
from musicdecomp.train.release import gate

log = get_logger("composable")
VALID_SEED = 12345  # the validation noise levels and noise: the same at every validation and in every run


def crop(latents: torch.Tensor, offset: torch.Tensor, frames: int) -> torch.Tensor:
    """latents (..., T) cropped to ``frames`` from ``offset`` (a 0-d tensor: no host sync on the GPU)."""
    return latents[..., offset + torch.arange(frames, device=latents.device)]


def composable_loss(model, mix: torch.Tensor, sources: torch.Tensor | None, variant: str,
                    generator: torch.Generator) -> torch.Tensor:
    """The IADB loss of a batch: mixture latents (B, C, T) (and for the supervised separator the sources
    (B, N, C, T)), already standardised and cropped."""
    if sources is None:
        z = model.encode(mix)
        return iadb_loss(lambda xa, a: model(xa, a, z), mix, variant=variant, generator=generator)
    b, n = sources.shape[:2]
    cond = mix.repeat_interleave(n, dim=0)
    index = torch.arange(n, device=mix.device).repeat(b)
    return iadb_loss(lambda xa, a: model(xa, a, cond, index), sources.reshape(b * n, *sources.shape[2:]),
                     variant=variant, generator=generator)


def train_composable(cfg: dict, codec_path: str | Path, codes_dir: str | Path, run_dir: str | Path,
                     device: str = "auto", tracking: dict | None = None, threads: int | None = None,
                     stop_after: int | None = None, time_limit: float | None = None, speed: dict | None = None,
                     code: dict | None = None, compute: dict | None = None) -> dict:
    """Train (or resume) one run. ``cfg``: {run_name, subset, variant, seed, classes, model, train}
    (musicdecomp.sweep.composable_config); the rest as ``musicdecomp.train.musicslots.train_musicslots``."""
    if compute is not None and (record := gate("train_composable", cfg, run_dir, compute, code, upstream=(
            codec_path, Path(codes_dir) / "train.pt"))) is not None:
        return {"not_trained": record}
    tc, mc = cfg["train"], cfg["model"]
    dev = pick_device(device)
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(cfg["seed"])
    decode, info = latent_decoder(codec_path)
    supervised = cfg["variant"] == SUPERVISED
    codes_dir = Path(codes_dir)
    train = subset_latents(decode, info, codes_dir / "train.pt", cfg["subset"], cfg["classes"], dev, supervised)
    valid = subset_latents(decode, info, codes_dir / "valid.pt", cfg["subset"], cfg["classes"], dev, supervised,
                           limit=tc["val_examples"])
    del decode
    frames, n = train["mix"].shape[-1], len(train["mix"])
    if frames < mc["crop_frames"]:
        raise UserError(f"composable.model.crop_frames = {mc['crop_frames']} exceeds the {frames} frames of a cached "
                        f"chunk; lower it")
    model = build_model(mc, cfg["variant"], len(cfg["classes"]), train["mix"].shape[1]).to(dev)
    stats = model.norm.fit(train["mix"])
    write_json(Path(run_dir) / "latent_stats.json", {"split": "train", "chunks": n, "mix": stats,
                                                     "latent_norm": mc["latent_norm"]})
    log.info("%s: %d training chunks, latent mean %.4g std %.4g (latent_norm %s)", cfg["run_name"], n,
             stats["mean"], stats["std"], mc["latent_norm"])
    steps = tc["epochs"] * max(1, n // tc["batch_size"])
    span = frames - mc["crop_frames"] + 1

    def sample(gen):
        return (torch.randint(n, (tc["batch_size"],), generator=gen, device=dev),
                torch.randint(span, (), generator=gen, device=dev))

    def loss(batch, gen):
        idx, offset = batch
        mix = model.norm(crop(train["mix"][idx], offset, mc["crop_frames"]))
        sources = model.norm(crop(train["sources"][idx], offset, mc["crop_frames"])) if supervised else None
        return composable_loss(model, mix, sources, tc["iadb_variant"], gen), {}

    def validate():
        gen = torch.Generator(device=dev).manual_seed(VALID_SEED)
        offset = torch.tensor(span // 2, device=dev)
        total, count = 0.0, 0
        for start in range(0, len(valid["mix"]), tc["eval_batch_size"]):
            sl = slice(start, start + tc["eval_batch_size"])
            mix = model.norm(crop(valid["mix"][sl], offset, mc["crop_frames"]))
            sources = model.norm(crop(valid["sources"][sl], offset, mc["crop_frames"])) if supervised else None
            with autocast(dev, tc["amp"]):
                value = composable_loss(model, mix, sources, tc["iadb_variant"], gen)
            total, count = total + float(value) * len(mix), count + len(mix)
        return {"score": -total / count, "iadb_loss": total / count}

    return run_training(cfg, {**tc, "steps": steps}, run_dir, model, dev, sample, loss, validate, tracking,
                        {"model": "composable", "subset": cfg["subset"], "variant": cfg["variant"],
                         "seed": str(cfg["seed"])}, stop_after, time_limit, speed,
                        data_id=codes_data_id(codes_dir, cfg["subset"]), code=code, device_auto=device == "auto")
