"""Train MusicSlots: MSE in dB between the chord and its slot mixture; select on validation mIoU.

The loop (Adam, warm-up x cosine, clipping, fp16 or bf16 autocast on CUDA, checkpoints, resuming, MLflow) is
``musicdecomp.train.loop``; this module supplies the batches, the loss and the validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from musicdecomp.eval.metrics import note_metrics, oracle_slot_db
from musicdecomp.logs import progress
from musicdecomp.models.musicslots import MusicSlots
from musicdecomp.pipeline import STEPS
from musicdecomp.train.loop import autocast, pick_device, prepare, run_training

__all__ = ["build_model", "evaluate", "train_musicslots", "pick_device", "autocast"]


def build_model(model_cfg: dict, size: tuple[int, int]) -> MusicSlots:
    return MusicSlots(size=size, **model_cfg)


@torch.no_grad()
def evaluate(model: MusicSlots, data, device, amp: str, batch_size: int, limit: int | None = None,
             seed: int = 0, keep_slots: bool = False, bar: str | None = None, detail: bool = False,
             per_example: bool = False) -> dict:
    """Note MSE / mIoU (and the reconstruction MSE) over ``data`` (its first ``limit`` examples).

    With ``keep_slots``, also the slot vectors (N, K, D) and the MSE matching of notes to slots (N, V).
    ``bar``: show a progress bar with this label (a test evaluation on CPU takes minutes).
    With ``detail``, also ``by_notes`` (the metrics per chord size) and ``oracle`` (the metrics of the
    ground-truth notes as slots: the floor a perfect decomposition reaches, see ``oracle_slot_db``).
    With ``per_example``, also ``per_example``: {note_mse, miou, recon_mse} arrays of shape (N,).
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(data) if limit is None else min(limit, len(data))
    mse, iou, rec, matches, slots, sizes, oracle_mse, oracle_iou = [], [], [], [], [], [], [], []
    starts = range(0, n, batch_size)
    for start in starts if bar is None else progress(starts, desc=bar, unit="batch"):
        idx = torch.arange(start, min(start + batch_size, n), device=device)
        b = data.batch(idx)
        with autocast(device, amp):
            out = model(b["chord"], generator=gen)
        rec.append(((out["recon"] - b["chord"]) ** 2).mean(dim=(1, 2, 3)).cpu())
        m = note_metrics(b["notes"], model.slot_db(out), b["n_notes"], data.mask_db)
        mse.append(m["mse"])
        iou.append(m["iou"])
        if keep_slots:
            matches.append(m["match"])
            slots.append(out["slots"].float().cpu())
        if detail:
            sizes.append(b["n_notes"].cpu().numpy())
            o = note_metrics(b["notes"], oracle_slot_db(b["notes"], b["valid"], model.num_slots, model.amin,
                                                        model.top_db), b["n_notes"], data.mask_db)
            oracle_mse.append(o["mse"])
            oracle_iou.append(o["iou"])
    model.train(was_training)
    mse, iou, rec = np.concatenate(mse), np.concatenate(iou), torch.cat(rec)
    res = {"note_mse": float(mse.mean()), "miou": float(iou.mean()), "recon_mse": float(rec.mean()), "examples": n}
    if per_example:
        res["per_example"] = {"note_mse": mse, "miou": iou, "recon_mse": rec.numpy()}
    if detail:
        sizes, oracle_mse = np.concatenate(sizes), np.concatenate(oracle_mse)
        res["by_notes"] = {str(v): {"examples": int((sizes == v).sum()), "note_mse": float(mse[sizes == v].mean()),
                                    "miou": float(iou[sizes == v].mean()),
                                    "oracle_note_mse": float(oracle_mse[sizes == v].mean())} for v in np.unique(sizes)}
        res["oracle"] = {"note_mse": float(oracle_mse.mean()), "miou": float(np.concatenate(oracle_iou).mean())}
    if keep_slots:
        res["match"] = np.concatenate(matches)
        res["slots"] = torch.cat(slots)
    return res


def train_musicslots(cfg: dict, data_dir: str | Path, run_dir: str | Path, device: str = "auto",
                     tracking: dict | None = None, threads: int | None = None, stop_after: int | None = None,
                     time_limit: float | None = None, speed: dict | None = None) -> dict:
    """Train (or resume) one run. ``cfg``: {run_name, dataset, variant, seed, model, train}
    (musicdecomp.sweep.train_config); ``tracking``: {mlflow_uri, experiment} or None (metrics.jsonl only);
    ``speed``: {channels_last, cudnn_benchmark} (musicdecomp.train.loop)."""
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
                        code=STEPS["train_musicslots"].code_id())
