"""MusicSlots training: resuming (in process and after a real kill), MLflow logging, evaluation, tables."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tool_env

from musicdecomp.errors import UserError
from musicdecomp.eval.musicslots import evaluate_run
from musicdecomp.eval.tables import table1
from musicdecomp.pipeline import code_id, code_version
from musicdecomp.sweep import musicslots_runs, train_config, variant_model, variant_name
from musicdecomp.train.checkpoints import COMPACT, compact_checkpoint
from musicdecomp.train.loop import Update
from musicdecomp.train.musicslots import train_musicslots
from musicdecomp.train.schedule import learning_rate


def tiny_cfg(tiny_params, variant="softmax-t2-imp_false-k5", seed=0, **train):
    cfg = train_config(tiny_params, "jsb_multi", variant, seed)
    cfg["train"] = {**cfg["train"], "steps": 6, "eval_every": 2, "checkpoint_every": 2, **train}
    return cfg


def test_variant_names_resolve_to_models(tiny_params):
    base = tiny_params["musicslots"]["model"]
    m = variant_model(base, "softmax-t2-imp_false-k5")
    assert (m["mask"], m["time_stride"], m["implicit"], m["num_slots"]) == ("softmax", 2, False, 5)
    assert m["dim"] == base["dim"] and variant_name(m) == "softmax-t2-imp_false-k5"
    with pytest.raises(UserError, match="is not <softmax|sigmoid|none>"):
        variant_model(base, "linear-t1-k7")


def test_the_paper_sweep(params):
    runs = musicslots_runs(params)
    assert len(runs) == 80 and len(set(runs)) == 80
    grid = {v for d, v, s in runs if d == "jsb_multi" and v.endswith("-k7")}
    assert len(grid) == 12
    assert {v for d, v, s in runs if d == "jsb_single"} == {"none-t1-imp_true-k7"}
    assert {s for _, _, s in runs} == {0, 12, 22, 32, 42}


def test_schedule():
    assert learning_rate(0, 3e-4, 10000, 500000) == pytest.approx(3e-8, rel=1e-3)
    assert learning_rate(9999, 3e-4, 10000, 500000) == pytest.approx(3e-4, rel=1e-3)
    assert learning_rate(99999, 3e-4, 10000, 500000) == pytest.approx(0.905 * 3e-4, rel=1e-2)  # official


def test_resume_continues_bit_identically(tiny_run, tiny_params, tmp_path, caplog):
    data = tiny_run / "results/data/jsb_multi"
    cfg = tiny_cfg(tiny_params)
    full = train_musicslots(cfg, data, tmp_path / "a", device="cpu", threads=1)
    stopped = train_musicslots(cfg, data, tmp_path / "b", device="cpu", threads=1, stop_after=4)
    assert stopped == {"stopped_at": 4} and not (tmp_path / "b/best.pt").exists()
    resumed = train_musicslots(cfg, data, tmp_path / "b", device="cpu", threads=1)
    assert resumed["steps"] == full["steps"] == 6 and resumed["best_step"] == full["best_step"]
    a = torch.load(tmp_path / "a/ckpt/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b/ckpt/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a/metrics.jsonl").read_text() == (tmp_path / "b/metrics.jsonl").read_text()
    best = torch.load(tmp_path / "b/best.pt", weights_only=True)
    assert best["config"] == cfg and best["step"] == full["best_step"]
    for f in ("train.json", "config.json", "curves.png"):
        assert (tmp_path / "b" / f).stat().st_size > 0
    # a finished run called again (a workflow reruns it only when its parameters, data or code changed, or when
    # asked to) trains again from step 0 instead of republishing the old weights; the old state is set aside
    again = train_musicslots(cfg, data, tmp_path / "a", device="cpu", threads=1)
    assert again["steps"] == 6 and again["mlflow_run_id"] is None
    (stale,) = (tmp_path / "a/stale").iterdir()
    assert {p.name for p in stale.iterdir()} >= {"ckpt", "best.pt", "train.json", "metrics.jsonl", "config.json"}
    assert (stale / "metrics.jsonl").read_text() == (tmp_path / "a/metrics.jsonl").read_text()  # CPU: same run
    old, new = (torch.load(d / "ckpt/last.pt", weights_only=True)["model"] for d in (stale, tmp_path / "a"))
    assert all(torch.equal(old[k], new[k]) for k in new)
    # a checkpoint made with other settings is not mixed in either: it is set aside and the run starts over
    longer = train_musicslots(tiny_cfg(tiny_params, steps=8), data, tmp_path / "b", device="cpu", threads=1)
    assert longer["steps"] == 8
    (stale,) = (tmp_path / "b/stale").iterdir()
    assert json.loads((stale / "config.json").read_text())["train"]["steps"] == 6
    assert [json.loads(line)["step"] for line in (tmp_path / "b/metrics.jsonl").read_text().splitlines()][0] < 4
    # nor an interrupted run's checkpoint made on other data (the dataset's source_id)
    assert train_musicslots(cfg, data, tmp_path / "c", device="cpu", threads=1, stop_after=4) == {"stopped_at": 4}
    last = torch.load(tmp_path / "c/ckpt/last.pt", weights_only=True)
    assert last["data_id"] == json.loads((data / "summary.json").read_text())["source_id"]
    torch.save({**last, "data_id": "0123456789abcdef"}, tmp_path / "c/ckpt/last.pt")  # as if the data changed
    rerun = train_musicslots(cfg, data, tmp_path / "c", device="cpu", threads=1)
    assert rerun["steps"] == 6 and len(list((tmp_path / "c/stale").iterdir())) == 1
    assert (tmp_path / "c/metrics.jsonl").read_text() == (tmp_path / "a/metrics.jsonl").read_text()  # from step 0
    # an interrupted run whose code changed meanwhile is resumed (a requeued job keeps its hours), but on record
    assert json.loads((tmp_path / "a/train.json").read_text())["code_changes"] == []
    code = code_id("train_musicslots")
    assert code["version"] == str(code_version("train_musicslots")) and "models/decoder.py" in code
    assert train_musicslots(cfg, data, tmp_path / "d", device="cpu", threads=1, stop_after=4,
                            code=code) == {"stopped_at": 4}
    last = torch.load(tmp_path / "d/ckpt/last.pt", weights_only=True)
    assert last["code"] == code
    torch.save({**last, "code": {**last["code"], "models/decoder.py": "0" * 16}}, tmp_path / "d/ckpt/last.pt")
    with caplog.at_level(logging.WARNING, logger="musicdecomp"):
        resumed = train_musicslots(cfg, data, tmp_path / "d", device="cpu", threads=1, code=code)
    assert resumed["code_changes"] == [{"step": 4, "files": ["models/decoder.py"]}]
    assert "continues at step 4 with changed code (models/decoder.py)" in caplog.text
    assert not (tmp_path / "d/stale").exists()
    assert (tmp_path / "d/metrics.jsonl").read_text() == (tmp_path / "a/metrics.jsonl").read_text()  # resumed
    assert torch.load(tmp_path / "d/ckpt/last.pt", weights_only=True)["code_changes"] == resumed["code_changes"]


def test_a_compact_checkpoint_continues_the_run_on_record(tiny_run, tiny_params, tmp_path, caplog):
    """A run carried between machines as a compact copy of ckpt/last.pt (Adam's moments in bfloat16) continues
    almost as the uninterrupted run, and says so; a best checkpoint that came along keeps being the one to beat."""
    data = tiny_run / "results/data/jsb_multi"
    cfg = tiny_cfg(tiny_params)
    full = train_musicslots(cfg, data, tmp_path / "a", device="cpu", threads=1)
    assert full["compact_resumes"] == []
    assert train_musicslots(cfg, data, tmp_path / "b", device="cpu", threads=1, stop_after=4) == {"stopped_at": 4}
    last = tmp_path / "b/ckpt/last.pt"
    sizes = compact_checkpoint(last, last)
    assert sizes["bytes_after"] < sizes["bytes_before"]
    state = torch.load(last, weights_only=True)
    moments = [v for slot in state["optimizer"]["state"].values() for k, v in slot.items() if k != "step"]
    assert moments and {v.dtype for v in moments} == {torch.bfloat16} and state["compact"] == COMPACT
    assert state["model"]["decoder.pos.proj.weight"].dtype == torch.float32  # the weights are kept exact
    with caplog.at_level(logging.INFO, logger="musicdecomp"):
        resumed = train_musicslots(cfg, data, tmp_path / "b", device="cpu", threads=1)
    assert "resumes from a compact checkpoint" in caplog.text
    assert resumed["steps"] == 6 and resumed["compact_resumes"] == [4]
    a, b = (torch.load(d / "ckpt/last.pt", weights_only=True) for d in (tmp_path / "a", tmp_path / "b"))
    assert "compact" not in b and all(v.dtype == torch.float32 for slot in b["optimizer"]["state"].values()
                                      for k, v in slot.items() if k != "step")
    assert all(torch.allclose(a["model"][k], b["model"][k], rtol=1e-3, atol=1e-6) for k in a["model"])
    pairs = [(a["optimizer"]["state"][i]["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
             for i in a["optimizer"]["state"]]
    assert not all(torch.equal(x, y) for x, y in pairs)  # the rounding did reach the run's state
    assert all(torch.allclose(x, y, rtol=1e-2, atol=1e-12) for x, y in pairs)

    # a resumed run selects against the ckpt/best.pt beside its last checkpoint (e.g. carried along with it)
    assert train_musicslots(cfg, data, tmp_path / "c", device="cpu", threads=1, stop_after=2) == {"stopped_at": 2}
    best = torch.load(tmp_path / "c/ckpt/best.pt", weights_only=True)
    torch.save({**best, "val": {**best["val"], "score": 2.0}}, tmp_path / "c/ckpt/best.pt")  # unbeatable (mIoU <= 1)
    done = train_musicslots(cfg, data, tmp_path / "c", device="cpu", threads=1)
    assert (done["best_step"], done["best_val_score"]) == (2, 2.0)
    assert torch.load(tmp_path / "c/best.pt", weights_only=True)["val"]["score"] == 2.0


def test_killed_training_resumes_from_its_checkpoint(tiny_run, tiny_params, tmp_path):
    cfg = tiny_cfg(tiny_params, "none-t2-imp_true-k3", steps=400, eval_every=200, checkpoint_every=10,
                   log_every=10)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "musicdecomp", "train-musicslots", "--config", json.dumps(cfg),
           "--dataset", "jsb_multi", "--variant", cfg["variant"], "--seed", "0",
           "--data-dir", str(tiny_run / "results/data/jsb_multi"), "--run-dir", str(run_dir), "--device", "cpu",
           "--threads", "1"]
    proc = subprocess.Popen(cmd, env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "ckpt/last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 10 <= killed_at < 400, "the run should have been killed mid-way"
    assert not (run_dir / "train.json").exists()
    done = subprocess.run(cmd + ["--log", str(tmp_path / "resume.log")], env=tool_env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed jsb_multi/none-t2-imp_true-k3/seed0 from step {killed_at}" in (tmp_path / "resume.log").read_text()
    assert json.loads((run_dir / "train.json").read_text())["steps"] == 400


def test_time_limit_stops_at_a_checkpoint_and_the_run_continues(tiny_run, tiny_params, tmp_path):
    """--time-limit ends the call cleanly (status 75, no best.pt, progress.json); the unfinished run's
    ckpt/best.pt can be evaluated; rerunning finishes with the weights of an uninterrupted run."""
    data = tiny_run / "results/data/jsb_multi"
    cfg = tiny_cfg(tiny_params, "none-t2-imp_true-k3", eval_every=1)
    full = train_musicslots(cfg, data, tmp_path / "full", device="cpu", threads=1)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "musicdecomp", "train-musicslots", "--config", json.dumps(cfg),
           "--dataset", "jsb_multi", "--variant", cfg["variant"], "--seed", "0", "--data-dir", str(data),
           "--run-dir", str(run_dir), "--device", "cpu", "--threads", "1"]
    stopped = subprocess.run(cmd + ["--time-limit", "1e-6"], env=tool_env(), capture_output=True, text=True)
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert "stopped at the time limit at step 1; rerun the same command" in stopped.stderr
    assert not (run_dir / "best.pt").exists() and not (run_dir / "train.json").exists()
    progress = json.loads((run_dir / "progress.json").read_text())
    assert (progress["step"], progress["steps"], progress["best_step"], progress["device"]) == (1, 6, 1, "cpu")
    assert progress["steps_per_second"] > 0
    spent = progress["seconds_this_call"]  # written by the first checkpoint, after one validation
    assert spent["validation"] > 0 and spent["checkpoints"] == 0 and spent["all"] >= spent["validation"]

    evaluate = [sys.executable, "-m", "musicdecomp", "eval-musicslots", "--run-dir", str(run_dir), "--data-dir",
                str(data), "--out", str(tmp_path / "test.json"), "--device", "cpu"]
    refused = subprocess.run(evaluate, env=tool_env(), capture_output=True, text=True)
    assert refused.returncode == 2 and "best.pt does not exist" in refused.stderr and "--checkpoint" in refused.stderr
    ev = subprocess.run(evaluate + ["--checkpoint", str(run_dir / "ckpt/best.pt")], env=tool_env(),
                        capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr[-2000:]
    result = json.loads((tmp_path / "test.json").read_text())
    assert result["best_step"] == 1 and result["checkpoint"].endswith("ckpt/best.pt") and result["test"]["examples"]
    last = subprocess.run(evaluate + ["--checkpoint", str(run_dir / "ckpt/last.pt")], env=tool_env(),
                          capture_output=True, text=True)
    assert last.returncode == 2 and "use ckpt/best.pt" in last.stderr

    done = subprocess.run(cmd, env=tool_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["steps"] == 6
    spent = summary["seconds_this_call"]  # validations at steps 2 to 6, checkpoints at least at the last one
    assert spent["validation"] > 0 and spent["checkpoints"] > 0
    assert spent["all"] >= spent["validation"] + spent["checkpoints"]
    assert json.loads((run_dir / "progress.json").read_text())["step"] == 6
    a = torch.load(tmp_path / "full/ckpt/last.pt", weights_only=True)["model"]
    b = torch.load(run_dir / "ckpt/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run_dir / "train.json").read_text())["best_step"] == full["best_step"]


def test_channels_last_trains_the_same_model_and_can_switch_between_calls(tiny_run, tiny_params, tmp_path):
    """The speed options change the memory layout, not the training: same losses up to rounding, checkpoints
    that load into a default model, and a run that switches layout when resumed."""
    data = tiny_run / "results/data/jsb_multi"
    cfg = tiny_cfg(tiny_params, "softmax-t1-imp_true-k3", log_every=1)
    train_musicslots(cfg, data, tmp_path / "nchw", device="cpu", threads=1)
    fast = {"channels_last": True, "cudnn_benchmark": True, "compile": False}  # cuDNN's option is ignored on CPU
    stopped = train_musicslots(cfg, data, tmp_path / "nhwc", device="cpu", threads=1, stop_after=2, speed=fast)
    assert stopped == {"stopped_at": 2}
    assert json.loads((tmp_path / "nhwc/progress.json").read_text())["speed"] == fast
    weight = torch.load(tmp_path / "nhwc/ckpt/last.pt", weights_only=True)["model"]["encoder.convs.1.weight"]
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    summary = train_musicslots(cfg, data, tmp_path / "nhwc", device="cpu", threads=1)  # resumed in NCHW, eager
    assert summary["speed"] == {"channels_last": False, "cudnn_benchmark": False, "compile": False}

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r["train/loss"] for r in rows if "train/loss" in r]

    assert len(losses("nhwc")) == len(losses("nchw")) == 6
    assert losses("nhwc") == pytest.approx(losses("nchw"), rel=1e-3)
    a = torch.load(tmp_path / "nchw/best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "nhwc/best.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)
    with pytest.raises(UserError, match="unknown speed options"):
        train_musicslots(cfg, data, tmp_path / "other", device="cpu", speed={"fused": True})


def test_the_compile_option_compiles_the_model_the_loop_trains(tiny_run, tiny_params, tmp_path, monkeypatch):
    """speed compile hands the model to compile_model (whose equivalence tests/test_compile.py checks) before the
    first step, and the run records the option."""
    from musicdecomp.train import loop

    compiled = []
    monkeypatch.setattr(loop, "compile_model", lambda model: compiled.append(type(model).__name__))
    cfg = tiny_cfg(tiny_params, "none-t1-imp_true-k3")
    summary = train_musicslots(cfg, tiny_run / "results/data/jsb_multi", tmp_path / "r", device="cpu", threads=1,
                               speed={"compile": True})
    assert compiled == ["MusicSlots"] and summary["speed"]["compile"] is True


def test_fp16_loss_scaling_trains_the_float32_model_on_cpu_and_is_resumed(tiny_run, tiny_params, tmp_path):
    """amp: fp16 scales the loss (GradScaler). On CPU the forward pass stays float32, where scaling by a power of
    two and unscaling before the clip change nothing: the same weights as amp: none. The scale is logged and
    checkpointed, and a run resumed from its checkpoint ends as the uninterrupted one."""
    data = tiny_run / "results/data/jsb_multi"
    plain = train_musicslots(tiny_cfg(tiny_params, amp="none", log_every=1), data, tmp_path / "none", device="cpu",
                             threads=1)
    cfg = tiny_cfg(tiny_params, amp="fp16", log_every=1)
    scaled = train_musicslots(cfg, data, tmp_path / "fp16", device="cpu", threads=1)
    assert scaled["best_step"] == plain["best_step"]
    a = torch.load(tmp_path / "none/ckpt/last.pt", weights_only=True)
    b = torch.load(tmp_path / "fp16/ckpt/last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["scaler"] == {} and b["scaler"]["scale"] == 2.0 ** 16 and b["scaler"]["_growth_tracker"] == 6
    rows = [json.loads(line) for line in (tmp_path / "fp16/metrics.jsonl").read_text().splitlines()]
    assert [r["train/loss_scale"] for r in rows if "train/loss" in r] == [2.0 ** 16] * 6
    assert train_musicslots(cfg, data, tmp_path / "resumed", device="cpu", threads=1, stop_after=4) == {
        "stopped_at": 4}
    assert torch.load(tmp_path / "resumed/ckpt/last.pt", weights_only=True)["scaler"]["_growth_tracker"] == 4
    train_musicslots(cfg, data, tmp_path / "resumed", device="cpu", threads=1)
    c = torch.load(tmp_path / "resumed/ckpt/last.pt", weights_only=True)
    assert c["scaler"] == b["scaler"] and all(torch.equal(c["model"][k], b["model"][k]) for k in b["model"])


def test_fp16_update_skips_overflowed_steps_and_stops_when_the_scale_collapses():
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    update = Update(model, opt, torch.device("cpu"), "fp16", 1.0)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.ones(2, 3)
    assert not torch.isfinite(update(model(x).sum() * 1e36))  # x 65536 overflows float32: the step is skipped
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert update.log_values("run") == {"train/loss_scale": 2.0 ** 15}  # and the scale halved
    assert float(update(model(x).sum())) == 4.0  # the norm of the unscaled gradients ((2, 2, 2), 2)
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    update.scaler.update(2.0 ** -15)
    with pytest.raises(UserError, match="loss scale fell to .*train with amp: bf16"):
        update.log_values("run")
    assert Update(model, opt, torch.device("cpu"), "bf16", 1.0).log_values("run") == {}


def test_mlflow_run_is_logged_and_continued(tiny_run, tiny_params, tmp_path, monkeypatch):
    import mlflow

    cwd = tmp_path / "job"  # a job's working folder, where MLflow's default would write ./mlruns
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = {"mlflow_uri": uri, "experiment": "test"}
    cfg = tiny_cfg(tiny_params, "sigmoid-t1-imp_true-k4")
    data = tiny_run / "results/data/jsb_multi"
    code = code_id("train_musicslots")
    train_musicslots(cfg, data, tmp_path / "r", device="cpu", tracking=tracking, stop_after=2, code=code)
    last = torch.load(tmp_path / "r/ckpt/last.pt", weights_only=True)  # as if train/loop.py changed meanwhile
    torch.save({**last, "code": {**last["code"], "train/loop.py": "0" * 16}}, tmp_path / "r/ckpt/last.pt")
    summary = train_musicslots(cfg, data, tmp_path / "r", device="cpu", tracking=tracking, code=code)
    evaluate_run(tmp_path / "r", data, tmp_path / "r/test.json", tmp_path / "r/test.png", device="cpu",
                 tracking=tracking, audio_dir=tmp_path / "r/test_audio")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["test/musicslots"])
    assert len(runs) == 1  # the resumed call continued the same run
    run = runs.iloc[0]
    assert run["run_id"] == summary["mlflow_run_id"] and run["status"] == "FINISHED"
    assert run["tags.mlflow.runName"] == "jsb_multi/sigmoid-t1-imp_true-k4/seed0"
    assert run["params.model.mask"] == "sigmoid" and run["params.train.steps"] == "6"
    assert run["tags.code_changed_at_steps"] == "2" and run["tags.variant"] == "sigmoid-t1-imp_true-k4"
    assert run["metrics.test/miou"] == pytest.approx(json.loads((tmp_path / "r/test.json").read_text())["test"]["miou"])
    history = mlflow.tracking.MlflowClient().get_metric_history(run["run_id"], "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run["run_id"])}
    assert {"best.pt", "curves.png", "test.png", "test_audio"} <= artifacts
    # the experiment created on the fly keeps its artifacts beside the database, not in ./mlruns
    assert (tmp_path / "artifacts" / run["run_id"] / "artifacts" / "best.pt").exists()
    assert not (cwd / "mlruns").exists()


def test_evaluation_output(tiny_run, tiny_params, tmp_path):
    data = tiny_run / "results/data/jsb_multi"
    train_musicslots(tiny_cfg(tiny_params, "none-t1-imp_true-k7"), data, tmp_path / "r", device="cpu")
    ev = evaluate_run(tmp_path / "r", data, tmp_path / "t.json", tmp_path / "t.png", device="cpu",
                      audio_dir=tmp_path / "audio")
    n_test = len(torch.load(data / "test.pt", weights_only=True)["n_notes"])
    assert ev["test"]["examples"] == n_test and ev["test"]["note_mse"] > 0 and 0 <= ev["test"]["miou"] <= 1
    assert json.loads((tmp_path / "t.json").read_text()) == ev
    sizes = torch.load(data / "test.pt", weights_only=True)["n_notes"]
    by = ev["test"]["by_notes"]  # per chord size; together they are the whole test split
    assert {int(v): d["examples"] for v, d in by.items()} == {int(v): int((sizes == v).sum()) for v in sizes.unique()}
    assert sum(d["note_mse"] * d["examples"] for d in by.values()) / n_test == pytest.approx(ev["test"]["note_mse"])
    assert sum(d["miou"] * d["examples"] for d in by.values()) / n_test == pytest.approx(ev["test"]["miou"])
    oracle = ev["test"]["oracle"]  # the ground truth as slots: the floor, far below a 3-step model
    assert oracle["miou"] > 0.99 and 0 <= oracle["note_mse"] < ev["test"]["note_mse"]
    assert sum(d["oracle_note_mse"] * d["examples"] for d in by.values()) / n_test == pytest.approx(oracle["note_mse"])
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    check_decomposition_audio(tmp_path / "audio", data, n_slots=7)
    bare = tmp_path / "bare"  # a dataset folder without the features step's summary.json
    bare.mkdir()
    (bare / "test.pt").symlink_to(data / "test.pt")
    with pytest.raises(UserError, match=r"summary\.json does not exist; rebuild the dataset"):
        evaluate_run(tmp_path / "r", bare, tmp_path / "t3.json", device="cpu", audio_dir=tmp_path / "a3")
    assert not (tmp_path / "t3.json").exists()
    first = evaluate_run(tmp_path / "r", data, tmp_path / "t2.json", device="cpu", limit=2)["test"]
    assert first["examples"] == 2 < n_test and first["note_mse"] != ev["test"]["note_mse"]
    assert ev["test_iters"] == tiny_params["musicslots"]["model"]["iters"]
    more = evaluate_run(tmp_path / "r", data, tmp_path / "t5.json", device="cpu", iters=5)  # official --test_time_iter
    assert more["test_iters"] == 5 and more["test"]["examples"] == n_test  # read back from the model evaluated
    # from the parameters (musicslots.eval.iters), as Snakemake and DVC run it; --iters wins over them
    from conftest import REPO

    from musicdecomp.cli import main

    override = tmp_path / "eval.yaml"
    override.write_text("musicslots:\n  eval: {iters: 4}\n")
    cli = ["eval-musicslots", "--params", str(REPO / "params.yaml"), str(override), "--run-dir", str(tmp_path / "r"),
           "--data-dir", str(data), "--device", "cpu", "--limit", "2", "--out"]
    assert main(cli + [str(tmp_path / "p4.json")]) == 0
    assert json.loads((tmp_path / "p4.json").read_text())["test_iters"] == 4
    assert main(cli + [str(tmp_path / "p6.json"), "--iters", "6"]) == 0
    assert json.loads((tmp_path / "p6.json").read_text())["test_iters"] == 6
    assert json.loads((tmp_path / "p6.json").read_text())["test_amp"] == "none"  # float32 (CPU: always)
    # a --config slice printed before musicslots.eval.amp existed is refused with the fix, nothing written
    old = ["eval-musicslots", "--config", json.dumps({"musicslots.eval": {"iters": None}}), "--run-dir",
           str(tmp_path / "r"), "--data-dir", str(data), "--device", "cpu", "--out", str(tmp_path / "old.json")]
    assert main(old) == 2 and not (tmp_path / "old.json").exists()
    override.write_text("musicslots:\n  eval: {iters: 0}\n")
    assert main(cli + [str(tmp_path / "p0.json")]) == 2 and not (tmp_path / "p0.json").exists()


def check_decomposition_audio(audio: Path, data: Path, n_slots: int) -> None:
    """The WAV files of the figure's examples: one per chord, reconstruction, slot and note, at the dataset's
    sample rate, and the chord's file sounds like the chord (its mel spectrogram is close to the input's)."""
    import soundfile as sf

    from musicdecomp.data.mel import MelFeatures
    from musicdecomp.eval.listen import dataset_audio_settings

    mel, rate = dataset_audio_settings(data)
    test = torch.load(data / "test.pt", weights_only=True)
    index = json.loads((audio / "index.json").read_text())
    assert index["sample_rate"] == rate and len(index["examples"]) == 3
    for r, ex in enumerate(index["examples"]):
        n_notes = int(test["n_notes"][ex["test_index"]])
        expected = {f"ex{r}_{x}.wav" for x in ["chord", "recon", *(f"slot{s}" for s in range(n_slots)),
                                                *(f"note{v}" for v in range(n_notes))]}
        assert set(ex["files"]) == expected and {p.name for p in audio.glob(f"ex{r}_*.wav")} == expected
        matched = [what for name, what in ex["files"].items() if "slot" in name and "matched to note" in what]
        assert len(matched) == n_notes  # every note has its own slot (K >= notes)
        wave, sr = sf.read(audio / f"ex{r}_chord.wav", dtype="float32")
        assert sr == rate and len(wave) == (mel["n_frames"] - 1) * mel["hop_length"]
        chord = test["chord_db"][ex["test_index"]].float()
        back = MelFeatures(mel, rate).db(torch.from_numpy(wave) / ex["gain"])
        loud = chord > chord.max() - 40
        assert (back - chord)[loud].abs().mean() < 5.0  # Griffin-Lim: about 2-3 dB on JSB chords


def test_table1_aggregates_seeds(tmp_path):
    def ev(variant, seed, mse, miou, oracle=None, test_iters=None, attention="official", test_amp=None):
        mask, t, imp, k = variant.split("-")
        path = tmp_path / f"{variant}-{seed}-{test_iters}-{attention}-{test_amp}.json"
        test = {"note_mse": mse, "miou": miou, **({"oracle": oracle, "examples": 100} if oracle else {})}
        path.write_text(json.dumps({"dataset": "jsb_multi", "variant": variant, "seed": seed, "best_step": 10,
                                    "model": {"mask": mask, "time_stride": int(t[1:]), "implicit": imp == "imp_true",
                                              "num_slots": int(k[1:]), "iters": 3, "attention": attention},
                                    "test": test,
                                    **({"test_iters": test_iters} if test_iters else {}),
                                    **({"test_amp": test_amp} if test_amp else {})}))
        return path
    paths = [ev("none-t1-imp_true-k7", 0, 10.0, 0.9, {"note_mse": 9.4071, "miou": 0.9989}),
             ev("none-t1-imp_true-k7", 1, 14.0, 0.8), ev("softmax-t1-imp_true-k7", 0, 30.0, 0.5)]
    rows = table1(paths, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex")
    none = next(r for r in rows if r["mask"] == "none")
    assert none["seeds"] == 2 and none["note_mse_mean"] == 12.0 and none["miou_mean"] == pytest.approx(0.85)
    assert none["note_mse_std"] == pytest.approx(2.8284, rel=1e-3)  # sample std over seeds
    md = (tmp_path / "t.md").read_text()
    assert "| jsb_multi | none | 1 | yes | 7 | 2 | 12.00 ± 2.83 | 0.850 ± 0.071 |" in md
    assert "13.47" in md and "unverified" in md
    assert "| jsb_multi: ground-truth notes as slots (the metrics' floor) | | | | | | 9.41 | 0.999 |" in md
    csv = (tmp_path / "t.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,variant,mask") and len(csv) == 1 + 2 + 2  # header, variants, floor, paper
    assert csv[3] == "jsb_multi,ground-truth notes as slots (the metrics' floor),,,,,,9.4071,,0.9989,,,,"
    assert csv[0].endswith(",test_iters,settings,source") and all(line.count(",") == 13 for line in csv)
    assert "| setting |" not in md  # one row per variant: nothing to tell apart
    assert "iterations differ" not in md  # evaluated as trained (or not recorded: older evaluations)
    tex = (tmp_path / "t.tex").read_text().splitlines()
    rows_tex = [line for line in tex if line.endswith("\\\\")]
    assert all(line.count(" & ") == 7 for line in rows_tex[:3])  # header + 2 variants, 8 columns
    assert ("jsb\\_multi & none & 1 & yes & 7 & 2 & $\\mathbf{12.00 \\pm 2.83}$ & $\\mathbf{0.850 \\pm 0.071}$ "
            "\\\\") in tex
    assert "jsb\\_multi & softmax & 1 & yes & 7 & 1 & $30.00$ & $0.500$ \\\\" in tex  # one seed: no std, not best
    assert rows_tex[-1].startswith("\\multicolumn{6}{l}{paper") and "$13.47$ & $0.91$" in rows_tex[-1]
    assert rows_tex[-2] == ("\\multicolumn{6}{l}{jsb\\_multi: ground-truth notes as slots (the metrics' floor)} "
                            "& $9.41$ & $0.999$ \\\\")
    assert tex[0].startswith("%") and "\\toprule" in tex and "\\bottomrule" in tex
    # evaluated with more Slot Attention iterations than trained (musicslots.eval.iters): its own row, and said
    more = [ev("none-t1-imp_true-k7", 0, 8.0, 0.95, test_iters=5)]
    rows = table1(paths + more, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex")
    assert [(r["mask"], r["test_iters"], r["seeds"]) for r in rows] == [("none", None, 2), ("none", 5, 1),
                                                                       ("softmax", None, 1)]
    assert ("Slot Attention iterations differ from training (musicslots.eval.iters): 5 at test time, 3 in "
            "training.") in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t.csv").read_text().splitlines()[2].endswith(",8.0,0.0,0.95,0.0,5,5 test iterations,trained here")
    assert "5 at test time, 3 in training)." in (tmp_path / "t.tex").read_text()
    md = (tmp_path / "t.md").read_text()  # the two rows of the variant no longer look alike
    assert "| jsb_multi | none | 1 | yes | 7 | 3 test iterations | 2 | 12.00 ± 2.83 | 0.850 ± 0.071 |" in md
    assert "| jsb_multi | none | 1 | yes | 7 | 5 test iterations | 1 | 8.00 | 0.950 |" in md
    assert "| jsb_multi | softmax | 1 | yes | 7 |  | 1 | 30.00 | 0.500 |" in md
    assert "| jsb_multi: ground-truth notes as slots (the metrics' floor) | | | | | | | 9.41 | 0.999 |" in md
    tex = [line for line in (tmp_path / "t.tex").read_text().splitlines() if line.endswith("\\\\")]
    assert all(line.count(" & ") == 8 for line in tex[:4]) and tex[-1].startswith("\\multicolumn{7}{l}{paper")
    # another Slot Attention normalisation (config/attention_standard.yaml) under the same variant name is
    # another model: never averaged with the official one's seeds
    standard = [ev("none-t1-imp_true-k7", 0, 20.0, 0.7, attention="standard")]
    rows = table1(paths + standard, tmp_path / "t.csv", tmp_path / "t.md")
    assert [(r["mask"], r["seeds"], r["note_mse_mean"], r["settings"]) for r in rows] == [
        ("none", 2, 12.0, "attention official"), ("none", 1, 20.0, "attention standard"), ("softmax", 1, 30.0, "")]
    # nor one evaluated at another precision on the GPU (musicslots.eval.amp)
    rows = table1(paths + [ev("none-t1-imp_true-k7", 0, 10.4, 0.9, test_amp="bf16")], tmp_path / "t.csv",
                  tmp_path / "t.md")
    assert [(r["mask"], r["seeds"], r["settings"]) for r in rows] == [
        ("none", 2, "tested in unrecorded precision"), ("none", 1, "tested in bf16"), ("softmax", 1, "")]
    with pytest.raises(UserError, match="evaluation\\(s\\) of the sweep are missing"):
        table1(paths + [tmp_path / "nope.json"], tmp_path / "x.csv", tmp_path / "x.md")
    # a damaged evaluation is named with its fix, and no table is written
    (tmp_path / "cut.json").write_text('{"dataset": "jsb_multi", "variant": ')
    with pytest.raises(UserError, match=r"cut\.json is not valid JSON \(.*\); rerun its eval step"):
        table1(paths + [tmp_path / "cut.json"], tmp_path / "y.csv", tmp_path / "y.md")
    assert not (tmp_path / "y.csv").exists() and not (tmp_path / "y.md").exists()


def test_test_time_iterations_must_be_positive(capsys):
    from musicdecomp.cli import build_parser

    base = ["eval-musicslots", "--run-dir", "r", "--data-dir", "d", "--out", "o.json"]
    assert build_parser().parse_args(base + ["--iters", "5"]).iters == 5
    assert build_parser().parse_args(base).iters is None
    for bad in ("0", "-1", "2.5"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(base + ["--iters", bad])
        assert "is not a positive whole number" in capsys.readouterr().err


def test_time_limit_must_be_positive(capsys):
    from musicdecomp.cli import build_parser

    base = ["train-musicslots", "--dataset", "jsb_multi", "--variant", "none-t1-imp_true-k7", "--seed", "0",
            "--data-dir", "d", "--run-dir", "r"]
    assert build_parser().parse_args(base + ["--time-limit", "1.5"]).time_limit == 1.5
    for bad in ("0", "-3", "soon"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(base + ["--time-limit", bad])
        assert "is not a positive number of minutes" in capsys.readouterr().err


def test_slurm_jobs_stop_before_their_end(monkeypatch):
    from musicdecomp.cli import _time_limit, build_parser

    args = build_parser().parse_args(["train-musicslots", "--dataset", "jsb_multi", "--variant", "none-t1-imp_true-k7",
                                      "--seed", "0", "--data-dir", "d", "--run-dir", "r"])
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert _time_limit(args) is None  # outside SLURM: no limit
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 3600))
    assert 3600 - 300 - 5 < _time_limit(args) <= 3600 - 300  # 5 minutes to spare
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 100))
    assert _time_limit(args) == 60  # at least a minute of training
    monkeypatch.setenv("SLURM_JOB_END_TIME", "unknown")
    assert _time_limit(args) is None
    args.time_limit = 2.0  # an explicit limit wins
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 3600))
    assert _time_limit(args) == 120


def _fake_squeue(folder, monkeypatch, body: str):
    """An `squeue` first on PATH that runs ``body`` (a shell snippet) and logs its arguments."""
    script = folder / "squeue"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {folder}/calls\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_slurm_time_left_comes_from_squeue_where_slurm_does_not_export_it(monkeypatch, tmp_path, caplog):
    """Slurm 22.05 (Debian 12's) sets no SLURM_JOB_END_TIME: the job's time left then comes from squeue."""
    from musicdecomp.cli import _time_limit, build_parser
    from musicdecomp.slurm import parse_duration

    assert [parse_duration(t) for t in ("9:59", "1:59:59", "2-00:00:30", " 10:00\n", "UNLIMITED", "", "1-2")] == [
        599, 7199, 172830, 600, None, None, None]
    args = build_parser().parse_args(["train-musicslots", "--dataset", "jsb_multi", "--variant", "none-t1-imp_true-k7",
                                      "--seed", "0", "--data-dir", "d", "--run-dir", "r"])
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    _fake_squeue(tmp_path, monkeypatch, 'echo "1:55:00"')
    assert _time_limit(args) == 6900 - 300
    assert (tmp_path / "calls").read_text().split() == ["--noheader", "--jobs", "4242", "--format", "%L"]
    _fake_squeue(tmp_path, monkeypatch, "echo UNLIMITED")
    assert _time_limit(args) is None
    _fake_squeue(tmp_path, monkeypatch, "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
    with caplog.at_level("WARNING"):
        assert _time_limit(args) is None  # no limit: SLURM kills the job at its end and the retry resumes it
    assert "Invalid job id specified" in caplog.text and "no time limit set" in caplog.text
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # no squeue at all
    assert _time_limit(args) is None


def test_speed_options_from_flags_and_environment(monkeypatch):
    from musicdecomp.cli import _speed, build_parser

    base = ["train-baseline", "--dataset", "jsb_multi", "--variant", "cnn", "--seed", "0", "--data-dir", "d",
            "--run-dir", "r"]
    monkeypatch.delenv("MUSICDECOMP_SPEED", raising=False)
    off = {"channels_last": False, "cudnn_benchmark": False, "compile": False}
    assert _speed(build_parser().parse_args(base)) == off
    assert _speed(build_parser().parse_args(base + ["--cudnn-benchmark"])) == {**off, "cudnn_benchmark": True}
    monkeypatch.setenv("MUSICDECOMP_SPEED", " channels_last,compile ")
    assert _speed(build_parser().parse_args(base + ["--cudnn-benchmark"])) == {"channels_last": True,
                                                                             "cudnn_benchmark": True, "compile": True}
    monkeypatch.setenv("MUSICDECOMP_SPEED", "channels_last,fused")
    with pytest.raises(UserError, match=r"\$MUSICDECOMP_SPEED names unknown speed options \['fused'\]"):
        _speed(build_parser().parse_args(base))
