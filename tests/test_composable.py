"""The composable-representations steps on synthetic stems and a random-weight codec: training (decomposition and
supervised), separation and reconstruction of the test chunks, the baselines on the same chunks, the tables, and
one clear line for every bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO

from musicdecomp.config import deep_merge, load_params, validate
from musicdecomp.errors import UserError
from musicdecomp.eval.composable_tables import composable_tables
from musicdecomp.eval.separation import evaluate_baselines, evaluate_composable, pick_chunks
from musicdecomp.models.codes import cache_codes, subset_latents
from musicdecomp.models.encodec import build_encodec, load_codec
from musicdecomp.pipeline import check_slice, composable_baselines_config, step_config
from musicdecomp.train.composable import train_composable

SR, CHUNK = 24000, 168000
CLASSES = ["drums", "bass", "piano"]
SUBSETS = {"drums_bass": ["drums", "bass"], "drums_bass_piano": ["drums", "bass", "piano"]}


def synthetic_render(seed: int, chunks: int) -> np.ndarray:
    """(samples, 3) drums (decaying noise bursts), bass (a low sine), piano (two sines) over ``chunks`` chunks."""
    rng = np.random.default_rng(seed)
    n = chunks * CHUNK
    t = np.arange(n) / SR
    drums = np.zeros(n)
    for onset in rng.integers(0, n - 4000, 12 * chunks):
        drums[onset:onset + 4000] += rng.standard_normal(4000) * np.exp(-np.arange(4000) / 600)
    bass = np.sin(2 * np.pi * (55 + 10 * seed) * t)
    piano = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 660 * t)
    return (0.1 * np.stack([drums / np.abs(drums).max(), bass, piano], axis=1)).astype(np.float32)


@pytest.fixture(scope="module")
def codec_side(tmp_path_factory):
    """A pipeline folder with synthetic stems (2 chunks per split), a random-weight codec at 1.5 kbps and its codes."""
    root = tmp_path_factory.mktemp("composable")
    stems = root / "results/stems/jsb"
    for k, split in enumerate(("train", "valid", "test")):
        (stems / split).mkdir(parents=True)
        sf.write(stems / split / "r0.flac", synthetic_render(k, 2), SR)
        index = {"folder": split, "classes": CLASSES, "chunk_len": CHUNK, "subsets": SUBSETS,
                 "renders": [{"file": "r0.flac"}], "chunks": {s: [[0, 0], [0, CHUNK]] for s in SUBSETS}}
        (stems / f"{split}.json").write_text(json.dumps(index))
    torch.manual_seed(0)
    model = build_encodec(1.5)
    crops = torch.from_numpy(synthetic_render(3, 1).T[:, :SR].copy())  # the codebooks start empty: initialise them
    model.train()  # (k-means on a first batch) as the trained codec's first step does
    model.quantizer(model.encoder(crops[:, None]), model.frame_rate, model.bandwidth)
    model.eval()
    info = {"source": "trained", "origin": "test", "sha256": "ab" * 32, "bandwidth": 1.5, "n_q": 2,
            "frame_rate": 75, "sample_rate": SR}
    (root / "results/codec").mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), **info}, root / "results/codec/model.pt")
    for split in ("train", "valid", "test"):
        cache_codes(model, stems / f"{split}.json", root / f"results/codec/codes/{split}.pt", batch=2, codec_info=info)
    return root


@pytest.fixture(scope="module")
def params():
    return load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"])


def run_cfg(params, variant, subset="drums_bass"):
    return step_config(params, "train_composable", subset, variant, 0)


@pytest.fixture(scope="module")
def trained(codec_side, params):
    """A decomposition run (mean) and a supervised run, trained on the synthetic codes."""
    runs = {}
    for variant in ("mean", "supervised"):
        run = codec_side / f"results/composable/drums_bass/{variant}/seed0"
        summary = train_composable(run_cfg(params, variant), codec_side / "results/codec/model.pt",
                                   codec_side / "results/codec/codes", run, device="cpu", threads=1)
        runs[variant] = (run, summary)
    return runs


def test_a_run_trains_for_its_epochs_and_records_the_latents_statistics(trained, params):
    run, summary = trained["mean"]
    epochs, batch = params["composable"]["train"]["epochs"], params["composable"]["train"]["batch_size"]
    assert summary["steps"] == epochs * (2 // batch) and (run / "best.pt").is_file()
    stats = json.loads((run / "latent_stats.json").read_text())
    assert stats["chunks"] == 2 and stats["latent_norm"] == "global" and stats["mix"]["std"] > 0
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["config"]["classes"] == ["drums", "bass"] and best["model"]["norm.std"].flatten()[0] > 0
    assert torch.allclose(best["model"]["norm.std"], torch.full_like(best["model"]["norm.std"], stats["mix"]["std"]))


def evaluate(codec_side, params, variant):
    run = codec_side / f"results/composable/drums_bass/{variant}/seed0"
    cfg = step_config(params, "eval_composable")["composable.eval"]
    return evaluate_composable(cfg, run, codec_side / "results/codec/model.pt",
                               codec_side / "results/codec/codes/test.pt", codec_side / "results/stems/jsb/test.json",
                               run / "separation.json", run / "examples", run / "separation.png", device="cpu"), run


def test_the_decomposition_model_separates_and_reconstructs_the_test_chunks(codec_side, trained, params):
    res, run = evaluate(codec_side, params, "mean")
    assert res["kind"] == "composable" and res["chunks"] == [list(c) for c in pick_chunks(2, 2, 0, "drums_bass", 14)]
    for ref in ("raw", "decoded"):
        sdr = np.asarray(res["per_chunk"][ref]["si_sdr"])
        assert sdr.shape == (2, 2) and np.isfinite(sdr).all()
        assert sorted(np.asarray(res["per_chunk"][ref]["permutation"])[0]) == [0, 1]
    for key in ("latent_mse", "latent_sse", "ms_stft", "ms_stft_raw"):
        assert res["reconstruction"][key]["count"] == 2 and res["reconstruction"][key]["mean"] >= 0
    crop = params["composable"]["model"]["crop_frames"]
    assert res["reconstruction"]["latent_sse"]["mean"] == pytest.approx(
        res["reconstruction"]["latent_mse"]["mean"] * 128 * crop, rel=1e-6)
    wavs = sorted(p.name for p in (run / "examples").iterdir())
    assert wavs == ["ex0_bass_estimate.wav", "ex0_bass_true.wav", "ex0_drums_estimate.wav", "ex0_drums_true.wav",
                    "ex0_mixture.wav", "ex0_reconstruction.wav"]
    assert sf.info(run / "examples/ex0_mixture.wav").frames == crop * 320
    assert (run / "separation.png").read_bytes()[:4] == b"\x89PNG"


def test_the_supervised_separator_separates_without_reconstruction(codec_side, trained, params):
    res, _ = evaluate(codec_side, params, "supervised")
    assert res["kind"] == "supervised" and "reconstruction" not in res
    assert np.asarray(res["per_chunk"]["raw"]["si_sdr"]).shape == (2, 2)


def test_the_baselines_are_scored_on_the_same_chunks_and_the_oracle_above_the_mixture(codec_side, trained, params):
    cfg = composable_baselines_config(params)
    res = evaluate_baselines(cfg, "drums_bass", codec_side / "results/codec/model.pt",
                             codec_side / "results/codec/codes/test.pt", codec_side / "results/stems/jsb/test.json",
                             codec_side / "results/composable/drums_bass/baselines/separation.json",
                             codec_side / "results/composable/drums_bass/baselines/examples", device="cpu")
    mean_run, _ = evaluate(codec_side, params, "mean")
    assert res["chunks"] == mean_run["chunks"]
    assert set(res["methods"]) == set(params["composable"]["baselines"]["methods"]) | {"oracle_irm", "mixture"}
    sdr = {m: res["methods"][m]["summary"]["raw"]["all"]["si_sdr"]["mean"] for m in res["methods"]}
    assert sdr["oracle_irm"] > sdr["mixture"] + 3 and sdr["hpss"] > sdr["mixture"]


def test_the_tables_read_every_evaluation_and_refuse_other_chunks(codec_side, trained, params, monkeypatch):
    monkeypatch.chdir(codec_side)
    cfg = {"runs": [["drums_bass", "mean", 0], ["drums_bass", "supervised", 0]], "subsets": ["drums_bass"],
           "variants": ["mean", "supervised"]}
    for variant in ("mean", "supervised"):
        evaluate(codec_side, params, variant)
    evaluate_baselines(composable_baselines_config(params), "drums_bass", "results/codec/model.pt",
                       "results/codec/codes/test.pt", "results/stems/jsb/test.json",
                       "results/composable/drums_bass/baselines/separation.json",
                       "results/composable/drums_bass/baselines/examples", device="cpu")
    composable_tables(cfg, codec_side / "tables", codec_side / "figures")
    md = (codec_side / "tables/composable_separation.md").read_text()
    for label in ("| drums_bass | HPSS |", "| drums_bass | ours, mean operator |",
                  "| drums_bass | supervised (same U-Net, true stems) |", "oracle ideal ratio mask"):
        assert label in md
    assert "| HPSS | 2.3 (4.8) | 9.9 (7.5) | 5.1 (4.6) |" in md  # the paper's row, from paper_numbers.yaml
    ops = (codec_side / "tables/composable_operators.md").read_text()
    assert "| drums_bass | mean | 1 |" in ops and "1.8702 (0.13183)" in ops and "| supervised |" not in ops
    assert sorted(p.name for p in (codec_side / "figures").iterdir()) == ["separation_drums_bass.png",
                                                                         "si_sdr_vs_loudness_drums_bass.png"]
    other = json.loads(Path("results/composable/drums_bass/mean/seed0/separation.json").read_text())
    other["chunks"] = other["chunks"][:1]
    Path("results/composable/drums_bass/mean/seed0/separation.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match="scored on other test chunks than drums_bass's baselines"):
        composable_tables(cfg, codec_side / "tables", codec_side / "figures")


def test_bad_inputs_get_one_clear_line(codec_side, trained, params, tmp_path):
    codec, info = load_codec(codec_side / "results/codec/model.pt")
    codes = codec_side / "results/codec/codes/train.pt"
    with pytest.raises(UserError, match="was cached with another codec than"):
        subset_latents(codec, {**info, "sha256": "cd" * 32}, codes, "drums_bass")
    with pytest.raises(UserError, match="subset 'piano_bass' is not in the cached codes"):
        subset_latents(codec, info, codes, "piano_bass")
    with pytest.raises(UserError, match=r"has the classes \['drums', 'bass'\], not \['drums', 'bass', 'piano'\]"):
        subset_latents(codec, info, codes, "drums_bass", ["drums", "bass", "piano"])
    # a checkpoint of other parameters: trained on three sources, evaluated on a two-source subset's codes
    run = tmp_path / "run"
    best = torch.load(trained["mean"][0] / "best.pt", weights_only=True)
    best["config"] = {**best["config"], "classes": ["drums", "bass", "piano"]}
    run.mkdir()
    torch.save(best, run / "best.pt")
    cfg = step_config(params, "eval_composable")["composable.eval"]
    with pytest.raises(UserError, match="was trained on the sources"):
        evaluate_composable(cfg, run, codec_side / "results/codec/model.pt", codec_side / "results/codec/codes/test.pt",
                            codec_side / "results/stems/jsb/test.json", tmp_path / "s.json", tmp_path / "ex",
                            tmp_path / "f.png", device="cpu")


def test_the_composable_parameters_and_slices_are_checked(params):
    cfg = run_cfg(params, "sum", "drums_bass_piano")
    assert cfg["classes"] == ["drums", "bass", "piano"] and cfg["variant"] == "sum"
    check_slice(json.loads(json.dumps(cfg)), "train_composable", "drums_bass_piano", "sum", 0)
    with pytest.raises(UserError, match="it is for subset 'drums_bass_piano', but the command line says --dataset"):
        check_slice(cfg, "train_composable", "drums_bass", "sum", 0)
    with pytest.raises(UserError, match="composable.subsets names 'bass_only', which stems.subsets does not define"):
        validate(deep_merge(params, {"composable": {"subsets": ["bass_only"]}}))
    with pytest.raises(UserError, match="crop_frames = 510 is not divisible by the product"):
        validate(deep_merge(params, {"composable": {"model": {"crop_frames": 510}}}))
    with pytest.raises(UserError, match="variant 'median' is not one of"):
        step_config(params, "train_composable", "drums_bass", "median", 0)


def test_a_prior_models_a_decomposition_runs_latents_and_generates_with_it(codec_side, trained, params,
                                                                           monkeypatch):
    from musicdecomp.eval.composable_tables import generation_tables
    from musicdecomp.eval.generation import evaluate_generation
    from musicdecomp.train.prior import train_prior

    codec, codes = codec_side / "results/codec/model.pt", codec_side / "results/codec/codes"
    cfg = step_config(params, "train_prior", "drums_bass", "0.8", 0)
    assert cfg["decomposition"] == "mean" and cfg["p_mask"] == 0.8 and cfg["classes"] == ["drums", "bass"]
    check_slice(json.loads(json.dumps(cfg)), "train_prior", "drums_bass", "0.8", 0)
    run = codec_side / "results/composable/drums_bass/prior-p0.8/seed0"
    summary = train_prior(cfg, trained["mean"][0], codec, codes, run, device="cpu", threads=1)
    assert summary["steps"] == params["composable"]["prior"]["train"]["epochs"] and (run / "best.pt").is_file()
    assert json.loads((run / "latent_stats.json").read_text())["z"]["std"] > 0
    with pytest.raises(UserError, match="is a supervised run on"):
        train_prior(cfg, trained["supervised"][0], codec, codes, codec_side / "other", device="cpu")
    ev = step_config(params, "eval_generation")["composable.prior.eval"]
    res = evaluate_generation(ev, run, trained["mean"][0], codec, codes / "test.pt",
                              codec_side / "results/stems/jsb/test.json", run / "generation.json", run / "examples",
                              run / "generation.png", device="cpu")
    assert set(res["fad"]) == {"codec", "encoded", "unconditional", "regenerated_drums", "regenerated_bass"}
    assert res["fad"]["codec"]["encoded"] is None and res["fad"]["encoded"]["encoded"] is None
    assert res["embedding"]["name"] == "crepe-tiny" and not res["embedding"]["comparable_to_paper"]
    for source in ("drums", "bass"):
        d = res["diversity"][source]
        assert d["latent_mse"]["real"]["count"] == 2 and d["ms_stft"]["rand"]["mean"] > 0
    assert (run / "examples/unconditional_ex0_mixture.wav").is_file()
    assert (run / "examples/regenerated_bass_ex0_bass.wav").is_file()
    monkeypatch.chdir(codec_side)
    generation_tables({"priors": [["drums_bass", 0.8, 0]]}, codec_side / "tables")
    md = (codec_side / "tables/composable_generation.md").read_text()
    assert "| drums_bass | unconditional, p_mask = 0.8 | 1 |" in md and "not comparable to the paper's FAD" in md
    assert "| bass generated given the others, p_mask = 0.8 | 1 |" in md and "0.03 / 0.03" in md
    div = (codec_side / "tables/composable_diversity.md").read_text()
    assert "| drums | the true stem (real) |" in div and "2.3259 (0.1287)" in div
