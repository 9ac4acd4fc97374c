"""Run tracking: every metric goes to ``metrics.jsonl`` in the run folder, and to MLflow when a tracking
URI is configured and mlflow is installed. A resumed run continues the same MLflow run.

MLflow holds one experiment per study, ``<tracking.experiment>/<study>`` (``musicslots``, ``baselines``, ``codec``,
``composable``; a run's study follows from its name, ``study_of``), each with a parent run (its sweep: the runs
the parameters ask for) under which every training run of the study is a child run. A run carries its resolved
parameters, its code version, data id and git commit as tags, its metrics at every logged step, and its figures
and audio as artifacts (the evaluation steps add theirs to the training's run).
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

from musicdecomp.io import atomic_path, ensure_parent, write_json
from musicdecomp.logs import get_logger
from musicdecomp.sweep import is_baseline

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


STUDIES = ("musicslots", "baselines", "codec", "composable")
SWEEP_TAG = "musicdecomp.sweep"  # on a study's parent run: the study
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a child run under it


def study_of(run_name: str) -> str:
    """The study a run belongs to, from its name (a probe belongs to its run's study)."""
    if run_name.startswith("codec/"):
        return "codec"
    if run_name.startswith("composable/"):
        return "composable"
    parts = run_name.split("/")
    return "baselines" if len(parts) > 1 and is_baseline(parts[1]) else "musicslots"


def experiment_name(prefix: str, run_name_or_study: str) -> str:
    """``<prefix>/<study>``, the MLflow experiment of a run (or of a study)."""
    study = run_name_or_study if run_name_or_study in STUDIES else study_of(run_name_or_study)
    return f"{prefix}/{study}"


@functools.cache
def git_commit() -> str | None:
    """The repository's commit, recorded on every run (None outside a git checkout)."""
    from pathlib import Path as _P

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=_P(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def parent_run(client, exp_id: str, study: str) -> str | None:
    """The id of the study's parent run in ``exp_id`` (mlflow-init creates it), or None."""
    found = client.search_runs([exp_id], filter_string=f"tags.`{SWEEP_TAG}` = '{study}'", max_results=1)
    return found[0].info.run_id if found else None


def run_tags(run_name: str, client, exp_id: str) -> dict[str, str]:
    """The tags every run of a study gets: its parent run, the git commit."""
    tags = {}
    parent = parent_run(client, exp_id, study_of(run_name))
    if parent:
        tags[PARENT_TAG] = parent
    if git_commit():
        tags["mlflow.source.git.commit"] = git_commit()
    return tags


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
                exp_id = ensure_experiment(tracking["mlflow_uri"], experiment_name(tracking["experiment"], run_name))
                if mlflow_run_id:
                    run = mlflow.start_run(run_id=mlflow_run_id)
                    mlflow.set_tags(tags)  # e.g. a code change recorded at this resume
                else:
                    tags = {**run_tags(run_name, mlflow.tracking.MlflowClient(), exp_id), **tags}
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


def init_experiment(uri: str, experiment: str, artifacts: str | Path | None, out: str | Path) -> dict:
    """Create the MLflow database, one experiment per study and each study's parent run once, before parallel
    training jobs (SQLite's schema creation is not safe under concurrent first use, and one parent per study
    needs one creator)."""
    from mlflow.tracking import MlflowClient

    experiments, parents = {}, {}
    for study in STUDIES:
        name = experiment_name(experiment, study)
        exp_id = experiments[study] = ensure_experiment(uri, name, artifacts)
        client = MlflowClient()
        parents[study] = parent_run(client, exp_id, study)
        if parents[study] is None:
            tags = {SWEEP_TAG: study, **({"mlflow.source.git.commit": git_commit()} if git_commit() else {}),
                    "mlflow.note.content": f"The {study} runs of the pipeline's parameters (params.yaml and its "
                                           f"overrides): each is a child run of this one."}
            run = client.create_run(exp_id, run_name=f"{study} sweep", tags=tags)
            client.set_terminated(run.info.run_id, "FINISHED")
            parents[study] = run.info.run_id
    write_json(out, {"tracking_uri": uri, "experiment": experiment, "experiments": experiments, "parents": parents})
    log.info("MLflow experiments %s at %s", ", ".join(experiment_name(experiment, s) for s in STUDIES), uri)
    return experiments


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
