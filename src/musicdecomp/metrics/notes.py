"""Note discovery metrics of MusicSlots (official definitions, see docs/musicslots.md).

* **note MSE**: per example, the (notes x slots) matrix of per-pixel mean squared dB error between each
  ground-truth note and each slot, Hungarian-matched to *minimise*; matched errors averaged over the notes,
  then over examples (dB^2 per pixel).
* **mIoU**: the same with binary masks (dB >= -30), matched separately to *maximise* IoU (an empty union
  counts as IoU 0 with denominator 1), averaged over notes, then examples.

Unmatched slots (K > number of notes) are ignored. Matching uses the ground truth, as the official code does.

With fewer slots than notes (K < V), the notes left without a slot are missed, not dropped: each scores IoU 0 and
its MSE against silence, i.e. an empty slot, which sits at the slots' shared floor (the loudest slot's max -
top_db, at least 10*log10(amin); ``silence_db``). The matrices are padded with V - K such silent slots before
matching, so the notes missed are the ones whose miss costs least, and the averages run over all V notes. (The
official code matches K of the notes and averages over the notes it matched, so two perfect slots on a three-note
chord would score MSE 0 and IoU 1.) With K >= V nothing changes.

A perfect decomposition does not score note MSE 0: each note's ground truth floors at its own max - 80 dB, but
the slots of an example share one floor (the loudest slot's max - 80 dB), so a quiet note's quietest pixels
differ. ``oracle_slot_db`` gives the ground-truth notes as slots, whose scores are that floor.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from musicdecomp.data.mel import db_to_power, power_to_db


def cost_matrices(notes_db: torch.Tensor, slot_db: torch.Tensor, mask_db: float):
    """notes (B, V, F, T), slots (B, K, F, T) -> mse (B, V, K), iou (B, V, K) (float32, on the same device)."""
    notes_db, slot_db = notes_db.float(), slot_db.float()
    mse = ((notes_db[:, :, None] - slot_db[:, None]) ** 2).mean(dim=(-2, -1))
    gt = (notes_db >= mask_db).float().flatten(2)      # (B, V, P)
    pred = (slot_db >= mask_db).float().flatten(2)     # (B, K, P)
    inter = torch.einsum("bvp,bkp->bvk", gt, pred)
    union = gt.sum(-1)[:, :, None] + pred.sum(-1)[:, None, :] - inter
    iou = inter / torch.where(union > 0, union, torch.ones_like(union))
    return mse, iou


def silence_db(slot_db: torch.Tensor, amin: float = 1e-10, top_db: float | None = 80.0) -> torch.Tensor:
    """Slots (B, K, F, T) dB -> (B,): the dB of an empty slot of each example, the slots' shared floor (the loudest
    slot's max - ``top_db``, at least 10*log10(``amin``)), as ``power_to_db`` gives a silent slot."""
    floor = torch.full(slot_db.shape[:1], 10.0 * np.log10(amin), device=slot_db.device)
    if top_db is None:
        return floor
    return torch.maximum(slot_db.float().amax(dim=(1, 2, 3)) - top_db, floor)


def note_metrics(notes_db: torch.Tensor, slot_db: torch.Tensor, n_notes: torch.Tensor, mask_db: float = -30.0,
                 amin: float = 1e-10, top_db: float | None = 80.0):
    """Per-example note MSE and IoU, the MSE matching (slot index per note, -1 for padding and for a note missed
    because there are fewer slots than notes) and each note's error under it (a missed note's against silence, see
    the module docstring; ``amin`` and ``top_db`` are the slots' dB conversion).

    Returns dict of numpy arrays: mse (B,), iou (B,), match (B, V), note_mse (B, V; NaN for padding).
    """
    mse, iou = cost_matrices(notes_db, slot_db, mask_db)
    k = slot_db.shape[1]
    silent = None
    if int(n_notes.max()) > k:  # some notes must go without a slot: their error against an empty slot
        silent = ((notes_db.float() - silence_db(slot_db, amin, top_db)[:, None, None, None]) ** 2).mean(dim=(-2, -1))
        silent = silent.cpu().numpy()
    mse, iou, n_notes = mse.cpu().numpy(), iou.cpu().numpy(), n_notes.cpu().numpy()
    b, v, _ = mse.shape
    out_mse, out_iou = np.zeros(b), np.zeros(b)
    match = np.full((b, v), -1, dtype=np.int64)
    per_note = np.full((b, v), np.nan, dtype=mse.dtype)
    for i in range(b):
        n = int(n_notes[i])
        cost, overlap = mse[i, :n], iou[i, :n]
        if n > k:  # n - k silent slots (columns k...)
            cost = np.concatenate([cost, np.repeat(silent[i, :n, None], n - k, axis=1)], axis=1)
            overlap = np.concatenate([overlap, np.zeros((n, n - k), dtype=overlap.dtype)], axis=1)
        r, c = linear_sum_assignment(cost)
        per_note[i, r] = cost[r, c]
        out_mse[i] = per_note[i, r].mean()
        match[i, r] = np.where(c < k, c, -1)
        r, c = linear_sum_assignment(overlap, maximize=True)
        out_iou[i] = overlap[r, c].mean()
    return {"mse": out_mse, "iou": out_iou, "match": match, "note_mse": per_note}


def oracle_slot_db(notes_db: torch.Tensor, valid: torch.Tensor, num_slots: int, amin: float = 1e-10,
                   top_db: float | None = 80.0) -> torch.Tensor:
    """The ground-truth notes (B, V, F, T) dB as a perfect model's slots (B, max(K, V), F, T): each real note's power
    in one slot, padding notes and the other slots silent, in dB with the slots' shared floor (as
    ``MusicSlots.slot_db`` and the official evaluation). ``note_metrics`` of these against the notes is the metrics'
    floor. A model with fewer slots than notes (K < V) gets the floor of one with enough slots."""
    b, v, f, t = notes_db.shape
    power = torch.zeros(b, max(num_slots, v), f, t, device=notes_db.device)
    silent = torch.zeros((), device=power.device)
    power[:, :v] = torch.where(valid[..., None, None], db_to_power(notes_db.float()), silent)
    return power_to_db(power, amin, top_db, dims=(-3, -2, -1))
