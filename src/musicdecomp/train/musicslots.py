"""Train MusicSlots: MSE in dB between the chord and its slot mixture; select on validation mIoU.

Resumable: rerunning the same command continues from ``<run>/ckpt/last.pt`` (saved every
``checkpoint_every`` steps and at least every ``checkpoint_minutes``), restoring the model, the optimiser and
the random streams, so an interrupted run ends bit-identical to an uninterrupted one on the same device.

Run folder: ``best.pt`` (best validation mIoU: model weights, config, step), ``train.json`` (summary:
steps, best step and metrics, throughput, device), ``config.json`` (the resolved config),
``metrics.jsonl`` (every logged metric), ``curves.png``; ``ckpt/last.pt`` for resuming.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from musicdecomp.data.datasets import load_split
from musicdecomp.errors import UserError
from musicdecomp.eval.metrics import note_metrics
from musicdecomp.io import atomic_path, copy_file, write_json
from musicdecomp.logs import get_logger
from musicdecomp.models.musicslots import MusicSlots
from musicdecomp.train.schedule import learning_rate
from musicdecomp.train.tracking import Tracker

log = get_logger("train")


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {requested!r} was asked for but CUDA is not available; use device: auto or cpu")
    return torch.device(requested)


def build_model(model_cfg: dict, size: tuple[int, int]) -> MusicSlots:
    return MusicSlots(size=size, **model_cfg)


def autocast(device: torch.device, amp: str):
    if device.type == "cuda" and amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def evaluate(model: MusicSlots, data, device, amp: str, batch_size: int, limit: int | None = None,
             seed: int = 0, keep_slots: bool = False) -> dict:
    """Note MSE / mIoU (and the reconstruction MSE) over ``data`` (first ``limit`` examples)."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(data) if limit is None else min(limit, len(data))
    mse, iou, rec, matches, slots = [], [], [], [], []
    for start in range(0, n, batch_size):
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
    model.train()
    res = {"note_mse": float(np.concatenate(mse).mean()), "miou": float(np.concatenate(iou).mean()),
           "recon_mse": float(torch.cat(rec).mean()), "examples": n,
           "note_mse_per_example": np.concatenate(mse), "iou_per_example": np.concatenate(iou)}
    if keep_slots:
        res["match"] = np.concatenate(matches)
        res["slots"] = torch.cat(slots)
    return res


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_musicslots(cfg: dict, data_dir: str | Path, run_dir: str | Path, device: str = "auto",
                     tracking: dict | None = None, threads: int | None = None, stop_after: int | None = None) -> dict:
    """Train (or resume) one MusicSlots run. ``cfg``: {run_name, dataset, variant, seed, model, train}
    (musicdecomp.sweep.train_config); ``tracking``: {mlflow_uri, experiment} or None (metrics.jsonl only).

    ``stop_after`` ends this call after that many steps in total (as if killed right after a checkpoint);
    for tests of resuming.
    """
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    tc, mc = cfg["train"], cfg["model"]
    dev = pick_device(device)
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(cfg["seed"])
    train = load_split(data_dir / "train.pt", dev)
    valid = load_split(data_dir / "valid.pt", dev)
    size = tuple(train.chord_db.shape[-2:])
    model = build_model(mc, size).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=tc["lr"])
    data_gen = torch.Generator(device=dev).manual_seed(cfg["seed"])
    noise_gen = torch.Generator(device=dev).manual_seed(cfg["seed"] + 1)
    ckpt_path = run_dir / "ckpt" / "last.pt"
    # the best model is kept beside the resume checkpoint and published as best.pt when training ends
    # (a workflow manager deletes declared outputs before rerunning a job; ckpt/ survives)
    best_path = run_dir / "ckpt" / "best.pt"
    step, best, history_best_step, mlflow_run_id, elapsed = 0, -1.0, -1, None, 0.0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["config"] != cfg:
            raise UserError(f"{ckpt_path} was made with another configuration; delete {run_dir} to start over "
                            f"(or restore the parameters it was made with)")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        data_gen.set_state(state["data_gen"])
        noise_gen.set_state(state["noise_gen"])
        torch.set_rng_state(state["torch_rng"])
        step, best, history_best_step = state["step"], state["best_miou"], state["best_step"]
        mlflow_run_id, elapsed = state.get("mlflow_run_id"), state.get("elapsed", 0.0)
        log.info("resumed %s from step %d (best val mIoU %.4f at step %d)", cfg["run_name"], step, best,
                 history_best_step)
    tracker = Tracker(run_dir, tracking, cfg["run_name"], cfg,
                      {"dataset": cfg["dataset"], "variant": cfg.get("variant", ""), "seed": str(cfg["seed"])},
                      resume_step=step, mlflow_run_id=mlflow_run_id)
    write_json(run_dir / "config.json", cfg)

    def checkpoint():
        _save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "config": cfg,
            "data_gen": data_gen.get_state(), "noise_gen": noise_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "best_miou": best, "best_step": history_best_step, "mlflow_run_id": tracker.run_id,
            "elapsed": elapsed + time.perf_counter() - t_start})

    t_start = time.perf_counter()
    t_ckpt = t_start
    steps_done_here = 0
    model.train()
    status = "FINISHED"
    try:
        while step < tc["steps"]:
            lr = learning_rate(step, tc["lr"], tc["warmup_steps"], tc["cosine_steps"])
            for group in opt.param_groups:
                group["lr"] = lr
            idx = torch.randint(len(train), (tc["batch_size"],), generator=data_gen, device=dev)
            chord = train.chord_db[idx]
            with autocast(dev, tc["amp"]):
                out = model(chord, generator=noise_gen)
            loss = torch.nn.functional.mse_loss(out["recon"].float(), chord)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
            opt.step()
            step += 1
            steps_done_here += 1
            if not torch.isfinite(loss):
                raise UserError(f"training diverged at step {step} (loss {loss.item()}); lower musicslots.train.lr "
                                f"or check the data")
            if step % tc["log_every"] == 0 or step == tc["steps"]:
                tracker.log({"train/loss": loss.item(), "train/grad_norm": float(grad_norm), "train/lr": lr}, step)
            if step % tc["eval_every"] == 0 or step == tc["steps"]:
                val = evaluate(model, valid, dev, tc["amp"], tc["eval_batch_size"], tc["val_examples"])
                tracker.log({"val/note_mse": val["note_mse"], "val/miou": val["miou"],
                             "val/recon_mse": val["recon_mse"]}, step)
                if val["miou"] > best:
                    best, history_best_step = val["miou"], step
                    _save_checkpoint(best_path, {"model": model.state_dict(), "config": cfg,
                                                           "step": step, "val": {k: val[k] for k in
                                                                                 ("note_mse", "miou", "recon_mse")}})
                log.info("step %d loss %.3f val note MSE %.3f mIoU %.4f (best %.4f @ %d)", step, loss.item(),
                         val["note_mse"], val["miou"], best, history_best_step)
            if (step % tc["checkpoint_every"] == 0 or step == tc["steps"]
                    or time.perf_counter() - t_ckpt > 60 * tc["checkpoint_minutes"]):
                checkpoint()
                t_ckpt = time.perf_counter()
            if stop_after is not None and step >= stop_after and step < tc["steps"]:
                checkpoint()
                status = "KILLED"
                tracker.close(status)
                return {"stopped_at": step}
    except BaseException:
        status = "FAILED"
        tracker.close(status)
        raise
    wall = elapsed + time.perf_counter() - t_start
    summary = {"run_name": cfg["run_name"], "steps": step, "best_step": history_best_step, "best_val_miou": best,
               "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
               "wall_seconds": wall, "steps_per_second": steps_done_here / max(time.perf_counter() - t_start, 1e-9),
               "parameters": sum(p.numel() for p in model.parameters()), "mlflow_run_id": tracker.run_id}
    if not best_path.exists():
        raise UserError(f"{best_path} is missing although training finished; delete {run_dir} and train again")
    copy_file(best_path, run_dir / "best.pt")
    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", cfg["run_name"])
    tracker.artifact(run_dir / "curves.png")
    tracker.artifact(run_dir / "best.pt")
    write_json(run_dir / "train.json", summary)
    tracker.close(status)
    return summary


def plot_curves(metrics_jsonl: Path, out_png: Path, title: str) -> None:
    """Training loss and validation mIoU / note MSE against steps."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(l) for l in Path(metrics_jsonl).read_text().splitlines() if l]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for ax, key in zip(axes, ("train/loss", "val/note_mse", "val/miou")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
