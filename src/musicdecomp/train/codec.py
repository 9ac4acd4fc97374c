"""The ``codec`` step, which makes the codec available as ``results/codec/model.pt``, and the offline way to get one.

``codec.source`` (resolved before the step runs, ``musicdecomp.models.encodec_weights.resolve_source``):

* ``pretrained``: the published EnCodec 24 kHz weights (``codec.weights``, else the torch hub cache, else a
  download; see musicdecomp.models.encodec_weights);
* ``trained``: the offline alternative, the same architecture trained on the rendered stems (``train_codec``:
  waveform L1 + multi-scale mel L1 + the RVQ commitment penalty, no adversarial losses, with the shared resumable
  loop; random crops of the training renders, each stem and the full mix; validation by the MS-STFT distance on
  fixed crops of the validation split);
* ``auto`` (default): ``pretrained`` where the weights are already on this machine, else ``trained``. The choice is
  part of the step's slice, so Snakemake reruns the codec step (and everything downstream) when it changes. DVC
  tracks parameter keys, not files outside the repository: after adding the weights, run ``dvc repro -f codec``.

Either way the step writes the same two files: ``model.pt`` ({state_dict, bandwidth, source, origin, sha256})
and ``codec.json`` (a summary), so everything downstream loads the codec with
``musicdecomp.models.encodec.load_codec`` and never asks where it came from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from musicdecomp.device import pick_device
from musicdecomp.errors import UserError
from musicdecomp.io import atomic_path, read_json, sha256_of, write_json
from musicdecomp.logs import get_logger
from musicdecomp.metrics.msstft import ms_stft_distance
from musicdecomp.models.encodec import MODEL_FILE, build_encodec
from musicdecomp.models.encodec_weights import checkpoint_name, find_weights, load_pretrained
from musicdecomp.train.checkpoints import load_best
from musicdecomp.train.loop import run_training
from musicdecomp.train.release import gate

log = get_logger("codec")


def multiscale_mel_loss(x: torch.Tensor, y: torch.Tensor, sample_rate: int = 24000,
                        sizes: tuple[int, ...] = (512, 1024, 2048), n_mels: int = 64) -> torch.Tensor:
    import torchaudio

    loss = x.new_zeros(())
    for n in sizes:
        mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n, hop_length=n // 4, n_mels=n_mels).to(x.device)
        mx, my = mel(x.float()), mel(y.float())
        loss = loss + (mx - my).abs().mean() + (torch.log(mx + 1e-5) - torch.log(my + 1e-5)).abs().mean()
    return loss / len(sizes)


class CropSampler:
    """Random crops from the renders of a stems index: a random stem channel or the mean of all of them, drawn
    with a torch generator (the training loop checkpoints it, so a resumed run draws the same crops)."""

    def __init__(self, index_path: Path, crop: int):
        self.index_path = Path(index_path)
        index = read_json(self.index_path, "run the stems step first (codec.trained trains on its renders)")
        self.folder = self.index_path.parent / index["folder"]
        self.renders = [r for r in index["renders"] if r["n_samples"] > crop]
        if not self.renders:
            raise UserError(f"{self.index_path}: no render is longer than a {crop}-sample crop; "
                            f"lower codec.trained.crop_seconds or render more stems")
        self.crop = crop

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        import soundfile as sf

        picks = torch.randint(len(self.renders), (n,), generator=gen, device=gen.device).tolist()
        u = torch.rand(n, 2, generator=gen, device=gen.device).tolist()
        out = np.zeros((n, self.crop), np.float32)
        for i, (k, (u_start, u_which)) in enumerate(zip(picks, u)):
            r = self.renders[k]
            start = int(u_start * (r["n_samples"] - self.crop))
            audio, _ = sf.read(self.folder / r["file"], dtype="float32", start=start, frames=self.crop, always_2d=True)
            which = min(int(u_which * (audio.shape[1] + 1)), audio.shape[1])
            out[i] = audio.mean(1) if which == audio.shape[1] else audio[:, which]
        return torch.from_numpy(out)


# EnCodec initialises each codebook by k-means on the first batch a process sees; its paper trained with batch 64
# on 8 GPUs, i.e. 8 one-second crops per process, so the codebooks are initialised on 8 crops whatever the batch.
INIT_CROPS = 8


@torch.no_grad()
def init_codebooks(model, sampler: CropSampler, n: int, seed: int, device: torch.device) -> None:
    """Run the RVQ's k-means initialisation on ``n`` crops drawn with their own seed (a resumed run then loads
    the checkpoint's codebooks over them)."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    x = sampler.draw(n, gen).to(device)
    model.quantizer(model.encoder(x[:, None]), model.frame_rate, model.bandwidth)


def train_codec(cfg: dict, stems_dir: str | Path, run_dir: str | Path, device: str = "auto",
                tracking: dict | None = None, stop_after: int | None = None,
                time_limit: float | None = None, code: dict | None = None) -> dict:
    """``cfg``: {run_name, seed, bandwidth, crop_seconds, sample_rate, loss weights l1/mel/commit, train}."""
    tc = cfg["train"]
    dev = pick_device(device)
    torch.manual_seed(cfg["seed"])
    model = build_encodec(cfg["bandwidth"]).to(dev)
    crop = int(cfg["crop_seconds"] * cfg["sample_rate"])
    train = CropSampler(Path(stems_dir) / "train.json", crop)
    valid = CropSampler(Path(stems_dir) / "valid.json", crop).draw(
        tc["val_examples"] or 8, torch.Generator().manual_seed(12345)).to(dev)
    init_codebooks(model, train, min(INIT_CROPS, tc["batch_size"]), cfg["seed"] + 2, dev)

    def sample(gen):
        return train.draw(tc["batch_size"], gen).to(dev)

    def loss(x, gen):
        emb = model.encoder(x[:, None])
        q = model.quantizer(emb, model.frame_rate, model.bandwidth)
        y = model.decoder(q.quantized)[:, 0, : x.shape[-1]]
        l1 = (y.float() - x).abs().mean()
        mel = multiscale_mel_loss(y, x, cfg["sample_rate"])
        total = cfg["l1_weight"] * l1 + cfg["mel_weight"] * mel + cfg["commit_weight"] * q.penalty
        return total, {"l1": l1.detach(), "mel": mel.detach(), "commit": q.penalty.detach()}  # read when logged

    def validate():
        emb = model.encoder(valid[:, None])
        codes = model.quantizer.encode(emb, model.frame_rate, model.bandwidth)
        y = model.decoder(model.quantizer.decode(codes))[:, 0, : valid.shape[-1]]
        d = ms_stft_distance(y.float(), valid).mean().item()  # the generated audio first, as the paper's code
        return {"score": -d, "ms_stft": d}

    return run_training(cfg, tc, run_dir, model, dev, sample, loss, validate, tracking,
                        {"model": "codec", "seed": str(cfg["seed"])}, stop_after, time_limit,
                        data_id=stems_data_id(stems_dir), code=code, device_auto=device == "auto")


def stems_data_id(stems_dir: str | Path) -> str:
    """What the stems were built from, as a short hash of their summary and the train/valid chunk indexes (text
    written from the inputs and settings): a checkpoint made on other stems is not continued."""
    h = hashlib.sha256()
    for name in ("summary.json", "train.json", "valid.json"):
        path = Path(stems_dir) / name
        h.update(name.encode() + (path.read_bytes() if path.exists() else b"-"))
    return h.hexdigest()[:16]

def prepare_codec(cfg: dict, stems_dir: str | Path, out_dir: str | Path, device: str = "auto",
                  tracking: dict | None = None, time_limit: float | None = None, code: dict | None = None,
                  compute: dict | None = None) -> dict:
    """Find (pretrained) or train (trained, resumable in ``<out_dir>/trained``) the codec; write
    ``<out_dir>/model.pt`` and ``<out_dir>/codec.json``. Training that stops at ``time_limit`` (seconds) writes
    neither and returns ``{"stopped_at": step}``."""
    out_dir = Path(out_dir)
    if cfg["source"] == "pretrained":
        origin = find_weights(cfg["weights"], checkpoint=checkpoint_name(cfg["url"]), url=cfg["url"])
        model = load_pretrained(origin, cfg["bandwidth"])
        extra: dict = {}
    elif cfg["source"] == "trained":
        run_dir = out_dir / "trained"
        if compute is not None and (record := gate("codec", cfg, run_dir, compute, code, outputs={
                "json": [run_dir / "train.json", out_dir / "codec.json"],
                "torch": [run_dir / "best.pt", out_dir / MODEL_FILE]})) is not None:
            return {"not_trained": record}
        summary = train_codec(cfg["trained"], stems_dir, run_dir, device=device, tracking=tracking,
                              time_limit=time_limit, code=code)
        if "stopped_at" in summary:
            return summary
        model = build_encodec(cfg["bandwidth"])
        model.load_state_dict(load_best(run_dir)["model"])
        origin = run_dir / "best.pt"
        extra = {"training": {k: summary[k] for k in ("steps", "best_step", "best_val_score", "device",
                                                      "wall_seconds")}}
    else:
        raise UserError(f"codec.source {cfg['source']!r} is not pretrained or trained (auto is resolved before)")
    info = {"source": cfg["source"], "origin": str(origin), "sha256": sha256_of(origin),
            "bandwidth": cfg["bandwidth"], "n_q": model.quantizer.get_num_quantizers_for_bandwidth(
                model.frame_rate, cfg["bandwidth"]), "frame_rate": model.frame_rate,
            "sample_rate": model.sample_rate, "parameters": sum(p.numel() for p in model.parameters()), **extra}
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        torch.save({"state_dict": model.state_dict(), **info}, tmp)
    write_json(out_dir / "codec.json", info)
    log.info("codec: %s (%s), %g kbps, %d codebooks", info["source"], origin, info["bandwidth"], info["n_q"])
    return info

