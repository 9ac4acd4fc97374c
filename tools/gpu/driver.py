"""MusicSlots runs (and Table 2's baselines) on a bare GPU machine inside a fixed time budget (torch, numpy,
scipy, PyYAML there; no FluidSynth, Snakemake or MLflow), in two halves.

Here, in the project folder, after the pipeline has built the chords and rendered the notes (``results/data/jsb``,
``results/data/notes``), stage them with the resolved configs:

    python tools/gpu/driver.py prepare --stage .gpu --variants none-t1-imp_true-k7 softmax-t1-imp_true-k7

There (the stage folder, ``src/``, ``benchmarks/`` and this script travel), with a budget in seconds:

    PYTHONPATH=src python tools/gpu/driver.py run --stage .gpu --out "$OUT" --budget 480

``run`` rebuilds the dataset from the 10 MB of rendered notes (the features step), measures the training
throughput alone on the device for the staged variants' models with every combination of the training's speed
options (benchmarks/musicslots_throughput.py --speed; ``--speed auto`` then trains each variant with the fastest
one, if it beats the defaults by 3 %; a benchmark recorded in benchmarks/ for this GPU that covers the staged
models is used instead of measuring again, unless ``--rebench``), trains the staged variants one after the other
(``--side-by-side``: at the same time) with ``--time-limit`` so that they stop at a checkpoint before the budget
ends (or finish), evaluates each one's best checkpoint on the test split, probes a run that has finished (Table 2's
linear pitch and instrument probes on its matched slots, ``probe.json``; when a minute of the budget is left, else in
the next call), and writes into ``--out``: ``summary.json`` (steps, throughput, validation and test metrics and
probe accuracies per run), the throughput record, and per run a tar of its folder (best checkpoint, metrics.jsonl,
curves, test.json/png, probe.json, logs). ``--keep-last`` adds a compact copy of ckpt/last.pt (weights,
optimiser, random streams: 28 MB at paper size, see below) to a run that has not finished, and files over
``--part-mib`` are split into numbered parts, since a file brought back is at most 16 MiB.

Table 2's baselines go the same way: a variant named ``vae-kl<weight>`` (0.0: the autoencoder) or ``cnn`` is staged
with its ``train-baseline`` config and trained by that step, in the same time-boxed, resumable way. It is not
benchmarked (``--speed auto`` trains it with the default options) and has no note discovery test; once finished
it is probed (a linear probe on the VAE's mean latent; the CNN's own test accuracies) into ``probe.json``.

A stopped run continues with the same command where its folder still exists (a machine kept warm), or on a fresh
machine from a checkpoint brought back (``--keep-last`` brings it back as a compact copy: Adam's moments in
bfloat16, 28 MB instead of 42 at paper size, see musicdecomp.train.checkpoints.compact_checkpoint):

    python tools/gpu/driver.py unpack --from <folder of the files> --to checkpoints/musicslots
    git add checkpoints/musicslots && git commit ...     # kept in git: results/ does not outlive a checkout
    python tools/gpu/driver.py prepare ... --runs checkpoints/musicslots

A call sends the repository's tracked files and carries at most 64 MiB in all. A run whose ckpt/last.pt git tracks
travels with the repository anyway, so ``prepare`` does not copy it into the stage but names it there
(``runs.json``), and ``run`` continues it in place with its ckpt/best.pt, so model selection spans every session.
A run folder that git does not track (``--runs results/gpu_runs``) is copied into the stage, without its best
checkpoint (14 MB); its model selection then starts again at the next validation, and ``unpack`` into the folder
of the earlier part keeps the earlier best checkpoint (and its test evaluation) when it scored higher. The rendered
notes travel compressed (``notes.pt.z``, 7.5 MB instead of 10.2, restored byte for byte there). ``prepare`` adds
up what the next call would send (tracked and untracked-not-ignored files of the repository it runs in, and the
stage) and refuses above ``--max-travel-mib``, naming the largest files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))  # musicdecomp, imported only where a check needs it (it brings torch)
from musicdecomp.sweep import is_baseline  # noqa: E402  (plain Python: no torch)

SPEED_OPTIONS = ("channels_last", "cudnn_benchmark", "compile")  # musicdecomp.train.loop.SPEED_OPTIONS (not
# imported here: it brings torch)
DATASET = "jsb_multi"
INPUTS = {"chords.csv": "results/data/jsb/chords.csv", "summary.json": "results/data/jsb/summary.json",
          "notes.pt": "results/data/notes/notes.pt"}
STEP_CONFIGS = ("features", "eval-musicslots", "probe")  # the entries of configs.json that are not runs
EVAL_RESERVE_S = 75  # test evaluation, figures and packing after training stops
PROBE_RESERVE_S = 60  # a finished run is probed only with this much of the budget left (then packing)
CARRIED = ("ckpt/last.pt", "metrics.jsonl", "progress.json")  # what continues a run elsewhere
PACKED = {"notes.pt": "notes.pt.z"}  # stage files that travel compressed (pack_file), restored there
# a composable-representations run: composable-<subset>-<variant> (train-composable on the staged codes)
COMPOSABLE_RE = re.compile(r"^composable-(?P<subset>[a-z0-9_]+)-(?P<variant>mean|sum|min|max|supervised)$")
COMPOSABLE_FILES = {"codebooks.pt": "codebooks.pt.z", "train.pt": "codes-train.pt.z", "valid.pt": "codes-valid.pt.z"}


def train_step(variant: str) -> str:
    """The step that trains ``variant``: a MusicSlots variant (none-t2-imp_true-k7), a baseline (vae-kl0.0, cnn) or a
    composable-representations run (composable-drums_bass-mean)."""
    if COMPOSABLE_RE.match(variant):
        return "train-composable"
    return "train-baseline" if is_baseline(variant) else "train-musicslots"


def is_composable(variant: str) -> bool:
    return COMPOSABLE_RE.match(variant) is not None


def run_args(variant: str, cfg: dict) -> list[str]:
    """The command-line options naming a staged run (its step checks them against its slice)."""
    m = COMPOSABLE_RE.match(variant)
    if m:
        return ["--subset", m["subset"], "--variant", m["variant"], "--seed", str(cfg["seed"])]
    return ["--dataset", DATASET, "--variant", variant, "--seed", str(cfg["seed"])]


def musicdecomp(*args: str) -> list[str]:
    return [sys.executable, "-m", "musicdecomp", *args]


def prepare(args) -> None:
    stage = Path(args.stage)
    stage.mkdir(parents=True, exist_ok=True)
    musicslots = [v for v in args.variants if not is_composable(v)]
    composable = [v for v in args.variants if is_composable(v)]
    needed = {**(INPUTS if musicslots else {}), **(COMPOSABLE_INPUTS if composable else {})}
    missing = [src for src in needed.values() if not Path(src).exists()]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: build them first (snakemake --cores 2 {' '.join(missing)})")
    params = ["--params", *args.params]
    configs = {name: json.loads(subprocess.check_output(musicdecomp("config", name, *extra, *params)))
               for name, extra in (("features", ("--dataset", DATASET)), ("eval-musicslots", ()), ("probe", ()))}
    for variant in args.variants:
        m = COMPOSABLE_RE.match(variant)
        if variant.startswith("composable") and not m:
            sys.exit(f"{variant} is not composable-<subset>-<mean|sum|min|max|supervised>, e.g. composable-drums_bass-mean")
        names = (["--dataset", m["subset"], "--variant", m["variant"]] if m else ["--dataset", DATASET, "--variant",
                                                                                   variant])
        configs[variant] = json.loads(subprocess.check_output(musicdecomp(
            "config", train_step(variant), *names, "--seed", str(args.seed), *params)))
    for variant in args.variants if args.runs else ():
        if (Path(args.runs) / variant / "train.json").exists():
            sys.exit(f"{Path(args.runs) / variant} has finished (train.json): staged, it would train again from step "
                     f"0 there. Leave {variant} out of --variants")
        check_continued(Path(args.runs) / variant, configs[variant], args.params)
    for name in (*INPUTS, *PACKED.values(), *COMPOSABLE_FILES.values(), "runs.json"):  # an earlier stage's
        (stage / name).unlink(missing_ok=True)
    for name, src in (INPUTS if musicslots else {}).items():
        if name in PACKED:
            pack_file(Path(src), stage / PACKED[name])
        else:
            shutil.copyfile(src, stage / name)
    if composable:
        stage_composable(stage, sorted({COMPOSABLE_RE.match(v)["subset"] for v in composable}))
    (stage / "configs.json").write_text(json.dumps(configs, indent=1))
    shutil.rmtree(stage / "runs", ignore_errors=True)
    in_place = {}
    for variant in args.variants if args.runs else ():
        src = Path(args.runs) / variant
        if not (src / "ckpt/last.pt").exists():
            continue
        step = step_of(src)
        tracked = tracked_path(src)
        if tracked is not None:  # it travels with the repository: named, not copied
            in_place[variant] = tracked
            print(f"{variant} continues at step {step} from {tracked} (tracked by git: it travels with the "
                  f"repository, its best checkpoint too)")
        else:
            copy_run(src, stage / "runs" / variant)
            print(f"staged {variant} at step {step} from {src}")
    if in_place:
        (stage / "runs.json").write_text(json.dumps(in_place, indent=1))
    size = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file()) / 1e6
    inputs = [f"{name} (compressed)" if name in PACKED else name for name in (INPUTS if musicslots else ())]
    inputs += ["the codec's codebooks and the codes (compressed)"] if composable else []
    print(f"staged {', '.join(inputs)} and the configs of {', '.join(args.variants)} in {stage} ({size:.1f} MB)")
    check_travel(Path.cwd(), stage, args.max_travel_mib)


COMPOSABLE_INPUTS = {"model.pt": "results/codec/model.pt", "train.pt": "results/codec/codes/train.pt",
                     "valid.pt": "results/codec/codes/valid.pt"}


def stage_composable(stage: Path, subsets: list[str]) -> None:
    """The composable runs' inputs, compressed: the codec quantizer's codebooks (the GPU machine has no encodec:
    the codes decode with torch alone, to the same latents) and the train and valid codes of ``subsets`` only."""
    import torch

    from musicdecomp.models.codes import load_codes, write_codebooks
    from musicdecomp.models.encodec import load_codec

    with tempfile.TemporaryDirectory() as tmp:
        codec, info = load_codec(COMPOSABLE_INPUTS["model.pt"])
        write_codebooks(codec, info, Path(tmp) / "codebooks.pt")
        for split in ("train", "valid"):
            torch.save(subset_payload(load_codes(COMPOSABLE_INPUTS[f"{split}.pt"]), subsets), Path(tmp) / f"{split}.pt")
        for name, packed in COMPOSABLE_FILES.items():
            pack_file(Path(tmp) / name, stage / packed)


def subset_payload(payload: dict, subsets: list[str]) -> dict:
    """A codes payload reduced to ``subsets``: their classes at the positions they use, renumbered (the same
    ``subset_codes`` of each, in fewer bytes)."""
    import torch

    kept = {s: payload["subsets"][s] for s in subsets if s in payload["subsets"]}
    used = sorted({int(i) for s in kept.values() for i in s["items"]})
    new = {old: k for k, old in enumerate(used)}
    index = torch.tensor(used, dtype=torch.long)
    classes = {c for s in kept.values() for c in s["classes"]}
    return {**payload, "positions": payload["positions"][index],
            "classes": {c: v[index] for c, v in payload["classes"].items() if c in classes},
            "subsets": {s: {**v, "items": torch.tensor([new[int(i)] for i in v["items"]], dtype=torch.long)}
                        for s, v in kept.items()}}


def tracked_path(run: Path) -> str | None:
    """``run``'s path relative to the top of its git repository when git tracks its ckpt/last.pt, else None."""
    git = ["git", "-C", str(run)]
    top = subprocess.run([*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode or subprocess.run([*git, "ls-files", "--error-unmatch", "ckpt/last.pt"],
                                        capture_output=True).returncode:
        return None
    return run.resolve().relative_to(Path(top.stdout.strip()).resolve()).as_posix()


def travel_size(repo: Path, stage: Path) -> tuple[int, list[tuple[int, str]]]:
    """Bytes a device call from ``repo`` sends (its tracked and untracked-not-ignored files, and ``stage``, carried
    when git ignores it) and the files by size, largest first."""
    listing = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout
    files = {(repo / name).resolve() for name in listing.split("\0") if name}
    files |= {f.resolve() for f in stage.rglob("*")}
    sizes = sorted(((f.stat().st_size, str(f.relative_to(repo.resolve()) if f.is_relative_to(repo.resolve()) else f))
                    for f in files if f.is_file()), reverse=True)
    return sum(size for size, _ in sizes), sizes


def check_travel(repo: Path, stage: Path, limit_mib: float) -> None:
    """Refuse a stage whose call would send more than ``limit_mib`` (the device tool's limit is 64 MiB): it would be
    refused there. Outside a git repository (nothing to add up) this only says so."""
    if subprocess.run(["git", "-C", str(repo), "rev-parse"], capture_output=True).returncode:
        print(f"{repo} is not a git repository: what a device call would send is not added up")
        return
    total, sizes = travel_size(repo, stage)
    print(f"a device call from {repo} with {stage} carried sends {total / 2**20:.1f} MiB (limit {limit_mib:g} MiB)")
    if total > limit_mib * 2**20:
        largest = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for size, name in sizes[:5])
        sys.exit(f"a device call would send {total / 2**20:.1f} MiB, over {limit_mib:g} MiB; the largest files: "
                 f"{largest}. Keep fewer runs in checkpoints/ with their ckpt/last.pt (a finished run needs only "
                 f"best.pt), stage fewer runs, or `git add` the kept runs (one git does not track yet is copied "
                 f"into the stage and so travels twice)")


def pack_file(src: Path, dst: Path) -> None:
    """Compress ``src`` losslessly: its bytes regrouped by position in 4-byte words (float32 data compresses much
    better so), then zlib. ``unpack_file`` restores it byte for byte."""
    from musicdecomp.io import atomic_path

    data = src.read_bytes()
    padded = data + bytes(-len(data) % 4)
    lanes = b"".join(padded[i::4] for i in range(4))
    with atomic_path(dst) as tmp:
        tmp.write_bytes(len(data).to_bytes(8, "little") + zlib.compress(lanes, 6))


def unpack_file(src: Path, dst: Path) -> None:
    from musicdecomp.io import atomic_path

    raw = src.read_bytes()
    size, lanes = int.from_bytes(raw[:8], "little"), zlib.decompress(raw[8:])
    n = len(lanes) // 4
    words = bytearray(len(lanes))
    for i in range(4):
        words[i::4] = lanes[i * n:(i + 1) * n]
    with atomic_path(dst) as tmp:
        tmp.write_bytes(bytes(words[:size]))


def check_continued(run: Path, cfg: dict, params: list[str]) -> None:
    """A run staged to continue must have been trained with the parameters it is staged with: otherwise training
    on the GPU machine would set it aside and start over, spending the session on steps already made."""
    if not (run / "ckpt/last.pt").exists() or not (run / "config.json").exists():
        return
    trained = json.loads((run / "config.json").read_text())
    if trained == cfg:
        return
    from musicdecomp.train.checkpoints import config_differences

    sys.exit(f"{run} was trained with other parameters than {' + '.join(params)} give: "
             f"{config_differences(trained, cfg, 'staged')}. Continuing it there would start it over; stage it with "
             f"the parameter files it was trained with (e.g. config/attention_standard.yaml for the runs trained "
             f"before attention: official became the default), or leave out --runs to train from step 0")


def log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", flush=True)


def check_configs(path: Path, configs: dict, variants: list[str]) -> None:
    """Each staged slice as the steps will check it, before any device time is spent (a stage made by another
    version of musicdecomp would otherwise stop after the dataset is rebuilt)."""
    lacking = [name for name in STEP_CONFIGS if name not in configs]
    if lacking:
        sys.exit(f"{path} has no config for {', '.join(lacking)} (staged by an older version of this script); "
                 f"stage it again with `prepare`")
    from musicdecomp.errors import UserError
    from musicdecomp.pipeline import check_slice

    try:
        check_slice(configs["features"], "features", DATASET)
        check_slice(configs["eval-musicslots"], "eval_musicslots")
        check_slice(configs["probe"], "probe")
        for variant in variants:
            m = COMPOSABLE_RE.match(variant)
            check_slice(configs[variant], train_step(variant).replace("-", "_"), m["subset"] if m else DATASET,
                        m["variant"] if m else variant, configs[variant].get("seed"))
    except UserError as e:
        sys.exit(f"{path}: {e}. Or stage it again with `prepare`")


def run(args) -> None:
    t0 = time.perf_counter()
    stage, out, work = Path(args.stage), Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    configs = json.loads((stage / "configs.json").read_text())
    variants = [v for v in configs if v not in STEP_CONFIGS]
    check_configs(stage / "configs.json", configs, variants)
    in_place = json.loads((stage / "runs.json").read_text()) if (stage / "runs.json").exists() else {}
    for variant, kept in in_place.items():  # relative to the repository root, where the call runs
        if not (Path(kept) / "ckpt/last.pt").exists():
            sys.exit(f"{kept}/ckpt/last.pt (named in {stage / 'runs.json'}) is missing in {Path.cwd()}: run this "
                     f"from the repository root, with the repository that was staged")
    eval_cfg = configs["eval-musicslots"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MUSICDECOMP_PROGRESS": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    # Inductor's compiled kernels, kept in the work folder: the calls of one warm machine share them
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str((work / "inductor-cache").resolve()))
    gpu = None
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True)
        print(query.stdout.strip())
        if query.returncode == 0 and query.stdout.strip():
            gpu = query.stdout.split(",")[0].strip()

    if args.extra_bench > 0:
        extra_benchmarks(args, out, env, t0)

    data_dir, codes_dir = work / "data" / DATASET, work / "codes"
    if any(is_composable(v) for v in variants):  # the codebooks and codes, restored once per machine
        for name, packed in COMPOSABLE_FILES.items():
            if not (codes_dir / name).exists():
                unpack_file(stage / packed, codes_dir / name)
    if any(not is_composable(v) for v in variants) and not (data_dir / "summary.json").exists():
        inputs = {name: stage / name for name in INPUTS}
        for name, packed in PACKED.items():
            if (stage / packed).exists():  # staged compressed: restored into the work folder
                inputs[name] = work / "inputs" / name
                unpack_file(stage / packed, inputs[name])
        log("features: rebuilding the dataset from the rendered notes", t0)
        subprocess.run(musicdecomp("features", "--config", json.dumps(configs["features"]), "--dataset", DATASET,
                                   "--chords", str(inputs["chords.csv"]), "--chords-summary",
                                   str(inputs["summary.json"]), "--notes", str(inputs["notes.pt"]),
                                   "--out-dir", str(data_dir)), env=env, check=True)

    models = {v: (configs[v]["model"]["mask"], configs[v]["model"]["time_stride"]) for v in variants
              if not is_baseline(v) and not is_composable(v)}  # what the throughput benchmark measures
    recorded = ({} if args.rebench or gpu is None or not models
                else recorded_benchmark(Path(args.records), gpu, set(models.values())))
    if recorded:
        log(f"speed options from the benchmark recorded for this GPU on {recorded.get('date')} ({recorded['file']}; "
            f"--rebench measures again)", t0)
    elif args.bench_seconds > 0 and models:
        log("throughput benchmark (alone on the device)", t0)
        try:
            subprocess.run([sys.executable, str(ROOT / "benchmarks/musicslots_throughput.py"), "--steps",
                            str(args.bench_steps), "--out", str(out), "--speed", "--profile",
                            "--masks", *sorted({m for m, _ in models.values()}),
                            "--strides", *sorted({str(t) for _, t in models.values()}),
                            *(["--small"] if args.bench_small else [])],
                           env=env, check=True, timeout=args.bench_seconds)
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
            log(f"benchmark did not complete: {e}", t0)
    bench = sorted(out.glob("musicslots_throughput*.json"))
    bench = recorded or (json.loads(bench[0].read_text()) if bench else {})
    # a baseline is not in the benchmark: the options asked for (auto: none)
    speeds = {v: speed_options(args.speed, bench, *models.get(v, ("", 0))) for v in variants}

    train_end = t0 + args.budget - EVAL_RESERVE_S

    def start(variant: str, share: int) -> subprocess.Popen:
        """Start training ``variant`` for 1/``share`` of the training time left (or --train-seconds)."""
        run_dir = work / "runs" / variant
        run_dir.mkdir(parents=True, exist_ok=True)
        kept = Path(in_place[variant]) if variant in in_place else None
        staged = kept or stage / "runs" / variant
        if (staged / "ckpt/last.pt").exists() and step_of(staged) > step_of(run_dir):
            for stale in ("ckpt/best.pt", "best.pt", "train.json"):  # from an older run in this folder
                (run_dir / stale).unlink(missing_ok=True)
            copy_run(staged, run_dir, best=kept is not None)
            log(f"{variant}: continuing from the {'kept' if kept else 'staged'} checkpoint at step "
                f"{step_of(run_dir)}{f' ({kept})' if kept else ''}", t0)
        seconds = args.train_seconds or max((train_end - time.perf_counter()) / share, 10)
        limit_min = seconds / 60
        data = (["--codec", str(codes_dir / "codebooks.pt"), "--codes-dir", str(codes_dir)] if is_composable(variant)
                else ["--data-dir", str(data_dir)])
        cmd = musicdecomp(train_step(variant), "--config", json.dumps(configs[variant]),
                          *run_args(variant, configs[variant]), *data, "--run-dir", str(run_dir), "--device", args.device,
                          "--time-limit", f"{limit_min:.3f}", "--log", str(run_dir / "train.log"),
                          *(f"--{name.replace('_', '-')}" for name in speeds[variant]))
        log(f"training {variant} for at most {limit_min:.2f} min ({', '.join(speeds[variant]) or 'default speed'})",
            t0)
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(variant: str, proc: subprocess.Popen) -> int:
        _, err = proc.communicate()
        state = {0: "finished", 75: "stopped at its time limit"}.get(proc.returncode, "FAILED")
        log(f"{variant}: exit {proc.returncode} ({state})", t0)
        if proc.returncode not in (0, 75):
            print(err[-3000:], file=sys.stderr)
        return proc.returncode

    # a finished run is not trained again (train-musicslots would start it over): it is evaluated and packed
    status = {v: 0 for v in variants if (work / "runs" / v / "train.json").exists()}
    for variant in status:
        log(f"{variant}: finished at step {step_of(work / 'runs' / variant)}; not trained again", t0)
    todo = [v for v in variants if v not in status]
    if args.side_by_side:
        procs = {variant: start(variant, 1) for variant in todo}
        status.update({variant: wait(variant, proc) for variant, proc in procs.items()})
    else:  # one at a time (faster in total on one GPU), each an equal share of what is left
        for i, variant in enumerate(todo):
            status[variant] = wait(variant, start(variant, len(todo) - i))

    summary = {"budget_seconds": args.budget, "runs": {}}
    if bench:
        summary["benchmark"] = bench
    evals = {}
    for variant in variants:
        run_dir = work / "runs" / variant
        ckpt = run_dir / ("best.pt" if (run_dir / "best.pt").exists() else "ckpt/best.pt")
        if status[variant] not in (0, 75) or not ckpt.exists() or is_baseline(variant) or is_composable(variant):
            continue  # a baseline's test is its probe; a composable run is evaluated where its stems are
        evals[variant] = subprocess.Popen(musicdecomp(
            "eval-musicslots", "--run-dir", str(run_dir), "--data-dir", str(data_dir), "--out",
            str(run_dir / "test.json"), "--figure", str(run_dir / "test_examples.png"), "--audio-dir",
            str(run_dir / "test_audio"), "--device", args.device,
            "--checkpoint", str(ckpt), "--config", json.dumps(eval_cfg), "--log", str(run_dir / "eval.log"),
            *(["--limit", str(args.eval_limit)] if args.eval_limit else [])),
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for variant, proc in evals.items():
        _, err = proc.communicate()
        if proc.returncode:
            print(err[-3000:], file=sys.stderr)
    for variant in variants:  # Table 2's note-property probes of a finished run (its best.pt), once
        run_dir = work / "runs" / variant
        if status[variant] != 0 or not (run_dir / "best.pt").exists() or (run_dir / "probe.json").exists() or \
                is_composable(variant):
            continue
        left = t0 + args.budget - time.perf_counter()
        if left < PROBE_RESERVE_S:
            log(f"{variant}: not probed, {left:.0f} s of the budget left; the next call on this machine probes it",
                t0)
            continue
        source = ("its own outputs" if variant == "cnn" else "its latent" if is_baseline(variant)
                  else "its matched slots")
        log(f"{variant}: probing the finished run (pitch and instrument from {source})", t0)
        try:
            proc = subprocess.run(musicdecomp(
                "probe", "--run-dir", str(run_dir), "--data-dir", str(data_dir), "--out", str(run_dir / "probe.json"),
                "--device", args.device, "--config", json.dumps(configs["probe"]), "--log", str(run_dir / "probe.log")),
                env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, timeout=left - 20)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
        except subprocess.TimeoutExpired:  # its checkpoints stay in the run folder: the next call continues it
            log(f"{variant}: the probe did not finish within the budget", t0)
    for variant in variants:
        run_dir = work / "runs" / variant
        entry = {"exit": status[variant], "speed": speeds[variant]}
        for name in ("progress.json", "train.json", "test.json", "probe.json"):
            if (run_dir / name).exists():
                entry[name.removesuffix(".json")] = json.loads((run_dir / name).read_text())
        summary["runs"][variant] = entry
        pack_run(run_dir, out / f"{variant}.tar", keep_last=args.keep_last)
        split_large(out / f"{variant}.tar", int(args.part_mib * 2**20))
    summary["wall_seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for variant, entry in summary["runs"].items():
        p, t = entry.get("progress", {}), entry.get("test", {}).get("test", {})
        score = "mIoU" if not (is_baseline(variant) or is_composable(variant)) else "score"
        line = (f"{variant}: step {p.get('step')} of {p.get('steps')}, {p.get('steps_per_second', 0):.2f} steps/s, "
                f"best val {score} {p.get('best_val_score', float('nan')):.4f} @ {p.get('best_step')}")
        if not is_baseline(variant) and not is_composable(variant):
            line += f"; test note MSE {t.get('note_mse', float('nan')):.3f} mIoU {t.get('miou', float('nan')):.4f}"
        if "probe" in entry:
            line += "; probes (pitch / instrument / chord): " + " / ".join(
                f"{entry['probe']['test'][k]:.4f}" for k in ("pitch", "instrument", "chord"))
        log(line, t0)
    if any(code not in (0, 75) for code in status.values()):
        sys.exit(1)


def extra_benchmarks(args, out: Path, env: dict, t0: float) -> None:
    """The speed measurements a GPU session owes besides training, within ``--extra-bench`` seconds: the compiled
    and eager training steps of both models (benchmarks/compile_speed.py), then each composable-representations
    step's unit costs (benchmarks/composable_cost.py). Their records come back in ``out``."""
    end = time.perf_counter() + args.extra_bench
    small = ["--small"] if args.bench_small else []
    for name, extra, share in (("compile_speed.py", ["--budget", str(0.6 * args.extra_bench)] + small, 0.8),
                               ("composable_cost.py", ["--steps", "3"], 1.0)):
        left = end - time.perf_counter()
        if left < 20:
            log(f"{name}: not run, {left:.0f} s of --extra-bench left", t0)
            continue
        log(f"{name} (at most {share * left:.0f} s)", t0)
        try:
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--device", args.device, "--out",
                            str(out), *extra], env=env, check=True, timeout=share * left,
                           cwd=ROOT / "benchmarks")
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
            log(f"{name} did not complete: {e}", t0)


SPEED_MIN_GAIN = 1.03  # --speed auto keeps the defaults unless an option combination is this much faster


def recorded_benchmark(records: Path, gpu: str, models: set[tuple[str, int]]) -> dict:
    """The speed benchmark recorded in ``records`` for this GPU (benchmarks/musicslots_throughput_speed_<gpu>.json,
    it travels with the repository) when it covers every (mask, stride) to train, else {}."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from benchlib import device_slug

    path = records / f"musicslots_throughput_speed_{device_slug(gpu)}.json"
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    covered = {(best["mask"], best["time_stride"]) for best in record.get("best_speed", [])}
    return {**record, "file": path.name} if models <= covered else {}


def speed_options(requested: list[str], bench: dict, mask: str, stride: int) -> list[str]:
    """The training speed options for a model: the ones asked for, or (``auto``) the benchmark's fastest
    combination for this mask and stride when it beats the defaults by SPEED_MIN_GAIN, else none."""
    if requested != ["auto"]:
        return [] if requested == ["none"] else requested
    for best in bench.get("best_speed", []):
        if (best["mask"], best["time_stride"]) == (mask, stride) and best["speedup"] >= SPEED_MIN_GAIN:
            return [name for name, on in best["speed"].items() if on]
    return []


def pack_run(run_dir: Path, tar_path: Path, keep_last: bool) -> None:
    """Tar a run folder to bring it back: with ``keep_last``, a compact copy of ckpt/last.pt (a finished run needs
    no optimiser state: never); a finished run's ckpt/best.pt only once, as best.pt."""
    finished = (run_dir / "train.json").exists()  # then best.pt holds its best model

    def leave_out(member: tarfile.TarInfo):
        name = member.name.split("/", 1)[-1]
        return None if name == "ckpt/last.pt" or (finished and name == "ckpt/best.pt") else member

    with tarfile.open(tar_path, "w") as tar:
        tar.add(run_dir, arcname=run_dir.name, filter=leave_out)
        if keep_last and not finished and (run_dir / "ckpt/last.pt").exists():
            from musicdecomp.train.checkpoints import compact_checkpoint

            with tempfile.TemporaryDirectory() as tmp:
                compact = Path(tmp) / "last.pt"
                sizes = compact_checkpoint(run_dir / "ckpt/last.pt", compact)
                tar.add(compact, arcname=f"{run_dir.name}/ckpt/last.pt")
            print(f"{run_dir.name}: ckpt/last.pt packed compact, {sizes['bytes_before'] / 1e6:.1f} -> "
                  f"{sizes['bytes_after'] / 1e6:.1f} MB", flush=True)


def copy_run(src: Path, dst: Path, best: bool = False) -> None:
    """Copy what continues a run elsewhere (CARRIED, and with ``best`` its ckpt/best.pt) from one run folder to
    another; a run stopped before it logged or validated has no metrics.jsonl or best checkpoint yet."""
    for name in (*CARRIED, "ckpt/best.pt") if best else CARRIED:
        if name in ("metrics.jsonl", "ckpt/best.pt") and not (src / name).exists():
            continue
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, dst / name)


def step_of(run_dir: Path) -> int:
    progress = run_dir / "progress.json"
    return json.loads(progress.read_text())["step"] if (run_dir / "ckpt/last.pt").exists() else -1


def split_large(path: Path, part_bytes: int) -> None:
    """Split ``path`` into ``<name>.part00``, ``.part01``... of at most ``part_bytes`` when it is larger."""
    if path.stat().st_size <= part_bytes:
        return
    with open(path, "rb") as f:
        for i, chunk in enumerate(iter(lambda: f.read(part_bytes), b"")):
            path.with_name(f"{path.name}.part{i:02d}").write_bytes(chunk)
    path.unlink()


def unpack(args) -> None:
    """Join split tars, then extract every tar of ``--from`` into ``--to`` (one folder per run, see place_run)."""
    src, dst = Path(args.source), Path(args.to)
    dst.mkdir(parents=True, exist_ok=True)
    tars = set(src.glob("*.tar")) | {p.with_name(p.name.rsplit(".part", 1)[0]) for p in src.glob("*.tar.part*")}
    for tar_path in sorted(tars):
        parts = sorted(src.glob(f"{tar_path.name}.part*"))
        with tempfile.TemporaryDirectory(dir=dst, prefix=".unpack-") as tmp:
            if parts:
                joined = Path(tmp) / tar_path.name
                with open(joined, "wb") as f:
                    for part in parts:
                        f.write(part.read_bytes())
                tar_path = joined
            with tarfile.open(tar_path) as tar:
                tar.extractall(Path(tmp) / "runs", filter="data")
            for run_dir in sorted((Path(tmp) / "runs").iterdir()):
                place_run(run_dir, dst / run_dir.name)


EVALUATED = ("test.json", "test_examples.png", "test_audio")  # a run's test evaluation, named as eval-musicslots
# names it in the pipeline, so that a released run ships it (musicdecomp.train.release)
BEST_FILES = ("ckpt/best.pt", "best.pt")  # a run's best model while it trains, and once it has finished


def best_file(run: Path) -> Path | None:
    return next((run / name for name in BEST_FILES if (run / name).exists()), None)


def place_run(new: Path, dst: Path) -> None:
    """Move a run folder brought back to ``dst``. Where ``dst`` already holds an earlier part of the same run (an
    earlier session), the new folder replaces it (a stale ckpt/last.pt must not survive beside a newer progress.json),
    but model selection spans both parts: a run continued from a copy in the stage starts selecting again on the GPU
    machine, since only ckpt/last.pt travels there, so the earlier best checkpoint is kept, with its test evaluation,
    when its validation score is higher. (A run continued in place from checkpoints/ took its best checkpoint along.)
    A finished run keeps its best model once, as best.pt."""
    from musicdecomp.train.checkpoints import read_best

    name = dst.name
    if dst.exists():
        step_new, step_old = (json.loads((d / "progress.json").read_text())["step"] for d in (new, dst))
        if step_new < step_old:
            print(f"{name}: skipped, {dst} is further on (step {step_old} > {step_new})")
            return
        old_best = best_file(dst)
        if old_best is not None:
            new_best = best_file(new)
            score_old, at_old = read_best(old_best)
            score_new, at_new = read_best(new_best) if new_best is not None else (float("-inf"), -1)
            if score_old > score_new:
                for target in [new / n for n in BEST_FILES if (new / n).exists()] or [new / BEST_FILES[0]]:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(old_best, target)
                for evaluated in EVALUATED:  # the test evaluation of the kept checkpoint
                    shutil.rmtree(new / evaluated, ignore_errors=True) if (new / evaluated).is_dir() else (
                        new / evaluated).unlink(missing_ok=True)
                    if (dst / evaluated).is_dir():
                        shutil.copytree(dst / evaluated, new / evaluated)
                    elif (dst / evaluated).exists():
                        shutil.copyfile(dst / evaluated, new / evaluated)
                for summary in ("progress.json", "train.json"):
                    if (new / summary).exists():
                        record = json.loads((new / summary).read_text())
                        record.update(best_val_score=score_old, best_step=at_old)
                        (new / summary).write_text(json.dumps(record, indent=2))
                print(f"{name}: kept the earlier best checkpoint (step {at_old}, validation score {score_old:.4f}; "
                      f"this part's best: {score_new:.4f} at step {at_new})")
        shutil.rmtree(dst)
    shutil.move(new, dst)
    if (dst / "best.pt").exists():  # finished: its published best model is kept once
        (dst / "ckpt/best.pt").unlink(missing_ok=True)
    progress = json.loads((dst / "progress.json").read_text())
    print(f"{name} -> {dst} (step {progress['step']} of {progress['steps']})")
    if (dst / "train.json").exists():
        print(f"{name}: finished; release it (`python -m musicdecomp release-run --from {dst}`: compact weights and "
              f"its evaluation in releases/, which `all` then uses on any machine), then remove {dst} and commit")
    if not (dst / "ckpt/last.pt").exists() and not (dst / "train.json").exists():
        print(f"{name}: no ckpt/last.pt came back, so this run cannot be continued elsewhere (run with --keep-last)")


# what a device call brings back (the device tool's limits): files, bytes per file, bytes in all, folder depth
RETURN_FILES, RETURN_FILE_BYTES, RETURN_BYTES, RETURN_DEPTH = 8, 16 * 2**20, 64 * 2**20, 2
RETURN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def check_return(out: Path) -> list[str]:
    """What in ``out`` would not come back from a device call (empty: all of it would)."""
    files = [f for f in out.rglob("*") if f.is_file()]
    problems = [f"{len(files)} files, more than {RETURN_FILES}"] if len(files) > RETURN_FILES else []
    problems += [f"{f.name}: {f.stat().st_size / 2**20:.1f} MiB, over 16 MiB" for f in files
                 if f.stat().st_size > RETURN_FILE_BYTES]
    total = sum(f.stat().st_size for f in files)
    problems += [f"{total / 2**20:.1f} MiB in all, over 64 MiB"] if total > RETURN_BYTES else []
    problems += [f"{f.relative_to(out)}: a name or depth the device tool does not bring back" for f in files
                 if len(f.relative_to(out).parts) > RETURN_DEPTH + 1
                 or not all(RETURN_NAME.match(part) for part in f.relative_to(out).parts)]
    return problems


def dry_run(args) -> None:
    """Here, on the CPU: the staged job's ``run`` half end to end as the GPU machine would run it (its packages
    hidden as there, a few steps, the test evaluation on a few examples), what it writes checked against what a
    device call brings back, and ``unpack`` of it; the stage's own size is checked as ``prepare`` does."""
    stage = Path(args.stage)
    if not (stage / "configs.json").exists():
        sys.exit(f"{stage} holds no staged job: run `prepare` first")
    check_travel(Path.cwd(), stage, args.max_travel_mib)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tools/gpu/device_like"),
                                                                       str(ROOT / "src"),
                                                                       os.environ.get("PYTHONPATH")])),
           "MUSICDECOMP_RESEED_OTHER_DEVICE": "1"}  # a kept run trained on the GPU continues here on the CPU
    with tempfile.TemporaryDirectory(prefix="gpu-dry-run-") as tmp:
        out, work, back = Path(tmp) / "out", Path(tmp) / "work", Path(tmp) / "back"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "run", "--stage", str(stage), "--out",
                               str(out), "--work", str(work), "--budget", str(args.budget), "--train-seconds",
                               str(args.train_seconds), "--device", "cpu", "--bench-seconds", "0", "--keep-last",
                               "--eval-limit", "8"], env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"dry run: `run` failed ({proc.returncode}) after {time.perf_counter() - t0:.0f} s:\n"
                     f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        problems = check_return(out)
        if problems:
            sys.exit(f"dry run: what `run` wrote would not all come back: {'; '.join(problems)}")
        unpacked = subprocess.run([sys.executable, str(Path(__file__).resolve()), "unpack", "--from", str(out),
                                   "--to", str(back)], capture_output=True, text=True)
        if unpacked.returncode:
            sys.exit(f"dry run: `unpack` failed:\n{unpacked.stderr[-3000:]}")
        runs = sorted(p.name for p in back.iterdir() if (p / "progress.json").exists())
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        print(f"dry run passed in {time.perf_counter() - t0:.0f} s: {', '.join(runs)} trained, packed "
              f"({len(list(out.iterdir()))} files, {size:.1f} MiB to bring back) and unpacked")


def released_runs() -> dict[str, str]:
    """Variant -> device of the seed-0 runs of params.yaml in releases/manifest.yaml (the queue's jobs are those)."""
    import yaml

    path = ROOT / "releases/manifest.yaml"
    runs = (yaml.safe_load(path.read_text()) or {}).get("runs") or [] if path.exists() else []
    return {e["run"].split("/")[-2]: e.get("device") for e in runs if e["run"].endswith("/seed0")}


def job_state(job: dict, gpu: str) -> tuple[str, bool]:
    """(where a queue job stands, whether it is done)."""
    if job["kind"] == "cluster":
        return "cluster: " + job["why"].split(";")[0], False
    if job["kind"] == "bench":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from benchlib import device_slug

        done = (ROOT / "benchmarks" / f"{job['record']}_{device_slug(gpu)}.json").exists()
        return ("recorded" if done else f"not recorded for {gpu}"), done
    states = []
    released = released_runs()
    for variant in job["variants"]:
        run = ROOT / job["runs"] / variant
        if variant in released:
            states.append(f"{variant} released ({released[variant]}) finished")
        elif (run / "train.json").exists():
            states.append(f"{variant} finished" + ("" if (run / "probe.json").exists() or is_composable(variant)
                                                   else ", not probed"))
        elif (run / "ckpt/last.pt").exists():
            p = json.loads((run / "progress.json").read_text())
            states.append(f"{variant} at step {p['step']} of {p['steps']}")
        else:
            states.append(f"{variant} not started")
    return "; ".join(states), all(s.endswith("finished") for s in states)


def queue(args) -> None:
    """Where each job of the queue stands, and the commands that continue the first unfinished training job."""
    import yaml

    jobs = yaml.safe_load(Path(args.file).read_text())["jobs"]
    todo, bench = None, 0
    for i, job in enumerate(jobs, 1):
        state, done = job_state(job, args.gpu)
        print(f"{i}. {job['name']}\n   [{job['kind']}] {state}")
        if job["kind"] == "bench" and not done:
            bench = 180
        if job["kind"] == "train" and not done and todo is None:
            todo = job
    if todo is None:
        print("\nno training job of the queue is left for the lent machines")
        return
    variants = [v for v in todo["variants"] if not (ROOT / todo["runs"] / v / "train.json").exists()][:1]
    params = " ".join(todo["params"])
    print(f"\nnext: {todo['name']}\n"
          f"  here:   python tools/gpu/driver.py prepare --stage .gpu --params {params} --variants {' '.join(variants)} "
          f"--runs {todo['runs']}\n"
          f"          python tools/gpu/driver.py dry-run --stage .gpu        # optional, minutes on the CPU\n"
          f"  device: (run, carry [\".gpu\"], timeout_s 600) PYTHONPATH=src python tools/gpu/driver.py run --stage .gpu "
          f"--out \"$OUT\" --budget 540 --keep-last --bench-seconds 0"
          + (f" --extra-bench {bench}" if bench else "") + "\n"
          f"  here:   python tools/gpu/driver.py unpack --from <files_at> --to {todo['runs']}; copy the benchmark "
          f"records into benchmarks/; git add {todo['runs']} benchmarks; commit")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("prepare", help="here: stage the rendered notes, the chords and the resolved configs")
    sp.add_argument("--stage", default=".gpu")
    sp.add_argument("--params", nargs="+", default=["params.yaml"])
    sp.add_argument("--variants", nargs="+", default=["none-t1-imp_true-k7", "softmax-t1-imp_true-k7"],
                    help="MusicSlots variants (mask-t<stride>-imp_<true|false>-k<slots>) and/or baselines "
                         "(vae-kl<weight>, cnn)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--runs", help="folder of run folders (from unpack) whose ckpt/last.pt to continue from")
    sp.add_argument("--max-travel-mib", type=float, default=64,
                    help="refuse when a device call from here would send more (the device tool's limit: 64 MiB)")
    sp.set_defaults(func=prepare)
    sp = sub.add_parser("run", help="there: features, benchmark, training within the budget, evaluation")
    sp.add_argument("--stage", default=".gpu")
    sp.add_argument("--out", required=True, help="summary.json, the benchmark record and a tar per run")
    sp.add_argument("--work", default="results/gpu", help="dataset and run folders (kept between calls)")
    sp.add_argument("--budget", type=float, required=True, help="seconds for the whole call")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--bench-steps", type=int, default=20)
    sp.add_argument("--bench-seconds", type=float, default=90, help="0 skips the benchmark")
    sp.add_argument("--bench-small", action="store_true", help="benchmark the 16-channel model (CPU checks)")
    sp.add_argument("--records", default=str(ROOT / "benchmarks"),
                    help="where speed benchmarks recorded per GPU are found: one for this GPU that covers the "
                         "staged models is used instead of measuring")
    sp.add_argument("--rebench", action="store_true", help="measure even when a recorded benchmark covers the run")
    sp.add_argument("--eval-limit", type=int, help=argparse.SUPPRESS)  # dry runs: the first N test examples only
    sp.add_argument("--extra-bench", type=float, default=0, metavar="SECONDS",
                    help="first spend this long on the compiled-vs-eager and composable cost benchmarks (0: none)")
    sp.add_argument("--train-seconds", type=float, help="train this long (default: what the budget leaves)")
    sp.add_argument("--keep-last", action="store_true", help="bring back ckpt/last.pt to continue elsewhere")
    sp.add_argument("--side-by-side", action="store_true",
                    help="train the variants at the same time (default: one after the other, each an equal share "
                         "of the time; on an H200 two runs side by side made 48 steps/s together, one alone 57)")
    sp.add_argument("--speed", nargs="+", default=["auto"], choices=["auto", "none", *SPEED_OPTIONS],
                    help="training speed options: auto (the benchmark's fastest; none without a benchmark), none, "
                         "or the options to use")
    sp.add_argument("--part-mib", type=float, default=15, help="split files brought back above this size")
    sp.set_defaults(func=run)
    sp = sub.add_parser("dry-run", help="here, on CPU: the staged job's run half end to end, a few steps, and what "
                                        "would come back checked against the device tool's limits")
    sp.add_argument("--stage", default=".gpu")
    sp.add_argument("--budget", type=float, default=900, help="seconds for the run half (features, steps, evaluation)")
    sp.add_argument("--train-seconds", type=float, default=20, help="training per run (at least one step and a "
                                                                     "checkpoint)")
    sp.add_argument("--max-travel-mib", type=float, default=64)
    sp.set_defaults(func=dry_run)
    sp = sub.add_parser("queue", help="where each GPU job of tools/gpu/queue.yaml stands, and the next commands")
    sp.add_argument("--file", default=str(ROOT / "tools/gpu/queue.yaml"))
    sp.add_argument("--gpu", default="NVIDIA H200", help="the lent GPU, whose benchmark records count")
    sp.set_defaults(func=queue)
    sp = sub.add_parser("unpack", help="here: join split files brought back and extract the run folders")
    sp.add_argument("--from", dest="source", required=True)
    sp.add_argument("--to", required=True)
    sp.set_defaults(func=unpack)
    args = p.parse_args()
    if args.cmd == "run" and len(args.speed) > 1 and {"auto", "none"} & set(args.speed):
        p.error("--speed takes auto, none, or option names, not a mix")
    args.func(args)


if __name__ == "__main__":
    main()
