"""Codec codes and latents of stem chunks, and the trained-codec alternative (a few steps, resumed)."""

import json

import pytest
import torch
from conftest import REPO
from test_slakh import write_track

from musicdecomp.config import deep_merge, load_params
from musicdecomp.data.stems import build_stems, load_chunk
from musicdecomp.errors import UserError
from musicdecomp.eval.codec import evaluate_codec
from musicdecomp.io import sha256_of
from musicdecomp.metrics.msstft import ms_stft_distance
from musicdecomp.models.codes import cache_codes, subset_codes
from musicdecomp.models.encodec import build_encodec, codes_to_latent, encode_codes, latent_to_audio, load_codec
from musicdecomp.pipeline import step_config
from musicdecomp.train.checkpoints import load_best
from musicdecomp.train.codec import prepare_codec, stems_data_id, train_codec


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


@pytest.fixture(scope="module")
def small_codec():
    torch.manual_seed(0)
    model = build_encodec(1.5)  # 2 codebooks keep the tests fast; 24 kbps (32) is the same code path
    with torch.no_grad():  # fresh codebooks are initialised (k-means) by their first training-mode pass
        model.train()
        model.quantizer(model.encoder(torch.randn(2, 1, 24000) * 0.1), model.frame_rate, model.bandwidth)
    return model.eval()


def test_codes_latents_audio(stems_dir, small_codec, tmp_path):
    model = small_codec
    info = cache_codes(model, stems_dir / "train.json", tmp_path / "codes.pt", batch=2)
    index = json.loads((stems_dir / "train.json").read_text())
    assert info["positions"] == 2 and info["classes"] == ["drums", "bass", "piano"]
    payload = torch.load(tmp_path / "codes.pt", weights_only=True)
    assert set(payload["subsets"]) == set(index["subsets"])
    for subset in index["subsets"]:
        codes = subset_codes(payload, subset)
        assert set(codes) == set(index["subsets"][subset]) | {"mix"}
        assert all(c.shape == (len(index["chunks"][subset]), 2, 525) and c.dtype == torch.int16 for c in codes.values())
    # a class is encoded once per chunk: drums+bass and drums+bass+piano share the drums' codes
    assert torch.equal(subset_codes(payload, "drums_bass")["drums"], subset_codes(payload, "drums_bass_piano")["drums"])
    # each subset's mix is its own encoding, in the index's chunk order: chunk 1 of drums_bass_piano is the
    # mean of its three classes, encoded
    stems, mix = load_chunk(stems_dir / "train.json", "drums_bass_piano", 1)
    direct = encode_codes(model, torch.from_numpy(mix)[None])
    assert torch.equal(subset_codes(payload, "drums_bass_piano")["mix"][1:2], direct)
    assert not torch.equal(subset_codes(payload, "drums_bass")["mix"], subset_codes(payload, "drums_bass_piano")["mix"])
    latent = codes_to_latent(model, subset_codes(payload, "drums_bass")["mix"])
    assert latent.shape == (2, 128, 525)
    assert latent_to_audio(model, latent[..., :512]).shape == (2, 512 * 320)
    with pytest.raises(UserError, match="subset 'strings' is not in the cached codes"):
        subset_codes(payload, "strings")


def test_codec_step_trained_then_codes_and_table(stems_dir, params, tmp_path):
    """The codec step trains (few steps), writes model.pt; codes and the reconstruction table follow from it."""
    p = deep_merge(params, load_params([REPO / "config" / "tiny.yaml"]))
    cfg = step_config(p, "codec")
    assert cfg["source"] == "trained" and cfg["trained"]["bandwidth"] == 1.5
    info = prepare_codec(cfg, stems_dir, tmp_path / "codec", device="cpu")
    assert info["source"] == "trained" and info["n_q"] == 2 and info["training"]["steps"] == 2
    model, loaded = load_codec(tmp_path / "codec" / "model.pt")
    trained = load_best(tmp_path / "codec" / "trained")["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    assert loaded["sha256"] == sha256_of(tmp_path / "codec" / "trained" / "best.pt")
    cache_codes(model, stems_dir / "test.json", tmp_path / "test.pt", batch=2, codec_info=loaded)
    out = tmp_path / "eval"
    result = evaluate_codec({"max_chunks": None, "n_examples": 1, "seed": 0}, tmp_path / "codec" / "model.pt",
                            tmp_path / "test.pt", stems_dir / "test.json", out / "test.json", out / "codec.csv",
                            out / "codec.md", out / "examples.png", out / "audio", device="cpu")
    rows = {(r["subset"], r["signal"]): r for r in result["rows"]}
    assert set(rows) == {("drums_bass", "drums"), ("drums_bass", "bass"), ("drums_bass", "mix"),
                         ("piano_bass", "piano"), ("piano_bass", "bass"), ("piano_bass", "mix"),
                         ("drums_bass_piano", "drums"), ("drums_bass_piano", "bass"), ("drums_bass_piano", "piano"),
                         ("drums_bass_piano", "mix")}
    # the table's number is the MS-STFT distance of the decoded chunk to the original, as computed directly
    payload = torch.load(tmp_path / "test.pt", weights_only=True)
    mixes = torch.stack([torch.from_numpy(load_chunk(stems_dir / "test.json", "drums_bass", i)[1]) for i in range(2)])
    with torch.no_grad():
        decoded = latent_to_audio(model, codes_to_latent(model, subset_codes(payload, "drums_bass")["mix"]))
    direct = ms_stft_distance(decoded[:, : mixes.shape[1]], mixes)
    row = rows[("drums_bass", "mix")]
    assert row["chunks"] == 2 and row["ms_stft_mean"] == pytest.approx(direct.mean().item(), rel=1e-4)
    assert row["ms_stft_std"] == pytest.approx(direct.std(unbiased=False).item(), rel=1e-3, abs=1e-5)
    assert json.loads((out / "test.json").read_text())["rows"] == result["rows"]
    md = (out / "codec.md").read_text()
    assert "| EnCodec architecture, trained here | 1.5 | drums_bass | mix | 2 |" in md and "| 4.7 |" in md
    assert sorted(f.name for f in (out / "audio").iterdir()) == sorted(
        f"ex0_{s}_{k}.wav" for s in ("drums", "bass", "mix") for k in ("original", "codec"))
    assert (out / "examples.png").read_bytes()[:4] == b"\x89PNG"
    # codes cached with another codec are refused
    torch.save({**payload, "codec": {**payload["codec"], "sha256": "0" * 64}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="cached with another codec"):
        evaluate_codec({"max_chunks": None, "n_examples": 1, "seed": 0}, tmp_path / "codec" / "model.pt",
                       tmp_path / "other.pt", stems_dir / "test.json", out / "x.json", out / "x.csv", out / "x.md",
                       out / "x.png", out / "xa", device="cpu")


def test_load_codec_errors(tmp_path):
    with pytest.raises(UserError, match="run the codec step first"):
        load_codec(tmp_path / "model.pt")
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a codec written by the codec step"):
        load_codec(tmp_path / "bad.pt")


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
    # the interrupted run ends where an uninterrupted one does (same crops, same codebooks, same weights)
    train_codec(cfg, stems_dir, tmp_path / "straight", device="cpu")
    resumed, straight = (torch.load(tmp_path / d / "ckpt" / "last.pt", weights_only=True)["model"]
                         for d in ("run", "straight"))
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    # the checkpoint names the stems it was trained on, so it is not continued on other ones
    last = torch.load(tmp_path / "run" / "ckpt" / "last.pt", weights_only=True)
    assert last["data_id"] == stems_data_id(stems_dir) and len(last["data_id"]) == 16
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train.json").write_text("{}")
    assert stems_data_id(tmp_path / "other") != stems_data_id(stems_dir)


def test_codec_training_stopped_by_its_time_limit_writes_no_codec(stems_dir, tmp_path):
    trained = {"run_name": "codec-test", "seed": 0, "bandwidth": 1.5, "crop_seconds": 0.25, "sample_rate": 24000,
               "l1_weight": 1.0, "mel_weight": 1.0, "commit_weight": 1.0,
               "train": {"steps": 2, "batch_size": 2, "lr": 3e-4, "warmup_steps": 0, "cosine_steps": 2,
                         "grad_clip": 1.0, "amp": "none", "log_every": 1, "eval_every": 1, "val_examples": 2,
                         "eval_batch_size": 2, "checkpoint_every": 1, "checkpoint_minutes": 5.0}}
    cfg = {"source": "trained", "bandwidth": 1.5, "trained": trained}
    out = tmp_path / "codec"
    assert prepare_codec(cfg, stems_dir, out, device="cpu", time_limit=1e-9) == {"stopped_at": 1}
    assert not (out / "model.pt").exists() and not (out / "codec.json").exists()
    assert json.loads((out / "trained/progress.json").read_text())["step"] == 1
    info = prepare_codec(cfg, stems_dir, out, device="cpu")
    assert info["training"]["steps"] == 2 and (out / "model.pt").exists()


def test_fast_kmeans_matches_encodec():
    """The codebook initialisation is encodec's k-means, only computed without the (n, 1024, 128) tensor."""
    from musicdecomp.models import encodec as model

    model.build_encodec(1.5)
    reference = model.ENCODEC_KMEANS
    assert reference is not None and reference.__module__ == "encodec.quantization.core_vq"
    kmeans = model.kmeans
    x = torch.randn(400, 128)
    for seed in (0, 1):
        torch.manual_seed(seed)
        want, want_bins = reference(x, 256, 10)
        torch.manual_seed(seed)
        got, got_bins = kmeans(x, 256, 10)
        assert torch.allclose(got, want, atol=1e-6) and torch.equal(got_bins, want_bins)
