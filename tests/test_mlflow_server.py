"""The tracking URI is a parameter: the pipeline logs into a real `mlflow server` on localhost as it does into the
default SQLite file, one experiment per study with its sweep's parent run, and the store holds every expected run,
metric, tag and artifact afterwards."""

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from conftest import REPO, snakemake

from musicdecomp.train.tracking import PARENT_TAG, STUDIES, SWEEP_TAG

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination",
                             str(tmp_path / "server_artifacts"), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_the_pipeline_logs_into_an_mlflow_server(mlflow_server, tiny_run, tiny_override, tmp_path):
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "results/data").symlink_to(tiny_run / "results/data")
    override = tmp_path / "server.yaml"
    variant = "none-t2-imp_true-k3"
    override.write_text(yaml.safe_dump({"tracking": {"mlflow_uri": mlflow_server, "experiment": "srv"},
                                        "musicslots": {"sweep": {"seeds": [0], "num_slots": [], "single_instrument": [],
                                                                 "grid": {"mask": ["none"], "time_stride": [2],
                                                                          "implicit": [True]}}},
                                        "probe": {"musicslots_variants": []},
                                        "baselines": {"seeds": [0], "vae": {"kld_weights": []}}}))
    run = f"results/musicslots/jsb_multi/{variant}/seed0"
    snakemake(work, f"{run}/test.json", "results/baselines/jsb_multi/cnn/seed0/probe.json",
              configfiles=[REPO / "config/tiny.yaml", tiny_override, override])

    client = MlflowClient(mlflow_server)
    exps = {s: client.get_experiment_by_name(f"srv/{s}") for s in STUDIES}
    assert all(exps.values()), exps
    parents = {s: client.search_runs([e.experiment_id], f"tags.`{SWEEP_TAG}` = '{s}'") for s, e in exps.items()}
    assert all(len(p) == 1 for p in parents.values())
    (ms,) = client.search_runs([exps["musicslots"].experiment_id], f"tags.`mlflow.runName` = 'jsb_multi/{variant}/seed0'")
    (cnn,) = client.search_runs([exps["baselines"].experiment_id], "tags.`mlflow.runName` = 'jsb_multi/cnn/seed0'")
    for r, study in ((ms, "musicslots"), (cnn, "baselines")):
        assert r.data.tags[PARENT_TAG] == parents[study][0].info.run_id
        assert r.data.tags["musicdecomp.code_version"] and r.data.tags["musicdecomp.data_id"]
        assert r.data.tags.get("mlflow.source.git.commit")
        assert r.data.params["train.steps"] == "4"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")] == [1, 2, 3, 4]
    assert 0 <= ms.data.metrics["test/miou"] <= 1 and "test/acc_chord" in cnn.data.metrics
    artifacts = {a.path for a in client.list_artifacts(ms.info.run_id)}
    assert {"curves.png", "best.pt", "test_examples.png", "test_audio"} <= artifacts, artifacts
    assert any(a.path.endswith(".wav") for a in client.list_artifacts(ms.info.run_id, "test_audio"))
