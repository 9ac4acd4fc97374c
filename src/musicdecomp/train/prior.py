"""Train the recomposition prior: masked IADB over the latents z that a trained decomposition run's frozen encoder
gives the training chunks (the paper's §3.2, Algorithm 1; ``musicdecomp.models.prior``).

Each batch takes training chunks' mixture latents at one random crop offset (as the decomposition training), z from
the frozen encoder, and masks drawn with ``p_mask`` (1.0: the unconditional-only model of Table 4). The latents'
standardisation is fitted on z of the training chunks (centre crops). The loop is ``musicdecomp.train.loop``; the
best model is selected by the loss on fixed validation chunks, masks, noise levels and noise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from musicdecomp.device import autocast, pick_device
from musicdecomp.errors import UserError
from musicdecomp.io import sha256_of, write_json
from musicdecomp.logs import get_logger
from musicdecomp.models.codes import codes_data_id, latent_decoder, subset_latents
from musicdecomp.models.composable import build_model
from musicdecomp.models.prior import build_prior, sample_masks
from musicdecomp.train.checkpoints import load_best
from musicdecomp.train.composable import VALID_SEED, crop
from musicdecomp.train.loop import run_training
from musicdecomp.train.release import gate

log = get_logger("prior")


def load_decomposition(run_dir: str | Path, device: torch.device):
    """A trained decomposition run's model (frozen, eval mode) and its configuration."""
    best = load_best(run_dir)
    cfg = best["config"]
    model = build_model(cfg["model"], cfg["variant"], len(cfg["classes"])).to(device)
    model.load_state_dict(best["model"])
    model.eval().requires_grad_(False)
    return model, cfg


def prior_from_config(cfg: dict, n_latents: int):
    """The prior of a run's ``prior`` settings: the released prior U-Net with the levels of ``unet``."""
    unet = {**cfg["unet"], "channels": [n_latents, *cfg["unet"]["channels"]]}
    return build_prior({"variant": cfg["variant"], "loss_on": cfg["loss_on"], "latent_norm": cfg["latent_norm"],
                        "unet": unet}, n_latents)


@torch.no_grad()
def encode(model, mix: torch.Tensor, offset: torch.Tensor, frames: int) -> torch.Tensor:
    """z (B, N, 1, frames) of mixture latents (B, C, T) cropped at ``offset``."""
    return model.encode(model.norm(crop(mix, offset, frames)))


def train_prior(cfg: dict, decomposition_dir: str | Path, codec_path: str | Path, codes_dir: str | Path,
                run_dir: str | Path, device: str = "auto", tracking: dict | None = None, threads: int | None = None,
                stop_after: int | None = None, time_limit: float | None = None, speed: dict | None = None,
                code: dict | None = None, compute: dict | None = None) -> dict:
    """Train (or resume) one prior. ``cfg``: {run_name, subset, p_mask, seed, classes, decomposition, prior, train}
    (musicdecomp.sweep.prior_config); ``decomposition_dir``: the trained decomposition run whose encoder it models."""
    if compute is not None and (record := gate("train_prior", cfg, run_dir, compute, code, upstream=(
            Path(decomposition_dir) / "best.pt", codec_path, Path(codes_dir) / "train.pt"))) is not None:
        return {"not_trained": record}
    pc, tc = cfg["prior"], cfg["train"]
    dev = pick_device(device)
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(cfg["seed"])
    model, dcfg = load_decomposition(decomposition_dir, dev)
    if dcfg["classes"] != cfg["classes"] or dcfg["variant"] != cfg["decomposition"]:
        raise UserError(f"{decomposition_dir} is a {dcfg['variant']} run on {dcfg['classes']}, not the "
                        f"{cfg['decomposition']} run on {cfg['classes']} this prior models; train that run first")
    decode, info = latent_decoder(codec_path)
    codes_dir = Path(codes_dir)
    train = subset_latents(decode, info, codes_dir / "train.pt", cfg["subset"], cfg["classes"], dev)["mix"]
    valid = subset_latents(decode, info, codes_dir / "valid.pt", cfg["subset"], cfg["classes"], dev,
                           limit=tc["val_examples"])["mix"]
    frames, n, n_latents = dcfg["model"]["crop_frames"], len(train), len(cfg["classes"])
    span = train.shape[-1] - frames + 1
    centre = torch.tensor(span // 2, device=dev)
    prior = prior_from_config(pc, n_latents).to(dev)
    stats = prior.fit_norm(torch.cat([encode(model, train[i:i + 64], centre, frames) for i in range(0, n, 64)]))
    write_json(Path(run_dir) / "latent_stats.json", {"split": "train", "chunks": n, "z": stats,
                                                     "latent_norm": pc["latent_norm"]})
    steps = tc["epochs"] * max(1, n // tc["batch_size"])

    def sample(gen):
        return (torch.randint(n, (tc["batch_size"],), generator=gen, device=dev),
                torch.randint(span, (), generator=gen, device=dev))

    def loss(batch, gen):
        idx, offset = batch
        z = encode(model, train[idx], offset, frames)
        masks = sample_masks(len(idx), n_latents, cfg["p_mask"], gen, scheme=pc["mask_scheme"], device=dev)
        return prior.loss(z, masks, gen), {}

    def validate():
        gen = torch.Generator(device=dev).manual_seed(VALID_SEED)
        total, count = 0.0, 0
        for start in range(0, len(valid), tc["eval_batch_size"]):
            z = encode(model, valid[start:start + tc["eval_batch_size"]], centre, frames)
            masks = sample_masks(len(z), n_latents, cfg["p_mask"], gen, scheme=pc["mask_scheme"], device=dev)
            with autocast(dev, tc["amp"]):
                value = prior.loss(z, masks, gen)
            total, count = total + float(value) * len(z), count + len(z)
        return {"score": -total / count, "iadb_loss": total / count}

    return run_training(cfg, {**tc, "steps": steps}, run_dir, prior, dev, sample, loss, validate, tracking,
                        {"model": "prior", "subset": cfg["subset"], "p_mask": str(cfg["p_mask"]),
                         "seed": str(cfg["seed"])}, stop_after, time_limit, speed,
                        data_id=prior_data_id(codes_dir, cfg["subset"], decomposition_dir), code=code,
                        device_auto=device == "auto")


def prior_data_id(codes_dir: str | Path, subset: str, decomposition_dir: str | Path) -> str:
    """What a prior trains on: the subset's codes and the decomposition model whose encoder gives z (a prior of
    another encoder is not continued)."""
    return f"{codes_data_id(codes_dir, subset)}-{sha256_of(Path(decomposition_dir) / 'best.pt')[:8]}"
