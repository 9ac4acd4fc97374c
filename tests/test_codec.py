"""Codec codes and latents of stem chunks, and the trained-codec alternative (a few steps, resumed)."""

import json

import pytest
import torch

from musicdecomp.codec.latents import cache_codes
from musicdecomp.codec.model import build_encodec, codes_to_latent, latent_to_audio
from musicdecomp.codec.train import train_codec
from musicdecomp.config import deep_merge, step_config
from musicdecomp.data.stems import build_stems

from test_slakh import write_track


@pytest.fixture(scope="module")
def stems_dir(tmp_path_factory, params):
    root = tmp_path_factory.mktemp("slakh")
    for split, name in (("train", "Track00001"), ("validation", "Track01501"), ("test", "Track01801")):
        write_track(root, split, name, {"S00": ("Drums", 0.5), "S01": ("Bass", 0.3), "S02": ("Piano", 0.3)},
                    seconds=15.0)
    out = tmp_path_factory.mktemp("stems")
    build_stems(step_config(deep_merge(params, {"stems": {"source": "slakh", "slakh_root": str(root)}}), "stems"),
                None, out)
    return out


def test_codes_latents_audio(stems_dir, tmp_path):
    torch.manual_seed(0)
    model = build_encodec(1.5)  # 2 codebooks keep the test fast; 24 kbps (32) is the same code path
    with torch.no_grad():  # fresh codebooks are initialised (k-means) by their first training-mode pass
        model.train()
        model.quantizer(model.encoder(torch.randn(2, 1, 24000) * 0.1), model.frame_rate, model.bandwidth)
    info = cache_codes(model, stems_dir / "train.json", "drums_bass", tmp_path / "codes.pt", batch=2)
    assert info == {"chunks": 2, "shape": [2, 2, 525]}
    payload = torch.load(tmp_path / "codes.pt", weights_only=True)
    assert set(payload["codes"]) == {"drums", "bass", "mix"}
    assert payload["codes"]["drums"].dtype == torch.int16 and payload["codes"]["drums"].max() < 1024
    latent = codes_to_latent(model, payload["codes"]["mix"])
    assert latent.shape == (2, 128, 525)
    assert latent_to_audio(model, latent[..., :512]).shape == (2, 512 * 320)
    # the mixture's codes are not the stems' codes (EnCodec is nonlinear, so each signal is encoded)
    assert not torch.equal(payload["codes"]["mix"], payload["codes"]["drums"])


def test_trained_codec_runs_and_resumes(stems_dir, tmp_path):
    cfg = {"run_name": "codec-test", "seed": 0, "bandwidth": 1.5, "crop_seconds": 0.25, "sample_rate": 24000,
           "l1_weight": 1.0, "mel_weight": 1.0, "commit_weight": 1.0,
           "train": {"steps": 3, "batch_size": 2, "lr": 3e-4, "warmup_steps": 0, "cosine_steps": 3, "grad_clip": 1.0,
                     "amp": "none", "log_every": 1, "eval_every": 3, "val_examples": 2, "eval_batch_size": 2,
                     "checkpoint_every": 1, "checkpoint_minutes": 5.0}}
    assert train_codec(cfg, stems_dir, tmp_path / "run", device="cpu", stop_after=2) == {"stopped_at": 2}
    summary = train_codec(cfg, stems_dir, tmp_path / "run", device="cpu")
    assert summary["steps"] == 3 and (tmp_path / "run" / "best.pt").exists()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3]
    assert any("val/ms_stft" in r for r in rows)
