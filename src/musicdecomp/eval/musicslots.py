"""Evaluate a trained MusicSlots run on the test split: note MSE, mIoU, a figure of
chord -> slots -> matched ground-truth notes, and the same examples as audio."""

from __future__ import annotations

from pathlib import Path

import torch

from musicdecomp.data.datasets import load_split
from musicdecomp.data.jsb import midi_name
from musicdecomp.device import pick_device
from musicdecomp.eval.listen import dataset_audio_settings, write_decomposition_audio
from musicdecomp.io import atomic_path, write_json
from musicdecomp.logs import get_logger
from musicdecomp.metrics.musicslots import evaluate
from musicdecomp.metrics.notes import note_metrics
from musicdecomp.models.musicslots import build_model
from musicdecomp.train.checkpoints import load_best, load_checkpoint
from musicdecomp.train.tracking import log_to_training_run

log = get_logger("eval")


def evaluate_run(run_dir: str | Path, data_dir: str | Path, out_json: str | Path, out_png: str | Path | None = None,
                 device: str = "auto", tracking: dict | None = None, checkpoint: str | Path | None = None,
                 iters: int | None = None, limit: int | None = None, audio_dir: str | Path | None = None,
                 amp: str = "none") -> dict:
    """Test-set metrics of the run's ``best.pt``, or of ``checkpoint`` (e.g. ``ckpt/best.pt`` of a run that
    stopped at its time limit; the result then names that checkpoint). ``iters``: Slot Attention iterations at
    test time instead of the trained number (the official eval.py's ``--test_time_iter``); the result records
    it as ``test_iters``. ``limit``: only the first ``limit`` test examples (a quick check; ``examples`` in the
    result says how many). ``audio_dir``: WAV files of the figure's chords, reconstructions, slots and matched
    notes (Griffin-Lim from the mel spectrograms; see ``listen.py``). The test result also holds the metrics per
    chord size (``by_notes``) and those of the ground-truth notes as slots (``oracle``: the floor of note MSE).
    ``amp``: the precision on CUDA (``none``: float32, the default; ``bf16`` or ``fp16``: autocast), recorded
    as ``test_amp``; the same weights score differently in bf16 (the step-76,000 GPU checkpoint: note MSE 17.8
    in bf16 on the GPU, 17.45 in float32 on CPU)."""
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    if audio_dir is not None:  # before the evaluation, so that a dataset without its summary fails at once

        audio_settings = dataset_audio_settings(data_dir)
    dev = pick_device(device)
    test = load_split(data_dir / "test.pt", dev)
    state = load_best(run_dir) if checkpoint is None else load_checkpoint(checkpoint)
    cfg = state["config"]
    model = build_model(cfg["model"], tuple(test.chord_db.shape[-2:])).to(dev)
    model.load_state_dict(state["model"])
    if iters is not None:
        model.slot_attention.iters = iters
    res = evaluate(model, test, dev, amp, cfg["train"]["eval_batch_size"], limit=limit, seed=0,
                   bar=f"test {cfg['variant']}", detail=True)
    out = {"run_name": cfg["run_name"], "dataset": cfg["dataset"], "variant": cfg["variant"], "seed": cfg["seed"],
           "model": cfg["model"], "best_step": state["step"], "test_iters": model.slot_attention.iters,
           "test_amp": amp if dev.type == "cuda" else "none",
           **({} if checkpoint is None else {"checkpoint": str(checkpoint)}),
           "val": {k: v for k, v in state["val"].items() if k != "score"},
           "test": {"note_mse": res["note_mse"], "miou": res["miou"], "recon_mse": res["recon_mse"],
                    "examples": res["examples"], "by_notes": res["by_notes"], "oracle": res["oracle"]}}
    write_json(out_json, out)
    log.info("%s test: note MSE %.3f, mIoU %.4f (%d examples, best step %d, %d iterations)", cfg["run_name"],
             res["note_mse"], res["miou"], res["examples"], state["step"], model.slot_attention.iters)
    log.info("ground-truth notes as slots (the metrics' floor): note MSE %.3f, mIoU %.4f; by chord size: %s",
             res["oracle"]["note_mse"], res["oracle"]["miou"],
             ", ".join(f"{v} notes {d['note_mse']:.2f} / {d['miou']:.3f} (floor {d['oracle_note_mse']:.2f}; "
                       f"{d['examples']} examples)"
                       for v, d in res["by_notes"].items()))
    if out_png is not None or audio_dir is not None:
        examples = decompose_examples(model, test, dev)
    if out_png is not None:
        plot_decomposition(examples, out_png, cfg["run_name"])
    if audio_dir is not None:
        files = write_decomposition_audio(examples, audio_dir, *audio_settings)
        log.info("%d WAV files of %d test examples in %s", len(files), len(examples["chord"]), audio_dir)
    log_to_training_run(run_dir, tracking, {"test/note_mse": res["note_mse"], "test/miou": res["miou"]},
                        tuple(p for p in (out_png, audio_dir) if p is not None))
    return out


@torch.no_grad()
def decompose_examples(model, data, device, n: int = 3) -> dict:
    """The first ``n`` test chords through the model (on the CPU afterwards): chord, reconstruction, slots
    (dB), ground-truth notes, which note each slot is matched to, and a label per note."""
    model.eval()
    idx = torch.arange(min(n, len(data)), device=device)
    b = data.batch(idx)
    out = model(b["chord"], generator=torch.Generator(device=device).manual_seed(0))
    slot_db = model.slot_db(out)
    match = note_metrics(b["notes"], slot_db, b["n_notes"], data.mask_db, model.amin, model.top_db)["match"]
    model.train()
    note_labels = [[f"{midi_name(int(data.pitches[int(b['pitch'][r, v])]))} "
                    f"{data.program_names[int(b['instrument'][r, v])]}" for v in range(int(b["n_notes"][r]))]
                   for r in range(len(idx))]  # e.g. "A4 Flute"
    return {"index": idx.cpu(), "chord": b["chord"].cpu(), "recon": out["recon"].float().cpu(),
            "slot_db": slot_db.float().cpu(), "notes": b["notes"].cpu(), "note_labels": note_labels,
            "note_of_slot": [{int(s): v for v, s in enumerate(match[r]) if s >= 0} for r in range(len(idx))]}


def plot_decomposition(ex: dict, out_png, title: str) -> None:
    """Figure of ``decompose_examples``: per chord, the chord, its reconstruction and the slots (top row), and
    under each slot the note matched to it (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, k = len(ex["chord"]), ex["slot_db"].shape[1]
    cols = 2 + k
    fig, axes = plt.subplots(2 * n, cols, figsize=(1.4 * cols, 2.4 * n * 2), squeeze=False)
    kw = dict(origin="lower", aspect="auto", cmap="magma", vmin=-100, vmax=float(ex["chord"].max()))
    for r in range(n):
        top, bottom = axes[2 * r], axes[2 * r + 1]
        top[0].imshow(ex["chord"][r, 0].numpy(), **kw)
        top[0].set_title("chord", fontsize=7)
        top[1].imshow(ex["recon"][r, 0].numpy(), **kw)
        top[1].set_title("recon", fontsize=7)
        for s in range(k):
            top[2 + s].imshow(ex["slot_db"][r, s].numpy(), **kw)
            top[2 + s].set_title(f"slot {s}", fontsize=7)
            v = ex["note_of_slot"][r].get(s)
            if v is not None:
                bottom[2 + s].imshow(ex["notes"][r, v].numpy(), **kw)
                bottom[2 + s].set_title(ex["note_labels"][r][v], fontsize=6)
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
