"""Bring a finished run trained elsewhere (a bare GPU machine, a cluster job outside the workflow, another checkout,
``checkpoints/``) into the pipeline, so that the tables are built from it and the workflow tools track it.

It takes two halves, so that Snakemake and DVC record the adopted run like any output of theirs (its parameters
and code), and a later change of either retrains it as it would any run:

* ``stage_adoption`` (``python -m musicdecomp adopt-run --from <run folder>``) checks the folder against the
  parameters the pipeline gives that run, moves whatever the pipeline's own folder of the run holds to
  ``stale/<time>/`` (nothing is deleted), and copies the run into ``<run>/adopt/``. The training step's outputs
  (``best.pt``, ``train.json``) are then missing, so either tool runs that step.
* ``adopt_staged``, called by the training loop before it trains, finds ``<run>/adopt/``, checks the run again
  against the step's own configuration, data and model, and publishes it in seconds instead of training:
  ``best.pt``, ``config.json``, ``metrics.jsonl``, ``curves.png`` and ``train.json`` (with ``adopted``: where from,
  and which code files differ from the code that trained it), and logs it into MLflow as ``ingest-run`` does.
  ``adopted.json`` and ``ckpt/best.pt`` (the best model, which the workflow tools do not delete before a rerun)
  stay beside them: should the run be trained here later (its parameters or code changed), the loop first moves
  the adopted run to ``stale/<time>/``, as it does a finished run's checkpoint.

Checks, each a one-line error naming the file and the fix: the run's configuration equals the step's (the keys
that differ are named); it finished (``train.json`` with all its steps); its ``best.pt`` holds that configuration
and its weights load into the model this code builds; and it trained on the same data (``data_id`` in
``train.json``, or in ``ckpt/last.pt``, against the dataset's ``source_id``). A run that does not record its data
is refused unless ``trust_data`` is given.

A run's probe (``probe/``, Table 2's linear probes on its slots or latent) is staged too when it finished with the
probe settings of the parameters, as ``<run>/probe/adopt/``: the probe step then adopts it the same way, and scores
it on the test split without extracting the slots of the training and validation splits.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

from musicdecomp.errors import UserError
from musicdecomp.io import atomic_dir, copy_file, load_torch, read_json, write_json
from musicdecomp.logs import get_logger
from musicdecomp.models.codes import codes_data_id
from musicdecomp.sweep import baseline_dir, composable_dir, probe_runs, probe_train_config, run_dir
from musicdecomp.train.checkpoints import RUN_STATE, config_differences, differing_keys, load_checkpoint, set_aside
from musicdecomp.train.ingest import ingest_run

log = get_logger("adopt")

ADOPT = "adopt"  # the staged run, inside the pipeline's folder of the run
META = "adopted.json"  # {from, staged, trust_data}
FILES = ("best.pt", "train.json", "config.json", "metrics.jsonl", "curves.png", "progress.json")
PUBLISHED = ("best.pt", "config.json", "metrics.jsonl", "curves.png", "progress.json")


def staged(run_dir: str | Path) -> bool:
    """Whether a run is staged for adoption in ``run_dir``."""
    return (Path(run_dir) / ADOPT / META).is_file()


def check_run(src: Path, cfg: dict, data_id: str | None, trust_data: bool, fix: str) -> tuple[dict, dict]:
    """Check the finished run in ``src`` against ``cfg`` (and ``data_id`` where given); return its train.json and
    its best model. ``fix`` ends the errors about the parameters (how to adopt a run trained with other ones)."""
    what = "give a finished run folder (config.json, train.json, best.pt)"
    run_cfg = read_json(src / "config.json", what)
    if run_cfg != cfg:
        raise UserError(f"{src} was trained with other parameters than the pipeline gives this run: "
                        f"{config_differences(run_cfg, cfg, 'here')}; {fix}")
    summary = read_json(src / "train.json", "the run has not finished: continue it until it does (e.g. "
                                            "tools/gpu/driver.py run), then adopt it")
    if "steps" in cfg["train"] and summary.get("steps") != cfg["train"]["steps"]:  # (epochs: the data decide)
        raise UserError(f"{src / 'train.json'} records {summary.get('steps')} steps, not the {cfg['train']['steps']} "
                        f"of its configuration: adopt a finished run")
    best = load_checkpoint(src / "best.pt", "a finished run has its best model there; bring it back with the run")
    if best["config"] != cfg:
        raise UserError(f"{src / 'best.pt'} was saved by a run with another configuration than {src / 'config.json'}: "
                        f"the folder mixes two runs; bring the run back again")
    recorded = summary.get("data_id")
    if recorded is None and (src / "ckpt/last.pt").is_file():
        recorded = load_torch(src / "ckpt/last.pt", "a readable checkpoint", "", "delete it or bring the run back "
                              "again").get("data_id")
    if data_id is not None and recorded is not None and recorded != data_id:
        raise UserError(f"{src} was trained on other data (data {recorded}, here {data_id}: the dataset here was built "
                        f"from other chords, notes or parameters); build the data the run was trained on, or train "
                        f"the run here")
    if recorded is None and not trust_data:
        raise UserError(f"{src} does not record the data it was trained on (neither train.json nor ckpt/last.pt has "
                        f"data_id); adopt it with --trust-data if you know it was trained on this dataset")
    return summary, best


def stage_files(src: Path, dst: Path, probe: bool, meta: dict) -> None:
    """Copy a finished run (and its probe) into ``dst/adopt/`` with ``meta``, for ``adopt_staged``."""
    shutil.rmtree(dst / ADOPT, ignore_errors=True)
    with atomic_dir(dst / ADOPT) as tmp:
        for folder, sub in ((src, tmp), *(((src / "probe", tmp / "probe"),) if probe else ())):
            sub.mkdir(exist_ok=True)
            for f in FILES:
                if (folder / f).is_file():
                    shutil.copy2(folder / f, sub / f)
        write_json(tmp / META, meta)


def stage_adoption(src: str | Path, params: dict, step_config: Callable, root: str | Path = ".",
                   trust_data: bool = False) -> dict:
    """Check the run folder ``src`` against ``params`` and stage it in its pipeline folder under ``root``.
    ``step_config(params, step, dataset, variant, seed)`` gives a step's slice (musicdecomp.pipeline.step_config).
    Returns {run_dir, targets (what to ask the workflow tools for), probe (whether its probe was staged)}."""
    src, root = Path(src), Path(root)
    if not src.is_dir():
        raise UserError(f"{src} is not a folder: give a finished run folder (config.json, train.json, best.pt), "
                        f"e.g. one that tools/gpu/driver.py unpack wrote")
    run_cfg = read_json(src / "config.json", "give a finished run folder (config.json, train.json, best.pt)")
    composable = isinstance(run_cfg, dict) and {"subset", "variant", "seed"} <= set(run_cfg)
    if not composable and (not isinstance(run_cfg, dict) or not {"dataset", "seed"} <= set(run_cfg) or not (
            ("variant" in run_cfg) ^ ("baseline" in run_cfg))):
        raise UserError(f"{src / 'config.json'} is not the configuration of a MusicSlots, baseline or composable run "
                        f"(dataset or subset, seed, and variant or baseline)")
    dataset, seed = run_cfg["subset" if composable else "dataset"], int(run_cfg["seed"])
    if composable:
        step, name, dst = "train_composable", run_cfg["variant"], composable_dir(dataset, run_cfg["variant"], seed)
        targets = [f"{dst}/separation.json"]
    elif "variant" in run_cfg:
        step, name, dst = "train_musicslots", run_cfg["variant"], run_dir(dataset, run_cfg["variant"], seed)
        targets = [f"{dst}/test.json"] + ([f"{dst}/probe.json"] if (dataset, name, seed) in probe_runs(params) else [])
    else:
        step, name, dst = "train_baseline", run_cfg["baseline"], baseline_dir(dataset, run_cfg["baseline"], seed)
        targets = [f"{dst}/probe.json"]
    cfg = step_config(params, step, dataset, name, seed)
    if composable:  # the subset's cached codes, as train_composable names them
        codes = root / "results/codec/codes"
        data_id = codes_data_id(codes, dataset) if (codes / "valid.pt").is_file() else None
    else:
        summary_path = root / "results/data" / dataset / "summary.json"
        data_id = read_json(summary_path, "build the data again").get("source_id") if summary_path.is_file() else None
    check_run(src, cfg, data_id, trust_data, "adopt it with the parameter files it was trained with (--params "
                                             "params.yaml <override.yaml>, and the same --configfile for Snakemake), "
                                             "or train it here")
    probe_ok = False
    if not composable and (src / "probe").is_dir():
        probe_cfg = probe_train_config(cfg, step_config(params, "probe"))
        try:
            check_run(src / "probe", probe_cfg, None, True, "the probe step trains it again")
            probe_ok = True
        except UserError as e:
            log.warning("its probe is not adopted (the probe step trains one): %s", e)

    dst = root / dst
    if src.resolve() in (dst.resolve(), (dst / ADOPT).resolve()):
        raise UserError(f"{src} is the pipeline's own folder of this run: adopt the run from where it was trained "
                        f"or kept (train.json's adopted.from names it)")
    if any((dst / n).exists() for n in RUN_STATE):
        log.warning("%s held a run of its own: moved to %s", dst, set_aside(dst))
    stage_files(src, dst, probe_ok, {"from": str(src.resolve()), "staged": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                     "trust_data": trust_data})
    log.info("%s staged in %s%s", src, dst / ADOPT, " with its probe" if probe_ok else "")
    return {"run_dir": str(dst), "targets": targets, "probe": probe_ok}


def adopt_staged(run_dir: Path, cfg: dict, model, data_id: str | None, code: dict | None, tracking: dict | None,
                 tags: dict) -> dict | None:
    """Publish the run staged in ``run_dir`` (see the module docstring) and return its train.json; None if none
    is staged. Called by the training loop with the step's own configuration, data and model."""
    stage = run_dir / ADOPT
    if not staged(run_dir):
        return None
    meta = read_json(stage / META, "stage the run again (adopt-run)")
    fix = f"delete {stage} to train the run here instead, or stage one trained with these parameters (adopt-run)"
    summary, best = check_run(stage, cfg, data_id, bool(meta.get("trust_data")), fix)
    try:
        model.load_state_dict(best["model"])
    except RuntimeError as e:
        raise UserError(f"{stage / 'best.pt'} does not fit the model this code builds ({str(e).splitlines()[0]}); "
                        f"{fix}") from None
    for name in PUBLISHED:
        if (stage / name).is_file():
            copy_file(stage / name, run_dir / name)
    if (stage / "probe").is_dir():  # for the probe step, which adopts it the same way
        with atomic_dir(run_dir / "probe" / ADOPT) as tmp:
            shutil.copytree(stage / "probe", tmp, dirs_exist_ok=True)
            write_json(tmp / META, {**meta, "from": f"{meta['from']}/probe"})
    recorded = summary.get("code")
    differs = None if recorded is None or code is None else differing_keys(recorded, code)  # None: not known
    summary = {**summary, "data_id": summary.get("data_id") or data_id,
               "adopted": {"from": meta["from"], "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "code_differs": differs,
                           **({"release": meta["release"]} if meta.get("release") else {})}}
    summary.pop("mlflow_run_id", None)  # the run's own (on another machine), not this experiment's
    write_json(run_dir / META, summary["adopted"])  # so that training it here again sets the adopted run aside
    write_json(run_dir / "train.json", summary)
    if tracking and tracking.get("mlflow_uri"):

        tags = {**tags, "musicdecomp.adopted_from": meta["from"],
                **({"musicdecomp.released": meta["release"]["device"]} if meta.get("release") else {}),
                **({"musicdecomp.adopted_code_differs": ",".join(differs)} if differs else {})}
        summary["mlflow_run_id"] = ingest_run(run_dir, tracking, tags=tags)
        write_json(run_dir / "train.json", summary)
    # as a run trained here keeps it: the workflow tools delete best.pt before they rerun the step, ckpt/ survives
    keep = run_dir / "ckpt/best.pt"
    keep.parent.mkdir(exist_ok=True)
    keep.unlink(missing_ok=True)
    try:
        os.link(run_dir / "best.pt", keep)  # the same file, no second copy on disk
    except OSError:
        copy_file(run_dir / "best.pt", keep)
    shutil.rmtree(stage)
    log.info("%s: adopted the run trained in %s (%d steps, best at step %s)%s", cfg["run_name"], meta["from"],
             summary["steps"], summary.get("best_step"),
             f"; these files differ from the code that trained it: {', '.join(differs)}" if differs else "")
    return summary
