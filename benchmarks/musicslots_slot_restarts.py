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

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchlib import device_name

from musicdecomp.data.datasets import load_split
from musicdecomp.eval.metrics import note_metrics, oracle_slot_db
from musicdecomp.logs import progress
from musicdecomp.train.loop import autocast, load_best, load_checkpoint, pick_device
from musicdecomp.train.musicslots import build_model


@torch.no_grad()
def restart_metrics(model, data, device, amp: str, batch_size: int, limit: int, restarts: int,
                    seed: int = 0) -> dict:
    """Per chord and restart: note MSE, IoU and reconstruction MSE, arrays of shape (restarts, n); and the
    floor (ground-truth notes as slots) per chord."""
    model.eval()
    gens = [torch.Generator(device=device).manual_seed(seed + r) for r in range(restarts)]
    n = min(limit, len(data))
    mse, iou, rec = ([[] for _ in range(restarts)] for _ in range(3))
    floor = []
    for start in progress(range(0, n, batch_size), desc=f"{restarts} restarts", unit="batch"):
        b = data.batch(torch.arange(start, min(start + batch_size, n), device=device))
        for r, gen in enumerate(gens):
            with autocast(device, amp):
                out = model(b["chord"], generator=gen)
            rec[r].append(((out["recon"].float() - b["chord"]) ** 2).mean(dim=(1, 2, 3)).cpu().numpy())
            m = note_metrics(b["notes"], model.slot_db(out), b["n_notes"], data.mask_db)
            mse[r].append(m["mse"])
            iou[r].append(m["iou"])
        o = note_metrics(b["notes"], oracle_slot_db(b["notes"], b["valid"], model.num_slots, model.amin,
                                                    model.top_db), b["n_notes"], data.mask_db)
        floor.append(o["mse"])
    stack = lambda xs: np.stack([np.concatenate(x) for x in xs])  # noqa: E731
    return {"mse": stack(mse), "iou": stack(iou), "rec": stack(rec), "floor": np.concatenate(floor), "n": n}


def summarise(m: dict) -> dict:
    """The record's figures from ``restart_metrics``."""
    cols = np.arange(m["n"])
    by_rec, by_mse = m["rec"].argmin(0), m["mse"].argmin(0)
    pick = lambda key, rows: float(m[key][rows, cols].mean())  # noqa: E731
    single = [{"restart": r, "note_mse": float(m["mse"][r].mean()), "miou": float(m["iou"][r].mean()),
               "recon_mse": float(m["rec"][r].mean())} for r in range(len(m["mse"]))]
    spread = m["mse"].max(0) - m["mse"].min(0)
    return {
        "floor_note_mse": float(m["floor"].mean()),
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="training run folder (its best.pt, or --checkpoint)")
    p.add_argument("--checkpoint", help="a checkpoint file instead of the run's best.pt")
    p.add_argument("--data", required=True, help="dataset folder holding test.pt")
    p.add_argument("--limit", type=int, default=512, help="first N test chords")
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--iters", type=int, help="Slot Attention iterations at test time (default: as trained)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="JSON record to write")
    a = p.parse_args()
    if a.restarts < 2 or a.limit < 1:
        p.error("--restarts must be at least 2 and --limit at least 1")
    dev = pick_device(a.device)
    state = load_best(a.run) if a.checkpoint is None else load_checkpoint(a.checkpoint)
    cfg = state["config"]
    test = load_split(Path(a.data) / "test.pt", dev)
    model = build_model(cfg["model"], tuple(test.chord_db.shape[-2:])).to(dev)
    model.load_state_dict(state["model"])
    if a.iters is not None:
        model.slot_attention.iters = a.iters
    t = time.perf_counter()
    m = restart_metrics(model, test, dev, cfg["train"]["amp"], cfg["train"]["eval_batch_size"], a.limit, a.restarts)
    record = {"what": __doc__.splitlines()[0], "run": str(a.run), "variant": cfg["variant"],
              "checkpoint": a.checkpoint or "best.pt", "step": state["step"], "test_iters": model.slot_attention.iters,
              "examples": m["n"], "restarts": a.restarts,
              "device": device_name(dev) + (", float32" if dev.type == "cpu" else f", {cfg['train']['amp']}"),
              "seconds": round(time.perf_counter() - t),
              "date": time.strftime("%Y-%m-%d"), **summarise(m)}
    Path(a.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
