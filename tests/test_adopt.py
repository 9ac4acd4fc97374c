"""adopt-run: a finished run trained elsewhere (a bare GPU machine) becomes the pipeline's run, checked, tracked
by the workflow tools and MLflow, and its probe with it; anything that does not match is refused."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, pipeline_root, run, snakemake

from musicdecomp.errors import UserError
from musicdecomp.eval.probes import probe_run
from musicdecomp.pipeline import code_id, step_config
from musicdecomp.sweep import run_dir
from musicdecomp.train.adopt import stage_adoption, staged
from musicdecomp.train.musicslots import train_musicslots

VARIANT = "none-t1-imp_true-k4"


def train_elsewhere(tiny_params, data: Path, where: Path, seed: int = 0, probe: bool = True, **kw) -> tuple[dict, Path]:
    """A run as the GPU script leaves it: trained without MLflow, then probed."""
    cfg = step_config(tiny_params, "train_musicslots", "jsb_multi", VARIANT, seed)
    src = where / VARIANT
    summary = train_musicslots(cfg, data, src, device="cpu", threads=1, code=code_id("train_musicslots"), **kw)
    if probe and "stopped_at" not in summary:
        probe_run(step_config(tiny_params, "probe"), src, data, src / "probe.json", device="cpu")
    return cfg, src


def test_an_adopted_run_is_published_instead_of_trained_and_its_probe_with_it(tiny_run, tiny_params, tmp_path):
    import mlflow

    data = tiny_run / "results/data/jsb_multi"
    cfg, src = train_elsewhere(tiny_params, data, tmp_path / "gpu")
    root = pipeline_root(tmp_path, tiny_run)
    dst = root / run_dir("jsb_multi", VARIANT, 0)
    dst.mkdir(parents=True)
    (dst / "train.json").write_text("{}")  # an older run of the pipeline's own: set aside, not deleted
    trained = json.loads((src / "train.json").read_text())  # as if trained by an older train/loop.py
    trained["code"]["train/loop.py"] = "0" * 16
    (src / "train.json").write_text(json.dumps(trained))
    res = stage_adoption(src, tiny_params, step_config, root=root)
    assert res["run_dir"] == str(dst) and res["probe"] and staged(dst) and (dst / "adopt/probe/best.pt").exists()
    assert res["targets"] == [f"{run_dir('jsb_multi', VARIANT, 0)}/test.json"]  # not a probed variant in tiny
    assert not (dst / "train.json").exists() and [p.name for p in (dst / "stale").glob("*/train.json")]

    tracking = {"mlflow_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "adopt"}
    summary = train_musicslots(cfg, data, dst, device="cpu", tracking=tracking,  # what both workflow tools call
                               code=code_id("train_musicslots"))
    assert summary["adopted"] == {"from": str(src.resolve()), "at": summary["adopted"]["at"],
                                  "code_differs": ["train/loop.py"]}
    assert not (dst / "ckpt/last.pt").exists() and not (dst / "adopt").exists()  # published, not trained
    assert (dst / "best.pt").read_bytes() == (src / "best.pt").read_bytes()
    assert (dst / "metrics.jsonl").read_text() == (src / "metrics.jsonl").read_text()
    assert json.loads((dst / "train.json").read_text()) == summary
    assert summary["data_id"] == json.loads((data / "summary.json").read_text())["source_id"]
    mlflow.set_tracking_uri(tracking["mlflow_uri"])
    runs = mlflow.search_runs(experiment_names=["adopt/musicslots"])
    assert len(runs) == 1 and runs.iloc[0]["run_id"] == summary["mlflow_run_id"]
    assert runs.iloc[0]["tags.musicdecomp.adopted_from"] == str(src.resolve())
    assert runs.iloc[0]["tags.model"] == "musicslots" and runs.iloc[0]["status"] == "FINISHED"
    assert runs.iloc[0]["tags.musicdecomp.adopted_code_differs"] == "train/loop.py"

    assert staged(dst / "probe")  # the probe step adopts the probe: same accuracies, nothing trained
    out = probe_run(step_config(tiny_params, "probe"), dst, data, dst / "probe.json", device="cpu")
    assert out["test"] == json.loads((src / "probe.json").read_text())["test"]
    assert json.loads((dst / "probe/train.json").read_text())["adopted"]["from"] == f"{src.resolve()}/probe"
    assert not (dst / "probe/ckpt/last.pt").exists()

    # trained here again later (as after a parameter change, outputs deleted first): the adopted run is set aside
    for output in ("best.pt", "train.json"):
        (dst / output).unlink()
    again = train_musicslots(cfg, data, dst, device="cpu", threads=1)
    assert "adopted" not in again and (dst / "ckpt/last.pt").exists() and not (dst / "adopted.json").exists()
    aside = [p.parent for p in (dst / "stale").glob("*/adopted.json")]
    assert len(aside) == 1 and (aside[0] / "ckpt/best.pt").read_bytes() == (src / "best.pt").read_bytes()
    assert (aside[0] / "probe/train.json").exists()


def test_runs_that_do_not_match_are_refused(tiny_run, tiny_params, tmp_path):
    data = tiny_run / "results/data/jsb_multi"
    root = pipeline_root(tmp_path, tiny_run)
    cfg, src = train_elsewhere(tiny_params, data, tmp_path / "gpu", probe=False)
    other = json.loads(json.dumps(tiny_params))
    other["musicslots"]["train"]["lr"] = 0.0002
    with pytest.raises(UserError, match=r"other parameters .*: train\.lr \(0\.0003 in the run, 0\.0002 here\)"):
        stage_adoption(src, other, step_config, root=root)
    with pytest.raises(UserError, match="is not a folder"):
        stage_adoption(tmp_path / "nowhere", tiny_params, step_config, root=root)
    cli = run([sys.executable, "-m", "musicdecomp", "adopt-run", "--from", str(tmp_path / "nowhere")], cwd=root,
              check=False)
    assert cli.returncode == 2 and cli.stderr.startswith("musicdecomp adopt-run: error: ")
    assert "Traceback" not in cli.stderr

    _, stopped = train_elsewhere(tiny_params, data, tmp_path / "stopped", stop_after=2)
    with pytest.raises(UserError, match="has not finished"):
        stage_adoption(stopped, tiny_params, step_config, root=root)

    summary = json.loads((src / "train.json").read_text())
    (src / "train.json").write_text(json.dumps({**summary, "data_id": "0" * 16}))
    with pytest.raises(UserError, match="trained on other data"):
        stage_adoption(src, tiny_params, step_config, root=root)
    del summary["data_id"]
    (src / "train.json").write_text(json.dumps(summary))
    shutil.rmtree(src / "ckpt")  # a finished run brought back without ckpt/last.pt
    with pytest.raises(UserError, match="does not record the data"):
        stage_adoption(src, tiny_params, step_config, root=root)
    dst = Path(stage_adoption(src, tiny_params, step_config, root=root, trust_data=True)["run_dir"])
    assert not (dst / "adopt/probe").exists()  # no probe came with it

    # the training step checks again: staged with the parameters of then, run with the ones of now
    changed = {**cfg, "train": {**cfg["train"], "lr": 0.0002}}
    with pytest.raises(UserError, match=rf"train\.lr .*; delete {dst / 'adopt'} to train the run here"):
        train_musicslots(changed, data, dst, device="cpu")
    best = torch.load(dst / "adopt/best.pt", weights_only=True)
    best["model"] = {k: v for k, v in best["model"].items() if not k.startswith("decoder.")}
    torch.save(best, dst / "adopt/best.pt")
    with pytest.raises(UserError, match="does not fit the model this code builds"):
        train_musicslots(cfg, data, dst, device="cpu")
    assert staged(dst) and not (dst / "train.json").exists()  # nothing published


@pytest.mark.slow
def test_snakemake_records_an_adopted_run_and_retrains_it_when_its_parameters_change(tiny_run, tiny_params,
                                                                                     tiny_override, tmp_path):
    """Adopted through the workflow's own training job, the run carries Snakemake's provenance: a later change of
    its parameters reruns it like any run (no silent staleness)."""
    seed = 7  # a run the tiny sweep does not have, in the shared tiny work folder, tracked nowhere
    notrack = tmp_path / "notrack.yaml"
    notrack.write_text(yaml.safe_dump({"tracking": {"mlflow_uri": None}}))
    configs = [REPO / "config/tiny.yaml", tiny_override, notrack]
    _, src = train_elsewhere(tiny_params, tiny_run / "results/data/jsb_multi", tmp_path / "gpu", seed=seed,
                             probe=False)
    params = [REPO / "params.yaml", *configs]
    cli = run([sys.executable, "-m", "musicdecomp", "adopt-run", "--params", *map(str, params), "--from", str(src)],
              cwd=tiny_run)
    dst = tiny_run / run_dir("jsb_multi", VARIANT, seed)
    assert f"snakemake --cores 2 {run_dir('jsb_multi', VARIANT, seed)}/test.json --configfile " in cli.stdout
    target = f"{run_dir('jsb_multi', VARIANT, seed)}/train.json"
    out = snakemake(tiny_run, target, configfiles=configs)
    assert "rule train_musicslots:" in out.stdout + out.stderr
    assert json.loads((dst / "train.json").read_text())["adopted"]["from"] == str(src.resolve())
    again = snakemake(tiny_run, "-n", target, configfiles=configs)
    assert "Nothing to be done" in again.stdout + again.stderr
    lr = tmp_path / "lr.yaml"
    lr.write_text(yaml.safe_dump({"musicslots": {"train": {"lr": 0.0002}}}))
    dry = snakemake(tiny_run, "-n", target, configfiles=[*configs, lr])
    assert "Params have changed since last execution" in dry.stdout + dry.stderr


def test_a_baseline_run_is_adopted_into_its_baseline_folder(tiny_run, tiny_params, tmp_path):
    from musicdecomp.sweep import baseline_dir
    from musicdecomp.train.baselines import train_baseline

    data = tiny_run / "results/data/jsb_multi"
    cfg = step_config(tiny_params, "train_baseline", "jsb_multi", "vae-kl0.0", 0)
    src = tmp_path / "gpu/vae-kl0.0"
    train_baseline(cfg, data, src, device="cpu", threads=1)
    probe_run(step_config(tiny_params, "probe"), src, data, src / "probe.json", device="cpu")
    root = pipeline_root(tmp_path, tiny_run)
    res = stage_adoption(src, tiny_params, step_config, root=root)
    dst = root / baseline_dir("jsb_multi", "vae-kl0.0", 0)
    assert res["run_dir"] == str(dst) and res["targets"] == [f"{baseline_dir('jsb_multi', 'vae-kl0.0', 0)}/probe.json"]
    assert train_baseline(cfg, data, dst, device="cpu")["adopted"]["from"] == str(src.resolve())
    out = probe_run(step_config(tiny_params, "probe"), dst, data, dst / "probe.json", device="cpu")
    assert out["test"] == json.loads((src / "probe.json").read_text())["test"] and not (dst / "ckpt/last.pt").exists()
    with pytest.raises(UserError, match="is the pipeline's own folder of this run"):
        stage_adoption(dst, tiny_params, step_config, root=root)
