"""Command-line entry points: one subcommand per pipeline step, called identically by Snakemake and DVC.

    python -m musicdecomp <step> [--params params.yaml [override.yaml ...] | --config JSON] [--log FILE] ...

DVC stages pass ``--params`` (the step cuts its slice out of the files); Snakemake rules pass ``--config``,
the slice it already resolved from its merged config, so ``--configfile`` overrides reach the step.
Bad input ends in one line ``musicdecomp <step>: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from musicdecomp.config import DEFAULT_PARAMS, from_json, load_params, to_json
from musicdecomp.errors import UserError
from musicdecomp.logs import get_logger, log_to_files, setup_logging
from musicdecomp.pipeline import check_slice, code_id, step_config


def _step_cfg(args: argparse.Namespace, step: str) -> dict:
    run = (getattr(args, "dataset", None) or getattr(args, "subset", None),
           getattr(args, "variant", None) or getattr(args, "p_mask", None), getattr(args, "seed", None))
    if args.config is None:
        # the same JSON round trip as Snakemake's --config, so both tools hand the step the same object
        args.config = to_json(step_config(load_params(args.params), step, *run))
        return from_json(args.config)
    cfg = from_json(args.config)
    check_slice(cfg, step, *run)  # a slice from elsewhere, perhaps from another version
    return cfg


def _compute(args) -> dict:
    """The job's decision (musicdecomp.compute): Snakemake's plan (--plan), else made here from the parameters."""
    from musicdecomp.train.release import parse_plan

    plan = parse_plan(getattr(args, "plan", None))
    if plan is not None:
        return {"plan": plan, "params": None}
    try:
        return {"plan": None, "params": load_params(args.params)}
    except UserError:
        if args.config is None:
            raise
        return {"plan": None, "params": None}  # a slice handed in by hand, no parameter files here: train


def _passed_on(step: str, name: str, inputs, json_files=(), figures=(), folders=(), torch_files=()) -> bool:
    """Write the not-trained record of an input in place of this job's outputs; whether there was one."""
    from musicdecomp.compute import first_record, label, passed_on, write_records

    record = first_record(*inputs)
    if record is None:
        return False
    record = passed_on(record, step, name)
    get_logger().warning("%s: not computed, its input was not (%s)", name, label(record))
    write_records(record, json_files, torch_files, figures, folders)
    return True


def _tracking(args) -> dict | None:
    return {"mlflow_uri": args.tracking_uri, "experiment": args.experiment} if args.tracking_uri else None


def cmd_fetch_jsb(args):
    from musicdecomp.data.jsb import fetch_jsb
    fetch_jsb(_step_cfg(args, "fetch_jsb"), args.out)


def cmd_chords(args):
    from musicdecomp.data.jsb import build_chords
    build_chords(_step_cfg(args, "chords"), args.json, args.out_csv, args.out_summary)


def cmd_render(args):
    from musicdecomp.data.render import render_notes
    render_notes(_step_cfg(args, "render"), args.chords, args.out, workers=args.workers)


def cmd_features(args):
    from musicdecomp.data.datasets import build_dataset
    build_dataset(_step_cfg(args, "features"), args.dataset, args.chords, args.chords_summary, args.notes,
                  args.out_dir)


def cmd_figures(args):
    from musicdecomp.data.figures import plot_examples
    plot_examples(_step_cfg(args, "figures"), args.dataset, args.split, args.out)


def cmd_fetch_jsb16(args):
    from musicdecomp.data.stems import fetch_jsb16
    fetch_jsb16(_step_cfg(args, "fetch_jsb16"), args.out)


def cmd_stems(args):
    from musicdecomp.data.stems import build_stems
    build_stems(_step_cfg(args, "stems"), args.json, args.out_dir, workers=args.workers)


def cmd_codec(args):
    from musicdecomp.train.codec import prepare_codec
    return _training_exit(args, prepare_codec(_step_cfg(args, "codec"), args.stems_dir, args.out_dir,
                                              device=args.device, tracking=_tracking(args),
                                              time_limit=_time_limit(args), code=code_id("codec"),
                                              compute=_compute(args)))


def cmd_cache_codes(args):
    from musicdecomp.compute import SKIP, blocked, decide, first_record, label, not_trained, write_records
    from musicdecomp.device import pick_device
    from musicdecomp.models.codes import cache_codes
    from musicdecomp.models.encodec import load_codec

    cfg = _step_cfg(args, "cache_codes")
    split = os.path.basename(args.index).removesuffix(".json")
    compute = _compute(args)
    decision = compute["plan"]
    if decision is None and compute["params"] is not None:
        decision = decide("cache_codes", {"split": split}, compute["params"], args.out)
    if (up := first_record(args.codec)) is not None:
        record = blocked(up, "cache_codes", f"codes/{split}", decision)
        get_logger().warning("codes/%s: %s", split, label(record))
        write_records(record, torch_files=[args.out])
        return
    if decision is not None and decision["action"] == SKIP:
        record = not_trained("cache_codes", f"codes/{split}", decision)
        get_logger().warning("codes/%s: %s", split, label(record))
        write_records(record, torch_files=[args.out])
        return
    model, info = load_codec(args.codec)
    cache_codes(model, args.index, args.out, batch=cfg["codec.encode_batch"],
                device=pick_device(args.device), codec_info=info)


def cmd_eval_codec(args):
    from musicdecomp.eval.codec import evaluate_codec
    if _passed_on("eval_codec", "codec", [args.codec, args.codes], [args.out], [args.figure], [args.audio_dir]):
        from musicdecomp.eval.tables import not_computed_table
        not_computed_table([args.codec, args.codes], "codec reconstruction (MS-STFT)", args.table_csv, args.table_md)
        return
    evaluate_codec(_step_cfg(args, "eval_codec")["codec.eval"], args.codec, args.codes, args.index, args.out,
                   args.table_csv, args.table_md, args.figure, args.audio_dir, device=args.device)


def cmd_ingest_run(args):
    from musicdecomp.train.ingest import ingest_run
    tracking = _tracking(args)
    if tracking is None:
        configured = load_params(args.params).get("tracking", {})
        if not configured.get("mlflow_uri"):
            raise UserError(f"tracking is off in {' '.join(args.params)} (tracking.mlflow_uri: null): pass "
                            f"--tracking-uri, e.g. sqlite:///results/mlflow/mlflow.db")
        tracking = {"mlflow_uri": configured["mlflow_uri"],
                    "experiment": configured.get("experiment", args.experiment)}
    ingest_run(args.run_dir, tracking, args.artifacts)


def cmd_adopt_run(args):
    from musicdecomp.train.adopt import stage_adoption
    if args.config is not None:
        raise UserError("adopt-run checks a run against the parameter files (--params), not a slice (--config)")
    res = stage_adoption(args.src, load_params(args.params), step_config, trust_data=args.trust_data)
    configs = " ".join(args.params[1:])
    print(f"staged in {res['run_dir']}/adopt. Publish it (in seconds, no training) and evaluate it here with\n"
          f"  snakemake --cores 2 {' '.join(res['targets'])}{f' --configfile {configs}' if configs else ''}\n"
          f"or dvc repro (its training stage runs the adoption). Snakemake and DVC then track it as any run of theirs.")


def cmd_mlflow_init(args):
    from musicdecomp.train.tracking import init_experiment
    init_experiment(args.tracking_uri, args.experiment, args.artifacts, args.out)


# exit status of a training call that stopped at its --time-limit (EX_TEMPFAIL: rerun to continue); a workflow
# manager sees a failed job and its missing outputs, never a run that looks finished
EXIT_TIME_LIMIT = 75


def _training_exit(args, result: dict) -> int:
    if "stopped_at" not in result:
        return 0
    run_dir = args.run_dir if hasattr(args, "run_dir") else f"{args.out_dir}/trained"  # the codec step's run
    print(f"musicdecomp {args.step}: stopped at the time limit at step {result['stopped_at']}; rerun the same command "
          f"to continue from {run_dir}/ckpt/last.pt (progress: {run_dir}/progress.json)", file=sys.stderr)
    return EXIT_TIME_LIMIT


SLURM_MARGIN_S = 300  # inside a SLURM job, training stops this long before the job's end


def _time_limit(args) -> float | None:
    """Seconds of training for this call: --time-limit, else (inside a SLURM job) until 5 minutes before the job's
    end, so the job checkpoints and exits 75 instead of being killed; a retry of the job continues the run."""
    if args.time_limit is not None:
        return 60.0 * args.time_limit
    from musicdecomp.slurm import seconds_left

    left = seconds_left()
    if left is None:
        return None
    seconds = max(left[0] - SLURM_MARGIN_S, 60.0)
    get_logger().info("SLURM job ends in %.1f min (%s): training stops at a checkpoint after %.1f min",
                      left[0] / 60, left[1], seconds / 60)
    return seconds


SPEED_ENV = "MUSICDECOMP_SPEED"  # e.g. "channels_last,cudnn_benchmark": the speed options of every training job


def _speed(args) -> dict:
    """The training speed options: the flags, plus those named in $MUSICDECOMP_SPEED (so that a workflow's jobs get
    them without changing their commands, which would make Snakemake and DVC rerun them)."""
    from musicdecomp.train.loop import SPEED_OPTIONS

    named = [n.strip() for n in os.environ.get(SPEED_ENV, "").split(",") if n.strip()]
    unknown = sorted(set(named) - set(SPEED_OPTIONS))
    if unknown:
        raise UserError(f"${SPEED_ENV} names unknown speed options {unknown}; known: {', '.join(SPEED_OPTIONS)}")
    return {name: getattr(args, name) or name in named for name in SPEED_OPTIONS}


def cmd_train_musicslots(args):
    from musicdecomp.train.musicslots import train_musicslots
    return _training_exit(args, train_musicslots(
        _step_cfg(args, "train_musicslots"), args.data_dir, args.run_dir, device=args.device, tracking=_tracking(args),
        threads=args.threads, time_limit=_time_limit(args), speed=_speed(args), code=code_id("train_musicslots"),
        compute=_compute(args)))


def cmd_eval_musicslots(args):
    from pathlib import Path

    from musicdecomp.eval.musicslots import evaluate_run
    from musicdecomp.train.release import released_evaluation

    slice_ = _step_cfg(args, "eval_musicslots")
    cfg = slice_["musicslots.eval"]
    run = Path(args.run_dir)
    if _passed_on("eval_musicslots", str(run), [run / "train.json"], [args.out], [args.figure] if args.figure else [],
                  [args.audio_dir] if args.audio_dir else []):
        return
    if args.checkpoint is None and args.iters is None and args.limit is None and args.figure and args.audio_dir \
            and released_evaluation(run, "eval_musicslots", _eval_slice(slice_), _code_version("eval_musicslots"),
                                    slice_["compute.reevaluate"], {"test.json": args.out, "test_examples.png":
                                                                   args.figure, "test_audio": args.audio_dir}):
        from musicdecomp.io import read_json
        from musicdecomp.train.tracking import log_to_training_run

        test = read_json(args.out, "")["test"]  # into the released run's MLflow run, as an evaluation here would
        log_to_training_run(run, _tracking(args), {"test/note_mse": test["note_mse"], "test/miou": test["miou"]},
                            (Path(args.figure), Path(args.audio_dir)))
        return
    # --iters (a one-off check) wins over musicslots.eval.iters
    iters = args.iters if args.iters is not None else cfg["iters"]
    evaluate_run(args.run_dir, args.data_dir, args.out, args.figure, device=args.device, tracking=_tracking(args),
                 checkpoint=args.checkpoint, iters=iters, limit=args.limit, audio_dir=args.audio_dir, amp=cfg["amp"])


def _eval_slice(slice_: dict) -> dict:
    """An evaluation's slice as a release records it: without compute.reevaluate (not what it computes)."""
    return {k: v for k, v in slice_.items() if not k.startswith("compute.")}


def _code_version(step: str):
    from musicdecomp.pipeline import code_version

    try:
        return code_version(step)
    except UserError:
        return "unknown"


def cmd_train_baseline(args):
    from musicdecomp.train.baselines import train_baseline
    return _training_exit(args, train_baseline(
        _step_cfg(args, "train_baseline"), args.data_dir, args.run_dir, device=args.device, tracking=_tracking(args),
        threads=args.threads, time_limit=_time_limit(args), speed=_speed(args), code=code_id("train_baseline"),
        compute=_compute(args)))


def cmd_probe(args):
    from pathlib import Path

    from musicdecomp.eval.probes import probe_run
    if _passed_on("probe", f"{args.run_dir}/probe", [Path(args.run_dir) / "train.json"], [args.out]):
        return
    probe_run(_step_cfg(args, "probe"), args.run_dir, args.data_dir, args.out, device=args.device,
              tracking=_tracking(args), code=code_id("probe"))


def cmd_tables(args):
    from pathlib import Path

    from musicdecomp.eval.tables import table1, table2
    from musicdecomp.sweep import baseline_dir, run_dir

    cfg, out = _step_cfg(args, "tables"), Path(args.out_dir)
    table1([Path(run_dir(*r)) / "test.json" for r in cfg["runs"]], *(out / f"table1_musicslots.{ext}" for ext in
                                                                      ("csv", "md", "tex")))
    table2([Path(run_dir(*r)) / "probe.json" for r in cfg["probed"]]
           + [Path(baseline_dir(*r)) / "probe.json" for r in cfg["baselines"]],
           *(out / f"table2_probes.{ext}" for ext in ("csv", "md", "tex")))


def cmd_train_composable(args):
    from musicdecomp.train.composable import train_composable
    return _training_exit(args, train_composable(
        _step_cfg(args, "train_composable"), args.codec, args.codes_dir, args.run_dir, device=args.device,
        tracking=_tracking(args), threads=args.threads, time_limit=_time_limit(args), speed=_speed(args),
        code=code_id("train_composable"), compute=_compute(args)))


def cmd_eval_composable(args):
    from pathlib import Path

    from musicdecomp.eval.separation import evaluate_composable
    if _passed_on("eval_composable", args.run_dir, [Path(args.run_dir) / "train.json", args.codec, args.codes],
                  [args.out], [args.figure], [args.examples_dir]):
        return
    evaluate_composable(_step_cfg(args, "eval_composable")["composable.eval"], args.run_dir, args.codec, args.codes,
                        args.index, args.out, args.examples_dir, args.figure, device=args.device,
                        tracking=_tracking(args))


def cmd_eval_bss_baselines(args):
    from musicdecomp.eval.separation import evaluate_baselines
    if _passed_on("eval_bss_baselines", f"{args.subset}/baselines", [args.codec, args.codes], [args.out],
                  folders=[args.examples_dir]):
        return
    evaluate_baselines(_step_cfg(args, "eval_bss_baselines"), args.subset, args.codec, args.codes, args.index,
                       args.out, args.examples_dir, device=args.device, workers=args.workers)


def cmd_composable_tables(args):
    from musicdecomp.eval.composable_tables import composable_tables
    composable_tables(_step_cfg(args, "composable_tables"), args.out_dir, args.figures_dir)


def cmd_train_prior(args):
    from musicdecomp.sweep import composable_dir
    from musicdecomp.train.prior import train_prior

    cfg = _step_cfg(args, "train_prior")
    return _training_exit(args, train_prior(
        cfg, composable_dir(cfg["subset"], cfg["decomposition"], cfg["seed"]), args.codec, args.codes_dir,
        args.run_dir, device=args.device, tracking=_tracking(args), threads=args.threads,
        time_limit=_time_limit(args), speed=_speed(args), code=code_id("train_prior"), compute=_compute(args)))


def cmd_eval_generation(args):
    from musicdecomp.eval.generation import evaluate_generation
    from musicdecomp.io import read_json
    from musicdecomp.sweep import composable_dir

    if _passed_on("eval_generation", args.run_dir, [f"{args.run_dir}/train.json", args.codec, args.codes],
                  [args.out], [args.figure], [args.examples_dir]):
        return
    run = read_json(f"{args.run_dir}/config.json", "train the prior first")
    evaluate_generation(_step_cfg(args, "eval_generation")["composable.prior.eval"], args.run_dir,
                        composable_dir(run["subset"], run["decomposition"], run["seed"]), args.codec, args.codes,
                        args.index, args.out, args.examples_dir, args.figure, device=args.device,
                        tracking=_tracking(args))


def cmd_generation_tables(args):
    from musicdecomp.eval.composable_tables import generation_tables
    generation_tables(_step_cfg(args, "generation_tables"), args.out_dir)


def cmd_report(args):
    from musicdecomp.eval.report import build_report
    build_report(_step_cfg(args, "report")["report"], args.results, args.out)


def cmd_config(args):
    """Print a step's resolved parameter slice (what its --config receives), e.g. to run it on a machine
    without PyYAML: python -m musicdecomp train-musicslots --config "$(cat cfg.json)" ..."""
    params = load_params(args.params)
    print(to_json(step_config(params, args.name.replace("-", "_"), args.dataset, args.variant, args.seed)))


def cmd_code_versions(args):
    """Check the code versions of the steps against their code, or record them (``--update``)."""
    from musicdecomp.pipeline import (
        CODE_VERSIONS,
        read_code_versions,
        stale_code,
        update_code_versions,
        write_code_versions,
    )

    path = args.file or None
    try:
        recorded = read_code_versions(path)
    except UserError:
        if not args.update:
            raise
        recorded = {"steps": {}, "modules": {}}
    if not args.update:
        stale = stale_code(recorded)
        for step, files in stale.items():
            print(f"{step}: code changed at version {recorded['steps'].get(step, {}).get('version', '-')} "
                  f"({', '.join(files) or 'its modules'})")
        if stale:
            raise UserError(f"the code of {len(stale)} step(s) changed since {CODE_VERSIONS} recorded it: if what a "
                            f"step computes changed, `python -m musicdecomp code-versions --update --bump <step>` "
                            f"(it and what follows rerun); if not (a refactor), `--update --same-results <step>`")
        print(f"{CODE_VERSIONS}: every step's code is as recorded")
        return
    lock, refused = update_code_versions(recorded, args.same_results, args.bump or [])
    write_code_versions(lock, path)
    if refused:
        raise UserError(f"not recorded for {', '.join(refused)}: their code changed; name each in --bump (what it "
                        f"computes changed) or --same-results (it did not)")
    print(f"{path or CODE_VERSIONS} written")


def cmd_write_dvc(args):
    """Write dvc.yaml from the step table."""
    from musicdecomp.io import write_text
    from musicdecomp.pipeline import dvc_yaml

    write_text(args.out, dvc_yaml())
    print(f"{args.out} written")


def cmd_release_run(args):
    """Add a finished run to releases/ (musicdecomp.train.release)."""
    import subprocess
    from pathlib import Path

    from musicdecomp.compute import find_release
    from musicdecomp.io import read_json
    from musicdecomp.pipeline import code_version
    from musicdecomp.train.release import release_run

    params = load_params(args.params)
    src = Path(args.src)
    run_cfg = read_json(src / "config.json", "give a finished run folder (config.json, train.json, best.pt)")
    step, run = _run_step(run_cfg)
    cfg = step_config(params, step, *run) if run else step_config(params, step)
    if step == "codec":
        cfg = cfg.get("trained") or {}
    summary_path = Path("results/data") / str(run[0] if run else "") / "summary.json"
    data_id = read_json(summary_path, "").get("source_id") if step in ("train_musicslots", "train_baseline") \
        and summary_path.is_file() else None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    evaluations = {"eval_musicslots": (_eval_slice(step_config(params, "eval_musicslots")),
                                       code_version("eval_musicslots"))} if step == "train_musicslots" else {}
    entry = release_run(src, step, cfg, data_id, code_version(step), commit, evaluations=evaluations)
    assert find_release(step, cfg, code_version(step)) is not None
    print(f"released {entry['run']} in releases/{entry['path']}; commit releases/ to ship it")


def _run_step(run_cfg: dict) -> tuple[str, tuple]:
    """The training step and run (dataset or subset, variant, seed) of a run folder's config.json."""
    if {"subset", "p_mask"} <= set(run_cfg):
        return "train_prior", (run_cfg["subset"], run_cfg["p_mask"], run_cfg["seed"])
    if {"subset", "variant"} <= set(run_cfg):
        return "train_composable", (run_cfg["subset"], run_cfg["variant"], run_cfg["seed"])
    if "baseline" in run_cfg:
        return "train_baseline", (run_cfg["dataset"], run_cfg["baseline"], run_cfg["seed"])
    if "variant" in run_cfg:
        return "train_musicslots", (run_cfg["dataset"], run_cfg["variant"], run_cfg["seed"])
    if run_cfg.get("run_name") == "codec/trained":
        return "codec", ()
    raise UserError("the run folder's config.json is not of a MusicSlots, baseline, codec, composable or prior run")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of minutes")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musicdecomp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)

    def add(name, func, help):
        sp = sub.add_parser(name, help=help)
        src = sp.add_mutually_exclusive_group()
        src.add_argument("--params", nargs="+", default=[DEFAULT_PARAMS],
                         help="parameter files, later ones overriding earlier ones (default: params.yaml)")
        src.add_argument("--config", help="the step's resolved parameter slice as JSON (used by Snakemake)")
        sp.add_argument("--log", help="also write the log to this file")
        sp.set_defaults(func=func)
        return sp

    sp = add("fetch-jsb", cmd_fetch_jsb, "find or download the JSB Chorales JSON and check its sha256")
    sp.add_argument("--out", required=True)
    sp = add("chords", cmd_chords, "pool, de-duplicate and split the JSB chords")
    sp.add_argument("--json", required=True)
    sp.add_argument("--out-csv", required=True)
    sp.add_argument("--out-summary", required=True)
    sp = add("render", cmd_render, "render every (pitch, program) note with FluidSynth (cached)")
    sp.add_argument("--chords", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--workers", type=int, default=0, help="render processes (default 0: one per core)")
    sp = add("features", cmd_features, "build a MusicSlots dataset (chord and note spectrograms)")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--chords", required=True)
    sp.add_argument("--chords-summary", required=True)
    sp.add_argument("--notes", required=True)
    sp.add_argument("--out-dir", required=True)
    sp = add("figures", cmd_figures, "plot a few examples of a dataset")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--split", required=True)
    sp.add_argument("--out", required=True)

    sp = add("fetch-jsb16", cmd_fetch_jsb16, "find or download Jsb16thSeparated.json and check its sha256")
    sp.add_argument("--out", required=True)
    sp = add("stems", cmd_stems, "render Slakh-style drums/bass/piano stems from the chorales (24 kHz FLAC)")
    sp.add_argument("--json", required=True)
    sp.add_argument("--out-dir", required=True)
    sp.add_argument("--workers", type=int, default=0, help="render processes (default 0: one per core)")

    def add_plan(sp):
        sp.add_argument("--plan", help="the workflow's decision for this job (its code version, then release or skip "
                                       "when it is not to train; musicdecomp.compute); without it the job decides")

    def add_time_limit(sp):
        sp.add_argument("--time-limit", type=_positive_minutes, metavar="MINUTES",
                        help="stop training at a checkpoint after this long and exit with status 75; rerun to "
                             "continue. Inside a SLURM job the default is 5 minutes before the job's end")

    def add_tracking(sp):
        sp.add_argument("--tracking-uri", help="MLflow tracking URI (e.g. sqlite:///results/mlflow/mlflow.db)")
        sp.add_argument("--experiment", default="musicdecomp", help="MLflow experiment name")

    sp = add("codec", cmd_codec, "find the pretrained EnCodec weights or train the codec on the stems (resumable)")
    sp.add_argument("--stems-dir", required=True, help="folder of the stems' train/valid/test.json")
    sp.add_argument("--out-dir", required=True, help="writes model.pt and codec.json (and trained/ when trained)")
    sp.add_argument("--device", default="auto")
    add_plan(sp)
    add_time_limit(sp)
    add_tracking(sp)
    sp = add("cache-codes", cmd_cache_codes, "encode one split of the stems (each class, each subset's mix)")
    sp.add_argument("--codec", required=True, help="model.pt written by the codec step")
    sp.add_argument("--index", required=True, help="the split's stems index, e.g. results/stems/jsb/train.json")
    sp.add_argument("--out", required=True)
    sp.add_argument("--device", default="auto")
    add_plan(sp)
    sp = add("eval-codec", cmd_eval_codec, "codec reconstruction on the test split: MS-STFT table, figure, audio")
    sp.add_argument("--codec", required=True)
    sp.add_argument("--codes", required=True, help="the test split's cached codes")
    sp.add_argument("--index", required=True, help="the test split's stems index")
    sp.add_argument("--out", required=True, help="JSON of every figure")
    sp.add_argument("--table-csv", required=True)
    sp.add_argument("--table-md", required=True)
    sp.add_argument("--figure", required=True)
    sp.add_argument("--audio-dir", required=True, help="folder for WAV examples (original and decoded)")
    sp.add_argument("--device", default="auto")

    sp = add("mlflow-init", cmd_mlflow_init, "create the MLflow database and experiment (before parallel runs)")
    add_tracking(sp)
    sp.add_argument("--artifacts", help="artifact folder for the experiment (default: artifacts/ beside a SQLite "
                    "database)")
    sp.add_argument("--out", required=True, help="JSON file recording the experiment")
    sp = add("ingest-run", cmd_ingest_run, "log a run trained without MLflow (its run folder) into the experiment")
    sp.add_argument("--run-dir", required=True, help="a run folder, e.g. results/gpu_runs/none-t1-imp_true-k7")
    add_tracking(sp)
    sp.add_argument("--artifacts", help="artifact folder, if the experiment has to be created (default: "
                    "artifacts/ beside a SQLite database)")

    sp = add("adopt-run", cmd_adopt_run, "bring a finished run trained elsewhere into the pipeline (its run folder)")
    sp.add_argument("--from", dest="src", required=True, metavar="RUN_DIR",
                    help="a finished run folder (config.json, train.json, best.pt), e.g. "
                         "checkpoints/musicslots/none-t2-imp_true-k7")
    sp.add_argument("--trust-data", action="store_true",
                    help="adopt a run that does not record the data it trained on (data_id) without that check")

    def add_training(sp, variant_help):
        sp.add_argument("--dataset", required=True)
        sp.add_argument("--variant", required=True, help=variant_help)
        sp.add_argument("--seed", type=int, required=True)
        sp.add_argument("--data-dir", required=True)
        sp.add_argument("--run-dir", required=True)
        sp.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
        sp.add_argument("--threads", type=int, help="CPU threads for torch (CPU runs)")
        sp.add_argument("--channels-last", action="store_true",
                        help="NHWC convolutions (cuDNN tensor cores); same results up to rounding, may switch "
                             "between calls of a run (benchmarks/musicslots_throughput.py --speed measures it; "
                             "$MUSICDECOMP_SPEED=channels_last,cudnn_benchmark sets both)")
        sp.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN time its algorithms for the training shapes once (CUDA)")
        sp.add_argument("--compile", action="store_true",
                        help="compile the model with torch.compile (same results up to rounding; compiling takes a "
                             "while at the first steps)")
        add_plan(sp)
        add_time_limit(sp)
        add_tracking(sp)

    sp = add("train-musicslots", cmd_train_musicslots, "train (or resume) one MusicSlots run")
    add_training(sp, "e.g. none-t1-imp_true-k7 (see musicdecomp.sweep)")
    def add_evaluation(sp):
        sp.add_argument("--run-dir", required=True)
        sp.add_argument("--data-dir", required=True)
        sp.add_argument("--out", required=True)
        sp.add_argument("--device", default="auto")
        add_tracking(sp)

    sp = add("eval-musicslots", cmd_eval_musicslots, "test-set note MSE / mIoU and a figure for one run")
    add_evaluation(sp)
    sp.add_argument("--figure")
    sp.add_argument("--audio-dir", help="folder for WAV files of the figure's chords, slots and matched notes")
    sp.add_argument("--checkpoint", help="evaluate this checkpoint instead of <run-dir>/best.pt, e.g. the "
                                         "ckpt/best.pt of a run that has not finished")
    sp.add_argument("--iters", type=_positive_int, help="Slot Attention iterations at test time (the official "
                                                        "eval.py's --test_time_iter; default: musicslots.eval.iters, "
                                                        "and as trained when that is null)")
    sp.add_argument("--limit", type=_positive_int, help="only the first N test examples (a quick check, e.g. of a "
                                                        "GPU checkpoint on CPU: under 1 s per paper-size example)")
    sp = add("train-baseline", cmd_train_baseline, "train (or resume) one baseline run (vae-kl<w> or cnn)")
    add_training(sp, "the baseline: vae-kl<weight> (vae-kl0.0 = autoencoder) or cnn")
    sp = add("probe", cmd_probe, "note-property accuracies of a trained run (linear probes; the CNN directly)")
    add_evaluation(sp)
    def add_codes_training(sp):
        """The options of a training run on the cached codes (train-composable, train-prior)."""
        sp.add_argument("--seed", type=int, required=True)
        sp.add_argument("--codec", required=True, help="results/codec/model.pt (or a codebooks file)")
        sp.add_argument("--codes-dir", required=True, help="the folder of the cached codes (train.pt, valid.pt)")
        sp.add_argument("--run-dir", required=True)
        sp.add_argument("--device", default="auto")
        sp.add_argument("--threads", type=int, help="CPU threads for torch (CPU runs)")
        sp.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
        sp.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms once (CUDA)")
        sp.add_argument("--compile", action="store_true", help="compile the model with torch.compile")
        add_plan(sp)
        add_time_limit(sp)
        add_tracking(sp)

    sp = add("train-composable", cmd_train_composable,
             "train (or resume) one composable-representations run (a composition operator, or supervised)")
    sp.add_argument("--subset", required=True, help="a stems subset, e.g. drums_bass")
    sp.add_argument("--variant", required=True, help="mean, sum, min, max (decomposition) or supervised")
    add_codes_training(sp)
    def add_test_chunks(sp, run_help: str):
        """The options of an evaluation of a trained run on the test chunks (eval-composable, eval-generation)."""
        sp.add_argument("--run-dir", required=True, help=run_help)
        sp.add_argument("--codec", required=True, help="results/codec/model.pt")
        sp.add_argument("--codes", required=True, help="the test split's cached codes")
        sp.add_argument("--index", required=True, help="the test split's stems index")
        sp.add_argument("--out", required=True)
        sp.add_argument("--examples-dir", required=True, help="folder for WAV examples")
        sp.add_argument("--figure", required=True)
        sp.add_argument("--device", default="auto")
        add_tracking(sp)

    sp = add("eval-composable", cmd_eval_composable, "separate and reconstruct the test chunks with a trained run")
    add_test_chunks(sp, "the decomposition (or supervised) run's folder")
    sp = add("eval-bss-baselines", cmd_eval_bss_baselines,
             "classic separators, the oracle mask and the mixture on a subset's test chunks")
    sp.add_argument("--subset", required=True)
    sp.add_argument("--codec", required=True)
    sp.add_argument("--codes", required=True)
    sp.add_argument("--index", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--examples-dir", required=True)
    sp.add_argument("--device", default="auto")
    sp.add_argument("--workers", type=int, default=1, help="chunks separated at a time (processes)")
    sp = add("composable-tables", cmd_composable_tables, "the composable-representations tables and figures")
    sp.add_argument("--out-dir", required=True)
    sp.add_argument("--figures-dir", required=True)
    sp = add("train-prior", cmd_train_prior, "train (or resume) the recomposition prior of a decomposition run")
    sp.add_argument("--subset", required=True)
    sp.add_argument("--p-mask", required=True, help="the probability of masking each latent, e.g. 0.8")
    add_codes_training(sp)
    sp = add("eval-generation", cmd_eval_generation,
             "generations and variations of a trained prior on the test chunks: FAD and diversity")
    add_test_chunks(sp, "the prior's run folder")
    sp = add("generation-tables", cmd_generation_tables, "the prior's tables: FAD of generations, diversity")
    sp.add_argument("--out-dir", required=True)
    sp = add("report", cmd_report, "the results report: one static HTML page of every table, figure and example")
    sp.add_argument("--results", default="results", help="the pipeline's results folder")
    sp.add_argument("--out", required=True, help="the page, e.g. results/report/index.html")
    sp = add("release-run", cmd_release_run, "add a finished run (and its evaluation) to releases/")
    sp.add_argument("--from", dest="src", required=True, metavar="RUN_DIR", help="a finished run folder")
    sp = add("config", cmd_config, "print a step's resolved parameter slice as JSON")
    sp.add_argument("name", help="the step, e.g. features or train-musicslots")
    sp.add_argument("--dataset")
    sp.add_argument("--variant")
    sp.add_argument("--seed", type=int)
    sp = add("tables", cmd_tables, "Tables 1 and 2 from the evaluations and probes of the sweep's runs")
    sp.add_argument("--out-dir", required=True)

    sp = sub.add_parser("code-versions", help="check each step's code against its recorded version (--update: "
                                              "record it)")
    sp.add_argument("--update", action="store_true", help="write workflow/code_versions.yaml")
    sp.add_argument("--bump", nargs="+", metavar="STEP", help="what these steps compute changed: version + 1")
    sp.add_argument("--same-results", nargs="+", metavar="STEP",
                    help="these steps' code changed but not what they compute ('all': every changed step)")
    sp.add_argument("--file", help=argparse.SUPPRESS)
    sp.add_argument("--log", help=argparse.SUPPRESS)
    sp.set_defaults(func=cmd_code_versions)
    sp = sub.add_parser("write-dvc", help="write dvc.yaml from the step table (musicdecomp.pipeline)")
    sp.add_argument("--out", default="dvc.yaml")
    sp.add_argument("--log", help=argparse.SUPPRESS)
    sp.set_defaults(func=cmd_write_dvc)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        setup_logging(args.log)
        rc = args.func(args) or 0
    except UserError as e:
        print(f"musicdecomp {args.step}: error: {e}", file=sys.stderr)
        log_to_files(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        print(f"musicdecomp {args.step}: interrupted", file=sys.stderr)
        return 130
    get_logger().info("%s %s in %.1f s", args.step, "done" if rc == 0 else "stopped", time.perf_counter() - t0)
    return rc
