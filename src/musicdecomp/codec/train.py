"""The offline alternative to the pretrained weights: train the EnCodec 24 kHz architecture on the rendered
stems (waveform L1 + multi-scale mel L1 + the RVQ commitment penalty; no adversarial losses), with the shared
resumable loop (GPU when present). Random crops of the training renders (each stem and the full mix),
validation by the MS-STFT distance on fixed crops of the validation split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from musicdecomp.codec.model import build_encodec
from musicdecomp.errors import UserError
from musicdecomp.eval.msstft import ms_stft_distance
from musicdecomp.io import read_json
from musicdecomp.pipeline import STEPS
from musicdecomp.train.loop import pick_device, run_training


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
                time_limit: float | None = None) -> dict:
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
                        data_id=stems_data_id(stems_dir), code=STEPS["codec"].code_id())


def stems_data_id(stems_dir: str | Path) -> str:
    """What the stems were built from, as a short hash of their summary and the train/valid chunk indexes (text
    written from the inputs and settings): a checkpoint made on other stems is not continued."""
    h = hashlib.sha256()
    for name in ("summary.json", "train.json", "valid.json"):
        path = Path(stems_dir) / name
        h.update(name.encode() + (path.read_bytes() if path.exists() else b"-"))
    return h.hexdigest()[:16]
