"""Train the baselines: the autoencoder / VAE (reconstruction, selected on validation loss) and the
supervised CNN (multi-label pitch x instrument, selected on validation chord accuracy)."""

from __future__ import annotations

from pathlib import Path

import torch

from musicdecomp.device import autocast
from musicdecomp.metrics.accuracy import grid_level
from musicdecomp.models.baselines import VAE, SupervisedCNN, multilabel_loss, multilabel_targets
from musicdecomp.train.loop import prepare, run_training
from musicdecomp.train.release import gate


def build_baseline(cfg: dict, n_pitches: int, n_instruments: int, size=(128, 32)) -> torch.nn.Module:
    m = cfg["model"]
    if cfg["kind"] == "vae":
        return VAE(m["latent"], m["channels"], size)
    return SupervisedCNN(n_pitches, n_instruments, m["channels"], size)


@torch.no_grad()
def predict_grid(model: SupervisedCNN, data, device, amp: str, batch_size: int, limit: int | None = None):
    n = len(data) if limit is None else min(limit, len(data))
    logits, targets = [], []
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n), device=device)
        b = data.batch(idx)
        with autocast(device, amp):
            logits.append(model(b["chord"]).float())
        targets.append(multilabel_targets(b["pitch"], b["instrument"], len(data.pitches), len(data.programs)))
    return torch.cat(logits), torch.cat(targets)


@torch.no_grad()
def vae_loss(model: VAE, data, device, amp: str, batch_size: int, kld_weight: float, limit: int | None = None):
    n = len(data) if limit is None else min(limit, len(data))
    rec, kld = 0.0, 0.0
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n), device=device)
        chord = data.chord_db[idx]
        with autocast(device, amp):
            recon, k, _ = model(chord, sample=False)
        rec += torch.nn.functional.mse_loss(recon.float(), chord, reduction="sum").item() / chord[0].numel()
        kld += k.item() * len(idx)
    return rec / n, kld / n


def train_baseline(cfg: dict, data_dir: str | Path, run_dir: str | Path, device: str = "auto",
                   tracking: dict | None = None, threads: int | None = None, stop_after: int | None = None,
                   time_limit: float | None = None, speed: dict | None = None, code: dict | None = None,
                   compute: dict | None = None) -> dict:
    """``cfg``: {run_name, dataset, baseline, seed, kind (vae|cnn), kld_weight, model, train}; ``speed`` and
    ``code`` and ``compute`` as for MusicSlots (musicdecomp.train.musicslots)."""
    if compute is not None and (record := gate("train_baseline", cfg, run_dir, compute, code)) is not None:
        return {"not_trained": record}
    tc = cfg["train"]
    dev, train, valid = prepare(cfg, data_dir, device, threads)
    n_p, n_i = len(train.pitches), len(train.programs)
    model = build_baseline(cfg, n_p, n_i, tuple(train.chord_db.shape[-2:])).to(dev)
    w = cfg["kld_weight"] if cfg["kind"] == "vae" else 0.0

    def sample(gen):
        return torch.randint(len(train), (tc["batch_size"],), generator=gen, device=dev)

    if cfg["kind"] == "vae":
        def loss(idx, gen):
            chord = train.chord_db[idx]
            recon, kld, _ = model(chord, sample=w > 0, generator=gen)
            rec = torch.nn.functional.mse_loss(recon.float(), chord)
            return rec + w * kld, {"recon_mse": rec.detach(), "kld": kld.detach()}  # read at logging steps

        def validate():
            rec, kld = vae_loss(model, valid, dev, tc["amp"], tc["eval_batch_size"], w, tc["val_examples"])
            return {"score": -(rec + w * kld), "recon_mse": rec, "kld": kld}
    else:
        def loss(idx, gen):
            b = train.batch(idx)
            target = multilabel_targets(b["pitch"], b["instrument"], n_p, n_i)
            return multilabel_loss(model(b["chord"]), target), {}

        def validate():
            acc = grid_level(*predict_grid(model, valid, dev, tc["amp"], tc["eval_batch_size"], tc["val_examples"]))
            return {"score": acc["chord"], **{f"acc_{k}": v for k, v in acc.items()}}

    return run_training(cfg, tc, run_dir, model, dev, sample, loss, validate, tracking,
                        {"model": cfg["baseline"], "dataset": cfg["dataset"], "seed": str(cfg["seed"])},
                        stop_after, time_limit, speed, data_id=train.source_id, code=code,
                        device_auto=device == "auto")
