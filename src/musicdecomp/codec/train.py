"""The offline alternative to the pretrained weights: train the EnCodec 24 kHz architecture on the rendered
stems (waveform L1 + multi-scale mel L1 + the RVQ commitment penalty; no adversarial losses), with the shared
resumable loop (GPU when present). Random crops of the training renders (each stem and the full mix),
validation by the MS-STFT distance on fixed crops of the validation split.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from musicdecomp.codec.model import build_encodec
from musicdecomp.eval.msstft import ms_stft_distance
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
    """Random crops from the renders of a stems index: a random stem channel or the mean of all of them."""

    def __init__(self, index_path: Path, crop: int, seed: int):
        self.index_path = Path(index_path)
        index = json.loads(self.index_path.read_text())
        self.folder = self.index_path.parent / index["folder"]
        self.renders = [r for r in index["renders"] if r["n_samples"] > crop]
        self.crop = crop
        self.rng = random.Random(seed)

    def draw(self, n: int) -> torch.Tensor:
        import soundfile as sf

        out = np.zeros((n, self.crop), np.float32)
        for i in range(n):
            r = self.rng.choice(self.renders)
            start = self.rng.randrange(0, r["n_samples"] - self.crop)
            audio, _ = sf.read(self.folder / r["file"], dtype="float32", start=start, frames=self.crop, always_2d=True)
            which = self.rng.randrange(audio.shape[1] + 1)
            out[i] = audio.mean(1) if which == audio.shape[1] else audio[:, which]
        return torch.from_numpy(out)


def train_codec(cfg: dict, stems_dir: str | Path, run_dir: str | Path, device: str = "auto",
                tracking: dict | None = None, stop_after: int | None = None) -> dict:
    """``cfg``: {run_name, seed, bandwidth, crop_seconds, sample_rate, loss weights l1/mel/commit, train}."""
    tc = cfg["train"]
    dev = pick_device(device)
    torch.manual_seed(cfg["seed"])
    model = build_encodec(cfg["bandwidth"]).to(dev)
    crop = int(cfg["crop_seconds"] * cfg["sample_rate"])
    train = CropSampler(Path(stems_dir) / "train.json", crop, cfg["seed"])
    valid = CropSampler(Path(stems_dir) / "valid.json", crop, 12345).draw(tc["val_examples"] or 8).to(dev)

    def sample(gen):
        return train.draw(tc["batch_size"]).to(dev)

    def loss(x, gen):
        emb = model.encoder(x[:, None])
        q = model.quantizer(emb, model.frame_rate, model.bandwidth)
        y = model.decoder(q.quantized)[:, 0, : x.shape[-1]]
        l1 = (y.float() - x).abs().mean()
        mel = multiscale_mel_loss(y, x, cfg["sample_rate"])
        total = cfg["l1_weight"] * l1 + cfg["mel_weight"] * mel + cfg["commit_weight"] * q.penalty
        return total, {"l1": l1.item(), "mel": mel.item(), "commit": float(q.penalty)}

    def validate():
        emb = model.encoder(valid[:, None])
        codes = model.quantizer.encode(emb, model.frame_rate, model.bandwidth)
        y = model.decoder(model.quantizer.decode(codes))[:, 0, : valid.shape[-1]]
        d = ms_stft_distance(y.float(), valid).mean().item()  # the generated audio first, as the paper's code
        return {"score": -d, "ms_stft": d}

    return run_training(cfg, tc, run_dir, model, dev, sample, loss, validate, tracking,
                        {"model": "codec", "seed": str(cfg["seed"])}, stop_after)
