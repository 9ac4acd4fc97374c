"""Released runs: the gate every training job passes first, and how a finished run becomes a release.

``gate`` carries out a job's decision (musicdecomp.compute): a released run is staged for adoption (the training
loop then publishes it instead of training, checking its configuration, data and weights), a skipped job writes
its not-trained record in place of its outputs, and a job whose input was not trained passes that record on.

``release_run`` (``python -m musicdecomp release-run --from <run folder>``) adds a finished run to ``releases/``:
half-precision weights without optimiser state, its configuration, summary, curves and the evaluation outputs
computed where it was trained, and an entry in ``releases/manifest.yaml`` (step, run, configuration hash, code
version, data id, steps, device, date, metrics).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from musicdecomp.compute import (
    MANIFEST,
    RELEASE,
    SKIP,
    TRAIN,
    blocked,
    config_hash,
    decide,
    find_release,
    first_record,
    label,
    manifest,
    not_trained,
    releases_dir,
    write_records,
)
from musicdecomp.errors import UserError
from musicdecomp.io import atomic_path, read_json, write_text
from musicdecomp.logs import get_logger
from musicdecomp.train.adopt import FILES, check_run, stage_files

log = get_logger("release")

# evaluation outputs shipped with a release, per evaluation step: (file or folder in the run, kept as)
EVAL_FILES = {"eval_musicslots": ("test.json", "test_examples.png", "test_audio"),
              "eval_composable": ("separation.json", "separation.png", "examples"),
              "eval_generation": ("generation.json", "generation.png", "examples")}


def parse_plan(plan: str | None) -> dict | None:
    """Snakemake's ``--plan`` (musicdecomp.pipeline.planned_version: the job's code version, then the action when
    it is not to train, and for a skipped job its cost) as a decision; None without one."""
    if plan is None:
        return None
    parts = str(plan).split()
    if len(parts) < 2:
        return {"action": TRAIN, "cost": None, "why": "planned"}
    fields = dict(p.split("=", 1) for p in parts[2:])
    cost = {"gpu_minutes": float(fields["gpu_minutes"]), "cpu_minutes": float(fields["cpu_minutes"]),
            "gpu_measured": fields["gpu_measured"] == "true"} if "gpu_minutes" in fields else None
    return {"action": parts[1], "cost": cost,
            "why": f"no GPU where the workflow was planned (compute.gpu: {fields.get('gpu', '?')}) and no released run"}


def gate(step: str, cfg: dict, run_dir: str | Path, compute: dict, code: dict | None, upstream=(),
         outputs: dict | None = None) -> dict | None:
    """Carry out the job's decision before it trains. ``compute``: {plan (Snakemake's, or None), params (the
    full parameters, for a job that decides itself)}. ``upstream``: input files that may hold a not-trained
    record. ``outputs``: {json: [...], torch: [...]}, the files a skipped job writes (default: the run's
    train.json and best.pt). Returns the record written (the job ends there), or None (train, or publish the
    staged release)."""
    run_dir = Path(run_dir)
    name = cfg.get("run_name") or cfg.get("trained", {}).get("run_name") or step
    outputs = outputs or {"json": [run_dir / "train.json"], "torch": [run_dir / "best.pt"]}
    version = None if code is None else code.get("version")
    if (up := first_record(*upstream)) is not None:
        own = compute.get("plan") or (decide(step, cfg, compute["params"], None, version) if compute.get("params")
                                      else None)
        record = blocked(up, step, name, own)
        log.warning("%s: not trained, its input is not (%s)", name, label(record))
        write_records(record, outputs["json"], outputs["torch"])
        return record
    decision = compute.get("plan")
    if decision is None:
        if compute.get("params") is None:  # a slice handed in by hand, no plan: train
            return None
        decision = decide(step, cfg, compute["params"], run_dir / "train.json", version)
    action = decision["action"]
    if action == SKIP:
        record = not_trained(step, name, decision)
        log.warning("%s: %s (%s); its table rows say so", name, label(record), record["why"])
        write_records(record, outputs["json"], outputs["torch"])
        return record
    if action == RELEASE:
        entry = decision.get("release")
        if entry is None:
            entry = find_release(step, cfg, version)
        if entry is None:
            raise UserError(f"{name}: the workflow planned to use its released run, but releases/{MANIFEST} has none "
                            f"for this configuration and code version now; plan the workflow again")
        src = Path(entry["dir"])
        stage_files(src, run_dir, (src / "probe").is_dir(), {
            "from": str(src), "staged": time.strftime("%Y-%m-%dT%H:%M:%S"), "trust_data": False,
            "release": {k: entry.get(k) for k in ("path", "device", "date", "commit", "steps")}})
        log.info("%s: using the released run %s (trained on %s, %s)", name, entry["path"], entry.get("device"),
                 entry.get("date"))
    return None


def released_evaluation(run_dir: str | Path, step: str, eval_cfg: dict, eval_version: int | str,
                        reevaluate: bool, outputs: dict[str, Path]) -> bool:
    """Copy the evaluation shipped with the run's release into ``outputs`` (the step's files by their name in
    EVAL_FILES) when the run was published from a release whose evaluation was made with this evaluation
    configuration (``eval_cfg``, the step's slice without ``compute.reevaluate``) and code version, and
    ``reevaluate`` is off; whether it did."""
    summary = read_json(Path(run_dir) / "train.json", "run its training step")
    release = (summary.get("adopted") or {}).get("release")
    if reevaluate or not release:
        return False
    entry = next((e for e in manifest() if e["path"] == release["path"]), None)
    shipped = (entry or {}).get("evaluations") or {}
    made = shipped.get(step) if isinstance(shipped, dict) else None
    src = releases_dir() / release["path"]
    names = EVAL_FILES[step]
    if made is None or not all((src / n).exists() for n in names):
        return False
    if made["config_hash"] != config_hash(eval_cfg) or str(made["code_version"]) != str(eval_version):
        log.info("%s: the evaluation shipped with its release was made with other evaluation settings or code; "
                 "evaluating here", summary.get("run_name", run_dir))
        return False
    for n in names:
        dst = Path(outputs[n])
        if (src / n).is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src / n, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / n, dst)
    log.info("%s: the evaluation computed where the run was trained (%s), not evaluated again here "
             "(compute.reevaluate: true does)", summary.get("run_name", run_dir), release.get("device"))
    return True


# --- making a release ------------------------------------------------------------------------------------------

def _half(state: dict) -> dict:
    import torch

    return {k: (v.half() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in state.items()}


def release_run(src: str | Path, step: str, cfg: dict, data_id: str | None, code_version: int | str,
                commit: str | None = None, root: str | Path | None = None,
                evaluations: dict[str, tuple[dict, int | str]] | None = None) -> dict:
    """Add the finished run in ``src`` (trained with ``cfg`` by ``step``) to the releases; returns its manifest
    entry. The evaluation outputs in the folder (EVAL_FILES) and its probe travel with it; ``evaluations``: per
    evaluation step, the slice and code version it was made with (recorded, so that a later change is seen)."""
    import torch
    import yaml

    src, root = Path(src), Path(root or releases_dir())
    summary, best = check_run(src, cfg, data_id, False, "release runs trained with params.yaml's protocol")
    rel = f"{step}/{cfg['run_name']}"
    dst = root / rel
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    with atomic_path(dst / "best.pt") as tmp:
        torch.save({k: (_half(v) if k == "model" else v) for k, v in best.items()
                    if k not in ("optimizer", "scaler", "rng")}, tmp)
    for f in FILES:
        if f != "best.pt" and (src / f).is_file():
            shutil.copy2(src / f, dst / f)
    evals = {}
    for estep, names in EVAL_FILES.items():
        if all((src / n).exists() for n in names) and estep in (evaluations or {}):
            for n in names:
                (shutil.copytree if (src / n).is_dir() else shutil.copy2)(src / n, dst / n)
            ecfg, eversion = evaluations[estep]
            evals[estep] = {"config_hash": config_hash(ecfg), "code_version": eversion}
    if (src / "probe" / "train.json").is_file():
        (dst / "probe").mkdir()
        for f in (*FILES, "probe.json"):
            if (src / "probe" / f).is_file():
                shutil.copy2(src / "probe" / f, dst / "probe" / f)
    metrics = {}  # the test metrics of its evaluations (a probe's prefixed)
    for name, prefix in (("test.json", ""), ("separation.json", ""), ("probe.json", "probe_")):
        if (src / name).is_file():
            d = read_json(src / name, "")
            metrics.update({prefix + k: v for k, v in (d.get("test") or {}).items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
    entry = {"step": step, "run": cfg["run_name"], "path": rel, "config_hash": config_hash(cfg),
             "code_version": int(code_version) if str(code_version).isdigit() else str(code_version),
             "data_id": summary.get("data_id") or data_id, "steps": summary.get("steps"),
             "best_step": summary.get("best_step"), "device": summary.get("device_name") or summary.get("device"),
             "date": time.strftime("%Y-%m-%d"), "commit": commit, "evaluations": evals, "metrics": metrics}
    runs = [e for e in manifest(root) if not (e["step"] == step and e["run"] == cfg["run_name"])] + [entry]
    head = ("# Runs the project releases (musicdecomp.train.release): used instead of training them where they\n"
            "# match the parameters, data and code version the pipeline gives the run. Written by release-run.\n")
    write_text(root / MANIFEST, head + yaml.safe_dump({"runs": runs}, sort_keys=False))
    from musicdecomp.compute import _manifest

    _manifest.cache_clear()
    log.info("released %s in %s (%d steps, %s)", cfg["run_name"], dst, entry["steps"] or 0, entry["device"])
    return entry
