"""Log a run trained without MLflow (a bare GPU machine, ``tools/gpu/driver.py``) into the
project's MLflow experiment after the fact, from its run folder: the resolved config as params, every line of
``metrics.jsonl`` at its step, the test metrics, and the best checkpoint, curves, test figure and logs as artifacts.

The MLflow run is named after the run (``jsb_multi/none-t1-imp_true-k7/seed0``), like the pipeline's own, and
tagged ``musicdecomp.ingested`` with that name and ``musicdecomp.ingested_from`` with the folder. A run that is
not finished (stopped at a time limit) ends as KILLED, as the pipeline marks its own stopped runs. Ingesting the
same folder again, e.g. after the run was continued and brought back into it, replaces the MLflow run ingested from
it earlier, so the experiment holds each run once; another folder of the same run name (another attempt, another
machine) is another MLflow run, and runs the pipeline logged itself are never touched.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from musicdecomp.errors import UserError
from musicdecomp.io import read_json
from musicdecomp.logs import get_logger
from musicdecomp.train.tracking import (
    ensure_experiment,
    experiment_name,
    flat_params,
    log_artifact_path,
    metric_key,
    plot_curves,
    resume_tags,
    run_tags,
)

log = get_logger("ingest")

TAG = "musicdecomp.ingested"
SOURCE_TAG = "musicdecomp.ingested_from"
BATCH = 1000  # MLflow's limit of metrics per log_batch call
ARTIFACTS = ("best.pt", "ckpt/best.pt", "train.json", "progress.json", "test.json", "test.png", "test_examples.png",
             "curves.png",
             "train.log", "eval.log", "metrics.jsonl", "test_audio",  # test_audio/: eval-musicslots --audio-dir
             "probe.json", "probe.log")


def read_metrics(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` ({"step": int, name: value, ...})."""
    if not path.exists():
        raise UserError(f"{path} is missing: is this a training run folder (config.json, metrics.jsonl)?")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            int(row["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise UserError(f"{path}, line {i}: not a metrics row with a step; the file is damaged (bring the run "
                            f"folder back again)") from None
        rows.append(row)
    return rows


def ingest_run(run_dir: str | Path, tracking: dict, artifacts: str | Path | None = None,
               tags: dict | None = None) -> str:
    """Log ``run_dir`` as one MLflow run of ``tracking["experiment"]`` at ``tracking["mlflow_uri"]`` (created if
    missing, with ``artifacts`` as its artifact folder: by default ``artifacts/`` beside a SQLite database), with
    ``tags`` added to its own. Returns the new run's id."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder: give a run folder (e.g. one that tools/gpu/driver.py unpack "
                        f"wrote)")
    cfg = read_json(run_dir / "config.json", "is this a training run folder (config.json, metrics.jsonl)?")
    if "run_name" not in cfg:
        raise UserError(f"{run_dir / 'config.json'} has no run_name: is this a training run folder?")
    rows = read_metrics(run_dir / "metrics.jsonl")
    progress, test, probe = ({} if not (run_dir / name).exists() else read_json(run_dir / name, fix)
                             for name, fix in (("progress.json", "train the run again to its next checkpoint"),
                                               ("test.json", "evaluate the run again (eval-musicslots)"),
                                               ("probe.json", "probe the run again (probe)")))
    finished = (run_dir / "train.json").exists()
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError("mlflow is not installed in this environment: pip install -e . (or pip install "
                        "mlflow) and ingest again") from None

    name = cfg["run_name"]
    experiment = experiment_name(tracking["experiment"], name)
    exp_id = ensure_experiment(tracking["mlflow_uri"], experiment, artifacts)
    client = MlflowClient()
    source = str(run_dir.resolve())
    for old in client.search_runs([exp_id], filter_string=f"tags.`{TAG}` = '{name}'"):
        if old.data.tags.get(SOURCE_TAG) == source:
            client.delete_run(old.info.run_id)
            log.info("replacing the MLflow run %s ingested from %s earlier", old.info.run_id, source)

    summary = read_json(run_dir / "train.json", "") if finished else {}
    recorded = {"musicdecomp.data_id": summary.get("data_id"), "musicdecomp.code_version": (summary.get("code") or {}).get(
        "version")}
    tags = {**run_tags(name, client, exp_id), **{k: str(v) for k, v in recorded.items() if v is not None},
            **(tags or {}), TAG: name, SOURCE_TAG: source,
            "musicdecomp.device": progress.get("device", "unknown"),
            "musicdecomp.speed": ",".join(k for k, on in progress.get("speed", {}).items() if on) or "default"}
    # as the training's own MLflow run has them
    tags.update(resume_tags(progress.get("code_changes", []), progress.get("compact_resumes", [])))
    run = client.create_run(exp_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    try:
        params = flat_params(cfg)
        items = list(params.items())
        for i in range(0, len(items), 100):  # MLflow's limit of params per batch
            client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(k), float(v), now, int(r["step"]))
                   for r in rows for k, v in r.items() if k != "step"]
        at = int(test.get("best_step", progress.get("step", 0)))  # the step of the model tested and probed
        if test.get("test"):
            metrics += [Metric(f"test/{k}", float(test["test"][k]), now, at)
                        for k in ("note_mse", "miou") if k in test["test"]]
        if probe.get("test"):  # named as the pipeline's probe step logs them into the training's run
            metrics += [Metric(f"test/acc_{k}", float(v), now, at) for k, v in probe["test"].items()]
        for i in range(0, len(metrics), BATCH):
            client.log_batch(run_id, metrics=metrics[i:i + BATCH])
        if not (run_dir / "curves.png").exists() and rows:
            plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", name)
        for rel in ARTIFACTS:
            if (run_dir / rel).exists():
                log_artifact_path(client, run_id, run_dir / rel, str(Path(rel).parent) if "/" in rel else None)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED" if finished else "KILLED")
    steps = progress.get("step", max((int(r["step"]) for r in rows), default=0))
    log.info("%s -> MLflow run %s in experiment %s (%d metric values up to step %d, %s)", run_dir, run_id,
             experiment, len(metrics), steps, "finished" if finished else "not finished")
    return run_id
