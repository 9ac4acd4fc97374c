"""tools/gpu/: the GPU queue, the dry run of a staged job, what a device call brings back, and composable runs
staged with the codec's codebooks, trained in the GPU machine's package set, brought back and adopted."""

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tool_env

from musicdecomp.models.codes import (
    codebooks_of,
    codes_data_id,
    latents_from_codebooks,
    load_codes,
    subset_codes,
    write_codebooks,
)
from musicdecomp.models.encodec import codes_to_latent, load_codec
from musicdecomp.pipeline import code_id, step_config
from musicdecomp.train.adopt import stage_adoption
from musicdecomp.train.composable import train_composable

DRIVER = REPO / "tools/gpu/driver.py"
_spec = importlib.util.spec_from_file_location("gpu_driver", DRIVER)
driver = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(driver)


def call(*args, cwd, device_like=False):
    env = tool_env()
    if device_like:
        env["PYTHONPATH"] = str(REPO / "tools/gpu/device_like")
    return subprocess.run([sys.executable, str(DRIVER), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True)


def test_the_queue_says_where_each_job_stands_and_what_to_run_next(tmp_path):
    (tmp_path / "q.yaml").write_text("""jobs:
  - {name: speed, kind: bench, record: no_such_record}
  - {name: codec, kind: cluster, why: "too big; and more"}
  - {name: runs, kind: train, variants: [none-t2-imp_true-k7, cnn], params: [params.yaml], runs: checkpoints/musicslots}
""")
    proc = call("queue", "--file", tmp_path / "q.yaml", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "1. speed\n   [bench] not recorded for NVIDIA H200" in out
    assert "[cluster] cluster: too big" in out
    assert "none-t2-imp_true-k7 at step" in out and "cnn not started" in out
    assert "--variants none-t2-imp_true-k7 --runs checkpoints/musicslots" in out and "--extra-bench 180" in out


def test_the_committed_queue_reads_and_every_train_job_names_runs_the_driver_trains():
    import yaml

    proc = call("queue", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "next:" in proc.stdout or "no training job of the queue is left" in proc.stdout
    for job in yaml.safe_load((REPO / "tools/gpu/queue.yaml").read_text())["jobs"]:
        assert job["kind"] in ("train", "bench", "cluster"), job["name"]
        if job["kind"] == "train":
            assert all(driver.train_step(v).startswith("train-") for v in job["variants"])
        if job["kind"] == "cluster":
            assert job["why"], job["name"]


def test_what_would_not_come_back_from_a_device_call_is_named(tmp_path):
    out = tmp_path / "out"
    (out / "a/b/c").mkdir(parents=True)
    assert driver.check_return(out) == []
    for i in range(9):
        (out / f"f{i}.json").write_text("{}")
    (out / "big.tar").write_bytes(b"\0" * (17 * 2**20))
    (out / "a/b/c/deep.json").write_text("{}")
    (out / "odd name.json").write_text("{}")
    problems = "; ".join(driver.check_return(out))
    assert "12 files, more than 8" in problems and "big.tar: 17.0 MiB, over 16 MiB" in problems
    assert "a/b/c/deep.json: a name or depth" in problems and "odd name.json: a name or depth" in problems


def test_the_codebooks_decode_codes_to_the_codec_s_latents_and_reduced_codes_keep_their_data_id(tiny_all, tmp_path):
    codec, info = load_codec(tiny_all / "results/codec/model.pt")
    payload = load_codes(tiny_all / "results/codec/codes/train.pt")
    codes = subset_codes(payload, "drums_bass")["mix"]
    assert torch.equal(latents_from_codebooks(codebooks_of(codec), codes), codes_to_latent(codec, codes))
    write_codebooks(codec, info, tmp_path / "codebooks.pt")
    for split in ("train", "valid"):
        torch.save(driver.subset_payload(load_codes(tiny_all / f"results/codec/codes/{split}.pt"), ["drums_bass"]),
                   tmp_path / f"{split}.pt")
    reduced = load_codes(tmp_path / "train.pt")
    assert set(reduced["classes"]) == {"drums", "bass"} and len(reduced["positions"]) <= len(payload["positions"])
    assert all(torch.equal(a, b) for a, b in zip(subset_codes(reduced, "drums_bass").values(),
                                                 subset_codes(payload, "drums_bass").values()))
    assert codes_data_id(tmp_path, "drums_bass") == codes_data_id(tiny_all / "results/codec/codes", "drums_bass")


@pytest.mark.slow
def test_a_composable_run_goes_to_the_gpu_machine_and_is_adopted_here(tiny_all, tiny_override, tiny_params,
                                                                      tmp_path):
    params = [REPO / "params.yaml", REPO / "config/tiny.yaml", tiny_override]
    stage = tmp_path / "stage"
    proc = call("prepare", "--stage", stage, "--params", *params, "--variants", "composable-drums_bass-mean",
                cwd=tiny_all)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in stage.iterdir()} >= {"configs.json", "codebooks.pt.z", "codes-train.pt.z",
                                                "codes-valid.pt.z"} and not (stage / "notes.pt.z").exists()
    out = tmp_path / "out"
    proc = call("run", "--stage", stage, "--out", out, "--work", tmp_path / "machine", "--budget", 600, "--device",
                "cpu", "--bench-seconds", 0, cwd=tmp_path, device_like=True)  # no encodec, librosa, MLflow there
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())["runs"]["composable-drums_bass-mean"]
    assert summary["exit"] == 0 and summary["train"]["steps"] == summary["progress"]["steps"]
    assert driver.check_return(out) == []
    back = tmp_path / "back"
    assert call("unpack", "--from", out, "--to", back, cwd=tmp_path).returncode == 0
    run = back / "composable-drums_bass-mean"
    # adopted here: the pipeline's training step publishes it, checked against the parameters, data and model
    root = tmp_path / "pipeline"
    (root / "results").mkdir(parents=True)
    (root / "results/codec").symlink_to(tiny_all / "results/codec")
    res = stage_adoption(run, tiny_params, step_config, root=root)
    assert res["targets"] == ["results/composable/drums_bass/mean/seed0/separation.json"]
    cfg = step_config(tiny_params, "train_composable", "drums_bass", "mean", 0)
    adopted = train_composable(cfg, tiny_all / "results/codec/model.pt", tiny_all / "results/codec/codes",
                               root / "results/composable/drums_bass/mean/seed0", device="cpu",
                               code=code_id("train_composable"))
    assert adopted["adopted"]["from"] == str(run.resolve())


def test_a_dry_run_checks_a_staged_job_end_to_end(tiny_run, tiny_override, tmp_path):
    params = [REPO / "params.yaml", REPO / "config/tiny.yaml", tiny_override]
    stage = tmp_path / "stage"
    assert call("prepare", "--stage", stage, "--params", *params, "--variants", "none-t2-imp_true-k3",
                cwd=tiny_run).returncode == 0
    proc = call("dry-run", "--stage", stage, "--train-seconds", 2, cwd=tiny_run)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "dry run passed" in proc.stdout and "none-t2-imp_true-k3 trained, packed" in proc.stdout
    assert call("dry-run", "--stage", tmp_path / "nothing", cwd=tiny_run).stderr.strip().endswith(
        "holds no staged job: run `prepare` first")
