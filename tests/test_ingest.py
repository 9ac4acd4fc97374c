"""``musicdecomp ingest-run``: a run trained without MLflow (a bare GPU machine) is logged into the experiment
from its run folder, once per run even when ingested again after it was continued."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import tool_env
from test_train import tiny_cfg

from musicdecomp.errors import UserError
from musicdecomp.eval.musicslots import evaluate_run
from musicdecomp.eval.probes import probe_run
from musicdecomp.pipeline import code_id, step_config
from musicdecomp.train.checkpoints import compact_checkpoint
from musicdecomp.train.ingest import TAG, ingest_run
from musicdecomp.train.musicslots import train_musicslots


def test_a_run_without_mlflow_is_ingested_and_replaced_when_continued(tiny_run, tiny_params, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = {"mlflow_uri": uri, "experiment": "gpu"}
    cfg = tiny_cfg(tiny_params, "none-t2-imp_true-k3")
    data, run = tiny_run / "results/data/jsb_multi", tmp_path / "run"
    code = code_id("train_musicslots")
    train_musicslots(cfg, data, run, device="cpu", stop_after=4, code=code)  # stopped part-way, metrics.jsonl only
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    first = ingest_run(run, tracking, tmp_path / "artifacts")
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    found = mlflow.search_runs(experiment_names=["gpu/musicslots"])
    assert list(found["run_id"]) == [first]
    row = found.iloc[0]
    assert row["status"] == "KILLED" and row["tags.mlflow.runName"] == cfg["run_name"]
    assert row[f"tags.{TAG}"] == cfg["run_name"] and row["params.model.num_slots"] == "3"
    history = client.get_metric_history(first, "train/loss")
    assert [m.step for m in history] == [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx([r["train/loss"] for r in rows if "train/loss" in r])
    assert [m.step for m in client.get_metric_history(first, "val/miou")] == [2, 4]
    assert {"ckpt", "metrics.jsonl", "progress.json", "curves.png"} <= {a.path for a in client.list_artifacts(first)}

    # continued to the end (with code changed meanwhile) and evaluated: ingesting again replaces the earlier run
    compact_checkpoint(run / "ckpt/last.pt", run / "ckpt/last.pt")  # as brought back from a GPU machine
    last = torch.load(run / "ckpt/last.pt", weights_only=True)
    torch.save({**last, "code": {**last["code"], "models/encoder.py": "0" * 16}}, run / "ckpt/last.pt")
    train_musicslots(cfg, data, run, device="cpu", code=code)
    test = evaluate_run(run, data, run / "test.json", run / "test.png", device="cpu", audio_dir=run / "test_audio")
    probe = probe_run(step_config(tiny_params, "probe"), run, data, run / "probe.json", device="cpu")  # as on a GPU
    second = ingest_run(run, tracking, tmp_path / "artifacts")
    found = mlflow.search_runs(experiment_names=["gpu/musicslots"])
    assert list(found["run_id"]) == [second] and second != first
    row = found.iloc[0]
    assert row["status"] == "FINISHED" and row["metrics.test/miou"] == pytest.approx(test["test"]["miou"])
    assert row["tags.code_changed_at_steps"] == "4"  # as the training's own MLflow run would be tagged
    assert row["tags.compact_resumes_at_steps"] == "4"
    assert row["metrics.test/acc_chord"] == pytest.approx(probe["test"]["chord"])  # as the probe step logs it
    assert [m.step for m in client.get_metric_history(second, "val/miou")] == [2, 4, 6]
    assert {"best.pt", "train.json", "test.png", "test_audio", "probe.json"} <= {
        a.path for a in client.list_artifacts(second)}
    assert "test_audio/index.json" in {a.path for a in client.list_artifacts(second, "test_audio")}
    assert client.get_run(first).info.lifecycle_stage == "deleted"

    # another folder of the same run (another attempt, another machine) is another MLflow run
    shutil.copytree(run, tmp_path / "attempt2")
    third = ingest_run(tmp_path / "attempt2", tracking, tmp_path / "artifacts")
    assert set(mlflow.search_runs(experiment_names=["gpu/musicslots"])["run_id"]) == {second, third}


def test_ingest_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="config.json does not exist; is this a training run folder"):
        ingest_run(tmp_path, {"mlflow_uri": f"sqlite:///{tmp_path}/m.db", "experiment": "x"})
    (tmp_path / "config.json").write_text(json.dumps({"run_name": "a/b/seed0"}))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 2.0}\n{"train/loss": \n')
    with pytest.raises(UserError, match=r"metrics.jsonl, line 2: not a metrics row"):
        ingest_run(tmp_path, {"mlflow_uri": f"sqlite:///{tmp_path}/m.db", "experiment": "x"})

    off = tmp_path / "off.yaml"
    off.write_text("tracking: {mlflow_uri: null}\n")
    proc = subprocess.run([sys.executable, "-m", "musicdecomp", "ingest-run", "--run-dir", str(tmp_path),
                           "--params", str(off)], env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "tracking is off" in proc.stderr and "--tracking-uri" in proc.stderr
