"""Parameters: merging, validation with one-line errors, and the slice each step receives."""

import copy
import re
import subprocess
import sys

import pytest
from conftest import REPO, tool_env

from musicdecomp.config import deep_merge, flatten, load_params, validate
from musicdecomp.errors import UserError
from musicdecomp.pipeline import check_slice, step_config
from musicdecomp.sweep import baseline_runs, musicslots_runs, probe_runs


def test_default_params_are_valid(params):
    validate(params)


@pytest.mark.parametrize("override", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_every_override_in_config_is_valid_on_params(override):
    merged = load_params([REPO / "params.yaml", REPO / "config" / override])
    validate(merged)
    if override == "attention_standard.yaml":  # changes the normalisation, and nothing else of the model
        model = step_config(merged, "train_musicslots", "jsb_multi", "none-t1-imp_true-k7", 0)["model"]
        base = step_config(load_params([REPO / "params.yaml"]), "train_musicslots", "jsb_multi",
                           "none-t1-imp_true-k7", 0)["model"]
        assert model == {**base, "attention": "standard"} and base["attention"] == "official"
    if override == "kept_runs.yaml":  # which runs the tables hold, not how any is trained (they are adopted)
        runs = musicslots_runs(merged)
        assert runs == [("jsb_multi", "softmax-t2-imp_true-k7", 0), ("jsb_multi", "none-t2-imp_true-k7", 0)]
        assert probe_runs(merged) == runs[1:] and baseline_runs(merged) == []
        base = load_params([REPO / "params.yaml"])
        for step in ("train_musicslots", "eval_musicslots", "probe"):
            assert all(step_config(merged, step, *r) == step_config(base, step, *r) for r in runs)


def test_deep_merge_overrides_leaves_and_keeps_siblings():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    out = deep_merge(base, {"a": {"c": [9]}, "e": 4})
    assert out == {"a": {"b": 1, "c": [9]}, "d": 3, "e": 4}
    assert base["a"]["c"] == [1, 2]  # the base is not modified


def test_tiny_config_only_shrinks_the_run(tiny_params, params):
    """The tiny override changes sizes (chords, assignments, model width, steps), never the data protocol (the
    tests' own override only points the sources at the synthetic JSB files, which have no checksum)."""
    changed = {k for k, v in flatten(tiny_params).items() if flatten(params).get(k) != v}
    data_changes = {k for k in changed if not k.startswith(("musicslots.", "baselines.", "probe.", "stems.", "codec.",
                                                            "composable."))}
    assert data_changes == {"data.jsb.chords.max_chords", "datasets.jsb_multi.assignments_per_chord",
                            "figures.n_examples", "data.jsb.source.json_path", "data.jsb16.source.json_path",
                            "data.jsb.source.sha256", "data.jsb16.source.sha256"}
    assert {k for k in changed if k.startswith("musicslots.model.")} <= {
        "musicslots.model.dim", "musicslots.model.enc_channels", "musicslots.model.iters"}
    # the codec: explicitly the trained alternative (CI has no weights either way), fewer codebooks, shorter crops,
    # few steps, few test chunks; its losses and validation are the protocol's
    assert {k for k in changed if k.startswith("codec.") and not k.startswith("codec.trained.train.")} == {
        "codec.source", "codec.bandwidth", "codec.encode_batch", "codec.trained.crop_seconds",
        "codec.eval.max_chunks", "codec.eval.n_examples"}
    # composable representations: narrower and shallower networks, few epochs, chunks and sampling steps; the data,
    # the objective, the operators, the normalisation and the crop are the protocol's
    assert {k for k in changed if k.startswith("composable.")} <= {
        *(f"composable.model.unet.{k}" for k in ("channels", "kernels", "strides", "attention", "emb_dim", "head_dim",
                                                  "dropout")), "composable.model.encoder.channels",
        *(f"composable.train.{k}" for k in ("epochs", "batch_size", "log_every", "eval_every", "val_examples",
                                            "eval_batch_size", "checkpoint_every")),
        *(f"composable.eval.{k}" for k in ("max_chunks", "sample_steps", "batch_size", "n_examples")),
        "composable.baselines.nmf_components",
        *(f"composable.prior.unet.{k}" for k in ("channels", "kernels", "strides", "attention", "emb_dim", "head_dim",
                                                  "dropout")),
        *(f"composable.prior.train.{k}" for k in ("epochs", "batch_size", "log_every", "eval_every", "val_examples",
                                                  "eval_batch_size", "checkpoint_every")),
        *(f"composable.prior.eval.{k}" for k in ("max_chunks", "sample_steps", "variations", "batch_size",
                                                 "n_examples", "embedding"))}
    assert not {k for k in changed if k.endswith((".lr", ".batch_size")) and not k.startswith("probe.")} - {
        "musicslots.train.batch_size", "baselines.vae.train.batch_size", "baselines.cnn.train.batch_size",
        "codec.trained.train.batch_size", "composable.train.batch_size", "composable.eval.batch_size",
        "composable.prior.train.batch_size", "composable.prior.eval.batch_size"}


@pytest.mark.parametrize("key, value, words", [
    (("data", "mel", "n_mels"), 0, "data.mel.n_mels = 0 is out of range"),
    (("data", "jsb", "chords", "split"), [0.5, 0.5, 0.5], "sum to 1"),
    (("datasets", "jsb_multi", "programs"), [0, 128], "General MIDI program numbers 0-127"),
    (("datasets", "jsb_multi", "programs"), [0, 0], "distinct"),
    (("data", "render", "velocity"), 200, "data.render.velocity = 200"),
    (("data", "render", "reverb"), "yes", "true or false"),
    (("codec", "bandwidth"), 5.0, "EnCodec 24 kHz bandwidths"),
    (("codec", "source"), "download", "codec.source = 'download' is out of range"),
    (("stems", "sample_rate"), 16000, "needs 24000"),
    (("musicslots", "eval", "iters"), 0, "musicslots.eval.iters = 0 is out of range"),
    (("musicslots", "eval", "amp"), "fp8", "musicslots.eval.amp = 'fp8'"),
])
def test_out_of_range_params_name_the_key(params, key, value, words):
    bad = deep_merge(params, {})
    node = bad
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = value
    with pytest.raises(UserError, match=words.replace("[", r"\[").replace("]", r"\]")):
        validate(bad)


def test_unknown_and_missing_params_are_reported(params):
    with pytest.raises(UserError, match="unknown parameter data.render.gian"):
        validate(deep_merge(params, {"data": {"render": {"gian": 0.3}}}))
    bad = deep_merge(params, {})
    del bad["data"]["mel"]["hop_length"]
    with pytest.raises(UserError, match="data.mel.hop_length is missing"):
        validate(bad)


def test_step_slices_hold_only_what_the_step_uses(params):
    assert set(step_config(params, "chords")) == {"data.jsb.chords"}
    render = step_config(params, "render")
    assert set(render) == {"data.render", "programs"}
    assert render["programs"] == [0, 40, 73]  # the union over datasets
    feats = step_config(params, "features", "jsb_single")
    assert set(feats) == {"data.mel", "datasets.jsb_single"}
    with pytest.raises(UserError, match="dataset 'nope' is not defined"):
        step_config(params, "features", "nope")
    assert step_config(params, "eval_musicslots") == {"musicslots.eval": {"iters": None, "amp": "none"},
                                                      "compute.reevaluate": False}


def test_yaml_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml is not valid YAML"):
        load_params([bad])
    with pytest.raises(UserError, match="does not exist"):
        load_params([tmp_path / "none.yaml"])


def test_cli_reports_bad_params_in_one_line_and_exit_2(tmp_path):
    override = tmp_path / "o.yaml"
    override.write_text("data:\n  jsb:\n    chords:\n      seed: -1\n")
    proc = subprocess.run([sys.executable, "-m", "musicdecomp", "chords", "--params", str(REPO / "params.yaml"),
                           str(override), "--json", "x.json", "--out-csv", "c.csv", "--out-summary", "s.json"],
                          cwd=tmp_path, env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["musicdecomp chords: error: parameter data.jsb.chords.seed = -1 is out of range: expected "
                     "an integer >= 0; fix it in params.yaml or your override file"]
    assert not (tmp_path / "c.csv").exists()


def test_config_command_prints_the_slice_a_step_receives(params, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "musicdecomp", "config", "train-musicslots", "--params",
                           str(REPO / "params.yaml"), "--dataset", "jsb_multi", "--variant", "sigmoid-t2-imp_false-k5",
                           "--seed", "3"], cwd=tmp_path, env=tool_env(), capture_output=True, text=True, check=True)
    import json

    printed = json.loads(proc.stdout)
    assert printed == step_config(params, "train_musicslots", "jsb_multi", "sigmoid-t2-imp_false-k5", 3)
    assert printed["model"]["mask"] == "sigmoid" and printed["model"]["num_slots"] == 5


def _every_slice(params):
    """(step, dataset, variant, seed, slice as the JSON round trip hands it) for every step the params define."""
    import json

    from musicdecomp.pipeline import STEPS
    from musicdecomp.sweep import baseline_runs, composable_runs, musicslots_runs, prior_runs

    for step, spec in STEPS.items():
        if step == "train_musicslots":
            runs = musicslots_runs(params)
        elif step == "train_baseline":
            runs = baseline_runs(params)
        elif step == "train_composable":
            runs = composable_runs(params)
        elif step == "train_prior":
            runs = [(s, str(p), seed) for s, p, seed in prior_runs(params)]
        elif spec.per_dataset:
            runs = [(name, None, None) for name in params["datasets"]]
        else:
            runs = [(None, None, None)]
        for run in runs:
            yield step, *run, json.loads(json.dumps(step_config(params, step, *run)))


def test_every_slice_the_params_give_passes_its_check(params, tiny_params):
    seen = set()
    for p in (params, tiny_params):
        for step, dataset, variant, seed, cfg in _every_slice(p):
            check_slice(cfg, step, dataset, variant, seed)
            seen.add(step)
    from musicdecomp.pipeline import STEPS

    assert seen == set(STEPS)


def _without(cfg, *path):
    out = copy.deepcopy(cfg)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


RUN = ("jsb_multi", "none-t1-imp_true-k7", 0)


def test_a_slice_is_a_copy_of_the_params(params):
    """Changing a step's slice (as a caller or a test may) leaves the parameters it came from as they were."""
    before = copy.deepcopy(params)
    for _step, *_run, _ in _every_slice(params):
        cfg = step_config(params, _step, *_run)
        for value in cfg.values():
            if isinstance(value, dict):
                value.clear()
    assert params == before


@pytest.mark.parametrize("case, words", [
    ("train lacks a key", "parameter musicslots.train.checkpoint_minutes is missing; print it again with "
                          "`python -m musicdecomp config train-musicslots --dataset jsb_multi --variant "
                          "none-t1-imp_true-k7 --seed 0`"),
    ("model has an unknown key", "unknown parameter musicslots.model.dropout"),
    ("model value out of range", "parameter musicslots.model.mask = 'alpha' is out of range"),
    ("slice for another variant", "it is for variant 'softmax-t1-imp_true-k7', but the command line says "
                                  "--variant none-t1-imp_true-k7"),
    ("slice for another seed", "it is for seed 1, but the command line says --seed 0"),
    ("slice lacks its run name", "it lacks run_name"),
    ("eval lacks amp", "the --config of eval-musicslots: parameter musicslots.eval.amp is missing"),
    ("features lacks the dataset seed", "parameter datasets.jsb_multi.seed is missing"),
    ("features for another dataset", "it is for dataset 'jsb_single', but the command line says --dataset jsb_multi"),
    ("render programs out of range", "programs = [0, 300] is out of range"),
    ("vae without its weight", "a vae slice needs kld_weight"),
    ("trained codec without its loop", "the --config of codec: it lacks trained.train"),
])
def test_check_slice_names_what_is_wrong_and_how_to_mend_it(tiny_params, case, words):
    """A slice printed by another version, or for another run, is refused in one line, before the step runs."""
    p = tiny_params
    train = step_config(p, "train_musicslots", *RUN)
    step, run, cfg = "train_musicslots", RUN, None
    if case == "train lacks a key":
        cfg = _without(train, "train", "checkpoint_minutes")
    elif case == "model has an unknown key":
        cfg = deep_merge(train, {"model": {"dropout": 0.1}})
    elif case == "model value out of range":
        cfg = deep_merge(train, {"model": {"mask": "alpha"}})
    elif case == "slice for another variant":
        cfg = step_config(p, "train_musicslots", "jsb_multi", "softmax-t1-imp_true-k7", 0)
    elif case == "slice for another seed":
        cfg = step_config(p, "train_musicslots", "jsb_multi", "none-t1-imp_true-k7", 1)
    elif case == "slice lacks its run name":
        cfg = _without(train, "run_name")
    elif case == "eval lacks amp":
        step, run, cfg = "eval_musicslots", (None, None, None), {"musicslots.eval": {"iters": None},
                                                                 "compute.reevaluate": False}
    elif case == "features lacks the dataset seed":
        step, run = "features", ("jsb_multi", None, None)
        cfg = _without(step_config(p, step, "jsb_multi"), "datasets.jsb_multi", "seed")
    elif case == "features for another dataset":
        step, run, cfg = "features", ("jsb_multi", None, None), step_config(p, "features", "jsb_single")
    elif case == "render programs out of range":
        step, run, cfg = "render", (None, None, None), {**step_config(p, "render"), "programs": [0, 300]}
    elif case == "vae without its weight":
        step, run = "train_baseline", ("jsb_multi", "vae-kl0.0", 0)
        cfg = _without(step_config(p, step, *run), "kld_weight")
    elif case == "trained codec without its loop":
        step, run = "codec", (None, None, None)
        cfg = _without(step_config(p, step), "trained", "train")
    with pytest.raises(UserError, match=re.escape(words)):
        check_slice(cfg, step, *run)


def test_a_stale_config_slice_stops_the_step_in_one_line(tiny_params, tmp_path):
    """Through the command line, outside the repository (as on the GPU machine): exit 2, one line, no output."""
    import json

    cfg = _without(step_config(tiny_params, "train_musicslots", *RUN), "train", "amp")
    proc = subprocess.run([sys.executable, "-m", "musicdecomp", "train-musicslots", "--config", json.dumps(cfg),
                           "--dataset", RUN[0], "--variant", RUN[1], "--seed", str(RUN[2]), "--data-dir", "data",
                           "--run-dir", "run"], cwd=tmp_path, env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "musicdecomp train-musicslots: error: the --config of train-musicslots: parameter musicslots.train.amp is "
        "missing; print it again with `python -m musicdecomp config train-musicslots --dataset jsb_multi --variant "
        "none-t1-imp_true-k7 --seed 0` (it may come from another version of musicdecomp)"]
    assert not (tmp_path / "run").exists()
