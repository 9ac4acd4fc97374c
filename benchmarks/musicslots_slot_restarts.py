"""How much of a trained MusicSlots model's test note MSE depends on the random slot initialisation.

Each test chord is decomposed ``--restarts`` times, each time with other draws of the initial slots
(mu + sigma * noise; the weights are fixed). The record holds, over the same chords:

* ``single_pass``: the metrics of each restart alone (each is the official protocol: one stochastic pass);
* ``select_by_recon``: per chord, the restart whose reconstruction of the chord is best. It uses nothing but
  the input, so it is a possible inference procedure (R forward passes), though not the paper's;
* ``select_by_note_mse``: per chord, the restart with the lowest note MSE. This one uses the ground truth, so it
  is only a bound: what a perfect choice among these R initialisations would reach.

If the bound is close to the single pass, the errors are systematic (the model decomposes these chords the same
wrong way from any initialisation); if it is far below, the errors come from unlucky initialisations.

    python benchmarks/musicslots_slot_restarts.py --run results/gpu_runs/none-t1-imp_true-k7 \
        --data results/data/jsb_multi --limit 512 --restarts 4 --out benchmarks/musicslots_slot_restarts_step76000.json
"""

from __future__ import annotations

import time

import numpy as np
from benchlib import checkpoint_parser, checkpoint_record, load_trained, save_record

from musicdecomp.metrics.musicslots import evaluate


def restart_metrics(model, data, device, amp: str, batch_size: int, limit: int, restarts: int,
                    seed: int = 0) -> dict:
    """Per chord and restart: note MSE, IoU and reconstruction MSE, arrays of shape (restarts, n), each restart
    the eval step's own pass with noise seed ``seed + r``; and the floor's mean (ground-truth notes as slots)."""
    runs = [evaluate(model, data, device, amp, batch_size, limit=limit, seed=seed + r, detail=r == 0,
                     per_example=True, bar=f"restart {r + 1} of {restarts}") for r in range(restarts)]
    stack = lambda key: np.stack([run["per_example"][key] for run in runs])  # noqa: E731
    return {"mse": stack("note_mse"), "iou": stack("miou"), "rec": stack("recon_mse"),
            "floor": runs[0]["oracle"]["note_mse"], "n": runs[0]["examples"]}


def summarise(m: dict) -> dict:
    """The record's figures from ``restart_metrics``."""
    cols = np.arange(m["n"])
    by_rec, by_mse = m["rec"].argmin(0), m["mse"].argmin(0)
    pick = lambda key, rows: float(m[key][rows, cols].mean())  # noqa: E731
    single = [{"restart": r, "note_mse": float(m["mse"][r].mean()), "miou": float(m["iou"][r].mean()),
               "recon_mse": float(m["rec"][r].mean())} for r in range(len(m["mse"]))]
    spread = m["mse"].max(0) - m["mse"].min(0)
    return {
        "floor_note_mse": float(np.mean(m["floor"])),
        "single_pass": single,
        "single_pass_mean": {k: float(np.mean([s[k] for s in single])) for k in ("note_mse", "miou", "recon_mse")},
        "select_by_recon": {"note_mse": pick("mse", by_rec), "miou": pick("iou", by_rec),
                            "recon_mse": pick("rec", by_rec)},
        "select_by_note_mse (ground truth: a bound)": {"note_mse": pick("mse", by_mse), "miou": pick("iou", by_mse)},
        "per_chord_note_mse_spread": {"median": float(np.median(spread)), "p90": float(np.quantile(spread, 0.9)),
                                      "share_above_10": float((spread > 10).mean())},
        "share_same_choice_recon_and_note_mse": float((by_rec == by_mse).mean()),
    }


def main() -> None:
    p = checkpoint_parser(__doc__)
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--iters", type=int, help="Slot Attention iterations at test time (default: as trained)")
    a = p.parse_args()
    if a.restarts < 2 or a.limit < 1:
        p.error("--restarts must be at least 2 and --limit at least 1")
    dev, state, test, model = load_trained(a)
    if a.iters is not None:
        model.slot_attention.iters = a.iters
    tc, t = state["config"]["train"], time.perf_counter()
    m = restart_metrics(model, test, dev, tc["amp"], tc["eval_batch_size"], a.limit, a.restarts)
    save_record(a.out, checkpoint_record(__doc__, a, state, dev, time.perf_counter() - t,
                                         test_iters=model.slot_attention.iters, examples=m["n"], restarts=a.restarts,
                                         **summarise(m)))


if __name__ == "__main__":
    main()
