"""Baseline models, chord-level accuracies and the linear probes, on hand-built and synthetic cases."""

import pytest
import torch

from musicdecomp.eval.probes import probe_run, score, train_probe
from musicdecomp.metrics.accuracy import grid_level, note_level
from musicdecomp.models.baselines import VAE, SupervisedCNN, multilabel_targets
from musicdecomp.sweep import baseline_config
from musicdecomp.train.baselines import train_baseline


def test_baseline_shapes():
    x = torch.randn(3, 1, 128, 32)
    recon, kld, mu = VAE(latent=8, channels=8)(x, sample=True)
    assert recon.shape == x.shape and mu.shape == (3, 8) and kld.ndim == 0
    assert SupervisedCNN(52, 3, channels=8)(x).shape == (3, 52, 3)


def test_multilabel_targets():
    pitch = torch.tensor([[0, 5, -1], [2, 2, 7]])
    inst = torch.tensor([[1, 0, -1], [0, 1, 2]])
    grid = multilabel_targets(pitch, inst, 8, 3)
    assert grid.sum().item() == 5
    assert grid[0, 0, 1] == 1 and grid[0, 5, 0] == 1 and grid[1, 2, 0] == grid[1, 2, 1] == grid[1, 7, 2] == 1


def test_note_level_accuracy():
    pitch = torch.tensor([[1, 2, -1], [3, 4, 5]])
    inst = torch.tensor([[0, 0, -1], [1, 1, 2]])
    pred_p = torch.tensor([[1, 2, 9], [3, 4, 0]])  # padding ignored; second chord misses one pitch
    pred_i = torch.tensor([[0, 1, 9], [1, 1, 2]])  # first chord misses one instrument
    assert note_level(pred_p, pred_i, pitch, inst) == {"pitch": 0.5, "instrument": 0.5, "chord": 0.0}
    assert note_level(pitch, inst, pitch, inst) == {"pitch": 1.0, "instrument": 1.0, "chord": 1.0}


def test_grid_level_accuracy():
    target = multilabel_targets(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[0, 1], [2, 2]]), 6, 3)
    logits = (target * 20 - 10).clone()
    assert grid_level(logits, target) == {"pitch": 1.0, "instrument": 1.0, "chord": 1.0}
    wrong_inst = logits.clone()
    wrong_inst[0, 1, 0], wrong_inst[0, 1, 2] = -10, 10  # chord 0: pitch 1 on instrument 2 instead of 0
    assert grid_level(wrong_inst, target) == {"pitch": 1.0, "instrument": 0.5, "chord": 0.5}
    extra = logits.clone()
    extra[1, 5, 0] = 10  # chord 1: a pitch that is not there
    assert grid_level(extra, target) == {"pitch": 0.5, "instrument": 1.0, "chord": 0.5}


PROBE_TRAIN = {"steps": 150, "batch_size": 16, "lr": 0.05, "warmup_steps": 0, "cosine_steps": 150,
               "grad_clip": None, "amp": "none", "log_every": 50, "eval_every": 150, "val_examples": None,
               "eval_batch_size": 64, "checkpoint_every": 150, "checkpoint_minutes": 5.0}


@pytest.mark.parametrize("kind", ["notes", "grid"])
def test_linear_probe_learns_separable_features(tmp_path, kind):
    """Features that encode the labels linearly: the probe must reach (near) perfect chord accuracy."""
    gen = torch.Generator().manual_seed(0)
    n_p, n_i = 6, 2

    def split(n):
        pitch = torch.stack([torch.randperm(n_p, generator=gen)[:3] for _ in range(n)])
        inst = torch.randint(n_i, (n, 3), generator=gen)
        if kind == "notes":
            feats = torch.cat([torch.nn.functional.one_hot(pitch, n_p), torch.nn.functional.one_hot(inst, n_i)],
                              -1).float()
            return {"feats": feats, "pitch": pitch, "instrument": inst}
        grid = multilabel_targets(pitch, inst, n_p, n_i)
        return {"feats": grid.flatten(1), "grid": grid}

    feats = {s: split(n) for s, n in (("train", 200), ("valid", 50), ("test", 50))}
    cfg = {"run_name": "probe-test", "seed": 0, "train": PROBE_TRAIN}
    probe = train_probe(cfg, feats, tmp_path / "probe", torch.device("cpu"), kind, n_p, n_i, None)
    assert score(probe, feats["test"], kind, n_p, n_i)["chord"] >= 0.95
    assert (tmp_path / "probe" / "best.pt").exists()


def test_baselines_train_and_probe_on_tiny_data(tiny_run, tiny_params, tmp_path):
    data = tiny_run / "results/data/jsb_multi"
    for name in ("vae-kl0.125", "cnn"):
        cfg = baseline_config(tiny_params, "jsb_multi", name, 0)
        summary = train_baseline(cfg, data, tmp_path / name, device="cpu", threads=1)
        assert summary["steps"] == cfg["train"]["steps"]
        out = probe_run({"train": tiny_params["probe"]["train"]}, tmp_path / name, data, tmp_path / f"{name}.json",
                        device="cpu")
        assert out["model"] == ("vae" if name.startswith("vae") else "cnn") and out["name"] == name
        assert set(out["test"]) == {"pitch", "instrument", "chord"}
        assert all(0.0 <= v <= 1.0 for v in out["test"].values())
    assert (tmp_path / "vae-kl0.125" / "probe" / "best.pt").exists()  # the probe's own resumable run
    with pytest.raises(Exception, match="is not cnn or vae-kl"):
        baseline_config(tiny_params, "jsb_multi", "vgg", 0)


def test_musicslots_probe_features_are_the_matched_slots(tiny_run, tiny_params):
    from musicdecomp.data.datasets import load_split
    from musicdecomp.eval.probes import musicslots_features
    from musicdecomp.metrics.musicslots import evaluate
    from musicdecomp.models.musicslots import build_model

    data = load_split(tiny_run / "results/data/jsb_multi/valid.pt")
    torch.manual_seed(0)
    model = build_model({**tiny_params["musicslots"]["model"], "num_slots": 5}, (128, 32)).eval()
    feats = musicslots_features(model, data, torch.device("cpu"), "none", 16)
    ref = evaluate(model, data, torch.device("cpu"), "none", 16, keep_slots=True)
    assert feats["feats"].shape == (len(data), 4, tiny_params["musicslots"]["model"]["dim"])
    for i in range(len(data)):
        for v in range(int(data.n_notes[i])):
            assert torch.equal(feats["feats"][i, v], ref["slots"][i, ref["match"][i, v]])
        assert not feats["feats"][i, int(data.n_notes[i]):].any()
    # distinct notes of a chord get distinct slots (a one-to-one matching)
    assert all(len(set(ref["match"][i, : int(data.n_notes[i])])) == int(data.n_notes[i]) for i in range(len(data)))
