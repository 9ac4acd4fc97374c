"""Where GPU-scale work runs: the cost model, the runs the project releases, and each job's decision.

Every training job (and caching codec codes) has an estimated cost on a CPU and on a GPU (``job_cost``, from the
figures of ``benchmarks/costs.yaml``). ``decide`` picks, per job, one of three actions (``compute`` in
params.yaml):

* ``release``: the project ships a finished run of this job in ``releases/`` (trained on a GPU with
  params.yaml's protocol; ``releases/manifest.yaml`` records its parameters' hash, code version, data id, steps,
  device and metrics). The job publishes it instead of training (the ``adopt-run`` path, which checks its
  configuration, data and weights again), so both workflow tools record it as their own output, and a later
  change of its parameters or code trains it like any run. ``released: retrain`` turns this off.
* ``train``: the job trains here, because its CPU estimate is within ``cpu_minutes``, because a GPU is here
  (``gpu: auto`` looks where the workflow is planned; ``gpu: true`` is the decision made for GPU nodes, as the
  SLURM profile does), or because it already trained here (a finished run stays as it is).
* ``skip``: neither; the job writes a *not-trained record* in place of its outputs (``not_trained``: why, and
  the cost in GPU- and CPU-minutes), every step downstream passes the record on, and the tables print the row as
  "not trained here: needs a GPU (about N GPU-minutes)".

Snakemake makes the decision when it plans the workflow and hands it to the job; a job run without one (DVC, by
hand) makes it itself from params.yaml.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path

from musicdecomp.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
COSTS = REPO_ROOT / "benchmarks/costs.yaml"
RELEASES = REPO_ROOT / "releases"
RELEASES_ENV = "MUSICDECOMP_RELEASES"  # another releases folder than the repository's (tests)
MANIFEST = "manifest.yaml"
NOT_TRAINED = "not_trained"
TRAIN, RELEASE, SKIP = "train", "release", "skip"
ACTIONS = (TRAIN, RELEASE, SKIP)
# the steps that decide, and the kind of cost model each uses
PLANNED = ("codec", "cache_codes", "train_musicslots", "train_baseline", "train_composable", "train_prior")


@functools.cache
def costs() -> dict:
    import yaml

    if not COSTS.is_file():
        raise UserError(f"{COSTS} is missing: it is part of the repository (git checkout benchmarks/costs.yaml)")
    return yaml.safe_load(COSTS.read_text())


def config_hash(cfg: dict) -> str:
    """A short hash of a run's configuration, as the release manifest records it."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _chunks(params: dict, split: str) -> float:
    """Estimated 7-s chunks of a split of the rendered stems, from the stems parameters."""
    c, s = costs(), params["stems"]
    chorales = c["chorales"][split] if s["max_chorales"] is None else min(s["max_chorales"], c["chorales"][split])
    return chorales * s["renders_per_chorale"] * c["chunks_per_render"]


def _training(kind: str, steps: float, batch: int, stride: int | None = None) -> dict:
    c = costs()
    entry, ref = c["steps"][kind], c["reference"]
    scale = batch / entry["batch"]
    cpu = entry["cpu"][stride] if stride is not None else entry["cpu"]["seconds_per_step"]
    measured = "gpu" in entry
    if measured:
        gpu = entry["gpu"][stride] if stride is not None else entry["gpu"]["seconds_per_step"]
    else:
        gpu = cpu * ref["gpu"]["seconds_per_step"] / ref["cpu"]["seconds_per_step"]
    return {"cpu_minutes": steps * cpu * scale / 60, "gpu_minutes": steps * gpu * scale / 60, "gpu_measured": measured}


def job_cost(step: str, cfg: dict, params: dict) -> dict | None:
    """The estimated cost of one job of ``step`` with slice ``cfg`` ({cpu_minutes, gpu_minutes, gpu_measured}),
    or None when the step is cheap everywhere (a pretrained codec, a step that is not planned)."""
    if step == "train_musicslots":
        return _training("musicslots", cfg["train"]["steps"], cfg["train"]["batch_size"],
                         cfg["model"]["time_stride"])
    if step == "train_baseline":
        return _training(cfg["kind"], cfg["train"]["steps"], cfg["train"]["batch_size"])
    if step == "codec":
        if cfg["source"] != "trained":
            return None
        t = cfg["trained"]["train"]
        return _training("codec", t["steps"], t["batch_size"])
    if step in ("train_composable", "train_prior"):
        t = cfg["train"]
        steps = t["epochs"] * max(1.0, _chunks(params, "train") / t["batch_size"])
        kind = "prior" if step == "train_prior" else (
            "composable_supervised" if cfg["variant"] == "supervised" else "composable")
        return _training(kind, steps, t["batch_size"])
    if step == "cache_codes":
        seconds = _chunks(params, cfg["split"]) * costs()["codes"]["cpu"]["seconds_per_chunk"]
        ratio = costs()["reference"]["gpu"]["seconds_per_step"] / costs()["reference"]["cpu"]["seconds_per_step"]
        return {"cpu_minutes": seconds / 60, "gpu_minutes": seconds * ratio / 60, "gpu_measured": False}
    return None


@functools.cache
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def gpu_here(setting) -> bool:
    """``compute.gpu``: true, false, or auto (a CUDA device on this machine)."""
    return _cuda() if setting == "auto" else setting in (True, "true")  # "true": from Snakemake's --config


# --- released runs ---------------------------------------------------------------------------------------------

def releases_dir() -> Path:
    import os

    return Path(os.environ.get(RELEASES_ENV) or RELEASES)


@functools.cache
def _manifest(path: str) -> tuple:
    import yaml

    p = Path(path)
    if not p.is_file():
        return ()
    return tuple(yaml.safe_load(p.read_text()).get("runs") or ())


def manifest(root: str | Path | None = None) -> list[dict]:
    """The released runs: ``releases/manifest.yaml``'s entries."""
    return list(_manifest(str(Path(root or releases_dir()) / MANIFEST)))


def find_release(step: str, cfg: dict, code_version: int | str | None, root: str | Path | None = None) -> dict | None:
    """The released run of this job (same step, run, configuration hash and code version), with ``dir`` its
    folder; None when there is none."""
    root = Path(root or releases_dir())
    name = cfg.get("run_name") or cfg.get("trained", {}).get("run_name")
    if step == "codec":
        cfg = cfg.get("trained", cfg)
    for entry in manifest(root):
        if entry["step"] == step and entry["run"] == name and entry["config_hash"] == config_hash(cfg) \
                and (code_version is None or str(entry["code_version"]) == str(code_version)):
            return {**entry, "dir": str(root / entry["path"])}
    return None


# --- the decision ----------------------------------------------------------------------------------------------

def finished_here(summary: str | Path) -> bool:
    """Whether a job's summary (or its output, e.g. cached codes) records work done here (neither a not-trained
    record nor a released run): it stays as it is whatever the machine now has."""
    p = Path(summary)
    if not p.is_file():
        return False
    if p.suffix != ".json":
        return record_in(p) is None
    try:
        d = json.loads(p.read_text())
    except ValueError:
        return False
    return isinstance(d, dict) and NOT_TRAINED not in d and not (d.get("adopted") or {}).get("release")


def decide(step: str, cfg: dict, params: dict, summary: str | Path | None = None,
           code_version: int | str | None = None) -> dict:
    """{action, cost, release, why} for one job of ``step`` (see the module docstring). ``summary``: the file that
    says whether the job already trained here (its train.json, or its output)."""
    compute = params["compute"]
    cost = job_cost(step, cfg, params)
    if cost is None:
        return {"action": TRAIN, "cost": None, "why": "cheap"}
    if compute["released"] == "use":
        release = find_release(step, cfg, code_version)
        if release is not None:
            return {"action": RELEASE, "cost": cost, "release": release, "why": "released"}
    if cost["cpu_minutes"] <= compute["cpu_minutes"]:
        return {"action": TRAIN, "cost": cost, "why": "within compute.cpu_minutes"}
    if gpu_here(compute["gpu"]):
        return {"action": TRAIN, "cost": cost, "why": "GPU"}
    if summary is not None and finished_here(summary):
        return {"action": TRAIN, "cost": cost, "why": "trained here"}
    return {"action": SKIP, "cost": cost, "why": "no GPU here (compute.gpu: %s) and no released run" % compute["gpu"]}


def minutes(value: float) -> str:
    """GPU-minutes for people: 'about 3 GPU-minutes', 'about 2,599 GPU-minutes (43 h)' (at least 1)."""
    m = max(1, math.ceil(value))
    return f"about {m:,} GPU-minute{'s' if m > 1 else ''}" + (f" ({m / 60:.0f} h)" if m >= 120 else "")


def not_trained(step: str, name: str, decision: dict, needs: str | None = None) -> dict:
    """The record a skipped job writes in place of its outputs."""
    cost = decision["cost"]
    return {"step": step, "run": name, "job": True, "needs": needs or "a GPU",
            "gpu_minutes": round(cost["gpu_minutes"], 1), "own_gpu_minutes": round(cost["gpu_minutes"], 1),
            "gpu_measured": cost["gpu_measured"], "cpu_minutes": round(cost["cpu_minutes"], 1),
            "why": decision["why"],
            "how": "run it where a GPU is (compute.gpu: auto finds it; the SLURM profile sets true), or use a "
                   "released run (releases/)"}


def label(record: dict) -> str:
    """How a table cell says that a result was not computed here."""
    est = "" if record.get("gpu_measured", True) else ", estimated"
    cost = f"a GPU ({minutes(record['gpu_minutes'])}{est})"
    if record.get("upstream"):
        return f"not computed here: needs {record['upstream']}, which needs {cost}"
    return f"not trained here: needs {cost}"


# --- not-trained records ---------------------------------------------------------------------------------------

def record_in(path: str | Path) -> dict | None:
    """The not-trained record a job's output holds (a JSON file, or a placeholder .pt), or None."""
    p = Path(path)
    if not p.is_file():
        return None
    if p.suffix == ".json":
        try:
            d = json.loads(p.read_text())
        except ValueError:
            return None
        return d.get(NOT_TRAINED) if isinstance(d, dict) else None
    if p.stat().st_size > 65536:  # a real model
        return None
    import torch

    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a placeholder
        return None
    return d.get(NOT_TRAINED) if isinstance(d, dict) else None


def first_record(*paths: str | Path) -> dict | None:
    """The first not-trained record among the inputs, or None when all are real."""
    for p in paths:
        if p is not None and (r := record_in(p)) is not None:
            return r
    return None


def write_records(record: dict, json_files=(), torch_files=(), figures=(), folders=()) -> None:
    """Write the not-trained record in place of a job's outputs: JSON files hold it, model files are small
    placeholders holding it, figures say it in words, folders are left empty."""
    from musicdecomp.io import atomic_path, write_json

    for f in json_files:
        write_json(f, {NOT_TRAINED: record})
    if torch_files:
        import torch

        for f in torch_files:
            Path(f).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(f) as tmp:
                torch.save({NOT_TRAINED: record}, tmp)
    for f in figures:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(6, 1.2))
        fig.text(0.5, 0.5, f"{record['run']}: {label(record)}", ha="center", va="center", fontsize=8, wrap=True)
        Path(f).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    for d in folders:
        Path(d).mkdir(parents=True, exist_ok=True)
        (Path(d) / "NOT_TRAINED.txt").write_text(label(record) + "\n")


def passed_on(record: dict, step: str, name: str) -> dict:
    """The record a downstream step writes (an evaluation, a table): the upstream job's cost and reason, this
    job's name."""
    return {**record, "step": step, "run": name, "upstream": record.get("upstream") or record["run"], "job": False}


def blocked(record: dict, step: str, name: str, decision: dict | None) -> dict:
    """The record of a GPU-scale job whose input was not trained here: it cannot run either, and its cost adds to
    its input's (``own_gpu_minutes``: its own part, what a total counts)."""
    own = round(((decision or {}).get("cost") or {}).get("gpu_minutes", 0.0), 1)
    out = passed_on(record, step, name)
    return {**out, "job": True, "own_gpu_minutes": own, "gpu_minutes": round(out["gpu_minutes"] + own, 1)}
