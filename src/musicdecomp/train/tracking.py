"""Run tracking: every metric goes to ``metrics.jsonl`` in the run folder, and to MLflow when a tracking
URI is configured and mlflow is installed. A resumed run continues the same MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

from musicdecomp.io import atomic_path, ensure_parent, write_json
from musicdecomp.logs import get_logger

log = get_logger("tracking")


def flat_params(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def metric_key(name: str) -> str:
    """A metric name as MLflow accepts it ("@" is not allowed)."""
    return name.replace("@", "_at_")


def resume_tags(code_changes: list[dict], compact_resumes: list[int] = ()) -> dict[str, str]:
    """The MLflow tags of a run resumed with other code (musicdecomp.train.loop's ``code_changes``) or from a compact
    checkpoint (``compact_resumes``); none if neither."""
    tags = {}
    if code_changes:
        tags["code_changed_at_steps"] = ",".join(str(c["step"]) for c in code_changes)
    if compact_resumes:
        tags["compact_resumes_at_steps"] = ",".join(str(step) for step in compact_resumes)
    return tags


class Tracker:
    def __init__(self, run_dir: Path, tracking: dict | None, run_name: str, params: dict, tags: dict,
                 resume_step: int = 0, mlflow_run_id: str | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step and self.path.exists():  # drop what was logged after the checkpoint we resume from
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        self.mlflow = None
        self.run_id = None
        if tracking and tracking.get("mlflow_uri"):
            try:
                import mlflow
            except ImportError:
                log.warning("mlflow is not installed: metrics go to %s only (log them later: musicdecomp ingest-run "
                            "--run-dir %s)", self.path, self.path.parent)
            else:
                exp_id = ensure_experiment(tracking["mlflow_uri"], tracking["experiment"])
                if mlflow_run_id:
                    run = mlflow.start_run(run_id=mlflow_run_id)
                    mlflow.set_tags(tags)  # e.g. a code change recorded at this resume
                else:
                    run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags)
                    mlflow.log_params(flat_params(params))
                self.mlflow, self.run_id = mlflow, run.info.run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.mlflow:
            self.mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()}, step=step)

    def artifact(self, path: str | Path) -> None:
        if self.mlflow and Path(path).exists():
            self.mlflow.log_artifact(str(path))

    def close(self, status: str = "FINISHED") -> None:
        if self.mlflow:
            self.mlflow.end_run(status=status)
            self.mlflow = None


def log_to_training_run(run_dir: str | Path, tracking: dict | None, metrics: dict[str, float],
                         artifacts: tuple = ()) -> None:
    """Add (test) metrics and artifacts to the MLflow run of a finished training run (its id is in
    ``train.json``); nothing when tracking is off, mlflow is missing or the run was not tracked."""
    train_json = Path(run_dir) / "train.json"
    run_id = json.loads(train_json.read_text()).get("mlflow_run_id") if train_json.exists() else None
    if not (tracking and tracking.get("mlflow_uri") and run_id):
        return
    try:
        import mlflow
    except ImportError:
        return
    mlflow.set_tracking_uri(tracking["mlflow_uri"])
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)
        client = mlflow.tracking.MlflowClient()
        for a in artifacts:
            log_artifact_path(client, run_id, Path(a))


def log_artifact_path(client, run_id: str, path: Path, artifact_dir: str | None = None) -> None:
    """Log a file, or a folder (e.g. test_audio/) under its own name, into ``artifact_dir`` of the run."""
    if path.is_dir():
        client.log_artifacts(run_id, str(path), f"{artifact_dir}/{path.name}" if artifact_dir else path.name)
    else:
        client.log_artifact(run_id, str(path), artifact_dir)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` tracking URI; None for other stores."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def default_artifacts(uri: str) -> Path | None:
    """The artifact folder of an experiment created at ``uri``: ``artifacts/`` beside a SQLite database
    (``sqlite:///results/mlflow/mlflow.db`` -> ``results/mlflow/artifacts``); None (the server's choice) for
    other stores. Without it MLflow would put artifacts in ``./mlruns`` of whatever folder a job runs in."""
    db = sqlite_path(uri)
    return None if db is None else db.parent / "artifacts"


def ensure_experiment(uri: str, experiment: str, artifacts: str | Path | None = None) -> str:
    """Point MLflow at ``uri`` and return the id of ``experiment``, creating it (and a SQLite database's folder)
    when it does not exist yet, with ``artifacts`` (default: :func:`default_artifacts`) as its artifact
    folder."""
    import mlflow


    db = sqlite_path(uri)
    if db is not None:
        ensure_parent(db)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp:
        return exp.experiment_id
    artifacts = artifacts if artifacts is not None else default_artifacts(uri)
    return mlflow.create_experiment(
        experiment, artifact_location=None if artifacts is None else Path(artifacts).resolve().as_uri())


def init_experiment(uri: str, experiment: str, artifacts: str | Path | None, out: str | Path) -> str:
    """Create the MLflow database and experiment once, before parallel training jobs (SQLite's schema
    creation is not safe under concurrent first use)."""

    exp_id = ensure_experiment(uri, experiment, artifacts)
    write_json(out, {"tracking_uri": uri, "experiment": experiment, "experiment_id": exp_id})
    log.info("MLflow experiment %s (id %s) at %s", experiment, exp_id, uri)
    return exp_id

def plot_curves(metrics_jsonl: Path, out_png: Path, title: str) -> None:
    """Training loss and every validation metric against steps."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line]
    keys = ["train/loss"] + sorted({k for r in rows for k in r if k.startswith("val/") and k != "val/score"})
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
