"""Train MusicSlots: MSE in dB between the chord and its slot mixture; select on validation mIoU.

The loop (Adam, warm-up x cosine, clipping, fp16 or bf16 autocast on CUDA, checkpoints, resuming, MLflow) is
``musicdecomp.train.loop``; this module supplies the batches, the loss and the validation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from musicdecomp.metrics.musicslots import evaluate
from musicdecomp.models.musicslots import build_model
from musicdecomp.train.loop import prepare, run_training
from musicdecomp.train.release import gate


def train_musicslots(cfg: dict, data_dir: str | Path, run_dir: str | Path, device: str = "auto",
                     tracking: dict | None = None, threads: int | None = None, stop_after: int | None = None,
                     time_limit: float | None = None, speed: dict | None = None, code: dict | None = None,
                     compute: dict | None = None) -> dict:
    """Train (or resume) one run. ``cfg``: {run_name, dataset, variant, seed, model, train}
    (musicdecomp.sweep.train_config); ``tracking``: {mlflow_uri, experiment} or None (metrics.jsonl only);
    ``speed``: {channels_last, cudnn_benchmark} (musicdecomp.train.loop); ``code``: what trains it (recorded in its
    checkpoints, see musicdecomp.train.loop.run_training); ``compute``: the job's decision (musicdecomp.train.release.gate;
    None: train)."""
    if compute is not None and (record := gate("train_musicslots", cfg, run_dir, compute, code)) is not None:
        return {"not_trained": record}
    tc = cfg["train"]
    dev, train, valid = prepare(cfg, data_dir, device, threads)
    model = build_model(cfg["model"], tuple(train.chord_db.shape[-2:])).to(dev)

    def sample(gen):
        return train.chord_db[torch.randint(len(train), (tc["batch_size"],), generator=gen, device=dev)]

    def loss(chord, gen):
        out = model(chord, generator=gen)
        return torch.nn.functional.mse_loss(out["recon"].float(), chord), {}

    def validate():
        v = evaluate(model, valid, dev, tc["amp"], tc["eval_batch_size"], tc["val_examples"])
        return {"score": v["miou"], "miou": v["miou"], "note_mse": v["note_mse"], "recon_mse": v["recon_mse"]}

    return run_training(cfg, tc, run_dir, model, dev, sample, loss, validate, tracking,
                        {"model": "musicslots", "dataset": cfg["dataset"], "variant": cfg["variant"],
                         "seed": str(cfg["seed"])}, stop_after, time_limit, speed, data_id=train.source_id,
                        code=code, device_auto=device == "auto")
