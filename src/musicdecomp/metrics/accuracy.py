"""Chord-level exact-match accuracies (the MusicSlots paper's note property prediction).

* ``pitch``: every note of the chord has the right pitch;
* ``instrument``: every note has the right instrument;
* ``chord``: both (every (pitch, instrument) pair right).

For per-note predictions (a probe on matched slots) these are direct. For a multi-label grid of
(pitch, instrument) pairs (baselines; a pair is predicted when its probability is >= 0.5): ``chord`` = the
predicted grid equals the true one; ``pitch`` = the predicted pitch set (any instrument) equals the true one;
``instrument`` = at every true pitch, the predicted instruments equal the true ones.
"""

from __future__ import annotations

import torch


def note_level(pred_pitch, pred_inst, pitch, inst) -> dict[str, float]:
    """(N, V) predicted and true class indices, -1 pads in the truth."""
    valid = pitch >= 0
    ok_p = ((pred_pitch == pitch) | ~valid).all(1)
    ok_i = ((pred_inst == inst) | ~valid).all(1)
    return {"pitch": ok_p.float().mean().item(), "instrument": ok_i.float().mean().item(),
            "chord": (ok_p & ok_i).float().mean().item()}


def grid_level(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """(N, P, I) logits and 0/1 targets."""
    pred = torch.sigmoid(logits.float()) >= 0.5
    true = target >= 0.5
    chord = (pred == true).flatten(1).all(1)
    pitch = (pred.any(-1) == true.any(-1)).all(1)
    rows = true.any(-1, keepdim=True)
    inst = ((pred == true) | ~rows).flatten(1).all(1)
    return {"pitch": pitch.float().mean().item(), "instrument": inst.float().mean().item(),
            "chord": chord.float().mean().item()}
