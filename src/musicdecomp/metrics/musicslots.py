"""MusicSlots' note discovery metrics over a dataset split (validation during training, the test evaluation)."""

from __future__ import annotations

import numpy as np
import torch

from musicdecomp.device import autocast
from musicdecomp.logs import progress
from musicdecomp.metrics.notes import note_metrics, oracle_slot_db
from musicdecomp.models.musicslots import MusicSlots


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
        m = note_metrics(b["notes"], model.slot_db(out), b["n_notes"], data.mask_db, model.amin, model.top_db)
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
