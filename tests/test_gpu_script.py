"""tools/gpu/driver.py, the driver of time-boxed MusicSlots runs on a bare GPU machine, run
end to end on CPU with the tiny parameters: stage, rebuild the dataset, benchmark, train until the time limit,
evaluate, pack (split into parts), bring back, and continue on a "fresh machine" from the checkpoint."""

import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import pytest
import torch
from conftest import REPO, pipeline_root, tool_env

from musicdecomp.config import load_params
from musicdecomp.eval.probes import probe_run
from musicdecomp.pipeline import code_id, step_config
from musicdecomp.sweep import run_dir
from musicdecomp.train.adopt import stage_adoption
from musicdecomp.train.checkpoints import COMPACT, read_best
from musicdecomp.train.loop import SPEED_OPTIONS
from musicdecomp.train.musicslots import train_musicslots

SCRIPT = REPO / "tools/gpu/driver.py"
_spec = importlib.util.spec_from_file_location("musicslots_gpu", SCRIPT)
gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu)
VARIANTS = ["none-t2-imp_true-k3", "softmax-t2-imp_true-k3"]


def device_like_env() -> dict[str, str]:
    """tool_env() without the packages the GPU machine lacks (tools/gpu/device_like/sitecustomize.py)."""
    env = tool_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tools/gpu/device_like"), env.get("PYTHONPATH")]))
    return env


def call(*args, cwd) -> subprocess.CompletedProcess:
    """The driver as the issue's commands call it: ``run`` (the GPU machine's half) as there, without FluidSynth,
    soundfile, MLflow, Snakemake, DVC or EnCodec; the other subcommands here, with everything."""
    env = device_like_env() if args[0] == "run" else tool_env()
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_the_device_like_environment_lacks_what_the_gpu_machine_lacks():
    probe = "import importlib, sys; importlib.import_module(sys.argv[1])"
    for name in ("soundfile", "mlflow", "snakemake"):
        hidden = subprocess.run([sys.executable, "-c", probe, name], env=device_like_env(), capture_output=True,
                                text=True)
        assert hidden.returncode == 1 and f"the GPU machine has no {name}" in hidden.stderr
        assert subprocess.run([sys.executable, "-c", probe, name], env=tool_env()).returncode == 0
    kept = subprocess.run([sys.executable, "-c", probe, "musicdecomp.train.musicslots"], env=device_like_env())
    assert kept.returncode == 0


def script(*args, cwd):
    proc = call(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_time_boxed_runs_are_packed_brought_back_and_continued(tiny_run, tiny_override, tmp_path):
    long_runs = tmp_path / "long.yaml"  # never finishes: only the time limit stops it
    long_runs.write_text("musicslots:\n  train: {steps: 100000, cosine_steps: 100000, eval_every: 3, log_every: 1,"
                         " checkpoint_every: 1000}\n  eval: {iters: 3}\n")  # tested with one more iteration
    params = [REPO / "params.yaml", REPO / "config/tiny.yaml", tiny_override, long_runs]
    stage = tmp_path / "stage"
    script("prepare", "--stage", stage, "--params", *params, "--variants", *VARIANTS, cwd=tiny_run)
    configs = json.loads((stage / "configs.json").read_text())
    assert set(configs) == {"features", "eval-musicslots", "probe", *VARIANTS}
    assert configs["eval-musicslots"] == {"musicslots.eval": {"iters": 3, "amp": "none"}, "compute.reevaluate": False}
    assert configs["softmax-t2-imp_true-k3"]["model"]["mask"] == "softmax"
    assert configs["none-t2-imp_true-k3"]["model"]["dim"] == 16  # the tiny override reached the config
    assert not (stage / "notes.pt").exists() and (stage / "notes.pt.z").exists()  # the notes travel compressed

    # the other half runs anywhere from the stage alone (here: another folder, like the GPU machine)
    out = tmp_path / "out1"
    script("run", "--stage", stage, "--out", out, "--work", tmp_path / "machine1", "--budget", 1200, "--train-seconds",
           4, "--device", "cpu", "--bench-small", "--bench-steps", 1, "--bench-seconds", 600, "--keep-last",
           "--part-mib", 0.05, "--side-by-side", cwd=tmp_path)  # a loaded CPU may take minutes to benchmark
    summary = json.loads((out / "summary.json").read_text())
    bench = summary["benchmark"]
    assert bench["model"] == "small" and bench["profile"]["top"]
    # only the staged models (stride 2; none and softmax), each with and without channels_last (no cuDNN here)
    assert sorted((r["mask"], r["time_stride"], r["channels_last"]) for r in bench["results"]) == [
        ("none", 2, False), ("none", 2, True), ("softmax", 2, False), ("softmax", 2, True)]
    assert {r["cudnn_benchmark"] for r in bench["results"]} == {False}
    stopped_at = {}
    for variant in VARIANTS:
        run = summary["runs"][variant]
        mask = variant.split("-")[0]
        assert run["speed"] == gpu.speed_options(["auto"], bench, mask, 2)  # the benchmark's choice trained
        assert run["progress"]["speed"]["channels_last"] == ("channels_last" in run["speed"])
        assert run["exit"] == 75 and "train" not in run  # stopped at its time limit, not finished
        stopped_at[variant] = run["progress"]["step"]
        assert run["progress"]["steps"] == 100000 and run["progress"]["best_step"] >= 3
        assert run["test"]["best_step"] == run["progress"]["best_step"] and run["test"]["checkpoint"]
        assert run["test"]["test_iters"] == 3 and run["test"]["model"]["iters"] == 2
        assert not (out / f"{variant}.tar").exists() and len(list(out.glob(f"{variant}.tar.part*"))) > 1
        assert all(p.stat().st_size <= 0.05 * 2**20 for p in out.glob(f"{variant}.tar.part*"))

    back = tmp_path / "back"
    script("unpack", "--from", out, "--to", back, cwd=tmp_path)
    for variant in VARIANTS:
        assert json.loads((back / variant / "test.json").read_text())["variant"] == variant
        last = torch.load(back / variant / "ckpt/last.pt", weights_only=True)
        assert last["step"] == stopped_at[variant] and (back / variant / "ckpt/best.pt").exists()
        assert last["compact"] == COMPACT  # brought back compact
        assert (back / variant / "test_examples.png").read_bytes()[:4] == b"\x89PNG"
        assert any((back / variant / "test_audio").glob("*.wav"))

    # staged with other parameters than it was trained with, it would start over there: refused here, and the
    # stage is left as it was
    before = (stage / "configs.json").read_text()
    proc = call("prepare", "--stage", stage, "--params", *params, REPO / "config/attention_standard.yaml",
                "--variants", *VARIANTS, "--runs", back, cwd=tiny_run)
    assert proc.returncode == 1 and (stage / "configs.json").read_text() == before
    assert (f"{back / VARIANTS[0]} was trained with other parameters than" in proc.stderr
            and "model.attention ('official' in the run, 'standard' staged)" in proc.stderr
            and "leave out --runs to train from step 0" in proc.stderr)

    # a fresh machine: only ckpt/last.pt (+ metrics, progress) travels in the stage
    script("prepare", "--stage", stage, "--params", *params, "--variants", *VARIANTS, "--runs", back, cwd=tiny_run)
    assert {p.relative_to(stage / "runs" / VARIANTS[0]).as_posix() for p in (stage / "runs" / VARIANTS[0]).rglob("*")
            if p.is_file()} == {"ckpt/last.pt", "metrics.jsonl", "progress.json"}
    out2 = tmp_path / "out2"
    log = script("run", "--stage", stage, "--out", out2, "--work", tmp_path / "machine2", "--budget", 600,
                 "--train-seconds", 4, "--device", "cpu", "--bench-seconds", 0, "--speed", "channels_last",
                 cwd=tmp_path)
    summary = json.loads((out2 / "summary.json").read_text())
    # one after the other (the default): the second starts when the first has stopped
    a, b = VARIANTS
    assert log.index(f"training {a}") < log.index(f"{a}: exit 75") < log.index(f"training {b}") < log.index(
        f"{b}: exit 75")
    for variant in VARIANTS:
        assert summary["runs"][variant]["progress"]["speed"] == {"channels_last": True, "cudnn_benchmark": False, "compile": False}
        assert f"{variant}: continuing from the staged checkpoint at step {stopped_at[variant]}" in log
        assert summary["runs"][variant]["progress"]["step"] > stopped_at[variant]
        with tarfile.open(out2 / f"{variant}.tar") as tar:  # small enough to stay whole; no last.pt asked for
            names = set(tar.getnames())
            train_log = tar.extractfile(f"{variant}/train.log").read().decode()
        assert f"{variant}/ckpt/last.pt" not in names and f"{variant}/ckpt/best.pt" in names
        assert f"from step {stopped_at[variant]}" in train_log and "model selection starts again" in train_log
        assert "resumes from a compact checkpoint" in train_log
        assert summary["runs"][variant]["progress"]["compact_resumes"] == [stopped_at[variant]]

    # bringing the second part back into the first's folder: selection spans both parts, nothing stale stays
    first_best = {v: read_best(back / v / "ckpt/best.pt") for v in VARIANTS}
    script("unpack", "--from", out2, "--to", back, cwd=tmp_path)
    for variant in VARIANTS:
        run, second = back / variant, summary["runs"][variant]
        score, step = read_best(run / "ckpt/best.pt")
        assert score == max(first_best[variant][0], second["progress"]["best_val_score"])
        assert json.loads((run / "test.json").read_text())["best_step"] == step
        progress = json.loads((run / "progress.json").read_text())
        assert progress["step"] == second["progress"]["step"] and progress["best_step"] == step
        assert not (run / "ckpt/last.pt").exists()  # the first part's checkpoint is older than this progress
    assert not list(back.glob(".unpack-*"))


def test_a_run_kept_in_git_continues_in_place_with_its_best_checkpoint(tiny_run, tiny_override, tmp_path):
    """A run folder that git tracks (checkpoints/) travels with the repository on every device call: the stage names
    it instead of carrying a second copy, and the run continues from it with its best checkpoint, so model selection
    spans the sessions. What a call would send is added up, and refused over the limit."""
    long_runs = tmp_path / "long.yaml"
    long_runs.write_text("musicslots:\n  train: {steps: 100000, cosine_steps: 100000, eval_every: 3, log_every: 1,"
                         " checkpoint_every: 1000}\n")
    params = [REPO / "params.yaml", REPO / "config/tiny.yaml", tiny_override, long_runs]
    variant = VARIANTS[0]
    run = ["--device", "cpu", "--bench-seconds", 0, "--budget", 600, "--train-seconds", 3, "--keep-last"]
    script("prepare", "--stage", tmp_path / "stage", "--params", *params, "--variants", variant, cwd=tiny_run)
    script("run", "--stage", tmp_path / "stage", "--out", tmp_path / "out1", "--work", tmp_path / "m1", *run,
           cwd=tmp_path)
    repo = tmp_path / "repo"  # a checkout that keeps the first part in git
    kept = repo / "checkpoints/musicslots"
    script("unpack", "--from", tmp_path / "out1", "--to", kept, cwd=tmp_path)
    first_step = json.loads((kept / variant / "progress.json").read_text())["step"]
    first_best = read_best(kept / variant / "ckpt/best.pt")
    (repo / ".gitignore").write_text("/results\n/.gpu*/\n")
    (repo / "results").symlink_to(tiny_run / "results")
    for git in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "kept"]):
        subprocess.run(["git", *git], cwd=repo, check=True, capture_output=True)

    log = script("prepare", "--stage", ".gpu", "--params", *params, "--variants", variant, "--runs", kept, cwd=repo)
    assert json.loads((repo / ".gpu/runs.json").read_text()) == {variant: f"checkpoints/musicslots/{variant}"}
    assert not (repo / ".gpu/runs").exists()  # not copied: it travels with the repository anyway
    assert f"{variant} continues at step {first_step} from checkpoints/musicslots/{variant} (tracked by git" in log
    sent = sum(f.stat().st_size for f in [*kept.rglob("*"), *(repo / ".gpu").rglob("*")] if f.is_file())
    assert gpu.travel_size(repo, repo / ".gpu")[0] >= sent
    assert "a device call from" in log and "MiB (limit 64 MiB)" in log
    refused = call("prepare", "--stage", ".gpu", "--params", *params, "--variants", variant, "--runs", kept,
                   "--max-travel-mib", 0.2, cwd=repo)
    assert refused.returncode == 1 and "over 0.2 MiB; the largest files:" in refused.stderr
    assert f"checkpoints/musicslots/{variant}/ckpt/" in refused.stderr

    wrong = call("run", "--stage", repo / ".gpu", "--out", tmp_path / "out2", "--work", tmp_path / "m2", *run,
                 cwd=tmp_path)  # not from the repository root: the kept run is not there
    assert wrong.returncode == 1 and "run this from the repository root" in wrong.stderr
    assert not (tmp_path / "m2").exists()
    log = script("run", "--stage", ".gpu", "--out", tmp_path / "out2", "--work", tmp_path / "m2", *run, cwd=repo)
    assert (f"{variant}: continuing from the kept checkpoint at step {first_step} (checkpoints/musicslots/{variant})"
            in log)
    train_log = (tmp_path / f"m2/runs/{variant}/train.log").read_text()
    assert "resumes from a compact checkpoint" in train_log and "model selection starts again" not in train_log
    progress = json.loads((tmp_path / "out2/summary.json").read_text())["runs"][variant]["progress"]
    assert progress["step"] > first_step and progress["best_val_score"] >= first_best[0]
    if progress["best_step"] <= first_step:  # nothing later beat it: still the first part's best
        assert (progress["best_step"], progress["best_val_score"]) == (first_best[1], first_best[0])


def _part(folder, step, best_step, score, *, last=True):
    """A run folder as brought back: progress, best checkpoint, its test evaluation (and ckpt/last.pt)."""
    (folder / "ckpt").mkdir(parents=True)
    (folder / "progress.json").write_text(json.dumps({"step": step, "steps": 100, "best_step": best_step,
                                                      "best_val_score": score}))
    torch.save({"model": {}, "config": {}, "step": best_step, "val": {"score": score}}, folder / "ckpt/best.pt")
    (folder / "test.json").write_text(json.dumps({"best_step": best_step}))
    (folder / "test_examples.png").write_bytes(f"figure of step {best_step}".encode())
    if last:
        torch.save({"step": step}, folder / "ckpt/last.pt")
    return folder


def test_unpack_keeps_the_better_best_checkpoint_across_parts(tmp_path):
    dst = _part(tmp_path / "runs/none", step=40, best_step=30, score=0.9)
    gpu.place_run(_part(tmp_path / "in1/none", step=80, best_step=60, score=0.8), dst)  # continued, worse
    assert read_best(dst / "ckpt/best.pt") == (0.9, 30)
    assert json.loads((dst / "test.json").read_text())["best_step"] == 30
    assert (dst / "test_examples.png").read_text() == "figure of step 30"
    progress = json.loads((dst / "progress.json").read_text())
    assert (progress["step"], progress["best_step"], progress["best_val_score"]) == (80, 30, 0.9)
    assert torch.load(dst / "ckpt/last.pt", weights_only=True)["step"] == 80

    gpu.place_run(_part(tmp_path / "in2/none", step=100, best_step=95, score=0.95), dst)  # better: it replaces
    assert read_best(dst / "ckpt/best.pt") == (0.95, 95)
    assert json.loads((dst / "test.json").read_text())["best_step"] == 95

    gpu.place_run(_part(tmp_path / "in3/none", step=50, best_step=50, score=0.99), dst)  # an older part
    assert json.loads((dst / "progress.json").read_text())["step"] == 100
    assert (tmp_path / "in3/none").exists()  # left where it was

    finished = _part(tmp_path / "in4/none", step=120, best_step=110, score=0.9, last=False)  # finished, worse
    (finished / "ckpt/best.pt").rename(finished / "best.pt")  # packed with its best model once, as best.pt
    gpu.place_run(finished, dst)
    assert read_best(dst / "best.pt") == (0.95, 95) and not (dst / "ckpt/best.pt").exists()
    assert json.loads((dst / "test.json").read_text())["best_step"] == 95


def test_a_run_stopped_before_it_logged_can_be_continued_elsewhere(tmp_path):
    early = tmp_path / "early"  # stopped at step 3, before its first log line and validation
    (early / "ckpt").mkdir(parents=True)
    (early / "progress.json").write_text(json.dumps({"step": 3}))
    torch.save({"step": 3}, early / "ckpt/last.pt")
    gpu.copy_run(early, tmp_path / "there", best=True)
    assert gpu.step_of(tmp_path / "there") == 3 and not (tmp_path / "there/ckpt/best.pt").exists()


def test_files_pack_and_unpack_byte_for_byte(tmp_path):
    for data in (b"", b"abcdefg", torch.randn(4099).numpy().tobytes() + b"xy"):
        (tmp_path / "f").write_bytes(data)
        gpu.pack_file(tmp_path / "f", tmp_path / "f.z")
        gpu.unpack_file(tmp_path / "f.z", tmp_path / "g")
        assert (tmp_path / "g").read_bytes() == data
    smooth = torch.sin(torch.arange(200_000) / 50).numpy().tobytes()  # audio-like float32
    (tmp_path / "f").write_bytes(smooth)
    gpu.pack_file(tmp_path / "f", tmp_path / "f.z")
    assert (tmp_path / "f.z").stat().st_size < 0.8 * len(smooth)


def test_speed_options_follow_the_benchmark():
    assert gpu.SPEED_OPTIONS == SPEED_OPTIONS  # the script runs without importing musicdecomp
    bench = {"best_speed": [
        {"mask": "none", "time_stride": 1, "speedup": 1.25, "speed": {"channels_last": True, "cudnn_benchmark": True}},
        {"mask": "softmax", "time_stride": 1, "speedup": 1.01, "speed": {"channels_last": True,
                                                                         "cudnn_benchmark": False}}]}
    assert gpu.speed_options(["auto"], bench, "none", 1) == ["channels_last", "cudnn_benchmark"]
    assert gpu.speed_options(["auto"], bench, "softmax", 1) == []  # not worth it: within noise of the defaults
    assert gpu.speed_options(["auto"], bench, "none", 2) == []  # not measured
    assert gpu.speed_options(["auto"], {}, "none", 1) == []  # no benchmark
    assert gpu.speed_options(["none"], bench, "none", 1) == []
    assert gpu.speed_options(["cudnn_benchmark"], bench, "softmax", 1) == ["cudnn_benchmark"]


def test_a_recorded_benchmark_of_the_same_gpu_replaces_measuring(tmp_path):
    h100 = "NVIDIA H100 80GB HBM3"
    record = gpu.recorded_benchmark(REPO / "benchmarks", h100, {("none", 1)})  # the one in the repository
    assert record["file"] == "musicslots_throughput_speed_nvidia_h100_80gb_hbm3.json"
    assert record["device"] == h100 and gpu.speed_options(["auto"], record, "none", 1)
    assert gpu.recorded_benchmark(REPO / "benchmarks", h100, {("none", 1), ("softmax", 1)}) == {}  # not covered
    assert gpu.recorded_benchmark(REPO / "benchmarks", "NVIDIA A100-SXM4-40GB", {("none", 1)}) == {}
    (tmp_path / "musicslots_throughput_speed_nvidia_a100_sxm4_40gb.json").write_text(json.dumps({"best_speed": [
        {"mask": "softmax", "time_stride": 2, "speedup": 1.2, "speed": {"channels_last": True}}]}))
    assert gpu.recorded_benchmark(tmp_path, "NVIDIA A100-SXM4-40GB", {("softmax", 2)})["best_speed"]


def _run_stage(stage, tmp_path) -> subprocess.CompletedProcess:
    """``run`` on a stage, with a work folder that must stay absent when the stage is refused."""
    return call("run", "--stage", stage, "--out", tmp_path / "out", "--work", tmp_path / "work", "--budget", 60,
                "--device", "cpu", cwd=tmp_path)


def test_a_stage_without_the_step_configs_is_refused_before_any_work(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "configs.json").write_text(json.dumps({"features": {}, "none-t2-imp_true-k3": {}}))  # an older stage
    proc = _run_stage(stage, tmp_path)
    assert proc.returncode != 0
    assert "configs.json has no config for eval-musicslots" in proc.stderr and "again with `prepare`" in proc.stderr
    assert not (tmp_path / "work").exists()  # no dataset rebuilt, nothing trained


def test_a_stage_of_another_version_is_refused_before_any_work(tiny_params, tmp_path):
    """Every staged slice is checked as the steps will check it, before the dataset is rebuilt on the device."""
    from musicdecomp.pipeline import step_config

    variant = "none-t2-imp_true-k3"
    run = step_config(tiny_params, "train_musicslots", "jsb_multi", variant, 0)
    del run["train"]["checkpoint_minutes"]  # as if staged before that key existed (the slice is a copy)
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "configs.json").write_text(json.dumps({
        "features": step_config(tiny_params, "features", "jsb_multi"),
        "eval-musicslots": step_config(tiny_params, "eval_musicslots"), "probe": step_config(tiny_params, "probe"),
        variant: run}))
    proc = _run_stage(stage, tmp_path)
    assert proc.returncode != 0
    assert "parameter musicslots.train.checkpoint_minutes is missing" in proc.stderr, proc.stderr[-2000:]
    assert "stage it again with `prepare`" in proc.stderr
    assert not (tmp_path / "work").exists()


def test_a_run_finished_in_the_work_folder_is_not_trained_again(tiny_run, tiny_override, tiny_params, tmp_path):
    stage, work = tmp_path / "stage", tmp_path / "machine"
    script("prepare", "--stage", stage, "--params", REPO / "params.yaml", REPO / "config/tiny.yaml", tiny_override,
           "--variants", VARIANTS[0], cwd=tiny_run)
    run = ["run", "--stage", stage, "--work", work, "--budget", 600, "--device", "cpu", "--bench-seconds", 0]
    assert f"{VARIANTS[0]}: probing the finished run" in script(*run, "--out", tmp_path / "out1", cwd=tmp_path)
    first = json.loads((tmp_path / "out1/summary.json").read_text())["runs"][VARIANTS[0]]
    assert first["exit"] == 0 and first["train"]["steps"] == first["progress"]["steps"]  # the tiny run finished
    assert first["probe"]["name"] == VARIANTS[0] and set(first["probe"]["test"]) >= {"pitch", "instrument", "chord"}
    with tarfile.open(tmp_path / "out1" / f"{VARIANTS[0]}.tar") as tar:  # its best model once, and the probe
        names = set(tar.getnames())
    assert {f"{VARIANTS[0]}/best.pt", f"{VARIANTS[0]}/probe.json"} <= names
    assert f"{VARIANTS[0]}/ckpt/best.pt" not in names and f"{VARIANTS[0]}/ckpt/last.pt" not in names
    log = script(*run, "--out", tmp_path / "out2", cwd=tmp_path)  # a second call on the same machine
    assert f"{VARIANTS[0]}: finished at step {first['train']['steps']}; not trained again" in log
    second = json.loads((tmp_path / "out2/summary.json").read_text())["runs"][VARIANTS[0]]
    assert second["train"] == first["train"] and second["test"]["test"] == first["test"]["test"]
    assert second["probe"] == first["probe"] and "probing" not in log  # probed once
    assert not (work / "runs" / VARIANTS[0] / "stale").exists()  # nothing was set aside and retrained
    # brought back and kept, a finished run is not staged again (it would train from step 0 elsewhere)
    kept = tmp_path / "kept" / VARIANTS[0]
    assert f"release-run --from {kept}" in script("unpack", "--from", tmp_path / "out2", "--to", kept.parent,
                                                 cwd=tmp_path)
    refused = call("prepare", "--stage", stage, "--params", REPO / "params.yaml", REPO / "config/tiny.yaml",
                   tiny_override, "--variants", VARIANTS[0], "--runs", kept.parent, cwd=tiny_run)
    assert refused.returncode == 1 and f"Leave {VARIANTS[0]} out of --variants" in refused.stderr
    # instead, it is adopted as the pipeline's run (tests/test_adopt.py): with its probe, nothing trained again
    root = pipeline_root(tmp_path, tiny_run)
    assert stage_adoption(kept, tiny_params, step_config, root=root)["probe"]
    dst, data = root / run_dir("jsb_multi", VARIANTS[0], 0), root / "results/data/jsb_multi"
    cfg = step_config(tiny_params, "train_musicslots", "jsb_multi", VARIANTS[0], 0)
    assert train_musicslots(cfg, data, dst, device="cpu", code=code_id("train_musicslots"))["adopted"]["code_differs"] == []
    probed = probe_run(step_config(tiny_params, "probe"), dst, data, dst / "probe.json", device="cpu")
    assert probed["test"] == first["probe"]["test"] and not (dst / "ckpt/last.pt").exists()


KEPT = sorted((REPO / "checkpoints").glob("*/*/config.json"))  # musicslots/<variant>, baselines/<name>


@pytest.mark.parametrize("config", KEPT or [None], ids=[p.parent.name for p in KEPT] or ["none kept"])
def test_runs_kept_in_git_continue_with_params_yaml(config):
    """A run kept in checkpoints/ between GPU sessions must still be continued by what params.yaml gives: a parameter
    change that would make the GPU machine start it over fails here, not after a session's device time is spent."""
    if config is None:
        pytest.skip("no run is kept in checkpoints/")
    trained = json.loads(config.read_text())
    name = trained.get("variant") or trained["baseline"]
    assert config.parent.name == name
    resolved = step_config(load_params([REPO / "params.yaml"]), gpu.train_step(name).replace("-", "_"),
                           trained["dataset"], name, trained["seed"])
    # exits naming the differing keys; passes a finished run (best.pt only, no ckpt/last.pt: not continued)
    gpu.check_continued(config.parent, resolved, ["params.yaml"])


def test_training_record_names_the_precision_and_draws_a_baseline(tmp_path):
    """benchmarks/training_record.py: each run's training precision and attention come from its config.json; an
    earlier record passed as --baseline is drawn beside it and named in the record (older records: bf16)."""
    run = tmp_path / "runs/none-t2-imp_true-k7"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train": {"amp": "fp16"}, "model": {"attention": "official"}}))
    (run / "progress.json").write_text(json.dumps({
        "run_name": "jsb_multi/none-t2-imp_true-k7/seed0", "step": 2000, "steps": 100000, "steps_per_second": 75.0,
        "wall_seconds": 30.0, "device": "NVIDIA H200", "speed": {"channels_last": True}}))
    (run / "test.json").write_text(json.dumps({"best_step": 2000, "test": {"note_mse": 200.0, "miou": 0.3}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "val/miou": 0.1 * s / 1000,
                                                           "val/note_mse": 300.0 - s / 10}) + "\n"
                                               for s in (1000, 2000)))
    earlier = REPO / "benchmarks/musicslots_training_t2_official_nvidia_h200.json"
    out = subprocess.run([sys.executable, str(REPO / "benchmarks/training_record.py"), str(run), "--out",
                          str(tmp_path), "--prefix", "rec", "--baseline", str(earlier)],
                         capture_output=True, text=True, env=tool_env())
    assert out.returncode == 0, out.stderr
    record = json.loads((tmp_path / "rec_nvidia_h200.json").read_text())
    (rec,) = record["runs"]
    assert (rec["amp"], rec["attention"], rec["steps"]) == ("fp16", "official", 2000)
    assert rec["validation"] == [{"step": 1000, "miou": 0.1, "note_mse": 200.0},
                                 {"step": 2000, "miou": 0.2, "note_mse": 100.0}]
    assert record["baseline"] == [str(earlier)] and "amp" not in json.loads(earlier.read_text())["runs"][0]
    assert (tmp_path / "rec_nvidia_h200.png").stat().st_size > 10_000


def test_baselines_are_trained_and_probed_like_the_musicslots_runs(tiny_run, tiny_override, tmp_path):
    """Table 2's baselines go through the driver too: staged with their train-baseline config, trained by that step
    in the device-like environment, not benchmarked (only MusicSlots models are), and probed once finished, the
    accuracies coming back in summary.json and in each run's tar, which unpacks like a MusicSlots run."""
    stage, names = tmp_path / "stage", ["vae-kl0.0", "cnn"]
    script("prepare", "--stage", stage, "--params", REPO / "params.yaml", REPO / "config/tiny.yaml", tiny_override,
           "--variants", *names, cwd=tiny_run)
    configs = json.loads((stage / "configs.json").read_text())
    assert (configs["vae-kl0.0"]["kind"], configs["vae-kl0.0"]["kld_weight"], configs["cnn"]["kind"]) == ("vae", 0.0,
                                                                                                         "cnn")
    log = script("run", "--stage", stage, "--work", tmp_path / "m", "--out", tmp_path / "out", "--budget", 600,
                 "--device", "cpu", "--bench-seconds", 600, cwd=tmp_path)
    assert "throughput benchmark" not in log and not list((tmp_path / "out").glob("musicslots_throughput*"))
    assert "vae-kl0.0: probing the finished run (pitch and instrument from its latent)" in log
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    for name in names:
        entry = summary["runs"][name]
        assert entry["exit"] == 0 and entry["train"]["steps"] == configs[name]["train"]["steps"]
        assert entry["probe"]["name"] == name and entry["probe"]["model"] == configs[name]["kind"]
        assert all(0 <= entry["probe"]["test"][k] <= 1 for k in ("pitch", "instrument", "chord"))
        assert "test" not in entry  # no note discovery evaluation: the probe is a baseline's test
        assert f"{name}: step {entry['train']['steps']} of" in log and "best val score" in log
    script("unpack", "--from", tmp_path / "out", "--to", tmp_path / "kept", cwd=tmp_path)
    for name in names:
        kept = tmp_path / "kept" / name
        assert (kept / "best.pt").exists() and not (kept / "ckpt/best.pt").exists()
        assert json.loads((kept / "probe.json").read_text()) == summary["runs"][name]["probe"]
    # what outlives the session: the record of their accuracies and their Table 2 rows
    out = subprocess.run([sys.executable, str(REPO / "benchmarks/baseline_record.py"),
                          *(tmp_path / "kept" / n for n in names), "--prefix", "gpu_baselines", "--out", tmp_path],
                         capture_output=True, text=True, env=tool_env())
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads((tmp_path / "gpu_baselines_cpu.json").read_text())
    assert sorted(row["model"] for row in record["table2_rows"]) == ["cnn", "vae"]
    assert [r["run_name"] for r in record["runs"]] == [configs[n]["run_name"] for n in names]
