"""Note-property probes on frozen models, and the supervised CNN's test accuracies (Table 2).

* MusicSlots: the frozen model's slots; each ground-truth note is matched to a slot by the note-MSE Hungarian
  matching (ground truth used, as the official code); linear heads for pitch and instrument on the matched
  128-d slot vectors, cross-entropy, Adam, final weights tested (``probe.train``).
* AE / VAE: a linear multi-label classifier of (pitch, instrument) pairs on the frozen mean latent mu.
* Supervised CNN: its own predictions on the test split.

Each writes ``<out>.json`` with test accuracies (eval.accuracy) and trains probes in ``<run>/probe/``
with the shared resumable loop.
"""

from __future__ import annotations

from pathlib import Path

import torch

from musicdecomp.data import SPLITS
from musicdecomp.data.datasets import load_split
from musicdecomp.device import autocast, pick_device
from musicdecomp.io import sha256_of, write_json
from musicdecomp.logs import get_logger
from musicdecomp.metrics.accuracy import grid_level, note_level
from musicdecomp.metrics.musicslots import evaluate
from musicdecomp.models.baselines import NoteProbe, multilabel_loss, multilabel_targets
from musicdecomp.models.musicslots import build_model
from musicdecomp.sweep import probe_train_config
from musicdecomp.train.adopt import staged
from musicdecomp.train.baselines import build_baseline, predict_grid
from musicdecomp.train.checkpoints import load_best
from musicdecomp.train.loop import run_training
from musicdecomp.train.tracking import log_to_training_run

log = get_logger("probes")


@torch.no_grad()
def musicslots_features(model, data, device, amp: str, batch_size: int) -> dict[str, torch.Tensor]:
    """Matched slot vectors per note: feats (N, V, D) (zeros at pads), pitch, instrument (N, V)."""
    res = evaluate(model, data, device, amp, batch_size, keep_slots=True)
    slots, match = res["slots"], torch.from_numpy(res["match"])
    feats = torch.gather(slots, 1, match.clamp(min=0)[..., None].expand(-1, -1, slots.shape[-1]))
    feats = feats * (match >= 0)[..., None]
    return {"feats": feats.to(device), "pitch": data.pitch, "instrument": data.instrument}


@torch.no_grad()
def vae_features(model, data, device, amp: str, batch_size: int) -> dict[str, torch.Tensor]:
    mus = []
    for start in range(0, len(data), batch_size):
        with autocast(device, amp):
            mus.append(model.encode(data.chord_db[start:start + batch_size])[0].float())
    grid = multilabel_targets(data.pitch, data.instrument, len(data.pitches), len(data.programs))
    return {"feats": torch.cat(mus), "grid": grid}


def train_probe(cfg: dict, feats: dict[str, dict], probe_dir: Path, device, kind: str, n_p: int, n_i: int,
                tracking: dict | None, data_id: str | None = None, device_auto: bool = False,
                code: dict | None = None) -> torch.nn.Module:
    """Fit a linear probe on the train features; ``kind`` "notes" (per-note heads) or "grid" (multi-label).
    ``data_id`` names what the features come from (the dataset and the frozen model); ``device_auto``: ``device`` was
    chosen by ``device: auto`` (musicdecomp.train.loop)."""
    tc = cfg["train"]
    dim = feats["test"]["feats"].shape[-1]
    probe = (NoteProbe(dim, n_p, n_i) if kind == "notes" else torch.nn.Linear(dim, n_p * n_i)).to(device)
    tr, va = feats.get("train"), feats.get("valid")  # absent when a staged probe is adopted, not trained

    def sample(gen):
        return torch.randint(tr["feats"].shape[0], (tc["batch_size"],), generator=gen, device=device)

    def loss(idx, gen):
        if kind == "notes":
            valid = tr["pitch"][idx] >= 0
            p_logits, i_logits = probe(tr["feats"][idx][valid])
            ce = torch.nn.functional.cross_entropy
            pitch_loss = ce(p_logits.float(), tr["pitch"][idx][valid])
            return pitch_loss + ce(i_logits.float(), tr["instrument"][idx][valid]), {}
        return multilabel_loss(probe(tr["feats"][idx]).reshape(-1, n_p, n_i), tr["grid"][idx]), {}

    def validate():
        acc = score(probe, va, kind, n_p, n_i)
        return {"score": acc["chord"], **{f"acc_{k}": v for k, v in acc.items()}}

    run_training(cfg, tc, probe_dir, probe, device, sample, loss, validate, tracking,
                 {"model": f"probe-{kind}", "seed": str(cfg["seed"])}, data_id=data_id, device_auto=device_auto,
                 code=code)
    probe.load_state_dict(load_best(probe_dir)["model"])
    return probe


@torch.no_grad()
def score(probe, f: dict, kind: str, n_p: int, n_i: int) -> dict[str, float]:
    if kind == "notes":
        p_logits, i_logits = probe(f["feats"])
        return note_level(p_logits.argmax(-1), i_logits.argmax(-1), f["pitch"], f["instrument"])
    return grid_level(probe(f["feats"]).reshape(-1, n_p, n_i), f["grid"])


def probe_run(probe_cfg: dict, run_dir: str | Path, data_dir: str | Path, out_json: str | Path,
              device: str = "auto", tracking: dict | None = None, code: dict | None = None) -> dict:
    """Probe (or, for the supervised CNN, test) one trained run; writes test accuracies to ``out_json``."""
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    dev = pick_device(device)
    state = load_best(run_dir)
    cfg = state["config"]
    data = {s: load_split(data_dir / f"{s}.pt", dev) for s in SPLITS}
    n_p, n_i = len(data["test"].pitches), len(data["test"].programs)
    size = tuple(data["test"].chord_db.shape[-2:])
    amp, bs = cfg["train"]["amp"], cfg["train"]["eval_batch_size"]
    kind = "musicslots" if "variant" in cfg else cfg["kind"]
    if kind == "cnn":
        model = build_baseline(cfg, n_p, n_i, size).to(dev)
        model.load_state_dict(state["model"])
        model.eval()
        acc = grid_level(*predict_grid(model, data["test"], dev, amp, bs))
    else:
        if kind == "musicslots":
            model = build_model(cfg["model"], size).to(dev)
            extract, probe_kind = musicslots_features, "notes"
        else:
            model = build_baseline(cfg, n_p, n_i, size).to(dev)
            extract, probe_kind = vae_features, "grid"
        model.load_state_dict(state["model"])
        model.eval()
        # a finished probe staged for adoption (musicdecomp.train.adopt) is only scored: no train/valid features
        splits = ("test",) if staged(run_dir / "probe") else SPLITS
        feats = {s: extract(model, data[s], dev, amp, bs) for s in splits}
        pcfg = probe_train_config(cfg, probe_cfg)
        # the features are the frozen model's: a probe checkpoint of another model (or data) is not continued
        data_id = f"{data['train'].source_id}/{sha256_of(run_dir / 'best.pt')[:16]}"
        probe = train_probe(pcfg, feats, run_dir / "probe", dev, probe_kind, n_p, n_i, tracking, data_id,
                            device_auto=device == "auto", code=code)
        probe.eval()
        acc = score(probe, feats["test"], probe_kind, n_p, n_i)
    name = cfg["variant"] if kind == "musicslots" else cfg["baseline"]
    out = {"run_name": cfg["run_name"], "dataset": cfg["dataset"], "seed": cfg["seed"], "model": kind,
           "name": name, "kld_weight": cfg.get("kld_weight"), "test": acc, "examples": len(data["test"])}
    write_json(out_json, out)
    log.info("%s test accuracy: pitch %.4f instrument %.4f chord %.4f", cfg["run_name"], acc["pitch"],
             acc["instrument"], acc["chord"])
    log_to_training_run(run_dir, tracking, {f"test/acc_{k}": v for k, v in acc.items()})
    return out
