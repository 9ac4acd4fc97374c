"""Evaluate a trained MusicSlots run on the test split: note MSE, mIoU, and a figure of
chord -> slots -> matched ground-truth notes."""

from __future__ import annotations

from pathlib import Path

import torch

from musicdecomp.data.datasets import load_split
from musicdecomp.io import atomic_path, write_json
from musicdecomp.logs import get_logger
from musicdecomp.train.loop import load_best, load_checkpoint
from musicdecomp.train.musicslots import build_model, evaluate, pick_device
from musicdecomp.train.tracking import log_to_training_run

log = get_logger("eval")


def evaluate_run(run_dir: str | Path, data_dir: str | Path, out_json: str | Path, out_png: str | Path | None = None,
                 device: str = "auto", tracking: dict | None = None, checkpoint: str | Path | None = None,
                 iters: int | None = None, limit: int | None = None) -> dict:
    """Test-set metrics of the run's ``best.pt``, or of ``checkpoint`` (e.g. ``ckpt/best.pt`` of a run that
    stopped at its time limit; the result then names that checkpoint). ``iters``: Slot Attention iterations at
    test time instead of the trained number (the official eval.py's ``--test_time_iter``); the result records
    it as ``test_iters``. ``limit``: only the first ``limit`` test examples (a quick check; ``examples`` in the
    result says how many)."""
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    dev = pick_device(device)
    test = load_split(data_dir / "test.pt", dev)
    state = load_best(run_dir) if checkpoint is None else load_checkpoint(checkpoint)
    cfg = state["config"]
    model = build_model(cfg["model"], tuple(test.chord_db.shape[-2:])).to(dev)
    model.load_state_dict(state["model"])
    if iters is not None:
        model.slot_attention.iters = iters
    res = evaluate(model, test, dev, cfg["train"]["amp"], cfg["train"]["eval_batch_size"], limit=limit, seed=0,
                   bar=f"test {cfg['variant']}")
    out = {"run_name": cfg["run_name"], "dataset": cfg["dataset"], "variant": cfg["variant"], "seed": cfg["seed"],
           "model": cfg["model"], "best_step": state["step"], "test_iters": model.slot_attention.iters,
           **({} if checkpoint is None else {"checkpoint": str(checkpoint)}),
           "val": {k: v for k, v in state["val"].items() if k != "score"},
           "test": {"note_mse": res["note_mse"], "miou": res["miou"], "recon_mse": res["recon_mse"],
                    "examples": res["examples"]}}
    write_json(out_json, out)
    log.info("%s test: note MSE %.3f, mIoU %.4f (%d examples, best step %d, %d iterations)", cfg["run_name"],
             res["note_mse"], res["miou"], res["examples"], state["step"], model.slot_attention.iters)
    if out_png is not None:
        plot_decomposition(model, test, dev, out_png, cfg["run_name"])
    log_to_training_run(run_dir, tracking, {"test/note_mse": res["note_mse"], "test/miou": res["miou"]},
                        () if out_png is None else (out_png,))
    return out


@torch.no_grad()
def plot_decomposition(model, data, device, out_png, title: str, n: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from musicdecomp.eval.metrics import note_metrics

    model.eval()
    idx = torch.arange(min(n, len(data)), device=device)
    b = data.batch(idx)
    out = model(b["chord"], generator=torch.Generator(device=device).manual_seed(0))
    slot_db = model.slot_db(out)
    match = note_metrics(b["notes"], slot_db, b["n_notes"], data.mask_db)["match"]
    k = slot_db.shape[1]
    cols = 2 + k
    fig, axes = plt.subplots(2 * len(idx), cols, figsize=(1.4 * cols, 2.4 * len(idx) * 2), squeeze=False)
    kw = dict(origin="lower", aspect="auto", cmap="magma", vmin=-100, vmax=float(b["chord"].max()))
    for r in range(len(idx)):
        top, bottom = axes[2 * r], axes[2 * r + 1]
        top[0].imshow(b["chord"][r, 0].cpu().numpy(), **kw)
        top[0].set_title("chord", fontsize=7)
        top[1].imshow(out["recon"][r, 0].float().cpu().numpy(), **kw)
        top[1].set_title("recon", fontsize=7)
        note_of_slot = {int(s): v for v, s in enumerate(match[r]) if s >= 0}
        for s in range(k):
            top[2 + s].imshow(slot_db[r, s].float().cpu().numpy(), **kw)
            top[2 + s].set_title(f"slot {s}", fontsize=7)
            if s in note_of_slot:
                v = note_of_slot[s]
                bottom[2 + s].imshow(b["notes"][r, v].cpu().numpy(), **kw)
                bottom[2 + s].set_title(f"note {data.pitches[int(b['pitch'][r, v])]}", fontsize=7)
        for ax in list(top) + list(bottom):
            ax.set_xticks([])
            ax.set_yticks([])
            if not ax.images:
                ax.axis("off")
    fig.suptitle(f"{title}: test chords, slots (top) and the notes matched to them (bottom)", fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    model.train()
